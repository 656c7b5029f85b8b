//! `--metrics-listen`: `/metrics` read by Prometheus' own Python parser
//! (`prometheus_client`, installed by tools/test.sh) after a known
//! workload, `/health`, and `$SYS` as Mosquitto users know it.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{config, id_on_shard, metric_sum, python, start_with_metrics, wait_metric, Raw};
use ringmq::protocol::{Ack, Packet, ProtocolVersion::V311, QoS};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `/metrics` and parses it with `prometheus_client.parser`: one
/// line per sample, `name TAB k=v,k=v TAB value`.
const PARSE: &str = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
body = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for fam in text_string_to_metric_families(body):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}\t{labels}\t{s.value!r}")
"#;

struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn scrape(addr: SocketAddr) -> Samples {
        let out = python(PARSE, &[&format!("http://{addr}/metrics")]);
        Samples(
            out.lines()
                .map(|l| {
                    let mut f = l.split('\t');
                    let name = f.next().expect("name").to_string();
                    let labels = f
                        .next()
                        .expect("labels")
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("k=v");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    let v = f.next().expect("value");
                    let v = if v == "inf" {
                        f64::INFINITY
                    } else {
                        v.parse().expect("number")
                    };
                    (name, labels, v)
                })
                .collect(),
        )
    }

    /// The sum over shards of `name`'s samples that carry every `label`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let series: Vec<_> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(!series.is_empty(), "no {name} {labels:?}");
        series.iter().map(|(_, _, v)| v).sum()
    }

    fn shards_of(&self, name: &str) -> usize {
        self.0.iter().filter(|(n, _, _)| n == name).count()
    }
}

fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    c.write_all(request).expect("write");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

fn broker(cores: usize) -> (common::Broker, SocketAddr) {
    let mut cfg = config(cores);
    cfg.sys_interval = Some(Duration::from_millis(50));
    start_with_metrics(cfg)
}

// A publisher on one shard, a persistent subscriber on the other: every
// counter the workload touches has its exact value, summed over shards.
#[test]
fn metrics_count_a_known_workload() {
    let (b, m) = broker(2);
    let sub_id = id_on_shard("msub", 0, 2);
    let (mut sub, _) = Raw::connect(b.addr, V311, &sub_id, false);
    sub.subscribe(1, &[("m/#", QoS::AtLeastOnce)]);
    let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("mpub", 1, 2), true);
    for id in 1..=10 {
        publ.publish("m/x", b"0123456789", QoS::AtLeastOnce, id, false);
        assert!(matches!(publ.recv(), Packet::PubAck(_)));
    }
    for _ in 0..10 {
        let p = sub.recv_publish();
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));
    }
    publ.publish("none/x", b"a", QoS::AtMostOnce, 0, false);
    publ.publish("none/y", b"b", QoS::AtMostOnce, 0, false);
    publ.publish("r/1", b"keep", QoS::AtMostOnce, 0, true);
    // The broker's own $SYS messages (retained) are out by now.
    std::thread::sleep(Duration::from_millis(200));

    let deadline = Instant::now() + TIMEOUT;
    let s = loop {
        let s = Samples::scrape(m);
        let settled = s.sum("ringmq_packets_received_total", &[("type", "puback")]) == 10.0
            && s.sum("ringmq_messages_received_total", &[]) == 13.0;
        if settled || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s.shards_of("ringmq_shard_up"), 2);
    assert_eq!(s.sum("ringmq_shard_up", &[]), 2.0);
    assert_eq!(s.sum("ringmq_messages_received_total", &[]), 13.0);
    assert_eq!(s.sum("ringmq_messages_delivered_total", &[]), 10.0);
    assert_eq!(s.sum("ringmq_messages_no_subscribers_total", &[]), 3.0);
    for (kind, n) in [
        ("publish", 13.0),
        ("puback", 10.0),
        ("connect", 2.0),
        ("subscribe", 1.0),
    ] {
        assert_eq!(
            s.sum("ringmq_packets_received_total", &[("type", kind)]),
            n,
            "{kind} in"
        );
    }
    for (kind, n) in [
        ("publish", 10.0),
        ("puback", 10.0),
        ("connack", 2.0),
        ("suback", 1.0),
    ] {
        assert_eq!(
            s.sum("ringmq_packets_sent_total", &[("type", kind)]),
            n,
            "{kind} out"
        );
    }
    // Ten PUBLISHes of "m/x" with a packet id and a 10-byte payload:
    // fixed header 2, topic 2 + 3, id 2, payload 10.
    assert_eq!(
        s.sum("ringmq_packet_bytes_sent_total", &[("type", "publish")]),
        190.0
    );
    assert_eq!(s.sum("ringmq_connections", &[]), 2.0);
    assert_eq!(s.sum("ringmq_connections_peak", &[]), 2.0);
    assert_eq!(s.sum("ringmq_sessions", &[]), 2.0);
    assert_eq!(s.sum("ringmq_sessions_persistent", &[]), 1.0);
    assert_eq!(s.sum("ringmq_subscriptions", &[]), 1.0);
    assert_eq!(
        s.sum("ringmq_retained_messages", &[]),
        1.0,
        "$SYS is not counted"
    );
    assert!(s.sum("ringmq_mesh_messages_total", &[]) >= 10.0);
    assert_eq!(s.sum("ringmq_deliver_latency_seconds_count", &[]), 10.0);
    assert_eq!(
        s.sum("ringmq_deliver_latency_seconds_bucket", &[("le", "+Inf")]),
        10.0
    );
    assert!(s.sum("ringmq_loop_turn_seconds_count", &[]) > 0.0);
    assert_eq!(s.sum("ringmq_messages_dropped_total", &[]), 0.0);

    // Offline, the subscriber's session queues; a takeover is counted.
    drop(sub);
    b.wait_connections(1);
    for id in 11..=13 {
        publ.publish("m/x", b"0123456789", QoS::AtLeastOnce, id, false);
        assert!(matches!(publ.recv(), Packet::PubAck(_)));
    }
    let (_again, _) = Raw::connect(b.addr, V311, "twin", true);
    let (mut twin, _) = Raw::connect(b.addr, V311, "twin", true);
    let deadline = Instant::now() + TIMEOUT;
    let s = loop {
        let s = Samples::scrape(m);
        if s.sum("ringmq_queued_messages", &[]) == 3.0 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s.sum("ringmq_queued_messages", &[]), 3.0);
    assert!(s.sum("ringmq_queued_bytes", &[]) >= 30.0);
    assert_eq!(s.sum("ringmq_sessions_taken_over_total", &[]), 1.0);
    twin.send(&Packet::PingReq);
    assert!(matches!(twin.recv(), Packet::PingResp));
}

// /health answers 200 while every shard answers; HEAD, a bad request, an
// unknown path and a silent socket get what HTTP says, and a silent socket
// does not hold the next scrape.
#[test]
fn health_and_plain_http() {
    let (_b, m) = broker(2);
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(m).expect("connect"))
        .collect();
    let ok = http(m, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
    let head = http(m, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let q = http(m, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(q.contains("ringmq_build_info{version="), "{q}");
    assert!(http(m, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(m, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http(m, b"\x16\x03\x01 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    drop(silent);
}

// Another process on the metrics address stops the start.
#[test]
fn a_taken_metrics_address_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cfg = config(1);
    cfg.metrics_listen = Some(taken.local_addr().expect("addr"));
    let Err(err) = ringmq::broker::start(cfg) else {
        panic!("started on a taken metrics address");
    };
    assert!(err.to_string().contains("cannot serve metrics on"), "{err}");
}

// $SYS: retained, published only when a value changed, and the broker's
// own topics are not counted in `retained messages/count`.
#[test]
fn sys_publishes_changes_only() {
    let (b, _m) = broker(2);
    let (mut p, _) = Raw::connect(b.addr, V311, "sys-pub", true);
    p.publish("user/retained", b"1", QoS::AtMostOnce, 0, true);
    std::thread::sleep(Duration::from_millis(200));
    let (mut s, _) = Raw::connect(b.addr, V311, "sys-watch", true);
    s.subscribe(1, &[("$SYS/broker/#", QoS::AtMostOnce)]);
    let mut seen: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        if let Some(Packet::Publish(m)) = s.recv_within(Duration::from_millis(50)) {
            seen.entry(m.topic.as_str().to_string())
                .or_default()
                .push((String::from_utf8_lossy(&m.payload).into_owned(), m.retain));
        }
    }
    let first = |t: &str| seen.get(t).and_then(|v| v.first()).cloned();
    assert_eq!(
        first("$SYS/broker/retained messages/count"),
        Some(("1".into(), true))
    );
    assert_eq!(
        first("$SYS/broker/shard/1/retained messages/count"),
        Some(("1".into(), true))
    );
    // Nothing changed in 600 ms (12 intervals) but the uptime and what the
    // watcher itself moved (clients, bytes, messages): version went once.
    assert_eq!(seen["$SYS/broker/version"].len(), 1, "{seen:?}");
    assert_eq!(seen["$SYS/broker/errors/malformed"].len(), 1, "{seen:?}");
    let last = seen["$SYS/broker/clients/connected"]
        .last()
        .map(|v| v.0.clone());
    assert_eq!(last, Some("2".into()), "{seen:?}");
    // Retained, as Mosquitto publishes them: what the watcher found on
    // SUBSCRIBE says so (later changes reach it live, retain 0).
    assert!(seen.values().all(|v| v[0].1), "{seen:?}");
}

/// Prints every metric name the dashboard's queries use (and checks that
/// it is JSON Grafana can import: panels with targets).
const DASHBOARD_NAMES: &str = r#"
import json, re, sys
d = json.load(open(sys.argv[1]))
assert d["panels"], "no panels"
names = set()
for p in d["panels"]:
    assert p["targets"], p["title"]
    for t in p["targets"]:
        names.update(re.findall(r"ringmq_[a-z_]+", t["expr"]))
print("\n".join(sorted(names)))
"#;

// contrib/grafana-ringmq.json asks only for series a scrape has.
#[test]
fn the_grafana_dashboard_uses_real_metrics() {
    let (_b, m) = broker(2);
    let s = Samples::scrape(m);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana-ringmq.json");
    let names = python(DASHBOARD_NAMES, &[path]);
    assert!(names.lines().count() > 10, "{names}");
    for name in names.lines() {
        assert!(
            s.0.iter().any(|(n, _, _)| n == name),
            "{name} is not in /metrics"
        );
    }
}

/// Scrapes until the writers retired on all shards reach `n` (bounded).
fn wait_retired(m: SocketAddr, n: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = Samples::scrape(m).sum("ringmq_writers_retired_total", &[]);
        if got >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{got} writers retired, want {n}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

// A connection that has been quiet through a writer sweep keeps no writer
// task (what an idle client costs); its reader starts one again when bytes
// come, or writes a few itself. Everything still arrives: a small delivery
// across shards, a 600 KB one that needs the writer, a PINGRESP, and at
// shutdown the v5 DISCONNECT 0x8B.
#[test]
fn quiet_connections_lose_their_writer_and_nothing_else() {
    use ringmq::protocol::{Disconnect, ProtocolVersion::V5, ReasonCode};
    let (mut b, m) = broker(2);
    let (mut sub, _) = Raw::connect(b.addr, V5, &id_on_shard("qsub", 0, 2), true);
    sub.subscribe(1, &[("q/#", QoS::AtLeastOnce)]);
    let (mut quiet, _) = Raw::connect(b.addr, V5, &id_on_shard("qquiet", 1, 2), true);
    let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("qpub", 1, 2), true);
    // Connections whose last bytes were their CONNACK need no writer at
    // all; the subscriber's (a SUBACK too) ends after a quiet sweep.
    let first = wait_retired(m, 0.0);
    std::thread::sleep(Duration::from_millis(4500));
    let retired = wait_retired(m, first);

    publ.publish("q/a", b"small", QoS::AtLeastOnce, 1, false);
    assert!(matches!(publ.recv(), Packet::PubAck(_)));
    let p = sub.recv_publish();
    assert_eq!(&p.payload[..], b"small");
    sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));

    let big = vec![7u8; 600_000];
    publ.publish("q/big", &big, QoS::AtMostOnce, 0, false);
    let p = sub.recv_publish();
    assert_eq!(p.payload.len(), big.len());
    assert!(p.payload.iter().all(|&x| x == 7));

    sub.send(&Packet::PingReq);
    assert_eq!(sub.recv(), Packet::PingResp);

    // The subscriber's writer, started for the large one, ends again.
    wait_retired(m, retired + 1.0);
    let h = b.handle.take().expect("running");
    let stopper = std::thread::spawn(move || {
        h.shutdown();
        h.join();
    });
    for (name, c) in [("quiet", &mut quiet), ("subscriber", &mut sub)] {
        assert_eq!(
            c.expect_closed(),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SERVER_SHUTTING_DOWN
            ))],
            "{name}"
        );
    }
    stopper.join().expect("shutdown");
}

// A quiet connection keeps no reader task either: its socket waits in the
// shard's epoll set and a new reader serves it when bytes or work come.
// Parked clients on both shards get a delivery from a publisher that is
// parked too, answer a PINGREQ, lose their session to a takeover, miss
// their keep-alive (the will goes out), and get 0x8B at shutdown.
#[test]
fn quiet_connections_park_and_come_back() {
    use ringmq::protocol::{Disconnect, LastWill, ProtocolVersion::V5, ReasonCode};
    let (mut b, m) = broker(2);
    let (mut sub0, _) = Raw::connect(b.addr, V5, &id_on_shard("psub", 0, 2), true);
    sub0.subscribe(1, &[("p/#", QoS::AtLeastOnce)]);
    let sub1_id = id_on_shard("psub", 1, 2);
    let (mut sub1, _) = Raw::connect(b.addr, V311, &sub1_id, false);
    sub1.subscribe(1, &[("p/#", QoS::AtLeastOnce)]);
    let mut c = common::connect_packet(V311, &id_on_shard("pwill", 0, 2), true);
    c.keep_alive = 2;
    c.will = Some(LastWill {
        topic: common::s("p/will"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_silent, _) = Raw::connect_with(b.addr, c);
    let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("ppub", 1, 2), true);
    wait_metric(m, "ringmq_parked_connections", 4.0);
    let before = metric_sum(m, "ringmq_readers_parked_total");

    // Woken by readiness (the publish) and by a wake (the deliveries).
    publ.publish("p/a", b"to the parked", QoS::AtLeastOnce, 1, false);
    assert!(matches!(publ.recv(), Packet::PubAck(_)));
    for sub in [&mut sub0, &mut sub1] {
        let p = sub.recv_publish();
        assert_eq!(&p.payload[..], b"to the parked");
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));
    }
    sub0.send(&Packet::PingReq);
    assert_eq!(sub0.recv(), Packet::PingResp);

    // The silent client misses its keep-alive while parked: the timer
    // closes it and its will reaches both subscribers.
    for sub in [&mut sub0, &mut sub1] {
        let p = sub.recv_publish();
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("p/will", &b"gone"[..]));
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));
    }

    // A takeover of a parked client closes the old connection.
    wait_metric(m, "ringmq_parked_connections", 3.0);
    let (_sub1b, ack) = Raw::connect(b.addr, V311, &sub1_id, false);
    assert!(ack.session_present);
    assert_eq!(sub1.expect_closed(), vec![]);

    wait_metric(m, "ringmq_parked_connections", 3.0);
    assert!(metric_sum(m, "ringmq_readers_parked_total") > before);
    let h = b.handle.take().expect("running");
    let stopper = std::thread::spawn(move || {
        h.shutdown();
        h.join();
    });
    assert_eq!(
        sub0.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::SERVER_SHUTTING_DOWN
        ))]
    );
    stopper.join().expect("shutdown");
}
