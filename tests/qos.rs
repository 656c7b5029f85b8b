//! QoS 0/1/2 in both directions, granted-QoS downgrade, overlapping
//! subscriptions, ordering, and exactly-once, across shards.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Ack, Packet,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions,
};

fn qos_all() -> [QoS; 3] {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
}

// [v3:MQTT-3.3.4-1] [v5:MQTT-3.3.4-1] the receiver answers by QoS;
// [v3:MQTT-3.8.4-6] [v5:MQTT-3.8.4-8] delivered at min(published, granted);
// publisher and subscriber owned by different shards.
#[test]
fn qos_matrix_across_shards() {
    let b = start(2);
    let sub_id = id_on_shard("qsub", 0, 2);
    let pub_id = id_on_shard("qpub", 1, 2);
    for sub_q in qos_all() {
        let (mut sub, _) = Raw::connect(b.addr, V311, &sub_id, true);
        let ack = sub.subscribe(1, &[("q/t", sub_q)]);
        assert_eq!(ack.reasons, vec![ReasonCode(sub_q as u8)]);
        let (mut publ, _) = Raw::connect(b.addr, V5, &pub_id, true);
        for (i, pub_q) in qos_all().into_iter().enumerate() {
            let id = i as u16 + 1;
            publ.publish(
                "q/t",
                format!("{sub_q:?}-{pub_q:?}").as_bytes(),
                pub_q,
                id,
                false,
            );
            match pub_q {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => assert_eq!(publ.recv(), Packet::PubAck(Ack::new(pid(id)))),
                QoS::ExactlyOnce => {
                    assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(id))));
                    publ.send(&Packet::PubRel(Ack::new(pid(id))));
                    assert_eq!(publ.recv(), Packet::PubComp(Ack::new(pid(id))));
                }
            }
            let p = sub.recv_publish();
            assert_eq!(p.qos, pub_q.min(sub_q), "sub {sub_q:?} pub {pub_q:?}");
            // [v3:MQTT-3.3.1-9] a normal delivery has RETAIN 0.
            assert!(!p.retain);
            // [v3:MQTT-3.3.1-3] DUP is not propagated.
            assert!(!p.dup);
            match p.qos {
                QoS::AtMostOnce => assert_eq!(p.packet_id, None),
                QoS::AtLeastOnce => sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id")))),
                QoS::ExactlyOnce => {
                    let id = p.packet_id.expect("id");
                    sub.send(&Packet::PubRec(Ack::new(id)));
                    assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id)));
                    sub.send(&Packet::PubComp(Ack::new(id)));
                }
            }
        }
    }
}

// [v5:MQTT-4.3.3-8] [v5:MQTT-4.3.3-10] [v5:MQTT-4.3.3-11] [v3:MQTT-4.3.3-2]
// QoS 2 inbound is exactly once: a PUBLISH resent (DUP)
// before PUBREL is acknowledged again but delivered once.
#[test]
fn qos2_duplicate_publish_delivered_once() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V311, "eo-sub", true);
    sub.subscribe(1, &[("eo", QoS::ExactlyOnce)]);
    let (mut publ, _) = Raw::connect(b.addr, V311, "eo-pub", true);
    publ.publish("eo", b"once", QoS::ExactlyOnce, 7, false);
    assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(7))));
    let mut again = ringmq::protocol::Publish::new(s("eo"), bytes::Bytes::from_static(b"once"));
    again.qos = QoS::ExactlyOnce;
    again.dup = true;
    again.packet_id = Some(pid(7));
    publ.send(&Packet::Publish(again));
    assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(7))));
    publ.send(&Packet::PubRel(Ack::new(pid(7))));
    assert_eq!(publ.recv(), Packet::PubComp(Ack::new(pid(7))));
    let p = sub.recv_publish();
    assert_eq!(&p.payload[..], b"once");
    sub.send(&Packet::PubRec(Ack::new(p.packet_id.expect("id"))));
    assert!(matches!(sub.recv(), Packet::PubRel(_)));
    sub.expect_silence(Duration::from_millis(300));
    // PUBREL for an unknown id: v5 answers 0x92 (3.1.1: plain PUBCOMP).
    publ.send(&Packet::PubRel(Ack::new(pid(9))));
    assert_eq!(publ.recv(), Packet::PubComp(Ack::new(pid(9))));
}

// [v5:MQTT-3.3.4-2] [v3:MQTT-3.3.5-1] overlapping subscriptions: one copy at
// the highest QoS; [v5:MQTT-3.3.4-3] [v5:MQTT-3.3.4-4] with every matching
// subscription identifier.
#[test]
fn overlapping_subscriptions_one_copy_max_qos_all_ids() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V5, "ov", true);
    for (id, (filter, q, sid)) in [
        ("ov/+", QoS::AtMostOnce, 11),
        ("ov/#", QoS::AtLeastOnce, 22),
    ]
    .into_iter()
    .enumerate()
    {
        sub.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id as u16 + 1),
            properties: SubscribeProperties {
                subscription_identifier: Some(sid),
                user_properties: vec![],
            },
            filters: vec![SubscribeFilter {
                filter: s(filter),
                options: SubscriptionOptions {
                    qos: q,
                    ..Default::default()
                },
            }],
        }));
        assert!(matches!(sub.recv(), Packet::SubAck(_)));
    }
    let (mut publ, _) = Raw::connect(b.addr, V311, "ovpub", true);
    publ.publish("ov/x", b"m", QoS::ExactlyOnce, 1, false);
    let p = sub.recv_publish();
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![11, 22]);
    sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));
    sub.expect_silence(Duration::from_millis(300));
}

// [v5:MQTT-3.8.3-3] No Local: a client's own publishes are not sent back.
#[test]
fn v5_no_local() {
    let b = start(2);
    let (mut c, _) = Raw::connect(b.addr, V5, "nl", true);
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![SubscribeFilter {
            filter: s("nl/t"),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: true,
                ..Default::default()
            },
        }],
    }));
    assert!(matches!(c.recv(), Packet::SubAck(_)));
    c.publish("nl/t", b"mine", QoS::AtMostOnce, 0, false);
    c.expect_silence(Duration::from_millis(300));
    let (mut other, _) = Raw::connect(b.addr, V5, "nl-other", true);
    other.publish("nl/t", b"theirs", QoS::AtMostOnce, 0, false);
    assert_eq!(&c.recv_publish().payload[..], b"theirs");
}

// [v3:MQTT-4.6.0-5] [v3:MQTT-4.6.0-6] [v5:MQTT-4.6.0-5] [v5:MQTT-4.6.0-6]
// Messages from one publisher on one topic arrive in order,
// here 2,000 QoS 1 messages through the mesh with a small inflight window.
#[test]
fn order_is_kept_per_publisher() {
    let mut cfg = config(4);
    cfg.max_inflight = 4;
    let b = start_with(cfg);
    let sub_id = id_on_shard("ord-sub", 1, 4);
    let pub_id = id_on_shard("ord-pub", 3, 4);
    let (mut sub, _) = Raw::connect(b.addr, V311, &sub_id, true);
    sub.subscribe(1, &[("ord/#", QoS::AtLeastOnce)]);
    let (mut publ, _) = Raw::connect(b.addr, V311, &pub_id, true);
    let n = 2000u16;
    let writer = std::thread::spawn(move || {
        for i in 1..=n {
            publ.publish("ord/a", &i.to_be_bytes(), QoS::AtLeastOnce, i, false);
        }
        let mut acks = 0;
        while acks < n {
            if let Packet::PubAck(_) = publ.recv() {
                acks += 1;
            }
        }
    });
    for i in 1..=n {
        let p = sub.recv_publish();
        assert_eq!(u16::from_be_bytes([p.payload[0], p.payload[1]]), i);
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("id"))));
    }
    writer.join().expect("publisher");
}

// The same through an independent client: rumqttc v4 and v5, QoS 1 and 2,
// publisher and subscriber on different shards.
#[test]
fn rumqttc_v4_and_v5_exchange_messages() {
    let b = start(2);
    let rt = rt();
    rt.block_on(async {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet as P};
        let mut opts = MqttOptions::new(id_on_shard("rq-sub", 0, 2), "127.0.0.1", b.addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (sub, mut sub_loop) = AsyncClient::new(opts, 100);
        sub.subscribe("rq/#", rumqttc::QoS::ExactlyOnce)
            .await
            .expect("subscribe");
        // Wait for the SUBACK.
        loop {
            let ev = tokio::time::timeout(TIMEOUT, sub_loop.poll())
                .await
                .expect("in time");
            if let Ok(Event::Incoming(P::SubAck(_))) = ev {
                break;
            }
        }
        let v5 = {
            use rumqttc::v5::{AsyncClient, MqttOptions};
            let opts = MqttOptions::new(id_on_shard("rq-pub5", 1, 2), "127.0.0.1", b.addr.port());
            AsyncClient::new(opts, 100)
        };
        let (publ, mut pub_loop) = v5;
        tokio::spawn(async move {
            loop {
                if pub_loop.poll().await.is_err() {
                    break;
                }
            }
        });
        for i in 0..50u32 {
            let q = if i % 2 == 0 {
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce
            } else {
                rumqttc::v5::mqttbytes::QoS::ExactlyOnce
            };
            publ.publish("rq/x", q, false, i.to_be_bytes().to_vec())
                .await
                .expect("publish");
        }
        let mut got = Vec::new();
        while got.len() < 50 {
            let ev = tokio::time::timeout(TIMEOUT, sub_loop.poll())
                .await
                .expect("in time");
            if let Ok(Event::Incoming(P::Publish(p))) = ev {
                got.push(u32::from_be_bytes(
                    p.payload[..4].try_into().expect("4 bytes"),
                ));
            }
        }
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    });
}

// [v5:MQTT-3.3.2-12] outbound topic aliases through an independent client:
// a rumqttc v5 subscriber that allows 3 aliases accepts every one it is sent
// (rumqttc fails the connection on an alias it was never given) and each
// resolves to the topic published, while 6 topics take turns in runs,
// across shards.
#[test]
fn rumqttc_v5_resolves_the_topic_aliases_it_is_sent() {
    let b = start(2);
    let rt = rt();
    rt.block_on(async {
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        use rumqttc::v5::mqttbytes::QoS as Q;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut opts = MqttOptions::new(id_on_shard("ra-sub", 0, 2), "127.0.0.1", b.addr.port());
        opts.set_topic_alias_max(Some(3));
        let (sub, mut sub_loop) = AsyncClient::new(opts, 100);
        sub.subscribe("ra/#", Q::AtLeastOnce)
            .await
            .expect("subscribe");
        loop {
            let ev = tokio::time::timeout(TIMEOUT, sub_loop.poll())
                .await
                .expect("in time");
            if let Ok(Event::Incoming(P::SubAck(_))) = ev {
                break;
            }
        }
        let (mut publ, _) = Raw::connect(b.addr, V5, &id_on_shard("ra-pub", 1, 2), true);
        // Runs of three: the first of a run sets an alias up (evicting one),
        // the other two send it alone.
        let sent: Vec<String> = (0..60).map(|i| format!("ra/{}", (i / 3) % 6)).collect();
        for (i, t) in sent.iter().enumerate() {
            publ.publish(
                t,
                format!("{i}").as_bytes(),
                QoS::AtLeastOnce,
                i as u16 + 1,
                false,
            );
            assert!(matches!(publ.recv(), Packet::PubAck(_)));
        }
        let mut got = Vec::new();
        let mut aliases = std::collections::HashMap::new();
        while got.len() < sent.len() {
            let ev = tokio::time::timeout(TIMEOUT, sub_loop.poll())
                .await
                .expect("in time")
                .expect("no protocol error");
            if let Event::Incoming(P::Publish(p)) = ev {
                // rumqttc checks each alias it gets but hands the packet on
                // as it came: resolve it here from what it decoded.
                let alias = p.properties.as_ref().and_then(|q| q.topic_alias);
                let topic = String::from_utf8(p.topic.to_vec()).expect("utf-8");
                if topic.is_empty() {
                    let a = alias.expect("an empty topic comes with an alias");
                    got.push(aliases.get(&a).cloned().expect("an alias set up before"));
                } else {
                    if let Some(a) = alias {
                        assert!(a <= 3, "alias {a} past the client's maximum");
                        aliases.insert(a, topic.clone());
                    }
                    got.push(topic);
                }
            }
        }
        assert_eq!(got, sent);
        assert_eq!(aliases.len(), 3, "every alias the client allowed was used");
    });
}

// A connection's read buffer starts small and grows while reads fill it:
// payloads far larger than it, between small ones, arrive whole and in
// order, across shards. [v3:MQTT-2.3.1-6] [v5:MQTT-2.2.1-5] each PUBACK
// carries its PUBLISH's packet identifier.
#[test]
fn large_payloads_between_small_ones() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V311, &id_on_shard("big-sub", 0, 2), true);
    sub.subscribe(1, &[("big/t", QoS::AtLeastOnce)]);
    let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("big-pub", 1, 2), true);
    let sizes = [10usize, 300_000, 3, 70_000, 1, 900_000, 5];
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
        publ.publish("big/t", &payload, QoS::AtLeastOnce, i as u16 + 1, false);
        assert!(matches!(publ.recv(), Packet::PubAck(a) if a.packet_id.get() == i as u16 + 1));
    }
    for (i, &n) in sizes.iter().enumerate() {
        let m = sub.recv_publish();
        let want: Vec<u8> = (0..n).map(|k| (k * 31 + i) as u8).collect();
        assert_eq!(m.payload.len(), n, "message {i}");
        assert!(m.payload[..] == want[..], "message {i} bytes differ");
        let id = m.packet_id.expect("QoS 1 has an id");
        sub.send(&Packet::PubAck(Ack::new(id)));
    }
}

/// Receives `n` QoS 1 PUBLISHes and returns their payloads as numbers.
fn recv_numbered(sub: &mut Raw, n: usize) -> Vec<(u16, ringmq::protocol::PacketId)> {
    (0..n)
        .map(|_| {
            let p = sub.recv_publish();
            assert_eq!(p.qos, QoS::AtLeastOnce);
            (
                u16::from_be_bytes([p.payload[0], p.payload[1]]),
                p.packet_id.expect("id"),
            )
        })
        .collect()
}

// [v5:MQTT-3.3.4-9] [v5:MQTT-4.9.0-1] [v5:MQTT-4.9.0-2] the outbound window is
// the smaller of --max-inflight and the client's Receive Maximum; each PUBACK
// lets exactly one more through, in order. [v5:MQTT-3.3.4-10]
// [v5:MQTT-4.9.0-3] a full window does not delay other packets.
// A 3.1.1 client gets the --max-inflight window.
#[test]
fn inflight_window_holds_the_rest_until_acked() {
    let mut cfg = config(2);
    cfg.max_inflight = 3;
    let b = start_with(cfg);
    for (version, receive_max, window) in [(V5, Some(2), 2usize), (V311, None, 3)] {
        let sub_id = id_on_shard(&format!("win-sub-{receive_max:?}"), 0, 2);
        let mut c = connect_packet(version, &sub_id, true);
        c.properties.receive_maximum = receive_max;
        let (mut sub, _) = Raw::connect_with(b.addr, c);
        sub.subscribe(1, &[("win/t", QoS::AtLeastOnce)]);
        let (mut publ, _) = Raw::connect(b.addr, V311, &id_on_shard("win-pub", 1, 2), true);
        for i in 1..=6u16 {
            publ.publish("win/t", &i.to_be_bytes(), QoS::AtLeastOnce, i, false);
            assert!(matches!(publ.recv(), Packet::PubAck(_)));
        }
        let first = recv_numbered(&mut sub, window);
        assert_eq!(
            first.iter().map(|m| m.0).collect::<Vec<_>>(),
            (1..=window as u16).collect::<Vec<_>>()
        );
        sub.expect_silence(Duration::from_millis(300));
        sub.send(&Packet::PingReq);
        assert_eq!(sub.recv(), Packet::PingResp);
        // One PUBACK frees one slot: exactly the next message comes.
        let mut unacked: std::collections::VecDeque<_> = first.into_iter().map(|m| m.1).collect();
        sub.send(&Packet::PubAck(Ack::new(unacked.pop_front().expect("one"))));
        let mut next = window as u16 + 1;
        let got = recv_numbered(&mut sub, 1);
        assert_eq!(got[0].0, next);
        unacked.push_back(got[0].1);
        sub.expect_silence(Duration::from_millis(200));
        // The rest follow, in order, as acknowledgements free the window.
        while next < 6 {
            sub.send(&Packet::PubAck(Ack::new(
                unacked.pop_front().expect("unacked"),
            )));
            next += 1;
            let got = recv_numbered(&mut sub, 1);
            assert_eq!(got[0].0, next);
            unacked.push_back(got[0].1);
        }
        for id in unacked {
            sub.send(&Packet::PubAck(Ack::new(id)));
        }
        sub.expect_silence(Duration::from_millis(200));
    }
}

// [v5:MQTT-3.3.2-15] [v5:MQTT-3.3.2-17] Response Topic, Correlation Data,
// Content Type, Payload Format and User Properties (order and repeats kept)
// reach a subscriber on another shard unaltered. [v5:MQTT-3.3.2-12] a
// publisher's Topic Alias (1 to the maximum) stands for its topic;
// [v5:MQTT-3.3.2-7] that mapping ends with the connection.
#[test]
fn v5_publish_properties_forwarded_and_aliases_per_connection() {
    use bytes::Bytes;
    use ringmq::protocol::{Publish, PublishProperties, UserProperty};
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V5, &id_on_shard("prop-sub", 0, 2), true);
    sub.subscribe(1, &[("prop/t", QoS::AtLeastOnce)]);
    let pub_id = id_on_shard("prop-pub", 1, 2);
    let (mut publ, _) = Raw::connect(b.addr, V5, &pub_id, true);
    let user = |n: &str, v: &str| UserProperty {
        name: s(n),
        value: s(v),
    };
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some(s("prop/reply")),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        content_type: Some(s("text/plain")),
        user_properties: vec![user("k", "2"), user("a", "1"), user("k", "1")],
        topic_alias: Some(3),
        ..PublishProperties::default()
    };
    let mut p = Publish::new(s("prop/t"), Bytes::from_static(b"hello"));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(1));
    p.properties = props.clone().into();
    publ.send(&Packet::Publish(p));
    assert_eq!(publ.recv(), Packet::PubAck(Ack::new(pid(1))));
    // The alias alone now names the topic on this connection.
    let mut by_alias = Publish::new(s(""), Bytes::from_static(b"again"));
    by_alias.properties.topic_alias = Some(3);
    publ.send(&Packet::Publish(by_alias));
    for payload in [&b"hello"[..], b"again"] {
        let got = sub.recv_publish();
        assert_eq!(&got.payload[..], payload);
        assert_eq!(&*got.topic, "prop/t");
        if payload == b"hello" {
            assert_eq!(got.properties.response_topic, props.response_topic);
            assert_eq!(got.properties.correlation_data, props.correlation_data);
            assert_eq!(got.properties.content_type, props.content_type);
            assert_eq!(got.properties.payload_format_indicator, Some(1));
            assert_eq!(got.properties.user_properties, props.user_properties);
            sub.send(&Packet::PubAck(Ack::new(got.packet_id.expect("id"))));
        }
    }
    // A new connection of the same client starts with no aliases.
    drop(publ);
    b.wait_connections(1);
    let (mut publ, _) = Raw::connect(b.addr, V5, &pub_id, true);
    let mut stale = Publish::new(s(""), Bytes::from_static(b"stale"));
    stale.properties.topic_alias = Some(3);
    publ.send(&Packet::Publish(stale));
    assert_eq!(
        publ.expect_closed(),
        vec![Packet::Disconnect(ringmq::protocol::Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
    sub.expect_silence(Duration::from_millis(200));
}

// [v5:MQTT-3.3.4-7] CONNACK announces the Receive Maximum (--max-inflight-in)
// and a client with more unanswered QoS 2 PUBLISHes than that is
// disconnected with 0x93; one that completes each flow is never cut off.
// 3.1.1 has no Receive Maximum, but a session's QoS 2 ids awaiting PUBREL
// are bounded all the same: past them the connection is closed.
#[test]
fn inbound_qos2_past_the_receive_maximum_is_refused() {
    let mut cfg = config(2);
    cfg.max_inflight_in = 5;
    let b = start_with(cfg);
    let (mut good, ack) = Raw::connect(b.addr, V5, "rm-good", true);
    assert_eq!(ack.properties.receive_maximum, Some(5));
    for id in 1..=20u16 {
        good.publish("rm/t", b"x", QoS::ExactlyOnce, id, false);
        assert!(matches!(good.recv(), Packet::PubRec(_)));
        good.send(&Packet::PubRel(Ack::new(pid(id))));
        assert!(matches!(good.recv(), Packet::PubComp(_)));
    }
    for v in [V5, V311] {
        let (mut c, _) = Raw::connect(b.addr, v, &format!("rm-{v:?}"), true);
        for id in 1..=5u16 {
            c.publish("rm/t", b"x", QoS::ExactlyOnce, id, false);
            assert!(matches!(c.recv(), Packet::PubRec(_)), "{v:?} {id}");
        }
        // A resend of one still awaiting PUBREL is not a new one.
        c.publish("rm/t", b"x", QoS::ExactlyOnce, 3, false);
        assert!(matches!(c.recv(), Packet::PubRec(_)), "{v:?} resend");
        c.publish("rm/t", b"x", QoS::ExactlyOnce, 6, false);
        let rest = c.expect_closed();
        if v == V5 {
            assert!(
                matches!(rest.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                "{rest:?}"
            );
        } else {
            assert!(rest.is_empty(), "{rest:?}");
        }
    }
}
