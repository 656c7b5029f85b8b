//! Orchestration: worker threads (one glommio executor each) run the
//! clients; the main thread steps them through the phases and watches
//! progress through per-worker counters.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use ringmq::protocol::{
    Ack, MqttStr, Packet, PacketId, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use crate::args::{Plan, Scenario, STAMP_BYTES};
use crate::client::{connect, Client, Outbox, Role};
use crate::track::SubscriberLog;

/// Phases the main thread moves the workers through.
pub mod phase {
    pub const SUBSCRIBE: u8 = 0;
    pub const CONNECT_PUBLISHERS: u8 = 1;
    pub const PUBLISH: u8 = 2;
    pub const STOP_PUBLISHING: u8 = 3;
    pub const RECONNECT: u8 = 4;
    pub const STOP: u8 = 5;
}

/// Counters one worker updates and the main thread reads (one writer each:
/// no contention between workers).
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    /// First arrivals only: what a drain waits for (duplicates must not
    /// make it stop while messages are still on their way).
    pub unique: AtomicU64,
}

/// State shared by the main thread and the workers.
#[derive(Debug)]
pub struct Control {
    pub epoch: Instant,
    pub phase: AtomicU8,
    pub subs_ready: AtomicUsize,
    pub pubs_ready: AtomicUsize,
    pub pubs_done: AtomicUsize,
    pub failures: AtomicUsize,
    pub first_error: Mutex<Option<String>>,
    pub progress: Vec<Progress>,
    /// Nanoseconds since `epoch` when the backlog subscriber reconnected
    /// and when it had everything.
    pub reconnected_at: AtomicU64,
    pub drained_at: AtomicU64,
    /// The broker was killed on purpose (`--kill-after`): closed
    /// connections are expected, not failures.
    pub killed: AtomicBool,
}

impl Control {
    pub fn new(workers: usize) -> Control {
        Control {
            epoch: Instant::now(),
            phase: AtomicU8::new(phase::SUBSCRIBE),
            subs_ready: AtomicUsize::new(0),
            pubs_ready: AtomicUsize::new(0),
            pubs_done: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            progress: (0..workers).map(|_| Progress::default()).collect(),
            reconnected_at: AtomicU64::new(0),
            drained_at: AtomicU64::new(0),
            killed: AtomicBool::new(false),
        }
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn fail(&self, e: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert(e);
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// First arrivals, all workers.
    pub fn unique(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.unique.load(Ordering::Relaxed))
            .sum()
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        self.progress.iter().fold((0, 0, 0), |(s, a, r), p| {
            (
                s + p.sent.load(Ordering::Relaxed),
                a + p.acked.load(Ordering::Relaxed),
                r + p.received.load(Ordering::Relaxed),
            )
        })
    }
}

/// What one worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// Publish-to-receive latency, microseconds.
    pub latency: Histogram<u64>,
    /// CONNECT-to-CONNACK latency, microseconds.
    pub connect: Histogram<u64>,
    /// (subscriber index, what it saw).
    pub logs: Vec<(usize, SubscriberLog)>,
    /// (publisher index, sent, acknowledged).
    pub published: Vec<(usize, u64, u64)>,
    /// Clients that connected.
    pub connected: usize,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn wait_phase(ctl: &Control, at_least: u8) {
    while ctl.phase() < at_least {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

struct Publisher {
    window: glommio::sync::Semaphore,
    acked: Cell<u64>,
    /// The connection's reader ended: no acknowledgement can come now.
    read_closed: Cell<bool>,
    ctl: Arc<Control>,
    worker: usize,
}

impl Role for Publisher {
    fn on_packet(&self, p: Packet, out: &Outbox) {
        let done = match p {
            Packet::PubAck(_) | Packet::PubComp(_) => true,
            Packet::PubRec(a) if a.reason.is_error() => true,
            Packet::PubRec(a) => {
                out.push(&Packet::PubRel(Ack::new(a.packet_id)));
                false
            }
            _ => false,
        };
        if done {
            self.acked.set(self.acked.get() + 1);
            self.ctl.progress[self.worker]
                .acked
                .fetch_add(1, Ordering::Relaxed);
            self.window.signal(1);
        }
    }

    fn on_close(&self) {
        self.read_closed.set(true);
        // A publish waiting for window space must not wait forever.
        self.window.close();
    }
}

struct Subscriber {
    /// The connection's reader ended (the broker closed it).
    closed: Cell<bool>,
    log: RefCell<SubscriberLog>,
    latency: Rc<RefCell<Histogram<u64>>>,
    subacked: Cell<bool>,
    waker: Cell<Option<Waker>>,
    received: Cell<u64>,
    unique: Cell<u64>,
    ctl: Arc<Control>,
    worker: usize,
}

impl Subscriber {
    /// Waits until `done`, woken by SUBACK and by the connection's end.
    async fn until(&self, done: impl Fn() -> bool) {
        poll_fn(|cx| {
            if done() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

impl Role for Subscriber {
    fn on_packet(&self, p: Packet, out: &Outbox) {
        match p {
            Packet::SubAck(_) => {
                self.subacked.set(true);
                if let Some(w) = self.waker.take() {
                    w.wake();
                }
            }
            Packet::Publish(p) => {
                if let Some(stamp) = p.payload.get(..STAMP_BYTES) {
                    let id = u32::from_le_bytes(stamp[0..4].try_into().unwrap_or_default());
                    let seq = u64::from_le_bytes(stamp[4..12].try_into().unwrap_or_default());
                    let sent = u64::from_le_bytes(stamp[12..20].try_into().unwrap_or_default());
                    let lat_us = self.ctl.now_ns().saturating_sub(sent) / 1000;
                    let _ = self.latency.borrow_mut().record(lat_us.max(1));
                    if self.log.borrow_mut().entry(id).or_default().record(seq) {
                        self.unique.set(self.unique.get() + 1);
                        self.ctl.progress[self.worker]
                            .unique
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.received.set(self.received.get() + 1);
                self.ctl.progress[self.worker]
                    .received
                    .fetch_add(1, Ordering::Relaxed);
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => out.push(&Packet::PubAck(Ack::new(id))),
                    (QoS::ExactlyOnce, Some(id)) => out.push(&Packet::PubRec(Ack::new(id))),
                    _ => {}
                }
            }
            Packet::PubRel(a) => out.push(&Packet::PubComp(Ack::new(a.packet_id))),
            _ => {}
        }
    }

    fn on_close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

struct Idle;

impl Role for Idle {
    fn on_packet(&self, _: Packet, _: &Outbox) {}
}

/// Clients of one worker: subscriber and publisher indexes.
#[derive(Debug, Clone, Default)]
pub struct Share {
    pub subs: Vec<usize>,
    pub pubs: Vec<usize>,
}

/// Runs the workers; returns their results.
pub fn run(plan: &Plan, ctl: &Arc<Control>) -> Vec<std::thread::JoinHandle<WorkerResult>> {
    let w = plan.threads;
    let mut shares = vec![Share::default(); w];
    for j in 0..plan.subscribers {
        shares[j % w].subs.push(j);
    }
    // With fewer subscribers than workers (fan-in, latency), publishers keep
    // off the subscribers' workers, so an unthrottled publisher cannot starve
    // the reader it is measured by; otherwise each publisher sits on the
    // worker after its pair's subscriber.
    let sub_workers = plan.subscribers.min(w);
    for i in 0..plan.publishers {
        let k = if sub_workers < w {
            sub_workers + i % (w - sub_workers)
        } else {
            (i + 1) % w
        };
        shares[k].pubs.push(i);
    }
    shares
        .into_iter()
        .enumerate()
        .map(|(k, share)| {
            let plan = plan.clone();
            let ctl = ctl.clone();
            std::thread::spawn(move || {
                // Deep rings for the same reason as the broker's
                // (`ringmq::broker::RING_DEPTH`): thousands of idle clients.
                LocalExecutorBuilder::new(Placement::Unbound)
                    .ring_depth(ringmq::broker::RING_DEPTH)
                    .name(&format!("bench-{k}"))
                    .spawn(move || worker(plan, ctl, k, share))
                    .expect("executor starts")
                    .join()
                    .expect("worker finishes")
            })
        })
        .collect()
}

fn topic_of(plan: &Plan, i: usize) -> String {
    plan.pub_topic.replace("{i}", &i.to_string())
}

/// The filters subscriber `j` uses.
pub fn filters_of(plan: &Plan, j: usize) -> Vec<String> {
    plan.sub_filters
        .iter()
        .map(|f| f.replace("{i}", &j.to_string()))
        .collect()
}

/// How many of subscriber `s`'s filters publisher `p`'s topic matches: it
/// must get each message once, and may get one copy per match.
pub fn matching(plan: &Plan, s: usize, p: usize) -> u64 {
    let topic = topic_of(plan, p);
    filters_of(plan, s)
        .iter()
        .filter(|f| ringmq::topic::matches(f, &topic))
        .count() as u64
}

/// How many subscribers must get each message of the publisher that gets
/// the most copies: what the drain waits for is this times what was sent
/// (or acknowledged). One for a shared group. Too high only makes the
/// drain wait out `--drain`; too low would stop it early and call
/// messages still on their way lost (with 10 fan-in subscribers the drain
/// stopped at a tenth).
pub fn copies(plan: &Plan) -> u64 {
    if plan.shared.is_some() {
        return 1;
    }
    (0..plan.publishers.max(1))
        .map(|p| {
            (0..plan.subscribers)
                .filter(|&s| matching(plan, s, p) > 0)
                .count() as u64
        })
        .max()
        .unwrap_or(0)
}

async fn pace(plan: &Plan, share_len: usize, n: usize) {
    if plan.ramp > 0 && share_len > 0 {
        let per_worker = (plan.ramp as f64 / plan.threads as f64).max(1e-3);
        glommio::timer::sleep(Duration::from_secs_f64(n.min(1) as f64 / per_worker)).await;
    }
}

/// The idle clients of `connections`, paced by --ramp, at most
/// --connect-window of them between CONNECT and CONNACK at a time: their
/// CONNECT-to-CONNACK latencies and the clients that connected.
async fn connect_idle(
    plan: &Plan,
    ctl: &Arc<Control>,
    share: &Share,
) -> (Histogram<u64>, Vec<Client>) {
    let window = Rc::new(glommio::sync::Semaphore::new(plan.connect_window as u64));
    let done = Rc::new(RefCell::new((histogram(), Vec::new())));
    let shared_plan = Rc::new(plan.clone());
    let mut tasks = Vec::with_capacity(share.subs.len());
    for (n, &j) in share.subs.iter().enumerate() {
        pace(plan, share.subs.len(), n).await;
        let Ok(permit) = window.acquire_static_permit(1).await else {
            break;
        };
        let (plan, ctl, done) = (shared_plan.clone(), ctl.clone(), done.clone());
        tasks.push(glommio::spawn_local(async move {
            let id = format!("{}-s{j}", plan.client_prefix);
            let t = Instant::now();
            match connect(&plan, &id, !plan.persistent, Rc::new(Idle)).await {
                Ok((c, _)) => {
                    let mut d = done.borrow_mut();
                    let _ = d.0.record((t.elapsed().as_micros() as u64).max(1));
                    d.1.push(c);
                }
                Err(e) => ctl.fail(e),
            }
            ctl.subs_ready.fetch_add(1, Ordering::AcqRel);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await;
    }
    Rc::try_unwrap(done)
        .map_err(|_| ())
        .expect("every connect task ended")
        .into_inner()
}

async fn worker(plan: Plan, ctl: Arc<Control>, k: usize, share: Share) -> WorkerResult {
    let latency = Rc::new(RefCell::new(histogram()));
    let mut connect_hist = histogram();
    let mut connected = 0;
    let mut subs = Vec::new();
    let mut held = Vec::new();

    // Idle clients, or subscribers paced by --ramp.
    let subscribers: &[usize] = if plan.scenario == Scenario::Connections {
        (connect_hist, held) = connect_idle(&plan, &ctl, &share).await;
        connected = held.len();
        &[]
    } else {
        &share.subs
    };
    for (n, &j) in subscribers.iter().enumerate() {
        pace(&plan, subscribers.len(), n).await;
        let id = format!("{}-s{j}", plan.client_prefix);
        let t = Instant::now();
        let role = Rc::new(Subscriber {
            closed: Cell::new(false),
            log: RefCell::new(SubscriberLog::new()),
            latency: latency.clone(),
            subacked: Cell::new(false),
            waker: Cell::new(None),
            received: Cell::new(0),
            unique: Cell::new(0),
            ctl: ctl.clone(),
            worker: k,
        });
        if plan.scenario == Scenario::Backlog {
            // Start from an empty session, then leave a persistent one behind.
            if let Ok((c, _)) = connect(&plan, &id, true, Rc::new(Idle)).await {
                c.out.push(&Packet::Disconnect(Default::default()));
                c.out.close();
            }
        }
        match connect(&plan, &id, !plan.persistent, role.clone()).await {
            Ok((c, _)) => {
                let _ = connect_hist.record((t.elapsed().as_micros() as u64).max(1));
                connected += 1;
                c.out.push(&subscribe_packet(&plan, j));
                role.until(|| role.subacked.get() || c.out.is_closed())
                    .await;
                if plan.scenario == Scenario::Backlog {
                    // Offline only once the broker has taken the DISCONNECT
                    // (it closes the connection then): a publish that came
                    // first would go to the client, not to the backlog.
                    c.out.push(&Packet::Disconnect(Default::default()));
                    let _ = glommio::timer::timeout(Duration::from_secs(5), async {
                        role.until(|| role.closed.get()).await;
                        Ok(())
                    })
                    .await;
                    c.out.close();
                } else {
                    held.push(c);
                }
                subs.push((j, role));
            }
            Err(e) => ctl.fail(e),
        }
        ctl.subs_ready.fetch_add(1, Ordering::AcqRel);
    }

    // Publishers.
    wait_phase(&ctl, phase::CONNECT_PUBLISHERS).await;
    let mut pubs = Vec::new();
    for &i in &share.pubs {
        let role = Rc::new(Publisher {
            window: glommio::sync::Semaphore::new(plan.inflight as u64),
            acked: Cell::new(0),
            read_closed: Cell::new(false),
            ctl: ctl.clone(),
            worker: k,
        });
        let id = format!("{}-p{i}", plan.client_prefix);
        match connect(&plan, &id, true, role.clone()).await {
            Ok((c, _)) => {
                connected += 1;
                pubs.push((i, c, role));
            }
            Err(e) => ctl.fail(e),
        }
        ctl.pubs_ready.fetch_add(1, Ordering::AcqRel);
    }
    wait_phase(&ctl, phase::PUBLISH).await;
    let tasks: Vec<_> = pubs
        .into_iter()
        .map(|(i, c, role)| {
            let plan = plan.clone();
            let ctl = ctl.clone();
            glommio::spawn_local(async move {
                let sent = publish(&plan, &ctl, k, i, &c.out, &role).await;
                // Wait for the acknowledgements (at most --drain).
                let deadline = Instant::now() + plan.drain;
                // Until the reader ends, not the writer: acknowledgements
                // read after a write failed still count (a killed broker).
                while role.acked.get() < sent
                    && plan.qos != QoS::AtMostOnce
                    && !role.read_closed.get()
                    && Instant::now() < deadline
                {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                ctl.pubs_done.fetch_add(1, Ordering::AcqRel);
                c.out.push(&Packet::Disconnect(Default::default()));
                c.out.close();
                (i, sent, role.acked.get())
            })
        })
        .collect();
    let mut published = Vec::new();
    for t in tasks {
        published.push(t.await);
    }

    // The backlog subscriber comes back.
    // (--leave-backlog: never; STOP comes after RECONNECT, so waiting for
    // it would bring the subscriber back at the end and take a window.)
    if plan.scenario == Scenario::Backlog && !subs.is_empty() && !plan.leave_backlog {
        wait_phase(&ctl, phase::RECONNECT).await;
        for (j, role) in &subs {
            let id = format!("{}-s{j}", plan.client_prefix);
            ctl.reconnected_at.store(ctl.now_ns(), Ordering::Release);
            match connect(&plan, &id, false, role.clone()).await {
                Ok((c, _)) => held.push(c),
                Err(e) => ctl.fail(e),
            }
        }
        // After a restart, what must come back is what was acknowledged
        // (messages sent but not acknowledged may come too, or not).
        // Every backlog subscriber gets every message.
        let mine = subs.len() as u64;
        let want = if plan.restart_cmd.is_some() {
            ctl.totals().1 * mine
        } else {
            plan.count.unwrap_or(0) * plan.publishers as u64 * mine
        };
        let received = || subs.iter().map(|(_, r)| r.unique.get()).sum::<u64>();
        while ctl.phase() < phase::STOP {
            if received() >= want {
                ctl.drained_at.store(ctl.now_ns(), Ordering::Release);
                break;
            }
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        if plan.restart_cmd.is_some() {
            // Duplicates count towards `want`: wait for a quiet 500 ms, so
            // that whatever is still on its way is counted, not called lost.
            let mut last = (received(), Instant::now());
            while ctl.phase() < phase::STOP && last.1.elapsed() < Duration::from_millis(500) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                if received() != last.0 {
                    last = (received(), Instant::now());
                }
            }
            ctl.drained_at.store(ctl.now_ns(), Ordering::Release);
        }
    }

    // Hold until the end (idle clients ping so long holds stay connected).
    let mut last_ping = Instant::now();
    while ctl.phase() < phase::STOP {
        glommio::timer::sleep(Duration::from_millis(5)).await;
        if last_ping.elapsed() > Duration::from_secs(30) {
            last_ping = Instant::now();
            for c in &held {
                c.out.push(&Packet::PingReq);
            }
        }
    }
    for c in &held {
        c.out.push(&Packet::Disconnect(Default::default()));
        c.out.close();
    }
    glommio::timer::sleep(Duration::from_millis(20)).await;
    let logs = subs
        .into_iter()
        .map(|(j, role)| (j, role.log.take()))
        .collect();
    let latency = latency.borrow().clone();
    WorkerResult {
        latency,
        connect: connect_hist,
        logs,
        published,
        connected,
    }
}

pub(crate) fn subscribe_packet(plan: &Plan, j: usize) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: Default::default(),
        filters: filters_of(plan, j)
            .into_iter()
            .map(|f| SubscribeFilter {
                filter: MqttStr::try_from(match &plan.shared {
                    Some(g) => format!("$share/{g}/{f}"),
                    None => f,
                })
                .unwrap_or_default(),
                options: SubscriptionOptions {
                    qos: plan.qos,
                    ..Default::default()
                },
            })
            .collect(),
    })
}

/// Publishes until the count or the phase says stop; returns how many were sent.
async fn publish(
    plan: &Plan,
    ctl: &Control,
    worker: usize,
    i: usize,
    out: &Outbox,
    role: &Publisher,
) -> u64 {
    let topic = MqttStr::try_from(topic_of(plan, i)).unwrap_or_default();
    let started = Instant::now();
    let interval = (plan.rate > 0).then(|| Duration::from_secs_f64(1.0 / plan.rate as f64));
    let mut next_id: u16 = 0;
    let mut seq: u64 = 0;
    let padding = vec![0u8; plan.payload - STAMP_BYTES];
    loop {
        match plan.count {
            Some(c) if seq >= c => break,
            None if ctl.phase() >= phase::STOP_PUBLISHING => break,
            _ => {}
        }
        if out.is_closed() {
            if !ctl.killed.load(Ordering::Acquire) {
                ctl.fail(format!("publisher {i}: connection closed"));
            }
            break;
        }
        if let Some(iv) = interval {
            let due = started + iv.mul_f64(seq as f64);
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
            }
        }
        let packet_id = if plan.qos == QoS::AtMostOnce {
            None
        } else {
            if role.window.acquire(1).await.is_err() {
                break;
            }
            next_id = next_id % 65_535 + 1;
            PacketId::new(next_id)
        };
        let mut payload = BytesMut::with_capacity(plan.payload);
        payload.put_u32_le(i as u32);
        payload.put_u64_le(seq);
        payload.put_u64_le(ctl.now_ns());
        payload.extend_from_slice(&padding);
        let mut p = Publish::new(topic.clone(), payload.freeze());
        p.qos = plan.qos;
        p.packet_id = packet_id;
        out.push(&Packet::Publish(p));
        seq += 1;
        ctl.progress[worker].sent.fetch_add(1, Ordering::Relaxed);
        out.wait_space().await;
        if seq.is_multiple_of(16) {
            // Let this worker's readers (acks, deliveries) run.
            futures_lite::future::yield_now().await;
        }
    }
    seq
}
