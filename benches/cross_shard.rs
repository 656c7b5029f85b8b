//! Messages per second through the mesh: one shard hands `Arc<Message>`
//! deliveries to another over glommio's shared channel, one message per
//! channel push (unbatched) or a loop turn's worth per push (batched, what
//! the broker does). Two executors on two threads, as in the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq::protocol::{MqttStr, PublishProperties, QoS};
use ringmq::session::Message;
use ringmq::shard::ShardMsg;
use ringmq::topic::TopicName;

const PER_ITER: u64 = 1000;

fn message() -> Arc<Message> {
    Arc::new(Message {
        topic: TopicName::new(MqttStr::from_static("bench/cross")).expect("topic"),
        payload: Bytes::from_static(&[0u8; 64]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
        publisher: Arc::from("p"),
        expires_at: None,
    })
}

/// Runs `consume` and `produce` on two executors; the time from the
/// producer's start (after both ends connected) to the consumer's end.
fn time_pair<T: Send + 'static, C, P, CF, PF>(capacity: usize, consume: C, produce: P) -> Duration
where
    C: FnOnce(shared_channel::ConnectedReceiver<T>) -> CF + Send + 'static,
    CF: std::future::Future<Output = ()> + 'static,
    P: FnOnce(shared_channel::ConnectedSender<T>) -> PF + Send + 'static,
    PF: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = shared_channel::new_bounded::<T>(capacity);
    let consumer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            consume(rx.connect().await).await;
            Instant::now()
        })
        .expect("consumer");
    let producer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tx = tx.connect().await;
            let start = Instant::now();
            produce(tx).await;
            start
        })
        .expect("producer");
    let start = producer.join().expect("producer");
    consumer.join().expect("consumer") - start
}

/// Sends `n` deliveries in batches of `batch` (0: unbatched).
fn run(n: u64, batch: usize) -> Duration {
    let msg = message();
    if batch == 0 {
        return time_pair::<ShardMsg, _, _, _, _>(
            1024,
            move |rx| async move {
                for _ in 0..n {
                    rx.recv().await.expect("open");
                }
            },
            move |tx| async move {
                for _ in 0..n {
                    tx.send(ShardMsg::Deliver(msg.clone())).await.expect("open");
                }
            },
        );
    }
    time_pair::<Vec<ShardMsg>, _, _, _, _>(
        256,
        move |rx| async move {
            let mut got = 0;
            while got < n {
                got += rx.recv().await.expect("open").len() as u64;
            }
        },
        move |tx| async move {
            let mut sent = 0;
            while sent < n {
                let k = (n - sent).min(batch as u64);
                let b: Vec<ShardMsg> = (0..k).map(|_| ShardMsg::Deliver(msg.clone())).collect();
                tx.send(b).await.expect("open");
                sent += k;
            }
        },
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_shard");
    g.throughput(Throughput::Elements(PER_ITER));
    g.sample_size(20);
    for (label, batch) in [("unbatched", 0), ("batch_16", 16), ("batch_256", 256)] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| run(iters * PER_ITER, batch))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
