//! Persistent sessions, redelivery, queue bounds, wills and session expiry.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Ack, Disconnect, LastWill, Packet,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode, WillProperties,
};

// [v3:MQTT-3.1.2-4] [v3:MQTT-3.1.2-5] [v5:MQTT-3.1.2-5] a persistent session keeps
// its subscriptions and queues QoS 1/2 messages while offline; they arrive
// after reconnect, in order, with session present; subscriber and publisher
// on different shards.
#[test]
fn persistent_session_queues_while_offline() {
    let b = start(2);
    let sub_id = id_on_shard("ps-sub", 0, 2);
    {
        let (mut sub, ack) = Raw::connect(b.addr, V311, &sub_id, false);
        assert!(!ack.session_present);
        sub.subscribe(1, &[("ps/#", QoS::ExactlyOnce)]);
        sub.send(&Packet::Disconnect(Disconnect::default()));
        assert!(sub.expect_closed().is_empty());
    }
    let (mut p, _) = Raw::connect(b.addr, V5, &id_on_shard("ps-pub", 1, 2), true);
    for i in 1..=20u16 {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.publish("ps/a", &i.to_be_bytes(), q, i, false);
        match p.recv() {
            Packet::PubAck(_) => {}
            Packet::PubRec(a) => {
                p.send(&Packet::PubRel(Ack::new(a.packet_id)));
                assert!(matches!(p.recv(), Packet::PubComp(_)));
            }
            other => panic!("{other:?}"),
        }
    }
    // QoS 0 is not queued for offline sessions. It crosses the mesh to the
    // subscriber's shard, and without a log no acknowledgement waits for that
    // shard, so a PINGRESP would not prove it arrived there before the
    // reconnect. A SUBACK does: it waits until every shard applied the
    // publisher's subscription, which travels behind the message in order.
    p.publish("ps/a", b"q0", QoS::AtMostOnce, 0, false);
    p.subscribe(21, &[("ps-barrier", QoS::AtMostOnce)]);
    let (mut sub, ack) = Raw::connect(b.addr, V311, &sub_id, false);
    assert!(ack.session_present);
    // The window lets several messages through before the first is
    // acknowledged, so PUBREL and PUBLISH interleave.
    let mut got = Vec::new();
    let mut open_rel = 0;
    while got.len() < 20 || open_rel > 0 {
        match sub.recv() {
            Packet::Publish(m) => {
                let id = m.packet_id.expect("the QoS 0 message was not queued");
                got.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
                if m.qos == QoS::AtLeastOnce {
                    sub.send(&Packet::PubAck(Ack::new(id)));
                } else {
                    sub.send(&Packet::PubRec(Ack::new(id)));
                    open_rel += 1;
                }
            }
            Packet::PubRel(a) => {
                sub.send(&Packet::PubComp(Ack::new(a.packet_id)));
                open_rel -= 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    sub.expect_silence(Duration::from_millis(300));
}

// [MQTT-4.4.0-1] unacknowledged messages are resent on reconnect with the
// same packet ids and [MQTT-3.3.1-1] DUP set; PUBREL is resent for QoS 2
// messages already received.
#[test]
fn unacknowledged_messages_are_resent_with_dup() {
    let b = start(2);
    for v in [V311, V5] {
        let id = format!("dup-{v:?}");
        let mut c = connect_packet(v, &id, false);
        c.properties.session_expiry_interval = Some(300);
        let (mut sub, _) = Raw::connect_with(b.addr, c.clone());
        sub.subscribe(1, &[("dup/t", QoS::ExactlyOnce)]);
        let (mut p, _) = Raw::connect(b.addr, V311, &format!("dup-pub-{v:?}"), true);
        p.publish("dup/t", b"one", QoS::AtLeastOnce, 1, false);
        p.publish("dup/t", b"two", QoS::ExactlyOnce, 2, false);
        let m1 = sub.recv_publish();
        let m2 = sub.recv_publish();
        // Receive PUBLISH two (PUBREC) but ack nothing else, then drop the connection.
        sub.send(&Packet::PubRec(Ack::new(m2.packet_id.expect("id"))));
        assert!(matches!(sub.recv(), Packet::PubRel(_)));
        drop(sub);
        let (mut sub, ack) = Raw::connect_with(b.addr, c);
        assert!(ack.session_present);
        let again = sub.recv_publish();
        assert!(again.dup);
        assert_eq!(again.packet_id, m1.packet_id);
        assert_eq!(&again.payload[..], b"one");
        assert_eq!(
            sub.recv(),
            Packet::PubRel(Ack::new(m2.packet_id.expect("id")))
        );
        sub.send(&Packet::PubAck(Ack::new(m1.packet_id.expect("id"))));
        sub.send(&Packet::PubComp(Ack::new(m2.packet_id.expect("id"))));
        sub.expect_silence(Duration::from_millis(300));
    }
}

// [v3:MQTT-3.1.2-6] [v5:MQTT-3.1.2-4] clean start discards the session;
// [v5:MQTT-3.2.2-2] session present 0.
#[test]
fn clean_start_discards_session() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V311, "cs", false);
    sub.subscribe(1, &[("cs/t", QoS::AtLeastOnce)]);
    drop(sub);
    b.wait_connections(0);
    let (mut sub, ack) = Raw::connect(b.addr, V311, "cs", true);
    assert!(!ack.session_present);
    let (mut p, _) = Raw::connect(b.addr, V311, "cs-pub", true);
    p.publish("cs/t", b"x", QoS::AtLeastOnce, 1, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    sub.expect_silence(Duration::from_millis(300));
}

// [v5:MQTT-3.1.2-23] a v5 session with expiry 0 ends with the connection.
#[test]
fn v5_session_expiry_zero_ends_session() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V5, "exp0", false);
    sub.subscribe(1, &[("e/t", QoS::AtLeastOnce)]);
    sub.send(&Packet::Disconnect(Disconnect::default()));
    sub.expect_closed();
    let (_sub, ack) = Raw::connect(b.addr, V5, "exp0", false);
    assert!(!ack.session_present);
}

// A v5 session with an expiry survives a disconnect and ends after it.
#[test]
fn v5_session_expires_after_interval() {
    let b = start(2);
    let mut c = connect_packet(V5, "exp1", false);
    c.properties.session_expiry_interval = Some(1);
    let (sub, _) = Raw::connect_with(b.addr, c.clone());
    drop(sub);
    b.wait_connections(0);
    let (sub, ack) = Raw::connect_with(b.addr, c.clone());
    assert!(ack.session_present);
    drop(sub);
    b.wait_connections(0);
    std::thread::sleep(Duration::from_millis(1500));
    let (_sub, ack) = Raw::connect_with(b.addr, c);
    assert!(!ack.session_present);
}

// --v3-session-expiry applies to 3.1.1 clean-session-0 sessions.
#[test]
fn v3_global_session_expiry() {
    let mut cfg = config(2);
    cfg.v3_session_expiry = Some(Duration::from_millis(500));
    let b = start_with(cfg);
    let (sub, _) = Raw::connect(b.addr, V311, "v3exp", false);
    drop(sub);
    b.wait_connections(0);
    std::thread::sleep(Duration::from_millis(1000));
    let (_sub, ack) = Raw::connect(b.addr, V311, "v3exp", false);
    assert!(!ack.session_present);
}

// The offline queue is bounded: past --max-queued-messages the oldest goes.
#[test]
fn offline_queue_drops_oldest_when_full() {
    let mut cfg = config(2);
    cfg.max_queued_messages = 5;
    let (b, m) = start_with_metrics(cfg);
    let (mut sub, _) = Raw::connect(b.addr, V311, "qfull", false);
    sub.subscribe(1, &[("qf", QoS::AtLeastOnce)]);
    drop(sub);
    b.wait_connections(0);
    let (mut p, _) = Raw::connect(b.addr, V311, "qfull-pub", true);
    for i in 1..=10u16 {
        p.publish("qf", &i.to_be_bytes(), QoS::AtLeastOnce, i, false);
        assert!(matches!(p.recv(), Packet::PubAck(_)));
    }
    // In memory, a PUBACK does not wait for the delivery to reach a session
    // on the other shard: a reconnect there could come first and take the
    // last ones online (1 in 12 runs got message 5).
    wait_metric(m, "ringmq_messages_dropped_total", 5.0);
    let (mut sub, _) = Raw::connect(b.addr, V311, "qfull", false);
    for i in 6..=10u16 {
        let m = sub.recv_publish();
        assert_eq!(u16::from_be_bytes([m.payload[0], m.payload[1]]), i);
        sub.send(&Packet::PubAck(Ack::new(m.packet_id.expect("id"))));
    }
    sub.expect_silence(Duration::from_millis(300));
}

fn with_will(
    v: ringmq::protocol::ProtocolVersion,
    id: &str,
    delay: Option<u32>,
) -> ringmq::protocol::Connect {
    let mut c = connect_packet(v, id, true);
    c.will = Some(LastWill {
        topic: s("will/t"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    });
    c
}

// [v3:MQTT-3.1.2-8] [v5:MQTT-3.1.2-8] the will is published on an abnormal
// close; [v3:MQTT-3.1.2-10] [v5:MQTT-3.1.2-10] [v3:MQTT-3.14.4-3]
// [v5:MQTT-3.14.4-3] not after DISCONNECT.
#[test]
fn will_on_abnormal_close_only() {
    let b = start(2);
    let (mut w, _) = Raw::connect(b.addr, V311, "will-watch", true);
    w.subscribe(1, &[("will/#", QoS::AtLeastOnce)]);
    for v in [V311, V5] {
        let (c, _) = Raw::connect_with(b.addr, with_will(v, &format!("dies-{v:?}"), None));
        drop(c);
        let m = w.recv_publish();
        assert_eq!(&m.payload[..], b"gone");
        w.send(&Packet::PubAck(Ack::new(m.packet_id.expect("id"))));
        let (mut c, _) = Raw::connect_with(b.addr, with_will(v, &format!("leaves-{v:?}"), None));
        c.send(&Packet::Disconnect(Disconnect::default()));
        c.expect_closed();
    }
    w.expect_silence(Duration::from_millis(300));
    // [v5] DISCONNECT with 0x04 asks for the will.
    let (mut c, _) = Raw::connect_with(b.addr, with_will(V5, "asks", None));
    c.send(&Packet::Disconnect(Disconnect::new(
        ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
    )));
    c.expect_closed();
    assert_eq!(&w.recv_publish().payload[..], b"gone");
}

// [v5:MQTT-3.1.3-9] a reconnect within the will delay cancels the will; after
// the delay it is published.
#[test]
fn v5_will_delay() {
    let b = start(2);
    let (mut w, _) = Raw::connect(b.addr, V311, "wd-watch", true);
    w.subscribe(1, &[("will/#", QoS::AtMostOnce)]);
    let mut c = with_will(V5, "wd", Some(1));
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (conn, _) = Raw::connect_with(b.addr, c.clone());
    drop(conn);
    b.wait_connections(1);
    let (conn, _) = Raw::connect_with(b.addr, c.clone());
    w.expect_silence(Duration::from_millis(1500));
    drop(conn);
    let started = std::time::Instant::now();
    assert_eq!(&w.recv_publish().payload[..], b"gone");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

// [v3:MQTT-3.1.2-17] [v5:MQTT-3.1.2-15] a will with Will Retain is retained.
#[test]
fn retained_will() {
    let b = start(2);
    let owner = ringmq::shard::owner_of("rw", 2);
    // Watcher and late subscriber live on the other shard, where the
    // retained copy arrives over the mesh. A shard sends the retained copy
    // before the delivery on the same FIFO channel, so once the watcher has
    // the will, that shard stores it: no sleeping needed.
    let (mut watcher, _) = Raw::connect(b.addr, V311, &id_on_shard("rw-watch", 1 - owner, 2), true);
    watcher.subscribe(1, &[("will/t", QoS::AtMostOnce)]);
    let mut c = with_will(V311, "rw", None);
    if let Some(w) = c.will.as_mut() {
        w.retain = true;
    }
    let (conn, _) = Raw::connect_with(b.addr, c);
    drop(conn);
    assert_eq!(&watcher.recv_publish().payload[..], b"gone");
    let (mut late, _) = Raw::connect(b.addr, V311, &id_on_shard("rw-late", 1 - owner, 2), true);
    late.subscribe(1, &[("will/t", QoS::AtMostOnce)]);
    let m = late.recv_publish();
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"gone");
}

// [v3:MQTT-3.1.2-6] [v5:MQTT-3.1.2-4] [v5:MQTT-3.1.4-3] a takeover that ends
// the old session (either side clean) publishes the old connection's will;
// one that resumes a persistent session does not ([v3:MQTT-3.1.2-4]
// [v5:MQTT-3.1.2-5]). The same cases as Mosquitto's 07-will-takeover test.
// The new connection's own publish follows the will from the same shard, so
// the first message the watcher gets says which: no waiting for silence.
#[test]
fn a_takeover_that_ends_the_session_publishes_the_old_will() {
    let b = start(2);
    let (mut w, _) = Raw::connect(b.addr, V311, "wt-watch", true);
    w.subscribe(1, &[("will/t", QoS::AtMostOnce)]);
    for v in [V311, V5] {
        for (clean1, clean2) in [(true, true), (false, true), (true, false), (false, false)] {
            let id = format!("wt-{v:?}-{clean1}-{clean2}");
            let mut first = with_will(v, &id, None);
            first.clean_start = clean1;
            let mut second = connect_packet(v, &id, clean2);
            if v == V5 {
                first.properties.session_expiry_interval = Some(if clean1 { 0 } else { 60 });
                second.properties.session_expiry_interval = Some(if clean2 { 0 } else { 60 });
            }
            let (mut old, _) = Raw::connect_with(b.addr, first);
            let (mut new, ack) = Raw::connect_with(b.addr, second);
            assert_eq!(ack.session_present, !clean1 && !clean2, "{id}");
            old.expect_closed();
            new.publish("will/t", b"ready", QoS::AtMostOnce, 0, false);
            let first_seen = w.recv_publish();
            if clean1 || clean2 {
                assert_eq!(&first_seen.payload[..], b"gone", "{id}");
                assert_eq!(&w.recv_publish().payload[..], b"ready", "{id}");
            } else {
                assert_eq!(&first_seen.payload[..], b"ready", "{id}");
            }
            new.send(&Packet::Disconnect(Disconnect::default()));
            new.expect_closed();
        }
    }
}

// --resend-interval: on a live 3.1.1 connection an unacknowledged QoS 1
// message goes again with DUP and its packet id, at most --max-resends
// times; then it is dropped and the window takes the next message. MQTT 5
// connections are never resent to while connected (5.0 4.4: resends only on
// reconnect, [v5:MQTT-4.4.0-1]).
#[test]
fn unacknowledged_messages_are_resent_on_a_live_v3_connection_only() {
    let mut cfg = config(2);
    cfg.resend_interval = Some(Duration::from_millis(200));
    cfg.max_resends = 2;
    cfg.max_inflight = 1;
    let b = start_with(cfg);
    let (mut v3, _) = Raw::connect(b.addr, V311, "rs-v3", true);
    v3.subscribe(1, &[("rs/t", QoS::AtLeastOnce)]);
    let (mut v5, _) = Raw::connect(b.addr, V5, "rs-v5", true);
    v5.subscribe(1, &[("rs/t", QoS::AtLeastOnce)]);
    let (mut p, _) = Raw::connect(b.addr, V311, "rs-pub", true);
    for (i, body) in [&b"one"[..], b"two"].into_iter().enumerate() {
        p.publish("rs/t", body, QoS::AtLeastOnce, i as u16 + 1, false);
        assert!(matches!(p.recv(), Packet::PubAck(_)));
    }
    let first = v3.recv_publish();
    assert_eq!((&first.payload[..], first.dup), (&b"one"[..], false));
    for _ in 0..2 {
        let again = v3.recv_publish();
        assert_eq!(&again.payload[..], b"one");
        assert!(again.dup);
        assert_eq!(again.packet_id, first.packet_id);
    }
    // Dropped after its second resend: the window (1) takes "two".
    let next = v3.recv_publish();
    assert_eq!((&next.payload[..], next.dup), (&b"two"[..], false));
    v3.send(&Packet::PubAck(Ack::new(next.packet_id.expect("id"))));
    v3.expect_silence(Duration::from_millis(500));
    // The v5 subscriber gets "one" once and nothing more until it acks.
    let m = v5.recv_publish();
    assert_eq!((&m.payload[..], m.dup), (&b"one"[..], false));
    v5.expect_silence(Duration::from_millis(700));
}

// --inflight-ttl: messages queued for a persistent session that does not
// come back in time are dropped (within TTL/8), one in flight included;
// what arrives after that is delivered as usual.
#[test]
fn messages_unresolved_past_the_inflight_ttl_are_dropped() {
    let mut cfg = config(2);
    cfg.inflight_ttl = Some(Duration::from_millis(400));
    let b = start_with(cfg);
    let (mut sub, _) = Raw::connect(b.addr, V311, "ttl-sub", false);
    sub.subscribe(1, &[("ttl/t", QoS::AtLeastOnce)]);
    let (mut p, _) = Raw::connect(b.addr, V311, "ttl-pub", true);
    // One goes in flight and is never acknowledged; then the client leaves.
    p.publish("ttl/t", b"in-flight", QoS::AtLeastOnce, 1, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    assert_eq!(&sub.recv_publish().payload[..], b"in-flight");
    drop(sub);
    b.wait_connections(1);
    for i in 0..5u16 {
        p.publish("ttl/t", b"queued", QoS::AtLeastOnce, i + 2, false);
        assert!(matches!(p.recv(), Packet::PubAck(_)));
    }
    // TTL plus its 1/8 of lateness, with room for a slow machine.
    std::thread::sleep(Duration::from_millis(900));
    let (mut sub, ack) = Raw::connect(b.addr, V311, "ttl-sub", false);
    assert!(ack.session_present);
    p.publish("ttl/t", b"fresh", QoS::AtLeastOnce, 9, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let m = sub.recv_publish();
    assert_eq!((&m.payload[..], m.dup), (&b"fresh"[..], false));
}
