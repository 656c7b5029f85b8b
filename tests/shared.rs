//! Shared subscriptions (`$share/{group}/{filter}`) over loopback, with
//! members on both shards, in 3.1.1 and 5.0.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Ack, Disconnect, Packet,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions,
};

/// Reads and acknowledges PUBLISHes until `quiet` passes without one;
/// returns their payloads.
fn drain(mut c: Raw, quiet: Duration) -> (Raw, Vec<String>) {
    let mut got = Vec::new();
    while let Some(p) = c.recv_within(quiet) {
        if let Packet::Publish(p) = p {
            if let Some(id) = p.packet_id {
                c.send(&Packet::PubAck(Ack::new(id)));
            }
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    (c, got)
}

fn publish_n(p: &mut Raw, topic: &str, from: usize, n: usize) {
    for i in from..from + n {
        p.publish(
            topic,
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            (i % 60000) as u16 + 1,
            false,
        );
        assert!(matches!(p.recv(), Packet::PubAck(_)));
    }
}

// [v5:MQTT-4.8.2-1] [v5:MQTT-4.8.2-2] [v5:MQTT-4.8.2-3] each of 10,000 messages goes to
// exactly one member of the group, wherever the members live, at the QoS
// each was granted, and the members share the load evenly (within 10 %);
// a plain subscription to the same filter still gets every message.
#[test]
fn each_message_goes_to_one_member_and_members_share_evenly() {
    let b = start(2);
    let mut members = Vec::new();
    for (i, v) in [V5, V311, V5, V311].into_iter().enumerate() {
        let id = id_on_shard(&format!("sh-m{i}"), i % 2, 2);
        let (mut c, ack) = Raw::connect(b.addr, v, &id, true);
        if v == V5 {
            assert_eq!(ack.properties.shared_subscription_available, Some(true));
        }
        let sa = c.subscribe(1, &[("$share/g/sh/#", QoS::AtLeastOnce)]);
        assert_eq!(sa.reasons, vec![ReasonCode(1)]);
        members.push(c);
    }
    let (mut plain, _) = Raw::connect(b.addr, V311, "sh-plain", true);
    plain.subscribe(1, &[("sh/#", QoS::AtLeastOnce)]);
    let readers: Vec<_> = members
        .into_iter()
        .chain(std::iter::once(plain))
        .map(|c| std::thread::spawn(move || drain(c, Duration::from_secs(2)).1))
        .collect();
    let (mut p, _) = Raw::connect(b.addr, V311, &id_on_shard("sh-pub", 0, 2), true);
    const N: usize = 10_000;
    publish_n(&mut p, "sh/x", 0, N);
    let mut got: Vec<Vec<String>> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    let plain = got.pop().expect("plain");
    assert_eq!(plain.len(), N, "the plain subscriber gets every message");
    let mut seen = HashSet::new();
    for (i, m) in got.iter().enumerate() {
        for x in m {
            assert!(seen.insert(x.clone()), "{x} went to two members");
        }
        let even = N / got.len();
        assert!(
            m.len() * 10 >= even * 9 && m.len() * 10 <= even * 11,
            "member {i} got {} of {N}: {:?}",
            m.len(),
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    assert_eq!(seen.len(), N, "every message reached the group");
}

// A member that leaves gets nothing more; the others take all of it, and
// nothing published while it leaves is lost for the group (QoS 1); what went
// to the leaving member is not sent to another ([v5:MQTT-4.8.2-5]: each
// message reached the group once).
#[test]
fn a_member_that_leaves_loses_nothing_for_the_group() {
    let b = start(2);
    let mut members = Vec::new();
    for i in 0..3 {
        let (mut c, _) = Raw::connect(
            b.addr,
            V5,
            &id_on_shard(&format!("sl-m{i}"), i % 2, 2),
            true,
        );
        c.subscribe(1, &[("$share/g/sl/t", QoS::AtLeastOnce)]);
        members.push(c);
    }
    let leaver = members.pop().expect("three");
    let readers: Vec<_> = members
        .into_iter()
        .map(|c| std::thread::spawn(move || drain(c, Duration::from_secs(2)).1))
        .collect();
    let leaving = std::thread::spawn(move || {
        // Takes a share for a while, acknowledging it, then leaves cleanly.
        let mut c = leaver;
        let mut got = Vec::new();
        while got.len() < 50 {
            let m = c.recv_publish();
            c.send(&Packet::PubAck(Ack::new(m.packet_id.expect("id"))));
            got.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
        c.send(&Packet::Disconnect(Disconnect::default()));
        let (_, rest) = drain(c, Duration::from_millis(200));
        got.extend(rest);
        got
    });
    let (mut p, _) = Raw::connect(b.addr, V311, "sl-pub", true);
    publish_n(&mut p, "sl/t", 0, 600);
    let mut all: Vec<String> = leaving.join().expect("leaver");
    for r in readers {
        all.extend(r.join().expect("reader"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 600, "every message reached the group once");
    assert_eq!(all.len(), 600, "and only once");
}

// An offline persistent member keeps its share queued only when no member
// is online; with one online, that one gets everything.
#[test]
fn an_offline_member_gets_messages_only_when_no_member_is_online() {
    let b = start(2);
    let (mut off, _) = Raw::connect(b.addr, V311, &id_on_shard("so-off", 0, 2), false);
    off.subscribe(1, &[("$share/g/so/t", QoS::AtLeastOnce)]);
    drop(off);
    b.wait_connections(0);
    let (mut on, _) = Raw::connect(b.addr, V311, &id_on_shard("so-on", 1, 2), true);
    on.subscribe(1, &[("$share/g/so/t", QoS::AtLeastOnce)]);
    let (mut p, _) = Raw::connect(b.addr, V311, "so-pub", true);
    publish_n(&mut p, "so/t", 0, 20);
    let (on, got) = drain(on, Duration::from_millis(500));
    assert_eq!(got.len(), 20, "the online member took them all");
    drop(on);
    b.wait_connections(1);
    // No member online: the persistent one's share waits for it.
    publish_n(&mut p, "so/t", 20, 5);
    let (off, ack) = Raw::connect(b.addr, V311, &id_on_shard("so-off", 0, 2), false);
    assert!(ack.session_present);
    let (_, got) = drain(off, Duration::from_millis(500));
    assert_eq!(got, (20..25).map(|i| i.to_string()).collect::<Vec<_>>());
}

// [v5:MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error;
// retained messages are not sent on a shared subscribe (4.8.2).
#[test]
fn no_local_is_refused_and_retained_messages_are_not_sent() {
    let b = start(2);
    let (mut p, _) = Raw::connect(b.addr, V311, "sr-pub", true);
    p.publish("sr/t", b"kept", QoS::AtLeastOnce, 1, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut c, _) = Raw::connect(b.addr, V5, "sr-sub", true);
    c.subscribe(1, &[("$share/g/sr/t", QoS::AtLeastOnce)]);
    c.expect_silence(Duration::from_millis(300));
    let (mut nl, _) = Raw::connect(b.addr, V5, "sr-nl", true);
    nl.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![SubscribeFilter {
            filter: s("$share/g/sr/t"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                ..Default::default()
            },
        }],
    }));
    assert_eq!(
        nl.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}
