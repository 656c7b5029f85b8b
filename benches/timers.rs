//! The shard's deadline queue with a million timers armed: arming one more
//! and firing the earliest (what every will, expiry, keep-alive, resend and
//! TTL deadline costs), and a burst of 10,000 due at once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ringmq::timer::DeadlineQueue;

const ARMED: u64 = 1_000_000;

/// A queue with `ARMED` deadlines, one per ms from `t0`, armed out of order.
fn armed(t0: Instant) -> DeadlineQueue<u64> {
    let mut q = DeadlineQueue::default();
    for i in 0..ARMED {
        // A stride coprime with ARMED visits every ms once, out of order.
        let ms = (i * 7_919) % ARMED;
        q.insert(t0 + Duration::from_millis(ms), i);
    }
    q
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut g = c.benchmark_group("timers_1e6_armed");
    // Steady state: one armed a million ms out, the earliest one fired.
    let mut q = armed(t0);
    let mut n = 0u64;
    g.bench_function("arm_one_fire_one", |b| {
        b.iter(|| {
            q.insert(ms(ARMED + n), n);
            let fired = q.pop_expired(ms(n));
            n += 1;
            black_box(fired)
        })
    });
    assert_eq!(q.len() as u64, ARMED);
    g.sample_size(10);
    g.bench_function("fire_10k_due_at_once", |b| {
        b.iter_batched(
            || armed(t0),
            // The queue is returned: dropping a million entries is not firing.
            |mut q| {
                let fired = q.pop_expired(ms(9_999));
                (q, fired)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
