//! ringmq-bench's own correctness: loss, duplicate and reorder detection
//! against a fake broker that misbehaves on purpose, and every scenario for
//! about a second against a real (in-process) ringmq.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use ringmq::protocol::{Ack, Codec, ConnAck, Packet, ProtocolVersion, QoS, ReasonCode, SubAck};

/// How the fake broker mangles the stream of forwarded messages (the n-th
/// message it receives, counting from 1).
#[derive(Clone, Copy, Default)]
struct Faults {
    drop_every: u64,
    dup_every: u64,
    swap_every: u64,
    /// Act as one shared subscription: each message to one subscriber in
    /// turn, and a duplicate to the next one.
    shared: bool,
    /// Send a subscriber one copy per matching filter (as Mosquitto does
    /// for overlapping subscriptions), not one per message.
    per_filter: bool,
}

/// A subscriber's socket and its filters.
type Subscribers = Mutex<Vec<(TcpStream, Vec<String>)>>;

/// A tiny broker: accepts, acknowledges, and forwards every PUBLISH to every
/// subscriber as QoS 0, applying `Faults`.
fn fake_broker(faults: Faults) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let subs: Arc<Subscribers> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let held: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (subs, count, held) = (subs.clone(), count.clone(), held.clone());
            std::thread::spawn(move || serve(stream, faults, &subs, &count, &held));
        }
    });
    addr
}

fn serve(
    mut s: TcpStream,
    f: Faults,
    subs: &Subscribers,
    count: &AtomicU64,
    held: &Mutex<Option<Vec<u8>>>,
) {
    let mut codec = Codec::server(1 << 20);
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 65536];
    loop {
        let n = match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        while let Ok(Some(p)) = codec.decode(&mut buf) {
            let v = codec.version().unwrap_or(ProtocolVersion::V311);
            let mut out = BytesMut::new();
            let reply = match p {
                Packet::Connect(_) => Some(Packet::ConnAck(Box::new(ConnAck {
                    session_present: false,
                    reason: ReasonCode::SUCCESS,
                    properties: Default::default(),
                }))),
                Packet::Subscribe(sub) => {
                    let filters: Vec<String> = sub
                        .filters
                        .iter()
                        .map(|f| {
                            let f = f.filter.as_str();
                            // $share/GROUP/FILTER matches as FILTER.
                            f.strip_prefix("$share/")
                                .and_then(|r| r.split_once('/'))
                                .map_or(f, |(_, rest)| rest)
                                .to_string()
                        })
                        .collect();
                    let n = filters.len();
                    subs.lock()
                        .expect("lock")
                        .push((s.try_clone().expect("clone"), filters));
                    Some(Packet::SubAck(SubAck {
                        packet_id: sub.packet_id,
                        properties: Default::default(),
                        reasons: vec![ReasonCode::GRANTED_QOS_0; n],
                    }))
                }
                Packet::Publish(p) => {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut fwd = p.clone();
                    fwd.qos = QoS::AtMostOnce;
                    fwd.packet_id = None;
                    fwd.dup = false;
                    let mut bytes = BytesMut::new();
                    Packet::Publish(fwd).encode(v, &mut bytes).expect("encode");
                    let mut frames = Vec::new();
                    if f.swap_every > 0 && n.is_multiple_of(f.swap_every) {
                        *held.lock().expect("lock") = Some(bytes.to_vec());
                    } else if f.drop_every == 0 || !n.is_multiple_of(f.drop_every) {
                        frames.push(bytes.to_vec());
                        if f.dup_every > 0 && n.is_multiple_of(f.dup_every) {
                            frames.push(bytes.to_vec());
                        }
                        if let Some(h) = held.lock().expect("lock").take() {
                            frames.push(h);
                        }
                    }
                    let mut subs = subs.lock().expect("lock");
                    for (k, frame) in frames.iter().enumerate() {
                        if f.shared {
                            if !subs.is_empty() {
                                let at = (n as usize + k) % subs.len();
                                let _ = subs[at].0.write_all(frame);
                            }
                        } else {
                            for (sub, filters) in subs.iter_mut() {
                                let matches = filters
                                    .iter()
                                    .filter(|fl| ringmq::topic::matches(fl, p.topic.as_str()))
                                    .count();
                                let copies = if f.per_filter {
                                    matches
                                } else {
                                    matches.min(1)
                                };
                                for _ in 0..copies {
                                    let _ = sub.write_all(frame);
                                }
                            }
                        }
                    }
                    drop(subs);
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::new(id))),
                        (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(Ack::new(id))),
                        _ => None,
                    }
                }
                Packet::PubRel(a) => Some(Packet::PubComp(Ack::new(a.packet_id))),
                Packet::PingReq => Some(Packet::PingResp),
                Packet::Disconnect(_) => return,
                _ => None,
            };
            if let Some(r) = reply {
                r.encode(v, &mut out).expect("encode");
                let _ = s.write_all(&out);
            }
        }
    }
}

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("ringmq-bench runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn field(json: &str, name: &str) -> i64 {
    let key = format!("\"{name}\":");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer in {json}"))
}

#[test]
fn loss_and_duplicates_are_counted_exactly() {
    let addr = fake_broker(Faults {
        drop_every: 10,
        dup_every: 7,
        ..Faults::default()
    })
    .to_string();
    let (ok, out) = bench(&[
        "pairs",
        "--broker",
        &addr,
        "--publishers",
        "1",
        "--qos",
        "1",
        "--count",
        "1000",
        "--threads",
        "1",
        "--drain",
        "1s",
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "acked"), 1000, "{out}");
    assert_eq!(field(&out, "lost"), 100, "{out}");
    // Multiples of 7 that were not dropped (multiples of 70 were).
    assert_eq!(field(&out, "duplicates"), 142 - 14, "{out}");
    assert_eq!(field(&out, "reordered"), 0, "{out}");
}

// Several publishers into several subscribers of one filter, on two worker
// threads: each subscriber expects every message, so every drop counts once
// per subscriber and so does every duplicate; nothing is called lost that
// arrived.
#[test]
fn several_subscribers_are_counted_exactly() {
    let addr = fake_broker(Faults {
        drop_every: 10,
        dup_every: 7,
        ..Faults::default()
    })
    .to_string();
    let (ok, out) = bench(&[
        "fan-in",
        "--broker",
        &addr,
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--qos",
        "1",
        "--count",
        "500",
        "--threads",
        "2",
        "--drain",
        "1s",
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "acked"), 1000, "{out}");
    assert_eq!(field(&out, "expected"), 3000, "{out}");
    // 100 of the broker's 1,000 messages dropped, 128 sent twice: to each
    // of the three subscribers.
    assert_eq!(field(&out, "lost"), 300, "{out}");
    assert_eq!(field(&out, "duplicates"), 3 * (142 - 14), "{out}");
    assert_eq!(field(&out, "received"), 3 * (1000 - 100 + 128), "{out}");
}

// --shared: the subscribers are one group, so a message is expected once
// for all of them; one dropped is lost, one sent to two members a duplicate.
#[test]
fn a_shared_group_is_counted_as_one() {
    let addr = fake_broker(Faults {
        drop_every: 10,
        dup_every: 7,
        shared: true,
        ..Faults::default()
    })
    .to_string();
    let (ok, out) = bench(&[
        "fan-out",
        "--broker",
        &addr,
        "--subscribers",
        "3",
        "--shared",
        "g",
        "--qos",
        "1",
        "--count",
        "999",
        "--threads",
        "1",
        "--drain",
        "1s",
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "acked"), 999, "{out}");
    assert_eq!(field(&out, "expected"), 999, "{out}");
    assert_eq!(field(&out, "lost"), 99, "{out}");
    assert_eq!(field(&out, "duplicates"), 142 - 14, "{out}");
    // 900 forwarded plus 128 duplicates, in turn over three members.
    assert_eq!(field(&out, "received"), 1028, "{out}");
    assert!(field(&out, "received_min_per_member") >= 330, "{out}");
    assert!(field(&out, "received_max_per_member") <= 360, "{out}");
}

// Reordering, seen by one subscriber and by three of one publisher: each
// subscriber counts what it saw.
#[test]
fn reordering_is_counted() {
    let addr = fake_broker(Faults {
        swap_every: 5,
        ..Faults::default()
    })
    .to_string();
    for (scenario, flag, n, subs) in [
        ("pairs", "--publishers", "1", 1),
        ("fan-out", "--subscribers", "3", 3),
    ] {
        let (ok, out) = bench(&[
            scenario,
            "--broker",
            &addr,
            flag,
            n,
            "--count",
            "1001",
            "--threads",
            "2",
            "--drain",
            "1s",
        ]);
        assert!(ok, "{out}");
        assert_eq!(field(&out, "expected"), subs * 1001, "{out}");
        assert_eq!(field(&out, "lost"), 0, "{out}");
        assert_eq!(field(&out, "reordered"), subs * 200, "{out}");
        assert_eq!(field(&out, "duplicates"), 0, "{out}");
    }
}

/// A fan-in run of `pubs` publishers of `count` QoS 1 messages each into
/// two subscribers with `filters`, on two worker threads.
fn fan_in_with_filters(addr: &str, pubs: &str, count: &str, filters: &[&str]) -> String {
    let mut args = vec![
        "fan-in",
        "--broker",
        addr,
        "--publishers",
        pubs,
        "--subscribers",
        "2",
        "--qos",
        "1",
        "--count",
        count,
        "--threads",
        "2",
        "--drain",
        "1s",
    ];
    for f in filters {
        args.extend(["--filter", f]);
    }
    let (ok, out) = bench(&args);
    assert!(ok, "{out}");
    out
}

// Each subscriber holds two overlapping filters, and the broker sends a
// copy per matching filter (as Mosquitto does; MQTT allows it): the second
// copy is an overlap copy, not a duplicate; what the broker duplicated or
// dropped on top is still counted exactly. 1,500 messages: every 10th
// dropped (150), every 7th not dropped sent twice (214 - 21 = 193).
#[test]
fn overlapping_filters_are_counted_apart_from_duplicates() {
    let filters = ["bench/fan-in/#", "bench/fan-in/+"];
    let per_filter = fake_broker(Faults {
        drop_every: 10,
        dup_every: 7,
        per_filter: true,
        ..Faults::default()
    })
    .to_string();
    let out = fan_in_with_filters(&per_filter, "3", "500", &filters);
    assert_eq!(field(&out, "acked"), 1500, "{out}");
    assert_eq!(field(&out, "expected"), 3000, "{out}");
    assert_eq!(field(&out, "lost"), 2 * 150, "{out}");
    // Every message that arrived came twice (once per filter), those sent
    // twice four times: one overlap copy each, two duplicates each.
    assert_eq!(field(&out, "overlap_copies"), 2 * 1350, "{out}");
    assert_eq!(field(&out, "duplicates"), 2 * 2 * 193, "{out}");
    assert_eq!(field(&out, "received"), 2 * (1157 * 2 + 193 * 4), "{out}");

    // The same filters, a broker that sends one copy per subscriber.
    let once = fake_broker(Faults {
        drop_every: 10,
        dup_every: 7,
        ..Faults::default()
    })
    .to_string();
    let out = fan_in_with_filters(&once, "3", "500", &filters);
    assert_eq!(field(&out, "lost"), 2 * 150, "{out}");
    assert_eq!(field(&out, "overlap_copies"), 193 * 2, "{out}");
    assert_eq!(field(&out, "duplicates"), 0, "{out}");
}

// Filters that overlap for one publisher only, and miss another: only the
// matching publishers are expected, and only the doubly matched one's
// second copies are overlap copies.
#[test]
fn partly_overlapping_filters_expect_only_what_matches() {
    let addr = fake_broker(Faults {
        per_filter: true,
        ..Faults::default()
    })
    .to_string();
    let out = fan_in_with_filters(&addr, "3", "300", &["bench/fan-in/+", "bench/fan-in/1"]);
    assert_eq!(field(&out, "expected"), 2 * 900, "{out}");
    assert_eq!(field(&out, "lost"), 0, "{out}");
    assert_eq!(field(&out, "overlap_copies"), 2 * 300, "{out}");
    assert_eq!(field(&out, "duplicates"), 0, "{out}");
    assert_eq!(field(&out, "received"), 2 * 1200, "{out}");
    let out = fan_in_with_filters(&addr, "3", "300", &["bench/fan-in/0", "bench/fan-in/2"]);
    assert_eq!(field(&out, "expected"), 2 * 600, "{out}");
    assert_eq!(field(&out, "lost"), 0, "{out}");
    assert_eq!(field(&out, "received"), 2 * 600, "{out}");
    assert_eq!(field(&out, "overlap_copies"), 0, "{out}");
}

/// The sockets whose CONNECT waits for an answer, and the most there were.
type Held = Mutex<(Vec<TcpStream>, usize)>;

/// A broker that answers CONNECTs only in batches of `batch` (or after 5 s
/// without one), and records the most it ever held unanswered.
fn batching_broker(batch: usize) -> (SocketAddr, Arc<Held>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state: Arc<Held> = Arc::default();
    let answer = |held: &mut Vec<TcpStream>| {
        let mut out = BytesMut::new();
        Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }))
        .encode(ProtocolVersion::V311, &mut out)
        .expect("encode");
        for mut s in held.drain(..) {
            let _ = s.write_all(&out);
        }
    };
    let st = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let st = st.clone();
            std::thread::spawn(move || {
                let mut codec = Codec::server(1 << 20);
                let mut buf = BytesMut::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&tmp[..n]);
                    if let Ok(Some(Packet::Connect(_))) = codec.decode(&mut buf) {
                        let mut g = st.lock().expect("lock");
                        g.0.push(stream.try_clone().expect("clone"));
                        g.1 = g.1.max(g.0.len());
                        if g.0.len() == batch {
                            answer(&mut g.0);
                        }
                    }
                }
            });
        }
    });
    let st = state.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        answer(&mut st.lock().expect("lock").0);
    });
    (addr, state)
}

/// `--connect-window` keeps that many CONNECTs in flight per worker: a
/// broker that answers only once 8 are waiting sees 2 threads of 4 at once
/// (one at a time would give it 2, each pair answered by the 5 s release),
/// and never more.
#[test]
fn the_connect_window_bounds_the_connects_in_flight() {
    let (addr, state) = batching_broker(8);
    let addr = addr.to_string();
    let (ok, out) = bench(&[
        "connections",
        "--broker",
        &addr,
        "--subscribers",
        "40",
        "--threads",
        "2",
        "--connect-window",
        "4",
        "--duration",
        "100ms",
    ]);
    assert!(ok, "{out}");
    assert_eq!(field(&out, "connected"), 40, "{out}");
    assert_eq!(
        state.lock().expect("lock").1,
        8,
        "most CONNECTs held at once"
    );
}

#[test]
fn nonsense_flags_are_refused() {
    for args in [
        vec!["pairs", "--payload", "10"],
        vec!["pairs", "--qos", "3"],
        vec!["pairs", "--publishers", "2", "--subscribers", "3"],
        vec!["backlog", "--qos", "0"],
        vec!["fan-out", "--publishers", "4"],
        vec!["slow-consumer", "--publishers", "2"],
        vec!["backlog", "--kill-after", "1s"],
        vec!["pairs", "--restart-cmd", "ringmq"],
        vec!["backlog", "--leave-backlog", "--restart-cmd", "ringmq"],
        vec!["pairs", "--shared", "g"],
        vec!["fan-out", "--shared", "a/b"],
        vec!["fan-out", "--shared", "g", "--filter", "a", "--filter", "b"],
        vec!["fan-in", "--filter", "a/#/b"],
        vec!["nonsense"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn connection_failure_exits_non_zero() {
    // A port nobody listens on: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (ok, out) = bench(&["latency", "--broker", &port.to_string(), "--duration", "1s"]);
    assert!(!ok, "{out}");
}

/// Every scenario for about a second against ringmq itself.
#[test]
fn every_scenario_runs_against_ringmq() {
    let config = ringmq::config::Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        cores: 2,
        sys_interval: None,
        ..Default::default()
    };
    let broker = ringmq::broker::start(config).expect("broker");
    let addr = broker.local_addrs()[0].to_string();
    let dir = std::env::temp_dir().join(format!("ringmq-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let svg = dir.join("lat.svg");
    let hgrm = dir.join("lat.hgrm");
    for (scenario, extra) in [
        ("fan-in", vec!["--publishers", "4", "--rate", "2000"]),
        (
            "fan-out",
            vec!["--subscribers", "4", "--rate", "2000", "--qos", "1"],
        ),
        // Four members of one shared subscription on both shards: each
        // message reaches the group exactly once.
        (
            "fan-out",
            vec![
                "--subscribers",
                "4",
                "--shared",
                "g",
                "--rate",
                "2000",
                "--qos",
                "1",
            ],
        ),
        (
            "pairs",
            vec!["--publishers", "2", "--qos", "2", "--rate", "1000"],
        ),
        ("latency", vec!["--rate", "1000", "--mqtt", "5"]),
        (
            "connections",
            vec!["--subscribers", "200", "--ramp", "2000"],
        ),
        (
            "connections",
            vec!["--subscribers", "200", "--connect-window", "32"],
        ),
        ("backlog", vec!["--count", "2000"]),
        // Several subscribers to one filter: the drain waits for every
        // copy (it used to stop at the first subscriber's share and call
        // the rest lost).
        (
            "fan-in",
            vec![
                "--publishers",
                "3",
                "--subscribers",
                "3",
                "--rate",
                "2000",
                "--qos",
                "1",
            ],
        ),
        ("backlog", vec!["--count", "1000", "--subscribers", "3"]),
        // Overlapping filters on each subscriber: ringmq sends each message
        // once per subscriber (the copy MQTT requires), so no copies more.
        (
            "fan-in",
            vec![
                "--publishers",
                "2",
                "--subscribers",
                "2",
                "--filter",
                "bench/fan-in/#",
                "--filter",
                "bench/fan-in/+",
                "--rate",
                "2000",
                "--qos",
                "1",
            ],
        ),
        // Beside a subscriber that never reads, the healthy ones lose nothing
        // (and the stuck one is not counted).
        (
            "slow-consumer",
            vec!["--subscribers", "4", "--rate", "2000", "--payload", "1000"],
        ),
    ] {
        let mut args = vec![
            scenario,
            "--broker",
            &addr,
            "--duration",
            "1s",
            "--threads",
            "2",
        ];
        let several = extra.contains(&"--subscribers") && scenario != "slow-consumer";
        args.extend(extra);
        if scenario == "latency" {
            args.extend([
                "--plot",
                svg.to_str().expect("utf-8"),
                "--hdr-out",
                hgrm.to_str().expect("utf-8"),
            ]);
        }
        let (ok, out) = bench(&args);
        assert!(ok, "{scenario}: {out}");
        if scenario == "connections" {
            assert_eq!(field(&out, "connected"), 200, "{out}");
            continue;
        }
        assert!(field(&out, "received") > 0, "{scenario}: {out}");
        if several {
            assert_eq!(
                field(&out, "received"),
                field(&out, "expected"),
                "{scenario}: {out}"
            );
        }
        // Rate-limited QoS 0 on loopback loses nothing either; QoS 1/2 must not.
        assert_eq!(field(&out, "lost"), 0, "{scenario}: {out}");
        assert_eq!(field(&out, "duplicates"), 0, "{scenario}: {out}");
    }
    let plot = std::fs::read_to_string(&svg).expect("svg");
    assert!(plot.contains("<polyline"));
    // The plot says what it is.
    assert!(
        plot.contains("<title>ringmq-bench latency against"),
        "{plot}"
    );
    assert!(std::fs::read_to_string(&hgrm)
        .expect("hgrm")
        .contains("Percentile"));
    broker.shutdown();
    broker.join();
}

/// The `ringmq` binary beside this one (`cargo test --workspace` builds it).
fn ringmq_bin() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_ringmq-bench")).with_file_name("ringmq");
    assert!(
        p.exists(),
        "{} is missing: build it (cargo build --bin ringmq; cargo test --workspace does)",
        p.display()
    );
    p
}

/// `backlog --restart-cmd --kill-after` kills the broker with SIGKILL while
/// messages are in flight, starts it again and counts what was
/// acknowledged but never delivered: nothing for ringmq with a data dir,
/// everything acknowledged for ringmq in memory (so the count can fail).
#[test]
fn kill_and_restart_counts_acknowledged_but_lost() {
    let dir = std::env::temp_dir().join(format!("rb-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    for (store, lost_all) in [
        (format!("--data-dir {} --sync none", dir.display()), false),
        ("--in-memory".to_string(), true),
    ] {
        let cmd = format!(
            "{} --listen {addr} --cores 2 --max-queued-messages 1000000 {store}",
            ringmq_bin().display()
        );
        let (ok, out) = bench(&[
            "backlog",
            "--broker",
            &addr,
            "--count",
            "100000",
            "--kill-after",
            "300ms",
            "--restart-cmd",
            &cmd,
            "--threads",
            "1",
            "--drain",
            "2s",
        ]);
        assert!(ok, "{out}");
        let acked = field(&out, "acked");
        assert!(acked > 0, "{out}");
        assert!(out.contains("\"killed_after_seconds\":0."), "{out}");
        let want = if lost_all { acked } else { 0 };
        assert_eq!(field(&out, "lost"), want, "{store}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tls --cafile` and `--ws`: the bench speaks TLS, WebSocket and both
/// to ringmq's listeners, with certificates made by the README's openssl
/// commands; without --cafile it refuses to start, and with a CA that did
/// not sign the broker it fails.
#[test]
fn tls_and_websocket_run_against_ringmq() {
    let dir = std::env::temp_dir().join(format!("ringmq-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for cmd in [
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=ringmq-ca -keyout ca.key -out ca.pem",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out server.pem",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=other -keyout other.key -out other.pem",
    ] {
        let out = Command::new("bash")
            .args(["-c", cmd])
            .current_dir(&dir)
            .output()
            .expect("openssl runs (tools/test.sh installs it)");
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = ringmq::config::Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        listen_tls: vec!["127.0.0.1:0".parse().expect("addr")],
        listen_ws: vec!["127.0.0.1:0".parse().expect("addr")],
        listen_wss: vec!["127.0.0.1:0".parse().expect("addr")],
        tls: Some(ringmq::transport::tls::TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: None,
            require_certificate: false,
            use_identity_as_username: false,
        }),
        cores: 2,
        sys_interval: None,
        ..Default::default()
    };
    let broker = ringmq::broker::start(config).expect("broker");
    let addr = broker.tls_addrs()[0].to_string();
    let ws = broker.ws_addrs()[0].to_string();
    let wss = broker.wss_addrs()[0].to_string();
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let pairs = vec!["--publishers", "2", "--qos", "1", "--rate", "1000"];
    for (scenario, to, transport, extra) in [
        ("pairs", &addr, vec!["--tls", "--cafile", ca], pairs.clone()),
        ("pairs", &ws, vec!["--ws"], pairs.clone()),
        (
            "pairs",
            &wss,
            vec!["--ws", "--tls", "--cafile", ca],
            pairs.clone(),
        ),
        (
            "connections",
            &addr,
            vec!["--tls", "--cafile", ca],
            vec!["--subscribers", "50", "--ramp", "500"],
        ),
    ] {
        let mut args = vec![
            scenario,
            "--broker",
            to,
            "--duration",
            "1s",
            "--threads",
            "2",
        ];
        args.extend(transport);
        args.extend(extra);
        let (ok, out) = bench(&args);
        assert!(ok, "{scenario}: {out}");
        if scenario == "connections" {
            assert_eq!(field(&out, "connected"), 50, "{out}");
        } else {
            assert!(field(&out, "received") > 0, "{out}");
            assert_eq!(field(&out, "lost"), 0, "{out}");
        }
    }
    let (ok, out) = bench(&["latency", "--broker", &addr, "--tls"]);
    assert!(!ok && out.contains("--cafile"), "{out}");
    let other = dir.join("other.pem");
    let (ok, _) = bench(&[
        "latency",
        "--broker",
        &addr,
        "--tls",
        "--cafile",
        other.to_str().expect("utf-8"),
        "--duration",
        "1s",
    ]);
    assert!(!ok, "trusted a broker its CA did not sign");
    broker.shutdown();
    broker.join();
    let _ = std::fs::remove_dir_all(&dir);
}
