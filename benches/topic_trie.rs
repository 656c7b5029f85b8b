//! Matching one topic against 10^3 and 10^5 filters: the trie beside the
//! linear scan with a peer's matcher (mqttbytes::matches, what a broker
//! without an index does).

use criterion::{criterion_group, criterion_main, Criterion};
use ringmq::protocol::MqttStr;
use ringmq::topic::{SubscriptionTrie, TopicFilter, TopicName};
use std::hint::black_box;

/// Device-style filters: mostly exact topics, some `+` and `#`.
fn filters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 10 {
            0 => format!("site/{}/device/+/temperature", i % 1000),
            1 => format!("site/{}/#", i % 1000),
            _ => format!("site/{}/device/{}/temperature", i % 1000, i),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (n, label) in [(1_000, "1e3"), (100_000, "1e5")] {
        let fs = filters(n);
        let mut trie = SubscriptionTrie::new();
        for (i, f) in fs.iter().enumerate() {
            let f = TopicFilter::new(MqttStr::try_from(f.as_str()).expect("str")).expect("filter");
            trie.insert(&f, i as u32).expect("inserts");
        }
        let topic_str = "site/42/device/4042/temperature";
        let topic = TopicName::new(MqttStr::from_static(topic_str)).expect("name");
        let mut g = c.benchmark_group(format!("trie_match_{label}"));
        if n > 10_000 {
            g.sample_size(20);
        }
        g.bench_function("ringmq_trie", |b| {
            b.iter(|| {
                let mut hits = 0u32;
                trie.match_topic(&topic, |_| hits += 1);
                black_box(hits)
            })
        });
        g.bench_function("linear_mqttbytes_matches", |b| {
            b.iter(|| {
                black_box(
                    fs.iter()
                        .filter(|f| mqttbytes::matches(topic_str, f))
                        .count(),
                )
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
