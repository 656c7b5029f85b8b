//! Behaviour that depends on shards: clients owned by different shards,
//! many connections at once, $SYS totals, graceful shutdown of the binary.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Ack, Disconnect, Packet,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode,
};

// Every pair of shards exchanges QoS 0/1/2 messages, with 4 shards on this
// 2-core machine (more shards than cores: unpinned).
#[test]
fn every_shard_pair_exchanges_messages() {
    let n = 4;
    let b = start(n);
    let mut subs: Vec<Raw> = (0..n)
        .map(|k| {
            let (mut c, _) = Raw::connect(b.addr, V5, &id_on_shard("pair-sub", k, n), true);
            c.subscribe(1, &[(&format!("pair/{k}"), QoS::ExactlyOnce)]);
            c
        })
        .collect();
    for from in 0..n {
        let (mut p, _) = Raw::connect(b.addr, V311, &id_on_shard("pair-pub", from, n), true);
        for (to, sub) in subs.iter_mut().enumerate() {
            for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
                .into_iter()
                .enumerate()
            {
                p.publish(
                    &format!("pair/{to}"),
                    format!("{from}->{to}").as_bytes(),
                    q,
                    i as u16 + 1,
                    false,
                );
                match q {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => assert!(matches!(p.recv(), Packet::PubAck(_))),
                    QoS::ExactlyOnce => {
                        assert!(matches!(p.recv(), Packet::PubRec(_)));
                        p.send(&Packet::PubRel(Ack::new(pid(i as u16 + 1))));
                        assert!(matches!(p.recv(), Packet::PubComp(_)));
                    }
                }
                let m = sub.recv_publish();
                assert_eq!(m.payload, format!("{from}->{to}").into_bytes());
                assert_eq!(m.qos, q);
                match m.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        sub.send(&Packet::PubAck(Ack::new(m.packet_id.expect("id"))))
                    }
                    QoS::ExactlyOnce => {
                        let id = m.packet_id.expect("id");
                        sub.send(&Packet::PubRec(Ack::new(id)));
                        assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id)));
                        sub.send(&Packet::PubComp(Ack::new(id)));
                    }
                }
            }
        }
    }
}

// A subscription made on one shard is routed to from every other shard as
// soon as its SUBACK arrives (the SUBACK waits for the interest broadcast).
#[test]
fn suback_means_routed_from_every_shard() {
    let n = 4;
    let b = start(n);
    let pubs: Vec<Raw> = (0..n)
        .map(|k| Raw::connect(b.addr, V311, &id_on_shard("race-pub", k, n), true).0)
        .collect();
    let mut pubs = pubs;
    for round in 0..20 {
        let topic = format!("race/{round}");
        let (mut sub, _) = Raw::connect(b.addr, V311, &format!("race-sub-{round}"), true);
        sub.subscribe(1, &[(&topic, QoS::AtMostOnce)]);
        for p in pubs.iter_mut() {
            p.publish(&topic, b"x", QoS::AtMostOnce, 0, false);
        }
        for _ in 0..n {
            assert_eq!(&sub.recv_publish().payload[..], b"x");
        }
    }
}

// 1,000 clients connect at once and each gets its CONNACK.
#[test]
fn thousand_clients_connect_at_once() {
    let b = start(2);
    let addr = b.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..125 {
                    let (c, ack) = Raw::connect(addr, V311, &format!("many-{t}-{i}"), true);
                    assert_eq!(ack.reason, ReasonCode::SUCCESS);
                    held.push(c);
                }
                held
            })
        })
        .collect();
    let held: Vec<Raw> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(held.len(), 1000);
}

// $SYS totals are published (retained) by shard 0 from every shard's counters.
#[test]
fn sys_topics_report_totals() {
    let mut cfg = config(2);
    cfg.sys_interval = Some(Duration::from_millis(300));
    let b = start_with(cfg);
    let _others: Vec<Raw> = (0..3)
        .map(|i| Raw::connect(b.addr, V311, &format!("sys-{i}"), true).0)
        .collect();
    let (mut s, _) = Raw::connect(b.addr, V311, "sys-watch", true);
    s.subscribe(1, &[("$SYS/broker/clients/connected", QoS::AtMostOnce)]);
    // Wait for a publication that counts all four clients.
    let mut last = String::new();
    for _ in 0..20 {
        let m = s.recv_publish();
        last = String::from_utf8_lossy(&m.payload).into_owned();
        if last == "4" {
            return;
        }
    }
    panic!("clients/connected never reached 4 (last {last})");
}

// SIGTERM: MQTT 5 clients get DISCONNECT 0x8B, the process exits 0.
#[test]
fn sigterm_is_graceful() {
    let mut b = BinBroker::spawn(&["--cores", "2"]);
    let (mut c5, _) = Raw::connect(b.addr, V5, "sig5", true);
    let (mut c3, _) = Raw::connect(b.addr, V311, "sig3", true);
    b.signal(libc::SIGTERM);
    assert_eq!(
        c5.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::SERVER_SHUTTING_DOWN
        ))]
    );
    assert!(c3.expect_closed().is_empty());
    let status = b.wait_exit(TIMEOUT).expect("exits");
    assert!(status.success(), "{status:?}");
}

/// Publishes `n` QoS 1 messages on `topic` from `p` (ids from `first`) and
/// reads their PUBACKs; `sub` receives and acknowledges each.
fn exchange(p: &mut Raw, sub: &mut Raw, topic: &str, first: u16, n: u16) {
    for i in first..first + n {
        p.publish(topic, format!("{i}").as_bytes(), QoS::AtLeastOnce, i, false);
        match p.recv() {
            Packet::PubAck(a) => assert_eq!(a.packet_id.get(), i),
            other => panic!("expected PUBACK {i}, got {other:?}"),
        }
        let got = sub.recv_publish();
        assert_eq!(&got.payload[..], format!("{i}").as_bytes());
        sub.send(&Packet::PubAck(Ack::new(got.packet_id.expect("QoS 1"))));
    }
}

/// A PUBACK waits for another shard's log only where that shard holds a
/// persistent session subscribed to the topic (DESIGN.md §4.5): a clean
/// subscriber there costs the publisher no round trip, and a session that
/// stops being persistent stops holding acknowledgements back.
#[test]
fn acknowledgements_wait_only_for_persistent_subscribers_on_other_shards() {
    let dir = TempDir::new("durable-interest");
    let mut cfg = config(2);
    cfg.data_dir = Some(dir.0.clone());
    let (b, m) = start_with_metrics(cfg);
    let waited = |m| metric_sum(m, "ringmq_acks_waited_remote_log_total");
    let (mut p, _) = Raw::connect(b.addr, V5, &id_on_shard("di-pub", 0, 2), true);

    // A clean subscriber on the other shard: the log is not asked.
    let (mut clean, _) = Raw::connect(b.addr, V311, &id_on_shard("di-clean", 1, 2), true);
    clean.subscribe(1, &[("di/clean", QoS::AtLeastOnce)]);
    exchange(&mut p, &mut clean, "di/clean", 1, 10);
    assert_eq!(waited(m), 0.0);

    // A persistent one (v5, expiry 1 h): every acknowledgement waits.
    let kept_id = id_on_shard("di-kept", 1, 2);
    let mut c = connect_packet(V5, &kept_id, true);
    c.properties.session_expiry_interval = Some(3600);
    let (mut kept, _) = Raw::connect_with(b.addr, c);
    kept.subscribe(1, &[("di/kept", QoS::AtLeastOnce)]);
    exchange(&mut p, &mut kept, "di/kept", 11, 10);
    assert_eq!(waited(m), 10.0);
    // The clean subscriber's topic still costs nothing.
    exchange(&mut p, &mut clean, "di/clean", 21, 5);
    assert_eq!(waited(m), 10.0);

    // It comes back with expiry 0 and keeps its subscription, but is no
    // longer logged: acknowledgements stop waiting for its shard.
    drop(kept);
    let mut c = connect_packet(V5, &kept_id, false);
    c.properties.session_expiry_interval = Some(0);
    let (mut kept, ack) = Raw::connect_with(b.addr, c);
    assert!(ack.session_present);
    // The CONNACK does not wait for the other shard to hear (a stale entry
    // only makes an acknowledgement wait); a SUBACK waits for every
    // broadcast before its own, the removal among them.
    kept.subscribe(2, &[("di/barrier", QoS::AtMostOnce)]);
    exchange(&mut p, &mut kept, "di/kept", 26, 10);
    assert_eq!(waited(m), 10.0);
}
