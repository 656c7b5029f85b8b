//! Session queue rules, checked without sockets: `now` is passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::protocol::{MqttStr, Packet, PacketId, ReasonCode};
use crate::session::Message;
use crate::topic::TopicName;

const LIMITS: Limits = Limits {
    max_queued_messages: 100,
    max_queued_bytes: 1 << 20,
    queue_qos0: false,
    decode: None,
    inflight_ttl: None,
};

fn msg(payload: &'static str, qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: TopicName::new(MqttStr::from_static("t")).expect("topic"),
        payload: Bytes::from_static(payload.as_bytes()),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        publisher: Arc::from("p"),
        expires_at: None,
        received_at: std::time::Instant::now(),
    })
}

fn d(payload: &'static str, qos: QoS) -> Delivery {
    Delivery {
        msg: msg(payload, qos),
        qos,
        retain: false,
        subscription_ids: vec![],
        stored: None,
        rec: None,
    }
}

/// (payload, packet id, dup) of each PUBLISH in `out`.
fn publishes(out: &[Packet]) -> Vec<(String, Option<u16>, bool)> {
    out.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.packet_id.map(PacketId::get),
                p.dup,
            )),
            _ => None,
        })
        .collect()
}

fn id(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero")
}

// [v5:MQTT-3.3.4-9] never more unacknowledged QoS 1/2 PUBLISH than the window;
// [v5:MQTT-3.3.4-10] other packets are not held back by it.
#[test]
fn window_bounds_inflight_and_keeps_order() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 2);
    let mut out = Vec::new();
    for p in ["a", "b", "c", "d"] {
        assert_eq!(s.deliver(d(p, QoS::AtLeastOnce), true, now, &mut out), None);
    }
    assert_eq!(
        publishes(&out),
        vec![("a".into(), Some(1), false), ("b".into(), Some(2), false)]
    );
    assert_eq!((s.inflight_len(), s.pending_len()), (2, 2));
    // QoS 0 needs no window slot, but keeps its place behind queued messages.
    out.clear();
    s.deliver(d("zero", QoS::AtMostOnce), true, now, &mut out);
    assert!(out.is_empty());
    assert!(s.on_puback(id(2), now, &mut out));
    assert!(s.on_puback(id(1), now, &mut out));
    assert_eq!(
        publishes(&out),
        vec![
            ("c".into(), Some(3), false),
            ("d".into(), Some(4), false),
            ("zero".into(), None, false)
        ]
    );
    // With nothing queued, QoS 0 goes out at once even with the window full.
    out.clear();
    s.deliver(d("now", QoS::AtMostOnce), true, now, &mut out);
    assert_eq!(publishes(&out), vec![("now".into(), None, false)]);
    assert!(!s.on_puback(id(9), now, &mut out), "unknown id is ignored");
}

// [MQTT-4.4.0-1] on reconnect, unacknowledged PUBLISH are resent with their
// original packet identifiers, [MQTT-3.3.1-1] with DUP set; [v3:MQTT-2.3.1-4]
// the same identifier on every resend.
#[test]
fn resume_resends_inflight_with_dup_then_drains_queue() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 2);
    let mut out = Vec::new();
    s.deliver(d("a", QoS::AtLeastOnce), true, now, &mut out);
    s.deliver(d("b", QoS::ExactlyOnce), true, now, &mut out);
    // The connection drops; more messages arrive while offline.
    s.deliver(d("c", QoS::AtLeastOnce), false, now, &mut out);
    s.deliver(d("offline-qos0", QoS::AtMostOnce), false, now, &mut out);
    out.clear();
    s.resume(now, &mut out);
    assert_eq!(
        publishes(&out),
        vec![("a".into(), Some(1), true), ("b".into(), Some(2), true)]
    );
    out.clear();
    assert!(s.on_puback(id(1), now, &mut out));
    assert_eq!(publishes(&out), vec![("c".into(), Some(3), false)]);
}

// Resends on a live 3.1.1 connection (--resend-interval): each message
// unanswered for the interval goes again with DUP and its packet id, a
// received QoS 2 one as PUBREL; past --max-resends it is dropped, counted,
// and the window takes the next one.
#[test]
fn unanswered_messages_are_resent_then_dropped_after_the_last_resend() {
    let t0 = Instant::now();
    let every = Duration::from_secs(5);
    let mut s = Session::new(LIMITS, 2);
    let mut out = Vec::new();
    s.deliver(d("a", QoS::AtLeastOnce), true, t0, &mut out);
    s.deliver(
        d("b", QoS::ExactlyOnce),
        true,
        t0 + Duration::from_secs(1),
        &mut out,
    );
    s.deliver(d("c", QoS::AtLeastOnce), true, t0, &mut out);
    out.clear();
    assert!(s.on_pubrec(id(2), ReasonCode::SUCCESS, t0, &mut out));
    out.clear();
    assert_eq!(s.oldest_sent(), Some(t0));
    // Not yet due.
    assert_eq!(
        s.resend_due(t0 + Duration::from_secs(4), every, 2, &mut out),
        (0, 0)
    );
    assert!(out.is_empty());
    // "a" is due, "b" (sent a second later) not yet.
    let t5 = t0 + every;
    assert_eq!(s.resend_due(t5, every, 2, &mut out), (1, 0));
    assert_eq!(publishes(&out), vec![("a".into(), Some(1), true)]);
    out.clear();
    let t6 = t0 + Duration::from_secs(6);
    assert_eq!(s.resend_due(t6, every, 2, &mut out), (1, 0));
    assert_eq!(out, vec![Packet::PubRel(crate::protocol::Ack::new(id(2)))]);
    out.clear();
    // Second resend of "a"; then it has had its two.
    assert_eq!(s.resend_due(t5 + every, every, 2, &mut out), (1, 0));
    assert_eq!(publishes(&out), vec![("a".into(), Some(1), true)]);
    out.clear();
    assert_eq!(s.resend_due(t5 + every * 2, every, 2, &mut out), (1, 1));
    // "a" dropped, "b" resent once more, "c" takes the free slot.
    assert_eq!(publishes(&out), vec![("c".into(), Some(3), false)]);
    assert!(out.contains(&Packet::PubRel(crate::protocol::Ack::new(id(2)))));
    assert_eq!(s.dropped, 1);
    assert!(
        !s.on_puback(id(1), t5, &mut out),
        "a late PUBACK is ignored"
    );
    // A reconnect resends everything and starts the count again.
    out.clear();
    s.resume(t5 + every * 3, &mut out);
    assert_eq!(s.oldest_sent(), Some(t5 + every * 3));
}

// --inflight-ttl: a message unresolved for the TTL goes, in flight (from its
// first send) or queued (from its arrival, within TTL/16), is counted, and
// the window takes the next one.
#[test]
fn messages_unresolved_past_the_inflight_ttl_are_dropped() {
    let t0 = Instant::now();
    let s16 = Duration::from_secs(16);
    let limits = Limits {
        inflight_ttl: Some(s16),
        ..LIMITS
    };
    let mut s = Session::new(limits, 1);
    let mut out = Vec::new();
    // "a" goes out at once; "b" waits behind it; "c" arrives 10 s later.
    s.deliver(d("a", QoS::AtLeastOnce), true, t0, &mut out);
    s.deliver(d("b", QoS::AtLeastOnce), true, t0, &mut out);
    s.deliver(
        d("c", QoS::AtLeastOnce),
        true,
        t0 + Duration::from_secs(10),
        &mut out,
    );
    out.clear();
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(15), true, &mut out),
        0
    );
    // At 16 s "a" (sent at 0) has been in flight for the TTL; "b" (queued at
    // 0, marked within 1 s) goes by 17 s at the latest; the window then
    // takes "c".
    assert_eq!(s.expire_unresolved(t0 + s16, true, &mut out), 1);
    assert_eq!(publishes(&out), vec![("b".into(), Some(2), false)]);
    out.clear();
    // "c", queued at 10 s, is past the TTL by 27 s while still queued; "b"
    // was sent at 16 s and its time in flight counts from there.
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(26), true, &mut out),
        0
    );
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(27), true, &mut out),
        1
    );
    assert_eq!(s.pending_len(), 0);
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(31), true, &mut out),
        0
    );
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(32), true, &mut out),
        1
    );
    assert!(out.is_empty());
    assert_eq!(s.dropped, 3);
    // Offline, nothing is sent: the queue only shrinks.
    let mut s = Session::new(limits, 1);
    s.deliver(d("x", QoS::AtLeastOnce), false, t0, &mut out);
    out.clear();
    assert_eq!(
        s.expire_unresolved(t0 + Duration::from_secs(17), false, &mut out),
        1
    );
    assert!(out.is_empty());
    assert_eq!(s.pending_len(), 0);
}

// QoS 2 outbound: PUBREC is answered with PUBREL; after a reconnect the
// PUBREL (not the PUBLISH) is resent; PUBCOMP completes.
#[test]
fn qos2_outbound_flow_survives_reconnect() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 10);
    let mut out = Vec::new();
    s.deliver(d("x", QoS::ExactlyOnce), true, now, &mut out);
    out.clear();
    assert!(s.on_pubrec(id(1), ReasonCode::SUCCESS, now, &mut out));
    assert_eq!(out, vec![Packet::PubRel(crate::protocol::Ack::new(id(1)))]);
    out.clear();
    s.resume(now, &mut out);
    assert_eq!(out, vec![Packet::PubRel(crate::protocol::Ack::new(id(1)))]);
    out.clear();
    assert!(!s.on_puback(id(1), now, &mut out), "PUBACK is not PUBCOMP");
    assert!(s.on_pubcomp(id(1), now, &mut out));
    assert_eq!(s.inflight_len(), 0);
}

// [v5:MQTT-4.4.0-2] a PUBREC with an error code ends the delivery: the
// message is treated as acknowledged and not sent again.
#[test]
fn pubrec_error_drops_message() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 10);
    let mut out = Vec::new();
    s.deliver(d("x", QoS::ExactlyOnce), true, now, &mut out);
    out.clear();
    assert!(s.on_pubrec(id(1), ReasonCode::QUOTA_EXCEEDED, now, &mut out));
    assert!(out.is_empty());
    assert_eq!(s.inflight_len(), 0);
}

// The pending queue is bounded: QoS 0 goes first, then the oldest.
#[test]
fn full_queue_drops_qos0_first_then_oldest() {
    let now = Instant::now();
    let limits = Limits {
        max_queued_messages: 3,
        queue_qos0: true,
        decode: None,
        ..LIMITS
    };
    let mut s = Session::new(limits, 1);
    let mut out = Vec::new();
    s.deliver(d("q1", QoS::AtLeastOnce), false, now, &mut out);
    s.deliver(d("zero", QoS::AtMostOnce), false, now, &mut out);
    s.deliver(d("q2", QoS::AtLeastOnce), false, now, &mut out);
    assert_eq!(
        s.deliver(d("q3", QoS::AtLeastOnce), false, now, &mut out),
        Some(DropReason::QueueFull)
    );
    assert_eq!(
        s.deliver(d("q4", QoS::AtLeastOnce), false, now, &mut out),
        Some(DropReason::QueueFull)
    );
    assert_eq!(s.dropped, 2);
    let mut s2 = s;
    s2.set_window(10);
    out.clear();
    s2.resume(now, &mut out);
    let got: Vec<String> = publishes(&out).into_iter().map(|p| p.0).collect();
    assert_eq!(got, vec!["q2", "q3", "q4"]);
}

// The byte bound counts what a queued message holds (topic, properties,
// overhead), not its payload alone.
#[test]
fn byte_bound_applies_too() {
    let now = Instant::now();
    let one = d("ab", QoS::AtLeastOnce).held_bytes();
    assert!(one > 100, "overhead is counted: {one}");
    let limits = Limits {
        max_queued_bytes: 2 * one,
        ..LIMITS
    };
    let mut s = Session::new(limits, 1);
    let mut out = Vec::new();
    s.deliver(d("ab", QoS::AtLeastOnce), false, now, &mut out);
    s.deliver(d("cd", QoS::AtLeastOnce), false, now, &mut out);
    assert_eq!(
        s.deliver(d("ef", QoS::AtLeastOnce), false, now, &mut out),
        Some(DropReason::QueueFull)
    );
    assert_eq!(s.pending_len(), 2);
    assert_eq!(
        s.deliver(d("too-big", QoS::AtLeastOnce), false, now, &mut out),
        Some(DropReason::QueueFull)
    );
}

// Offline QoS 0 is not queued unless asked.
#[test]
fn offline_qos0_not_queued_by_default() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 1);
    let mut out = Vec::new();
    assert_eq!(
        s.deliver(d("z", QoS::AtMostOnce), false, now, &mut out),
        None
    );
    assert_eq!(s.pending_len(), 0);
}

// [v5:MQTT-3.3.2-5] an expired message is not delivered; [v5:MQTT-3.3.2-6]
// the forwarded expiry is what is left of it.
#[test]
fn message_expiry() {
    let t0 = Instant::now();
    let mut s = Session::new(LIMITS, 1);
    let mut out = Vec::new();
    let mk = |secs| {
        let mut m = Message {
            topic: TopicName::new(MqttStr::from_static("t")).expect("topic"),
            payload: Bytes::from_static(b"e"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            publisher: Arc::from("p"),
            expires_at: Some(t0 + Duration::from_secs(secs)),
            received_at: std::time::Instant::now(),
        };
        m.properties.message_expiry_interval = Some(secs as u32);
        Delivery {
            msg: Arc::new(m),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            stored: None,
            rec: None,
        }
    };
    s.deliver(mk(10), false, t0, &mut out);
    s.deliver(mk(100), false, t0, &mut out);
    // 20 s later: the first has expired, the second has 80 s left.
    s.resume(t0 + Duration::from_secs(20), &mut out);
    assert_eq!(out.len(), 1);
    let Packet::Publish(p) = &out[0] else {
        panic!("publish")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(80));
    assert_eq!(s.dropped, 1);
    assert_eq!(
        s.deliver(mk(5), true, t0 + Duration::from_secs(6), &mut out),
        Some(DropReason::Expired)
    );
}

// [v5:MQTT-2.2.1-4] [v5:MQTT-4.3.3-1] packet ids are non-zero and
// not in use; the counter wraps past 65535 and skips ids still inflight.
#[test]
fn packet_ids_wrap_and_skip_inflight() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 3);
    let mut out = Vec::new();
    s.deliver(d("a", QoS::AtLeastOnce), true, now, &mut out); // id 1 stays inflight
    s.next_id = u16::MAX - 1;
    s.deliver(d("b", QoS::AtLeastOnce), true, now, &mut out); // 65535
    s.deliver(d("c", QoS::AtLeastOnce), true, now, &mut out); // wraps past 0 and 1 to 2
    let ids: Vec<Option<u16>> = publishes(&out).into_iter().map(|p| p.1).collect();
    assert_eq!(ids, vec![Some(1), Some(65535), Some(2)]);
}

// Subscription identifiers travel with the delivery ([v5:MQTT-3.3.4-3]).
#[test]
fn subscription_ids_are_attached() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 3);
    let mut out = Vec::new();
    let mut del = d("a", QoS::AtMostOnce);
    del.subscription_ids = vec![3, 7];
    s.deliver(del, true, now, &mut out);
    let Packet::Publish(p) = &out[0] else {
        panic!("publish")
    };
    assert_eq!(p.properties.subscription_identifiers, vec![3, 7]);
}

// A full queue's overflow is O(1): 300k publishes into a full queue of 100k
// QoS 1 messages (each one drops the oldest) and 100k mixed ones (each
// drops the oldest QoS 0 from the middle). A scan per drop took minutes.
#[test]
fn overflow_of_a_full_queue_is_constant_time() {
    let now = Instant::now();
    let limits = Limits {
        max_queued_messages: 100_000,
        max_queued_bytes: usize::MAX,
        queue_qos0: true,
        decode: None,
        inflight_ttl: None,
    };
    let started = Instant::now();
    let mut s = Session::new(limits, 1);
    let mut out = Vec::new();
    let q1 = d("one", QoS::AtLeastOnce);
    let q0 = d("zero", QoS::AtMostOnce);
    for _ in 0..400_000 {
        s.deliver(q1.clone(), false, now, &mut out);
    }
    assert_eq!(s.pending_len(), 100_000);
    // QoS 1 at the front, QoS 0 behind: every drop removes a QoS 0 from
    // the middle.
    for i in 0..300_000 {
        let next = if i % 2 == 0 { &q0 } else { &q1 };
        s.deliver(next.clone(), false, now, &mut out);
    }
    assert_eq!(s.pending_len(), 100_000);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "700k deliveries into a full queue took {:?}",
        started.elapsed()
    );
}

proptest::proptest! {
    // The O(1) queue drops and pops exactly what a plain scan would.
    #[test]
    fn pending_matches_a_linear_model(ops in proptest::collection::vec((0u8..5, 0u32..64), 0..3000)) {
        let mut p = crate::session::pending::Pending::default();
        let mut model: std::collections::VecDeque<(u32, QoS)> = Default::default();
        let mut n = 0u32;
        for (op, back) in ops {
            match op {
                0 | 1 => {
                    let qos = if op == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    n += 1;
                    let mut x = d("x", qos);
                    x.subscription_ids = vec![n];
                    p.push_back(x);
                    model.push_back((n, qos));
                }
                2 => {
                    let got = p.drop_one().map(|d| d.subscription_ids[0]);
                    let at = model.iter().position(|m| m.1 == QoS::AtMostOnce).unwrap_or(0);
                    proptest::prop_assert_eq!(got, model.remove(at).map(|m| m.0));
                }
                3 => {
                    let got = p.pop_front().map(|d| d.subscription_ids[0]);
                    proptest::prop_assert_eq!(got, model.pop_front().map(|m| m.0));
                }
                _ => {
                    // Remove by key, searched over the holes: `back`
                    // entries from the newest, or a key that is not there.
                    let key = n.saturating_sub(back);
                    let want = model.iter().position(|m| m.0 == key);
                    let got = p.find(u64::from(key), |d| Some(u64::from(d.subscription_ids[0])));
                    proptest::prop_assert_eq!(got.is_ok(), want.is_some());
                    if let (Ok(at), Some(i)) = (got, want) {
                        proptest::prop_assert_eq!(p.remove(at).map(|d| d.subscription_ids[0]), Some(key));
                        model.remove(i);
                    }
                }
            }
            proptest::prop_assert_eq!(p.len(), model.len());
            proptest::prop_assert_eq!(p.front().map(|d| d.subscription_ids[0]), model.front().map(|m| m.0));
        }
    }
}

// A drain stops when the outbox has no room left and says so; an idle
// outbox still takes one message larger than the room.
#[test]
fn drain_stops_for_room_and_resumes() {
    let now = Instant::now();
    let mut s = Session::new(LIMITS, 10);
    let one = d("m", QoS::AtMostOnce).held_bytes();
    let mut out = Vec::new();
    s.set_room(usize::MAX, true);
    for _ in 0..10 {
        s.deliver(d("m", QoS::AtMostOnce), false, now, &mut out);
    }
    assert_eq!(s.pending_len(), 0, "offline QoS 0 is not queued by default");
    for _ in 0..10 {
        s.deliver_queued(d("m", QoS::AtMostOnce), false, now, &mut out);
    }
    assert_eq!(s.pending_len(), 10);
    s.set_room(3 * one, false);
    s.drain(now, &mut out);
    assert_eq!(publishes(&out).len(), 3);
    assert!(s.take_blocked());
    assert!(!s.take_blocked(), "reported once");
    out.clear();
    s.set_room(0, true);
    s.drain(now, &mut out);
    assert_eq!(publishes(&out).len(), 1, "an idle outbox takes one");
    assert!(s.take_blocked());
    out.clear();
    s.set_room(usize::MAX, true);
    s.drain(now, &mut out);
    assert_eq!(publishes(&out).len(), 6);
    assert!(!s.take_blocked());
}

// A queued reference costs 24 bytes of RAM, whatever its message: what lets
// an offline session hold millions.
#[test]
fn a_queued_reference_is_24_bytes() {
    assert_eq!(std::mem::size_of::<Option<Entry>>(), 24);
}
