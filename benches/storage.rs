//! The log: append throughput (records of a queued 100-byte message's size
//! and of 1 KiB) and replay speed (MB/s of log read back, CRCs checked).
//! The segment size is the default's (64 MiB), on the temp directory's disk.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::storage::{Log, LogOptions, RecoveryMode, FIRST_USER_KIND};
use std::hint::black_box;

const SEGMENT: usize = 64 << 20;

fn opts() -> LogOptions {
    LogOptions {
        segment_size: SEGMENT,
        recovery: RecoveryMode::Strict,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_append");
    for size in [140usize, 1024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), opts(), |_, _, _| {}).expect("opens");
        let body = vec![0x5au8; size];
        const BATCH: u64 = 10_000;
        g.throughput(Throughput::Bytes(BATCH * (size as u64 + 9)));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(log.append(FIRST_USER_KIND, &body).expect("appends"));
                }
                // Keep the directory small: checkpoint away what was written.
                if log.since_checkpoint() > 4 * SEGMENT as u64 {
                    log.begin_checkpoint().expect("mark");
                    log.end_checkpoint().expect("job").run().expect("runs");
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("log_replay");
    g.sample_size(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), opts(), |_, _, _| {}).expect("opens");
    let body = vec![0xa5u8; 140];
    let mut bytes = 0u64;
    while bytes < 256 << 20 {
        log.append(FIRST_USER_KIND, &body).expect("appends");
        bytes += 149;
    }
    drop(log);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("256MB_of_140B_records", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut n = 0u64;
                let (log, _) = Log::open(dir.path(), opts(), |_, body, _| {
                    n += body.len() as u64;
                })
                .expect("replays");
                black_box((log, n))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
