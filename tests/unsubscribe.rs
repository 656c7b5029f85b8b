//! UNSUBSCRIBE and UNSUBACK over loopback, in 3.1.1 and 5.0, with the
//! subscriber and the publisher owned by different shards (so removing
//! the last local subscription also has to stop routing from the peer).

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Ack, Packet,
    ProtocolVersion::{self, V311, V5},
    QoS, ReasonCode, UnsubAck, Unsubscribe,
};

fn unsubscribe(c: &mut Raw, id: u16, filters: &[&str]) -> UnsubAck {
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: filters.iter().map(|f| s(f)).collect(),
    }));
    loop {
        match c.recv() {
            Packet::UnsubAck(a) => return a,
            Packet::Publish(_) => continue,
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }
}

/// Publishes at QoS 1 and waits for the PUBACK, so anything routed has
/// left the publisher's shard by the time this returns.
fn publish_acked(p: &mut Raw, topic: &str, id: u16) {
    p.publish(topic, topic.as_bytes(), QoS::AtLeastOnce, id, false);
    match p.recv() {
        Packet::PubAck(a) => assert_eq!(a.packet_id, pid(id)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

// [MQTT-3.10.4-1] filters are compared character by character: `u/#` does
// not remove `u/+`; [MQTT-3.10.4-2] once removed, nothing new is delivered;
// [v3:MQTT-3.10.4-4] [v3:MQTT-3.10.4-5] [v5:MQTT-3.10.4-4] [v5:MQTT-3.10.4-5]
// every UNSUBSCRIBE gets an UNSUBACK with its packet id, even when nothing
// was removed; [v5:MQTT-3.11.3-1] [v5:MQTT-3.11.3-2] one v5 reason code
// per filter, in order; [v3:MQTT-3.10.4-6] [v5:MQTT-3.10.4-6] several
// filters in one packet act as a sequence of single ones.
#[test]
fn unsubscribe_matches_filters_exactly_and_stops_delivery() {
    for version in [V311, V5] {
        let b = start(2);
        let tag = if version == V5 { "5" } else { "3" };
        let (mut sub, _) = Raw::connect(
            b.addr,
            version,
            &id_on_shard(&format!("us{tag}"), 0, 2),
            true,
        );
        let (mut publ, _) = Raw::connect(
            b.addr,
            version,
            &id_on_shard(&format!("up{tag}"), 1, 2),
            true,
        );
        sub.subscribe(1, &[("u/+", QoS::AtLeastOnce), ("v/t", QoS::AtLeastOnce)]);

        let a = unsubscribe(&mut sub, 7, &["u/#"]);
        assert_eq!(a.packet_id, pid(7));
        expect_reasons(version, &a, &[ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        publish_acked(&mut publ, "u/a", 1);
        let m = sub.recv_publish();
        assert_eq!(
            &m.payload[..],
            b"u/a",
            "u/+ still holds after unsubscribing u/#"
        );
        if let Some(id) = m.packet_id {
            sub.send(&Packet::PubAck(Ack::new(id)));
        }

        let a = unsubscribe(&mut sub, 8, &["u/+", "nope/#", "v/t"]);
        assert_eq!(a.packet_id, pid(8));
        expect_reasons(
            version,
            &a,
            &[
                ReasonCode::SUCCESS,
                ReasonCode::NO_SUBSCRIPTION_EXISTED,
                ReasonCode::SUCCESS,
            ],
        );
        publish_acked(&mut publ, "u/a", 2);
        publish_acked(&mut publ, "v/t", 3);
        sub.expect_silence(Duration::from_millis(300));
    }
}

fn expect_reasons(version: ProtocolVersion, a: &UnsubAck, want: &[ReasonCode]) {
    if version == V5 {
        assert_eq!(a.reasons, want);
    } else {
        assert!(a.reasons.is_empty(), "3.1.1 UNSUBACK has no payload");
    }
}

// [MQTT-3.10.4-2] with the subscriber and the publisher on one shard too:
// an unsubscribed session gets nothing, a still-subscribed one everything.
#[test]
fn unsubscribe_leaves_other_sessions_alone() {
    let b = start(2);
    let (mut a, _) = Raw::connect(b.addr, V311, &id_on_shard("ua", 0, 2), true);
    let (mut c, _) = Raw::connect(b.addr, V311, &id_on_shard("uc", 0, 2), true);
    let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("upub", 0, 2), true);
    a.subscribe(1, &[("w/t", QoS::AtMostOnce)]);
    c.subscribe(1, &[("w/t", QoS::AtMostOnce)]);
    unsubscribe(&mut a, 2, &["w/t"]);
    publish_acked(&mut publ, "w/t", 1);
    assert_eq!(&c.recv_publish().payload[..], b"w/t");
    a.expect_silence(Duration::from_millis(200));
}
