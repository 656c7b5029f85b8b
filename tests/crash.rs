//! The crash test: the real binary with 2 shards, QoS 1 and QoS 2
//! publishers and persistent subscribers on both shards (some online, some
//! offline), killed with SIGKILL at random moments 20 times and restarted
//! on the same data directory. Every acknowledged message (PUBACK for QoS
//! 1, PUBREC for QoS 2) must reach every persistent subscriber: QoS 1 at
//! least once, QoS 2 exactly once, and in order per publisher.
//!
//! The clients speak MQTT 3.1.1 through `mqttbytes`, a codec independent of
//! ringmq's, over blocking sockets, and keep their own session state across
//! reconnections (a QoS 2 receiver remembers the packet ids it has
//! answered PUBREC to until PUBREL, as the spec's "method B" does).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{id_on_shard, BinBroker, TempDir};
use mqttbytes::v4::{self, Packet};
use mqttbytes::QoS;

const ROUNDS: usize = 20;

/// A blocking MQTT 3.1.1 connection.
struct Mq {
    stream: TcpStream,
    buf: BytesMut,
}

impl Mq {
    fn connect(addr: SocketAddr, id: &str, clean: bool) -> Option<(Mq, bool)> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_nodelay(true).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        let mut mq = Mq {
            stream,
            buf: BytesMut::new(),
        };
        let mut c = v4::Connect::new(id);
        c.clean_session = clean;
        c.keep_alive = 30;
        mq.send(|b| c.write(b)).ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match mq.recv() {
                Ok(Some(Packet::ConnAck(a))) => return Some((mq, a.session_present)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn send(
        &mut self,
        f: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
    ) -> std::io::Result<()> {
        let mut b = BytesMut::new();
        f(&mut b).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.stream.write_all(&b)
    }

    /// The next packet, `None` after 100 ms of silence, an error once closed.
    fn recv(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            match v4::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Ok(Some(p)),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What one publisher got acknowledged, across every round.
#[derive(Default)]
struct PubLog {
    next_seq: u64,
    acked: BTreeSet<u64>,
}

/// Publishes `name:seq` to `crash/q{qos}/{name}` with up to 16 in flight
/// until the broker dies or `stop` is set.
fn publisher(
    addr: SocketAddr,
    name: String,
    qos: QoS,
    log: Arc<Mutex<PubLog>>,
    stop: Arc<AtomicBool>,
) {
    let Some((mut mq, _)) = Mq::connect(addr, &name, true) else {
        return;
    };
    let topic = format!("crash/q{}/{name}", qos as u8);
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    let mut awaiting_comp: HashSet<u16> = HashSet::new();
    let mut next_pid: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        while inflight.len() + awaiting_comp.len() < 16 {
            let seq = {
                let mut l = log.lock().unwrap();
                l.next_seq += 1;
                l.next_seq
            };
            loop {
                next_pid = next_pid.wrapping_add(1).max(1);
                if !inflight.contains_key(&next_pid) && !awaiting_comp.contains(&next_pid) {
                    break;
                }
            }
            let mut p = v4::Publish::new(&topic, qos, format!("{name}:{seq}"));
            p.pkid = next_pid;
            if mq.send(|b| p.write(b)).is_err() {
                return;
            }
            inflight.insert(next_pid, seq);
        }
        match mq.recv() {
            Ok(Some(Packet::PubAck(a))) => {
                if let Some(seq) = inflight.remove(&a.pkid) {
                    log.lock().unwrap().acked.insert(seq);
                }
            }
            Ok(Some(Packet::PubRec(r))) => {
                if let Some(seq) = inflight.remove(&r.pkid) {
                    log.lock().unwrap().acked.insert(seq);
                    awaiting_comp.insert(r.pkid);
                }
                let rel = v4::PubRel::new(r.pkid);
                if mq.send(|b| rel.write(b)).is_err() {
                    return;
                }
            }
            Ok(Some(Packet::PubComp(c))) => {
                awaiting_comp.remove(&c.pkid);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = mq.send(|b| v4::Disconnect.write(b));
}

/// A persistent subscriber's view, kept across its connections.
#[derive(Default)]
struct SubLog {
    /// Per publisher: every seq received, in order (duplicates included).
    got: BTreeMap<String, Vec<u64>>,
    /// QoS 2 packet ids answered with PUBREC, not yet released.
    awaiting_rel: HashSet<u16>,
    /// QoS 2 deliveries received twice (must stay 0).
    qos2_dups: u64,
}

/// Connects `id` (subscribing on its first connection) and takes
/// everything it is sent until the broker dies, `stop` is set, or (with
/// `until_quiet`) nothing came for that long.
fn subscriber(
    addr: SocketAddr,
    id: String,
    first: bool,
    log: Arc<Mutex<SubLog>>,
    stop: Arc<AtomicBool>,
    until_quiet: Option<Duration>,
) {
    let Some((mut mq, present)) = Mq::connect(addr, &id, false) else {
        return;
    };
    if first {
        let mut s = v4::Subscribe::new("crash/q1/#", QoS::AtLeastOnce);
        s.add("crash/q2/#".into(), QoS::ExactlyOnce);
        s.pkid = 1;
        if mq.send(|b| s.write(b)).is_err() {
            return;
        }
    } else {
        assert!(present, "{id}: the session survived the restart");
    }
    let mut quiet_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let p = match mq.recv() {
            Ok(Some(p)) => p,
            Ok(None) => {
                if until_quiet.is_some_and(|q| quiet_since.elapsed() > q) {
                    break;
                }
                continue;
            }
            Err(_) => return,
        };
        quiet_since = Instant::now();
        match p {
            Packet::Publish(p) => {
                let text = String::from_utf8_lossy(&p.payload).to_string();
                let (name, seq) = text.split_once(':').expect("name:seq");
                let seq: u64 = seq.parse().expect("seq");
                let mut l = log.lock().unwrap();
                let fresh = match p.qos {
                    QoS::ExactlyOnce => {
                        let fresh = l.awaiting_rel.insert(p.pkid);
                        if !fresh && !p.dup {
                            panic!("{id}: packet id {} reused before PUBREL", p.pkid);
                        }
                        fresh
                    }
                    _ => true,
                };
                if fresh {
                    l.got.entry(name.to_string()).or_default().push(seq);
                }
                drop(l);
                let sent = match p.qos {
                    QoS::AtLeastOnce => {
                        let a = v4::PubAck::new(p.pkid);
                        mq.send(|b| a.write(b))
                    }
                    QoS::ExactlyOnce => {
                        let r = v4::PubRec::new(p.pkid);
                        mq.send(|b| r.write(b))
                    }
                    QoS::AtMostOnce => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
            Packet::PubRel(r) => {
                log.lock().unwrap().awaiting_rel.remove(&r.pkid);
                let c = v4::PubComp::new(r.pkid);
                if mq.send(|b| c.write(b)).is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
    let _ = mq.send(|b| v4::Disconnect.write(b));
}

/// A small deterministic generator (seeded from the clock, printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn crash_run(sync: &str) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test --sync {sync}: seed {seed}");
    let mut rng = Lcg(seed);
    let dir = TempDir::new("crash");
    let args = ["--cores", "2", "--sync", sync, "--segment-size", "1048576"];
    // Two QoS 1 and two QoS 2 publishers, one of each per shard.
    let pubs: Vec<(String, QoS)> = vec![
        (id_on_shard("p1a", 0, 2), QoS::AtLeastOnce),
        (id_on_shard("p1b", 1, 2), QoS::AtLeastOnce),
        (id_on_shard("p2a", 0, 2), QoS::ExactlyOnce),
        (id_on_shard("p2b", 1, 2), QoS::ExactlyOnce),
    ];
    // Four persistent subscribers, two per shard.
    let subs: Vec<String> = vec![
        id_on_shard("sa", 0, 2),
        id_on_shard("sb", 1, 2),
        id_on_shard("sc", 0, 2),
        id_on_shard("sd", 1, 2),
    ];
    let pub_logs: Vec<Arc<Mutex<PubLog>>> = pubs.iter().map(|_| Arc::default()).collect();
    let sub_logs: Vec<Arc<Mutex<SubLog>>> = subs.iter().map(|_| Arc::default()).collect();

    // Round 0 creates the sessions and subscriptions.
    {
        let b = BinBroker::spawn_in(&dir.0, &args);
        let stop = Arc::new(AtomicBool::new(false));
        for (i, id) in subs.iter().enumerate() {
            subscriber(
                b.addr,
                id.clone(),
                true,
                sub_logs[i].clone(),
                stop.clone(),
                Some(Duration::from_millis(300)),
            );
        }
    }
    for round in 0..ROUNDS {
        let mut b = BinBroker::spawn_in(&dir.0, &args);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // Half the subscribers are online this round, the others offline.
        for (i, id) in subs.iter().enumerate() {
            if (i + round) % 2 == 0 {
                let (addr, id, log, stop) = (b.addr, id.clone(), sub_logs[i].clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    subscriber(addr, id, false, log, stop, None)
                }));
            }
        }
        for (i, (name, qos)) in pubs.iter().enumerate() {
            let (addr, name, qos, log, stop) = (
                b.addr,
                name.clone(),
                *qos,
                pub_logs[i].clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                publisher(addr, name, qos, log, stop)
            }));
        }
        std::thread::sleep(Duration::from_millis(100 + rng.next(400)));
        b.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("client thread");
        }
    }
    // The last start: every subscriber takes what is left.
    let b = BinBroker::spawn_in(&dir.0, &args);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = subs
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (addr, id, log, stop) = (b.addr, id.clone(), sub_logs[i].clone(), stop.clone());
            std::thread::spawn(move || {
                subscriber(addr, id, false, log, stop, Some(Duration::from_secs(2)))
            })
        })
        .collect();
    for t in threads {
        t.join().expect("subscriber thread");
    }
    let log = b.log();
    drop(b);

    let mut acked_total = 0;
    for (p, (name, qos)) in pubs.iter().enumerate() {
        let acked = pub_logs[p].lock().unwrap().acked.clone();
        acked_total += acked.len();
        for (s, sub) in subs.iter().enumerate() {
            let l = sub_logs[s].lock().unwrap();
            let got = l.got.get(name).cloned().unwrap_or_default();
            let have: BTreeSet<u64> = got.iter().copied().collect();
            let lost: Vec<u64> = acked.difference(&have).copied().collect();
            assert!(
                lost.is_empty(),
                "--sync {sync}: {sub} lost {} of {} acknowledged messages of {name} \
                 (first: {:?}); seed {seed}; broker log tail: {:?}",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(10)],
                &log[log.len().saturating_sub(20)..]
            );
            if *qos == QoS::ExactlyOnce {
                assert_eq!(have.len(), got.len(), "{sub}: QoS 2 from {name} twice");
                assert_eq!(l.qos2_dups, 0);
            }
            // In order per publisher: first receipts only ever go up.
            let mut seen = HashSet::new();
            let firsts: Vec<u64> = got.iter().copied().filter(|s| seen.insert(*s)).collect();
            assert!(
                firsts.windows(2).all(|w| w[0] < w[1]),
                "--sync {sync}: {sub} got {name}'s messages out of order; seed {seed}"
            );
        }
    }
    // The run must have exercised something: thousands acknowledged.
    assert!(
        acked_total > 1000,
        "only {acked_total} messages acknowledged in {ROUNDS} rounds"
    );
    eprintln!("crash test --sync {sync}: {acked_total} acknowledged, none lost");
}

#[test]
fn nothing_acknowledged_is_lost_across_kill_9_sync_none() {
    crash_run("none");
}

#[test]
fn nothing_acknowledged_is_lost_across_kill_9_sync_always() {
    crash_run("always");
}
