//! Messages per second through the mesh: one shard hands `Arc<Message>`
//! deliveries to another, one message per push (unbatched) or a loop turn's
//! worth per push (batched, what the broker does). Two executors on two
//! threads, as in the broker. Each is timed over the broker's own
//! [`pipe`](ringmq::shard::pipe) and over glommio's shared channel, which the
//! mesh used before and which wakes the sender after every pop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq::protocol::{MqttStr, PublishProperties, QoS};
use ringmq::session::Message;
use ringmq::shard::pipe::{pipe, PipeReceiver, PipeSender};
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
        received_at: std::time::Instant::now(),
    })
}

/// A channel end as handed to an executor thread; it goes live inside it.
trait End: Send + 'static {
    type Live;
    async fn live(self) -> Self::Live;
}

trait Tx<T> {
    async fn put(&self, v: T);
}

trait Rx<T> {
    async fn take(&self) -> T;
}

impl<T: Send + 'static> End for shared_channel::SharedSender<T> {
    type Live = shared_channel::ConnectedSender<T>;
    async fn live(self) -> Self::Live {
        self.connect().await
    }
}

impl<T: Send + 'static> End for shared_channel::SharedReceiver<T> {
    type Live = shared_channel::ConnectedReceiver<T>;
    async fn live(self) -> Self::Live {
        self.connect().await
    }
}

impl<T: Send + 'static> Tx<T> for shared_channel::ConnectedSender<T> {
    async fn put(&self, v: T) {
        assert!(self.send(v).await.is_ok(), "receiver gone");
    }
}

impl<T: Send + 'static> Rx<T> for shared_channel::ConnectedReceiver<T> {
    async fn take(&self) -> T {
        self.recv().await.expect("open")
    }
}

impl<T: Send + 'static> End for PipeSender<T> {
    type Live = Self;
    async fn live(self) -> Self {
        self
    }
}

impl<T: Send + 'static> End for PipeReceiver<T> {
    type Live = Self;
    async fn live(self) -> Self {
        self
    }
}

impl<T> Tx<T> for PipeSender<T> {
    async fn put(&self, v: T) {
        assert!(self.send(v).await.is_ok(), "receiver gone");
    }
}

impl<T> Rx<T> for PipeReceiver<T> {
    async fn take(&self) -> T {
        self.recv().await.expect("open")
    }
}

/// Sends `n` deliveries in pushes of `batch` messages from one executor to
/// another; the time from the producer's start (ends connected) to the
/// consumer's last receive.
fn run<TX, RX>(ends: (TX, RX), n: u64, batch: u64) -> Duration
where
    TX: End<Live: Tx<Vec<ShardMsg>>>,
    RX: End<Live: Rx<Vec<ShardMsg>>>,
{
    let (tx, rx) = ends;
    let msg = message();
    let consumer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let rx = rx.live().await;
            let mut got = 0;
            while got < n {
                got += rx.take().await.len() as u64;
            }
            Instant::now()
        })
        .expect("consumer");
    let producer = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tx = tx.live().await;
            let start = Instant::now();
            let mut sent = 0;
            while sent < n {
                let k = (n - sent).min(batch);
                let b: Vec<ShardMsg> = (0..k)
                    .map(|_| ShardMsg::Deliver {
                        msg: msg.clone(),
                        report: false,
                    })
                    .collect();
                tx.put(b).await;
                sent += k;
            }
            start
        })
        .expect("producer");
    let start = producer.join().expect("producer");
    consumer.join().expect("consumer") - start
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_shard");
    g.throughput(Throughput::Elements(PER_ITER));
    g.sample_size(20);
    // The broker's mesh holds 64 batches per direction.
    const DEPTH: usize = 64;
    for (label, batch) in [("unbatched", 1), ("batch_16", 16), ("batch_256", 256)] {
        g.bench_function(format!("pipe/{label}"), |b| {
            b.iter_custom(|iters| run(pipe(DEPTH), iters * PER_ITER, batch))
        });
        g.bench_function(format!("glommio_channel/{label}"), |b| {
            b.iter_custom(|iters| run(shared_channel::new_bounded(DEPTH), iters * PER_ITER, batch))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
