//! The broker under abuse: what one client (or an unlucky operator) does must
//! not end another's session, leak into `$SYS`, or go unanswered.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Disconnect, LastWill, Packet,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode, WillProperties,
};

/// A timer armed for an earlier session in a reused slot must not end the
/// session that lives there now: the first session's 1 s expiry timer is
/// still armed when a clean start replaces it by one with a 60 s expiry.
// [v5:MQTT-3.1.2-23] the session lives until its (new) expiry.
#[test]
fn earlier_sessions_timer_never_ends_a_later_one() {
    let b = start(2);
    let mut short = connect_packet(V5, "reused-slot", false);
    short.properties.session_expiry_interval = Some(1);
    let (c, _) = Raw::connect_with(b.addr, short);
    drop(c);
    b.wait_connections(0);
    let mut long = connect_packet(V5, "reused-slot", true);
    long.properties.session_expiry_interval = Some(60);
    let (mut c, ack) = Raw::connect_with(b.addr, long.clone());
    assert!(!ack.session_present);
    c.subscribe(1, &[("slot/t", QoS::AtLeastOnce)]);
    drop(c);
    b.wait_connections(0);
    // Past the first session's expiry (ticks run every 100 ms).
    std::thread::sleep(Duration::from_millis(1600));
    long.clean_start = false;
    let (_c, ack) = Raw::connect_with(b.addr, long);
    assert!(
        ack.session_present,
        "the 60 s session was ended by a 1 s timer"
    );
}

/// The same for a will: a delayed will armed for the earlier session must
/// not publish the later session's will early.
// [v5:MQTT-3.1.3-9] the will waits for its delay.
#[test]
fn earlier_sessions_will_timer_never_fires_a_later_will() {
    let b = start(2);
    let (mut watcher, _) = Raw::connect(b.addr, V311, "will-watch", true);
    watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]);
    let will = |topic: &str, delay: u32| LastWill {
        topic: s(topic),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(delay),
            ..Default::default()
        },
    };
    let mut first = connect_packet(V5, "reused-will", false);
    first.properties.session_expiry_interval = Some(120);
    first.will = Some(will("wills/first", 1));
    let (c, _) = Raw::connect_with(b.addr, first.clone());
    drop(c); // arms the first will for 1 s
    b.wait_connections(1);
    // Back before the delay: the first will is cancelled; the new one waits 60 s.
    let mut second = first;
    second.clean_start = true;
    second.will = Some(will("wills/second", 60));
    let (c, _) = Raw::connect_with(b.addr, second);
    drop(c);
    b.wait_connections(1);
    watcher.expect_silence(Duration::from_millis(1600));
}

/// `$SYS/` belongs to the broker: neither a PUBLISH nor a will may put a
/// message there (retained or not); `$SYSTEM/x` is an ordinary topic.
// ($SYS protection is the broker's policy, not a spec rule.)
#[test]
fn sys_topics_are_the_brokers_alone() {
    let b = start(2);
    let (mut watcher, _) = Raw::connect(b.addr, V5, "sys-watch", true);
    watcher.subscribe(1, &[("$SYS/inject/#", QoS::AtLeastOnce)]);
    watcher.subscribe(2, &[("$SYSTEM/x", QoS::AtLeastOnce)]);

    let mut c = connect_packet(V5, "sys-will", true);
    c.will = Some(LastWill {
        topic: s("$SYS/inject/will"),
        payload: bytes::Bytes::from_static(b"fake"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    let (w, _) = Raw::connect_with(b.addr, c);
    drop(w); // abnormal close: the will would fire
    b.wait_connections(1);

    let (mut p, _) = Raw::connect(b.addr, V5, "sys-pub", true);
    p.publish("$SYS/inject/pub", b"fake", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    p.publish("$SYSTEM/x", b"ordinary", QoS::AtLeastOnce, 2, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let m = watcher.recv_publish();
    assert_eq!(m.topic.as_str(), "$SYSTEM/x", "only $SYSTEM/x is delivered");
    watcher.expect_silence(Duration::from_millis(300));
    // Nothing was retained under $SYS either.
    let (mut late, _) = Raw::connect(b.addr, V5, "sys-late", true);
    late.subscribe(1, &[("$SYS/inject/#", QoS::AtLeastOnce)]);
    late.expect_silence(Duration::from_millis(300));
}

/// A v5 CONNECT that is malformed in a field the broker can read past gets
/// CONNACK 0x81 (malformed) or 0x82 (protocol error) before the close.
// [v5:MQTT-3.1.4-1] the server validates CONNECT and closes on a failure;
// [v5:MQTT-3.2.2-8] the CONNACK carries a Connect Reason Code;
// [v5:MQTT-3.2.2-7] after a reason code of 0x80 or more it closes.
#[test]
fn malformed_v5_connect_gets_a_connack_reason() {
    let b = start(2);
    // CONNECT v5, client id "m", properties: Receive Maximum = 0.
    let receive_max_zero: &[u8] = &[
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x21, 0, 0, 0, 1, b'm',
    ];
    // Session Expiry Interval twice.
    let duplicate: &[u8] = &[
        0x10, 23, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0,
        0, 2, 0, 1, b'm',
    ];
    // Property 0x01 (Payload Format Indicator) is not a CONNECT property.
    let unknown: &[u8] = &[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 2, 0x01, 1, 0, 1, b'm',
    ];
    for (name, bytes) in [
        ("receive maximum 0", receive_max_zero),
        ("duplicate property", duplicate),
        ("unknown property", unknown),
    ] {
        let mut raw = Raw::connect_tcp(b.addr, V5);
        raw.send_bytes(bytes);
        let got = raw.expect_closed();
        match got.as_slice() {
            [Packet::ConnAck(a)] => assert!(
                a.reason == ReasonCode::MALFORMED_PACKET || a.reason == ReasonCode::PROTOCOL_ERROR,
                "{name}: {:?}",
                a.reason
            ),
            other => panic!("{name}: expected one CONNACK, got {other:?}"),
        }
    }
}

/// Sends `rounds` times a publish of `big` bytes to a topic nobody wants,
/// then `small` (already encoded) in the same write, so both sit in one read
/// buffer; then waits until the broker has read everything.
fn small_beside_big(c: &mut Raw, rounds: usize, big: usize, small: impl Fn(usize) -> Packet) {
    let mut big_pub = ringmq::protocol::Publish::new(s("unused/big"), vec![7u8; big].into());
    big_pub.qos = QoS::AtMostOnce;
    let big_pub = Packet::Publish(big_pub);
    for i in 0..rounds {
        let mut out = bytes::BytesMut::new();
        big_pub.encode(c.version, &mut out).expect("encodes");
        small(i).encode(c.version, &mut out).expect("encodes");
        c.send_bytes(&out);
        if let Some(id) = match small(i) {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        } {
            assert_eq!(c.recv(), Packet::PubAck(ringmq::protocol::Ack::new(id)));
        }
    }
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Packet::PingResp);
}

fn publish(topic: &str, payload: &[u8], qos: QoS, id: u16, retain: bool) -> Packet {
    let mut p = ringmq::protocol::Publish::new(s(topic), bytes::Bytes::copy_from_slice(payload));
    p.qos = qos;
    p.retain = retain;
    if qos != QoS::AtMostOnce {
        p.packet_id = Some(pid(id));
    }
    Packet::Publish(p)
}

/// Retained messages own their bytes: 200 retained 20-byte messages, each
/// read together with a 1 MB publish, used to pin 200 MB of read buffers.
#[test]
fn retained_small_messages_do_not_pin_read_buffers() {
    let b = BinBroker::spawn(&["--cores", "2"]);
    let (mut c, _) = Raw::connect(b.addr, V311, "pin-retained", true);
    small_beside_big(&mut c, 3, 1_000_000, |i| {
        publish(&format!("warm/{i}"), &[1; 20], QoS::AtMostOnce, 0, true)
    });
    let before = b.status_kib("VmRSS");
    small_beside_big(&mut c, 200, 1_000_000, |i| {
        publish(&format!("pin/{i}"), &[1; 20], QoS::AtMostOnce, 0, true)
    });
    let grown = b.status_kib("VmRSS").saturating_sub(before);
    eprintln!("RSS grew {grown} KiB");
    assert!(
        grown < 64 * 1024,
        "RSS grew {grown} KiB for 4 KB of retained messages"
    );
    // They are all there.
    let (mut sub, _) = Raw::connect(b.addr, V311, "pin-retained-sub", true);
    sub.subscribe(1, &[("pin/#", QoS::AtMostOnce)]);
    for _ in 0..200 {
        assert!(sub.recv_publish().retain);
    }
}

/// Queued messages own their bytes, and the queue's byte bound counts what
/// they hold: an offline session's 3,000 queued 100-byte messages, each read
/// beside 60 KB of other data, used to pin 190 MB, even under
/// `--max-queued-bytes 1000000`.
#[test]
fn queued_small_messages_do_not_pin_read_buffers() {
    let b = BinBroker::spawn(&["--cores", "2", "--max-queued-bytes", "1000000"]);
    let (mut sub, _) = Raw::connect(b.addr, V311, "pin-queue-sub", false);
    sub.subscribe(1, &[("q/#", QoS::AtLeastOnce)]);
    drop(sub);
    let (mut c, _) = Raw::connect(b.addr, V311, "pin-queue-pub", true);
    small_beside_big(&mut c, 20, 60_000, |i| {
        publish("warm", &[2; 100], QoS::AtLeastOnce, i as u16 + 1, false)
    });
    let before = b.status_kib("VmRSS");
    small_beside_big(&mut c, 3000, 60_000, |i| {
        publish(
            "q/x",
            &[2; 100],
            QoS::AtLeastOnce,
            (i % 60_000) as u16 + 1,
            false,
        )
    });
    let grown = b.status_kib("VmRSS").saturating_sub(before);
    eprintln!("RSS grew {grown} KiB");
    assert!(grown < 48 * 1024, "RSS grew {grown} KiB for a 1 MB queue");
    // The bound kept the newest ones, as many as fit in 1 MB.
    let (mut sub, ack) = Raw::connect(b.addr, V311, "pin-queue-sub", false);
    assert!(ack.session_present);
    let mut got = 0;
    while let Some(p) = sub.recv_within(Duration::from_millis(500)) {
        if let Packet::Publish(p) = p {
            got += 1;
            sub.send(&Packet::PubAck(ringmq::protocol::Ack::new(
                p.packet_id.expect("QoS 1"),
            )));
        }
    }
    assert!(
        got > 0 && got < 1_000_000 / 100,
        "{got} delivered from a 1 MB queue"
    );
}

/// True if the broker closes `c` within `d` (EOF or reset), false if it
/// stays open and silent.
fn closed_within(c: &mut Raw, d: Duration) -> bool {
    use std::io::Read;
    c.stream.set_read_timeout(Some(d)).expect("timeout");
    let mut b = [0u8; 64];
    loop {
        match c.stream.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // a CONNACK or DISCONNECT before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A socket that has not connected may not buffer more than one CONNECT
/// (`--max-connect-size`): a CONNECT header announcing 1 MB is refused at
/// once (v5: CONNACK 0x95), not read for the whole connect timeout.
#[test]
fn half_sent_connect_cannot_hold_a_megabyte() {
    let mut cfg = config(2);
    cfg.connect_timeout = Duration::from_secs(60);
    let b = start_with(cfg);
    let mut c = Raw::connect_tcp(b.addr, V5);
    // CONNECT, remaining length 1,000,000 (varint c0 84 3d), "MQTT" level 5.
    c.send_bytes(&[0x10, 0xc0, 0x84, 0x3d, 0, 4, b'M', b'Q', b'T', b'T', 5]);
    c.send_bytes(&[0u8; 70_000]);
    let got = c.expect_closed();
    match got.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.reason, ReasonCode::PACKET_TOO_LARGE),
        other => panic!("expected CONNACK 0x95, got {other:?}"),
    }
}

/// Sockets that have not sent CONNECT count against `--max-connections`:
/// past the limit (and the few still answered with "server busy"), new
/// sockets are closed at accept instead of each holding a buffer.
#[test]
fn sockets_before_connect_count_against_the_limit() {
    let mut cfg = config(2);
    cfg.max_connections = 5;
    cfg.connect_timeout = Duration::from_secs(60);
    let b = start_with(cfg);
    let answered = ringmq::shard::OVER_LIMIT_ANSWERED;
    let mut idle: Vec<Raw> = (0..5 + answered)
        .map(|_| Raw::connect_tcp(b.addr, V311))
        .collect();
    // Every one of those is held open (they may still send CONNECT).
    for c in idle.iter_mut().take(3) {
        assert!(!closed_within(c, Duration::from_millis(100)));
    }
    let mut extra: Vec<Raw> = (0..10).map(|_| Raw::connect_tcp(b.addr, V311)).collect();
    for (i, c) in extra.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(5)),
            "socket {i} past the limit was kept"
        );
    }
    drop(idle);
    drop(extra);
    // Once the broker has seen them go, a client connects as usual (until
    // then it may still be closed at accept, or told "server busy").
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut c = Raw::connect_tcp(b.addr, V311);
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Box::new(connect_packet(V311, "after-flood", true)))
            .encode(V311, &mut out)
            .expect("encodes");
        // The broker may have closed it already: a failed write is an answer too.
        let got = std::io::Write::write_all(&mut c.stream, &out)
            .ok()
            .and_then(|()| c.try_recv());
        if let Some(Packet::ConnAck(a)) = &got {
            if a.reason == ReasonCode::SUCCESS {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Under a file descriptor limit below `--max-connections`, the broker says
/// so at start, and clients past what the limit allows get CONNACK "server
/// busy", not a bare close; the refusals are logged a few lines a second,
/// not one each.
#[test]
fn fd_limit_below_max_connections_is_said_and_refused_cleanly() {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -n 300 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_ringmq"));
    let b = BinBroker::spawn_with(cmd, &["--cores", "2", "--max-connections", "1000"]);
    let warned = b
        .log()
        .iter()
        .any(|l| l.contains("RLIMIT_NOFILE 300") && l.contains("--max-connections 1000"));
    assert!(warned, "no warning at start: {:?}", b.log());
    let mut clients = Vec::new();
    let (mut ok, mut busy) = (0, 0);
    for i in 0..120 {
        let (c, ack) = Raw::connect(b.addr, V5, &format!("fd-{i}"), true);
        match ack.reason {
            ReasonCode::SUCCESS => ok += 1,
            ReasonCode::SERVER_BUSY => busy += 1,
            other => panic!("client {i}: {other:?}"),
        }
        clients.push(c);
    }
    assert!(ok >= 20 && busy > 0, "{ok} connected, {busy} refused");
    let refusals = b
        .log()
        .iter()
        .filter(|l| l.contains("connection refused"))
        .count();
    assert!(
        refusals <= 10,
        "{refusals} refusal lines for {busy} refusals"
    );
}

/// An unknown `--log-level` word is an error, not a silent log.
#[test]
fn unknown_log_level_is_an_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "verbose"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("verbose"));
}

/// Connects and disconnects are logged with client id, peer, version and
/// the reason in words.
#[test]
fn connects_and_disconnects_are_logged_in_words() {
    let b = BinBroker::spawn(&["--cores", "2"]);
    let (mut c, _) = Raw::connect(b.addr, V5, "log-me", true);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Packet::PingResp);
    c.send_bytes(&[0x36, 0x06, 0, 1, b't', 0, 1, 0]); // QoS 3: malformed
    c.expect_closed();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let find = |what: &str| {
        b.log()
            .into_iter()
            .find(|l| l.contains(what) && l.contains("log-me"))
    };
    while find("client disconnected").is_none() {
        assert!(std::time::Instant::now() < deadline, "{:?}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let connected = find("client connected").expect("connect line");
    assert!(
        connected.contains("5.0") && connected.contains("127.0.0.1:"),
        "{connected}"
    );
    let gone = find("client disconnected").expect("disconnect line");
    assert!(gone.contains("0x81 malformed packet"), "{gone}");
}

/// SIGTERM under load ends within `--shutdown-timeout`, and every v5 client
/// that reads gets DISCONNECT 0x8B: publishers flooding both shards, and
/// subscribers that never read holding unsent bytes on both.
#[test]
fn sigterm_under_load_is_bounded_and_says_why() {
    let mut b = BinBroker::spawn(&["--cores", "2", "--shutdown-timeout", "2s"]);
    let mut idle: Vec<Raw> = (0..2)
        .map(|k| Raw::connect(b.addr, V5, &id_on_shard("sd-idle", k, 2), true).0)
        .collect();
    let mut stuck = Vec::new();
    for k in 0..10 {
        let (mut s, _) = Raw::connect(b.addr, V5, &id_on_shard("sd-stuck", k % 2, 2), true);
        s.subscribe(1, &[("load/#", QoS::AtMostOnce)]);
        stuck.push(s);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    let publishers: Vec<Raw> = (0..8)
        .map(|k| Raw::connect(b.addr, V311, &id_on_shard("sd-pub", k % 2, 2), true).0)
        .collect();
    for p in publishers {
        let stop = stop.clone();
        floods.push(std::thread::spawn(move || flood(p, "load/x", stop)));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = std::time::Instant::now();
    b.signal(libc::SIGTERM);
    for (k, c) in idle.iter_mut().enumerate() {
        let got = c.expect_closed();
        assert_eq!(
            got,
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SERVER_SHUTTING_DOWN
            ))],
            "idle client on shard {k}"
        );
    }
    let status = b.wait_exit(Duration::from_secs(8));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in floods {
        f.join().expect("flood thread");
    }
    let status = status.unwrap_or_else(|| panic!("still running {:?} after SIGTERM", t0.elapsed()));
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with --shutdown-timeout 2s",
        t0.elapsed()
    );
    drop(stuck);
}

/// Publishes QoS 0 to `topic` as fast as the broker reads, until `stop`.
fn flood(p: Raw, topic: &'static str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    flood_at(p, topic, stop, None);
}

/// Like [`flood`], at most `per_sec` messages a second when given.
fn flood_at(
    mut p: Raw,
    topic: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    per_sec: Option<u32>,
) {
    use std::io::Write;
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut out = bytes::BytesMut::new();
    for _ in 0..64 {
        publish(topic, &[9; 64], QoS::AtMostOnce, 0, false)
            .encode(p.version, &mut out)
            .expect("encodes");
    }
    p.stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(rate) = per_sec {
            let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if let Err(e) = p.stream.write_all(&out) {
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut
            {
                return;
            }
        }
        sent += 64;
    }
}

/// Counts the PUBLISH packets `c` receives into `n`, until closed.
/// Counts PUBLISHes until the broker closes the connection (or nothing came
/// for the common bound). A short silence must not end it: on a loaded
/// machine the closes after the publisher stops can take seconds, and the
/// test waits for this connection to be the last one left.
fn count_publishes(mut c: Raw, n: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    while let Some(p) = c.recv_within(TIMEOUT) {
        if matches!(p, Packet::Publish(_)) {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One QoS 0 subscriber that never reads must not hold its shard: a healthy
/// subscriber on the same shard keeps most of its rate, and a new client's
/// CONNACK and SUBACK come at once. It used to fall to 0.3 % of its rate and
/// a CONNACK took 23 s.
#[test]
fn stuck_subscriber_costs_the_others_little() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let b = start(2);
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let (mut healthy, _) = Raw::connect(b.addr, V311, &id_on_shard("sc-ok", 0, 2), true);
    healthy.subscribe(1, &[("load/#", QoS::AtMostOnce)]);
    let counter = {
        let got = got.clone();
        std::thread::spawn(move || count_publishes(healthy, got))
    };
    let (p, _) = Raw::connect(b.addr, V311, &id_on_shard("sc-pub", 1, 2), true);
    let publisher = {
        let stop = stop.clone();
        // Paced well below what one subscriber takes on this machine: an
        // unpaced flood keeps the healthy subscriber congested, and on a
        // loaded host a reader descheduled for 20 ms then counts as stuck
        // and loses its QoS 0 messages, which is not what this measures.
        std::thread::spawn(move || flood_at(p, "load/x", stop, Some(30_000)))
    };
    let rate = |d: Duration| {
        let before = got.load(Ordering::Relaxed);
        std::thread::sleep(d);
        got.load(Ordering::Relaxed) - before
    };
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rate(Duration::from_millis(1500));
    assert!(baseline > 0, "nothing flowed");

    let (mut stuck, _) = Raw::connect(b.addr, V311, &id_on_shard("sc-stuck", 0, 2), true);
    stuck.subscribe(1, &[("load/#", QoS::AtMostOnce)]);
    // It never reads again. Give it time to fill every buffer and be found out.
    std::thread::sleep(Duration::from_millis(2000));
    let with_stuck = rate(Duration::from_millis(1500));

    let t0 = std::time::Instant::now();
    let (mut late, ack) = Raw::connect(b.addr, V5, &id_on_shard("sc-late", 0, 2), true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    late.subscribe(1, &[("other/#", QoS::AtLeastOnce)]);
    let connect_and_subscribe = t0.elapsed();

    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    drop(stuck);
    drop(late);
    b.wait_connections(1);
    drop(b);
    counter.join().expect("counter");
    eprintln!("baseline {baseline}, with a stuck subscriber {with_stuck}, connect+subscribe {connect_and_subscribe:?}");
    assert!(
        with_stuck * 4 >= baseline,
        "healthy subscriber fell from {baseline} to {with_stuck} per 1.5 s"
    );
    assert!(
        connect_and_subscribe < Duration::from_secs(2),
        "CONNACK and SUBACK took {connect_and_subscribe:?}"
    );
}

/// A client that sends and never reads what the broker answers (PUBACKs of
/// its QoS 1 publishes, PINGRESPs) grew its outbox without bound. Once it is
/// a stuck consumer its own reader waits, so its writes stall after a bounded
/// amount (what the broker read before, plus the kernel's socket buffers).
#[test]
fn client_that_never_reads_its_answers_is_stopped() {
    use std::io::Write;
    let b = start(1);
    let (mut p, _) = Raw::connect(b.addr, V311, "ack-hoarder", true);
    // SAFETY: setsockopt on our own socket with a valid int.
    unsafe {
        let size: libc::c_int = 4096;
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&p.stream),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    // PINGREQ: 2 bytes in, 2 bytes (PINGRESP) out.
    let chunk = [0xc0u8, 0x00].repeat(32 * 1024);
    p.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut written = 0usize;
    let mut stalled = false;
    while written < 40 << 20 {
        if p.stream.write_all(&chunk).is_err() {
            stalled = true;
            break;
        }
        written += chunk.len();
    }
    eprintln!("stalled after {written} bytes");
    assert!(
        stalled,
        "the broker read all {written} bytes from a client that reads nothing"
    );
    // The broker itself still serves others.
    let (mut other, ack) = Raw::connect(b.addr, V311, "ack-other", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    other.send(&Packet::PingReq);
    assert_eq!(other.recv(), Packet::PingResp);
}

/// Fan-in is fair: four publishers flooding one subscriber, two on its
/// shard and two on the other, each get a share of it. A reader whose socket
/// had data never yielded, so one of them could take nearly everything.
#[test]
fn fan_in_publishers_share_the_subscriber() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let b = start(2);
    let sub_id = id_on_shard("fair-sub", 0, 2);
    let (mut sub, _) = Raw::connect(b.addr, V311, &sub_id, true);
    sub.subscribe(1, &[("fair/+", QoS::AtMostOnce)]);
    let topics: [&'static str; 4] = ["fair/0", "fair/1", "fair/2", "fair/3"];
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let (p, _) = Raw::connect(
                b.addr,
                V311,
                &id_on_shard(&format!("fair-pub{i}"), i % 2, 2),
                true,
            );
            let stop = stop.clone();
            let topic: &'static str = topic;
            std::thread::spawn(move || flood(p, topic, stop))
        })
        .collect();
    let mut got = [0u64; 4];
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        match sub.recv_within(Duration::from_secs(2)) {
            Some(Packet::Publish(p)) => {
                if let Some(i) = topics.iter().position(|t| *t == p.topic.as_str()) {
                    got[i] += 1;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(sub);
    for f in floods {
        f.join().expect("flood");
    }
    let (min, max) = (
        got.iter().min().copied().unwrap_or(0),
        got.iter().max().copied().unwrap_or(0),
    );
    eprintln!("per publisher: {got:?}");
    // With the fix the spread was at most 7x here; without it, 2 runs in 3
    // left one publisher at 0 or 1,679 against 318k.
    assert!(min * 20 >= max, "per publisher received {got:?}");
}

/// A subscriber that acknowledges slowly but steadily slows its publisher
/// instead of losing messages: its pending queue would overflow within a
/// fraction of the run with the publisher running free, so the shard holds
/// the publishers while the queue is past half its bound. Publisher and
/// subscriber on one shard, then on two: the hold crosses the mesh, whose
/// channel holds what is already on its way (a few batches), so the bound
/// there leaves room for it.
#[test]
fn a_slow_acking_subscriber_slows_its_publisher_instead_of_dropping() {
    const N: usize = 5000;
    for (cores, bound) in [(1, 200), (2, 2000)] {
        let mut cfg = config(cores);
        cfg.max_queued_messages = bound;
        cfg.max_inflight = 10;
        let b = start_with(cfg);
        let sub_id = id_on_shard("bp-sub", 0, cores);
        let pub_id = id_on_shard("bp-pub", cores - 1, cores);
        let (mut sub, _) = Raw::connect(b.addr, V311, &sub_id, true);
        sub.subscribe(1, &[("bp/t", QoS::AtLeastOnce)]);
        let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
        let mut publisher = std::process::Command::new("mosquitto_pub")
            .args(["-p", &b.addr.port().to_string(), "-i", &pub_id])
            .args(["-q", "1", "-t", "bp/t", "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_pub runs");
        {
            use std::io::Write;
            let mut stdin = publisher.stdin.take().expect("stdin");
            stdin.write_all(lines.as_bytes()).expect("lines written");
        }
        let mut got = Vec::new();
        while got.len() < N {
            let Some(p) = sub.recv_within(Duration::from_secs(5)) else {
                break;
            };
            let Packet::Publish(p) = p else { continue };
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
            // A few thousand a second, far below what the publisher sends.
            std::thread::sleep(Duration::from_micros(250));
            sub.send(&Packet::PubAck(ringmq::protocol::Ack::new(
                p.packet_id.expect("QoS 1"),
            )));
        }
        let _ = publisher.wait();
        let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(
            got.len(),
            N,
            "{cores} cores: {} of {N} delivered",
            got.len()
        );
        assert_eq!(got, want, "{cores} cores: in order");
    }
}

/// A subscriber that stops acknowledging while its queue holds the shard
/// is let go: the others' publishes flow again instead of waiting on it
/// for ever.
#[test]
fn a_subscriber_that_stops_acking_stops_holding_the_shard() {
    let mut cfg = config(1);
    cfg.max_queued_messages = 100;
    cfg.max_inflight = 10;
    let b = start_with(cfg);
    let (mut hoarder, _) = Raw::connect(b.addr, V311, "hoarder", true);
    hoarder.subscribe(1, &[("hoard/t", QoS::AtLeastOnce)]);
    let (mut other, _) = Raw::connect(b.addr, V311, "other-sub", true);
    other.subscribe(1, &[("other/t", QoS::AtMostOnce)]);
    let (mut p, _) = Raw::connect(b.addr, V311, "hoard-pub", true);
    // Past half the hoarder's bound: the shard holds its readers, and the
    // hoarder never acknowledges.
    for i in 0..200u16 {
        p.publish("hoard/t", b"x", QoS::AtLeastOnce, i + 1, false);
    }
    let (mut q, _) = Raw::connect(b.addr, V311, "other-pub", true);
    q.publish("other/t", b"through", QoS::AtMostOnce, 0, false);
    let got = other.recv_within(Duration::from_secs(5));
    assert!(
        matches!(&got, Some(Packet::Publish(m)) if &m.payload[..] == b"through"),
        "the other subscriber's message was held: {got:?}"
    );
    drop(hoarder);
}
