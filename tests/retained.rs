//! Retained messages: store, replace, delete, delivery on subscribe with
//! RETAIN set, retain handling, and replication across shards.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Packet,
    ProtocolVersion::{V311, V5},
    QoS, RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions,
};

// [v3:MQTT-3.3.1-5] [v5:MQTT-3.3.1-5] a retained message is stored and
// replaced; [v3:MQTT-3.3.1-6] [v3:MQTT-3.3.1-8] [v5:MQTT-3.3.1-9] sent to new
// subscribers with RETAIN set; [v3:MQTT-3.3.1-12] [v5:MQTT-3.3.1-8] a
// non-retained publish leaves it alone. Publisher and subscribers sit on
// different shards of four.
#[test]
fn retained_store_replace_and_deliver() {
    let b = start(4);
    let (mut p, _) = Raw::connect(b.addr, V311, &id_on_shard("rp", 0, 4), true);
    p.publish("r/a", b"one", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    p.publish("r/a", b"two", QoS::AtLeastOnce, 2, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    p.publish("r/a", b"not-retained", QoS::AtLeastOnce, 3, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    for shard in 1..4 {
        let (mut s1, _) = Raw::connect(b.addr, V5, &id_on_shard("rs", shard, 4), true);
        s1.subscribe(1, &[("r/#", QoS::AtLeastOnce)]);
        let m = s1.recv_publish();
        assert_eq!(&m.payload[..], b"two");
        assert!(m.retain);
        assert_eq!(m.qos, QoS::AtLeastOnce);
    }
}

// [v3:MQTT-3.3.1-10] [v3:MQTT-3.3.1-11] [v5:MQTT-3.3.1-6] [v5:MQTT-3.3.1-7]
// an empty retained payload is delivered normally and deletes the retained message;
// [v3:MQTT-3.3.1-7] a QoS 0 retained message replaces one too.
#[test]
fn empty_payload_deletes_retained() {
    let b = start(2);
    let (mut p, _) = Raw::connect(b.addr, V311, "del-pub", true);
    // QoS 1, so the PUBACK says every shard stores it before anyone subscribes.
    p.publish("d/x", b"keep", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut live, _) = Raw::connect(b.addr, V311, "del-live", true);
    live.subscribe(1, &[("d/x", QoS::AtMostOnce)]);
    assert_eq!(&live.recv_publish().payload[..], b"keep");
    p.publish("d/x", b"", QoS::AtMostOnce, 0, true);
    let m = live.recv_publish();
    assert!(m.payload.is_empty());
    let (mut late, _) = Raw::connect(b.addr, V311, "del-late", true);
    late.subscribe(1, &[("d/#", QoS::AtMostOnce)]);
    late.expect_silence(Duration::from_millis(300));
}

// [v3:MQTT-3.1.2-7] retained messages outlive the session that published them.
#[test]
fn v3_mqtt_3_1_2_7_retained_survives_session_end() {
    let b = start(2);
    {
        let (mut p, _) = Raw::connect(b.addr, V311, "gone", true);
        p.publish("keep/me", b"still", QoS::AtLeastOnce, 1, true);
        assert!(matches!(p.recv(), Packet::PubAck(_)));
        p.send(&Packet::Disconnect(Default::default()));
    }
    let (mut s1, _) = Raw::connect(b.addr, V311, "later", true);
    s1.subscribe(1, &[("keep/me", QoS::AtMostOnce)]);
    assert_eq!(&s1.recv_publish().payload[..], b"still");
}

fn subscribe_rh(c: &mut Raw, id: u16, filter: &str, rh: RetainHandling, rap: bool) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: vec![SubscribeFilter {
            filter: s(filter),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                retain_handling: rh,
                retain_as_published: rap,
                ..Default::default()
            },
        }],
    }));
    assert!(matches!(c.recv(), Packet::SubAck(_)));
}

// [v5:MQTT-3.3.1-10] Retain Handling 1 sends retained only for a new
// subscription; [v5:MQTT-3.3.1-11] Retain Handling 2 never.
#[test]
fn v5_retain_handling() {
    let b = start(2);
    let (mut p, _) = Raw::connect(b.addr, V311, "rh-pub", true);
    p.publish("rh/t", b"ret", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut c, _) = Raw::connect(b.addr, V5, "rh-sub", true);
    subscribe_rh(&mut c, 1, "rh/t", RetainHandling::DoNotSend, false);
    c.expect_silence(Duration::from_millis(300));
    let (mut c, _) = Raw::connect(b.addr, V5, "rh-sub2", true);
    subscribe_rh(&mut c, 1, "rh/t", RetainHandling::SendIfNew, false);
    assert!(c.recv_publish().retain);
    subscribe_rh(&mut c, 2, "rh/t", RetainHandling::SendIfNew, false);
    c.expect_silence(Duration::from_millis(300));
    // [v5:MQTT-3.8.4-4] Retain Handling 0 re-sends on an identical subscription.
    subscribe_rh(&mut c, 3, "rh/t", RetainHandling::SendAtSubscribe, false);
    assert!(c.recv_publish().retain);
}

// [v5:MQTT-3.3.1-12] Retain As Published 0 clears RETAIN on forwarding;
// [v5:MQTT-3.3.1-13] 1 keeps it.
#[test]
fn v5_retain_as_published() {
    let b = start(2);
    let (mut clear, _) = Raw::connect(b.addr, V5, "rap0", true);
    subscribe_rh(&mut clear, 1, "rap/t", RetainHandling::DoNotSend, false);
    let (mut keep, _) = Raw::connect(b.addr, V5, "rap1", true);
    subscribe_rh(&mut keep, 1, "rap/t", RetainHandling::DoNotSend, true);
    let (mut p, _) = Raw::connect(b.addr, V311, "rap-pub", true);
    p.publish("rap/t", b"x", QoS::AtMostOnce, 0, true);
    assert!(!clear.recv_publish().retain);
    assert!(keep.recv_publish().retain);
}

/// Retained messages sent on SUBSCRIBE flow through the session's queue as
/// the client reads: 20,000 retained 1 KB messages (20 MB, past the 16 MiB
/// outbox cap) all reach a new `#` subscriber. They used to be dropped past
/// the cap without a word.
#[test]
fn many_retained_messages_all_arrive() {
    let b = start(2);
    let (mut p, _) = Raw::connect(b.addr, V311, "many-ret-pub", true);
    let mut out = bytes::BytesMut::new();
    let n = 20_000u32;
    for i in 0..n {
        let mut m = ringmq::protocol::Publish::new(
            s(&format!("many/{i}")),
            bytes::Bytes::from(vec![(i % 251) as u8; 1000]),
        );
        m.retain = true;
        Packet::Publish(m).encode(V311, &mut out).expect("encodes");
        if out.len() > 256 * 1024 {
            p.send_bytes(&out);
            out.clear();
        }
    }
    p.send_bytes(&out);
    p.send(&Packet::PingReq);
    assert_eq!(p.recv(), Packet::PingResp);
    // Wait until every shard stored them: a QoS 1 retained publish is
    // acknowledged once every shard has it, and the mesh is FIFO.
    p.publish("many/last", b"x", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut sub, _) = Raw::connect(b.addr, V5, "many-ret-sub", true);
    sub.subscribe(1, &[("many/#", QoS::AtMostOnce)]);
    let mut got = 0;
    while let Some(pkt) = sub.recv_within(Duration::from_secs(3)) {
        if let Packet::Publish(m) = pkt {
            assert!(m.retain);
            got += 1;
            if got == n + 1 {
                break;
            }
        }
    }
    assert_eq!(got, n + 1, "retained messages lost on SUBSCRIBE");
}

/// A SUBSCRIBE costs what it matches: 1,000 wildcard filters that match
/// none of 20,000 retained messages are answered at once (a scan per
/// filter compared 20 million topics).
#[test]
fn wildcard_subscribe_costs_what_it_matches() {
    let b = start(1);
    let (mut p, _) = Raw::connect(b.addr, V311, "idx-pub", true);
    let mut out = bytes::BytesMut::new();
    for i in 0..20_000u32 {
        let mut m = ringmq::protocol::Publish::new(
            s(&format!("idx/{i}/v")),
            bytes::Bytes::from_static(b"r"),
        );
        m.retain = true;
        Packet::Publish(m).encode(V311, &mut out).expect("encodes");
    }
    p.send_bytes(&out);
    p.send(&Packet::PingReq);
    assert_eq!(p.recv(), Packet::PingResp);
    let (mut sub, _) = Raw::connect(b.addr, V311, "idx-sub", true);
    let filters: Vec<String> = (0..1000).map(|j| format!("other/+/x{j}/#")).collect();
    let pairs: Vec<(&str, QoS)> = filters
        .iter()
        .map(|f| (f.as_str(), QoS::AtMostOnce))
        .collect();
    let t0 = std::time::Instant::now();
    let ack = sub.subscribe(1, &pairs);
    let took = t0.elapsed();
    assert_eq!(ack.reasons.len(), 1000);
    eprintln!("1,000 wildcard filters over 20,000 retained: {took:?}");
    assert!(took < Duration::from_secs(2), "SUBACK took {took:?}");
    // And a matching one still finds its messages.
    sub.subscribe(2, &[("idx/+/v", QoS::AtMostOnce)]);
    for _ in 0..20_000 {
        assert!(sub.recv_publish().retain);
    }
}

// A retained PUBLISH on one shard racing a SUBSCRIBE on another: the
// subscriber gets the message exactly once, live or from the store. Before,
// when the publisher's shard did not know of the new subscription yet and
// the subscriber's shard stored the message only after the SUBSCRIBE, it got
// it neither way (seen as a flaky mosquitto_sub over TLS).
#[test]
fn a_retained_publish_racing_a_subscribe_on_another_shard_arrives_once() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V5, &id_on_shard("race-sub", 1, 2), true);
    let (mut publisher, _) = Raw::connect(b.addr, V5, &id_on_shard("race-pub", 0, 2), true);
    const N: usize = 300;
    for i in 0..N {
        sub.send(&subscribe_packet(
            i as u16 + 1,
            &[(&format!("race/{i}"), QoS::AtMostOnce)],
        ));
        publisher.publish(&format!("race/{i}"), b"r", QoS::AtMostOnce, 0, true);
    }
    let mut got = vec![0u32; N];
    let mut subacks = 0;
    while subacks < N || got.contains(&0) {
        match sub.recv_within(Duration::from_secs(3)) {
            Some(Packet::SubAck(_)) => subacks += 1,
            Some(Packet::Publish(p)) => {
                let i: usize = p.topic.as_str()["race/".len()..].parse().expect("topic");
                got[i] += 1;
            }
            Some(other) => panic!("{other:?}"),
            None => break,
        }
    }
    sub.expect_silence(Duration::from_millis(200));
    let lost: Vec<usize> = (0..N).filter(|&i| got[i] == 0).collect();
    let doubled: Vec<usize> = (0..N).filter(|&i| got[i] > 1).collect();
    assert!(
        lost.is_empty() && doubled.is_empty(),
        "lost {lost:?}, twice {doubled:?}"
    );
}
