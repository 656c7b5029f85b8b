//! CONNECT, CONNACK, keep-alive, takeover and bad input, over loopback
//! against an in-process broker, with raw packets from ringmq's codec.

mod common;

use std::time::Duration;

use common::*;
use ringmq::protocol::{
    Disconnect, Packet,
    ProtocolVersion::{V31, V311, V5},
    QoS, ReasonCode,
};

// [v3:MQTT-3.1.4-4] [v5:MQTT-3.1.4-5] accepted CONNECT gets CONNACK 0;
// [v3:MQTT-3.2.2-1] [v5:MQTT-3.2.2-2] clean start: session present 0;
// [v3:MQTT-3.2.0-1] [v5:MQTT-3.2.0-1] CONNACK is the first packet.
#[test]
fn connack_success_for_each_version() {
    let b = start(2);
    for (v, id) in [(V31, "c31"), (V311, "c311"), (V5, "c5")] {
        let (_c, ack) = Raw::connect(b.addr, v, id, true);
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{v:?}");
        assert!(!ack.session_present);
    }
}

// [v3:MQTT-3.1.3-8] empty client id with clean session 0: return code 0x02, close.
// [v3:MQTT-3.2.2-4] [v3:MQTT-3.2.2-5] non-zero code: session present 0, then close.
#[test]
fn v3_mqtt_3_1_3_8_empty_id_needs_clean_session() {
    let b = start(2);
    let (mut c, ack) = Raw::connect(b.addr, V311, "", false);
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!ack.session_present);
    assert!(c.expect_closed().is_empty());
    // [v3:MQTT-3.1.3-6] with clean session it is accepted (an id is assigned).
    let (_c, ack) = Raw::connect(b.addr, V311, "", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
}

// [v5:MQTT-3.1.3-6] [v5:MQTT-3.1.3-7] [v5:MQTT-3.2.2-16] an empty id gets an
// assigned one, returned in CONNACK and usable like any other.
#[test]
fn v5_empty_client_id_is_assigned() {
    let b = start(4);
    let (mut c, ack) = Raw::connect(b.addr, V5, "", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!id.is_empty());
    c.subscribe(1, &[("x/y", QoS::AtLeastOnce)]);
    c.publish("x/y", b"me", QoS::AtLeastOnce, 2, false);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.recv());
    }
    assert!(got.iter().any(|p| matches!(p, Packet::PubAck(_))));
    assert!(got
        .iter()
        .any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"me")));
}

// [v3:MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close.
#[test]
fn v3_mqtt_3_1_2_2_unsupported_level_gets_return_code_1() {
    let b = start(2);
    let mut c = Raw::connect_tcp(b.addr, V311);
    // "MQTT" level 6.
    c.send_bytes(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0]);
    let got = c.expect_closed();
    assert_eq!(got.len(), 1);
    let Packet::ConnAck(a) = &got[0] else {
        panic!("CONNACK expected")
    };
    assert_eq!(a.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
}

// [v3:MQTT-3.1.0-1] [v5:MQTT-3.1.0-1] the first packet must be CONNECT;
// [v3:MQTT-3.1.4-1] [v5:MQTT-3.1.4-1] a bad CONNECT closes without CONNACK.
#[test]
fn first_packet_must_be_connect() {
    let b = start(2);
    let mut c = Raw::connect_tcp(b.addr, V311);
    c.send_bytes(&[0xc0, 0x00]); // PINGREQ
    assert!(c.expect_closed().is_empty());
    let mut c = Raw::connect_tcp(b.addr, V311);
    // Reserved connect flag set ([MQTT-3.1.2-3]).
    c.send_bytes(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 1, b'a',
    ]);
    assert!(c.expect_closed().is_empty());
}

// [v3:MQTT-3.1.0-2] [v5:MQTT-3.1.0-2] a second CONNECT is a protocol error.
#[test]
fn second_connect_closes() {
    let b = start(2);
    let (mut c, _) = Raw::connect(b.addr, V311, "twice3", true);
    c.send(&Packet::Connect(Box::new(connect_packet(
        V311, "twice3", true,
    ))));
    assert!(c.expect_closed().is_empty());
    let (mut c, _) = Raw::connect(b.addr, V5, "twice5", true);
    c.send(&Packet::Connect(Box::new(connect_packet(
        V5, "twice5", true,
    ))));
    let got = c.expect_closed();
    assert_eq!(
        got,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}

// [MQTT-3.12.4-1] PINGREQ is answered with PINGRESP.
#[test]
fn pingreq_gets_pingresp() {
    let b = start(2);
    for v in [V311, V5] {
        let (mut c, _) = Raw::connect(b.addr, v, &format!("ping-{v:?}"), true);
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(), Packet::PingResp);
    }
}

// [v3:MQTT-3.1.2-24] [v5:MQTT-3.1.2-22] no packet within 1.5 × keep alive: closed;
// [v5:MQTT-3.2.2-22] without a Server Keep Alive, the client's value counts.
#[test]
fn keep_alive_timeout_closes() {
    let b = start(2);
    let mut connect = connect_packet(V5, "ka5", true);
    connect.keep_alive = 1;
    let (mut c, _) = Raw::connect_with(b.addr, connect);
    let started = std::time::Instant::now();
    let got = c.expect_closed();
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(
        got,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        ))]
    );
    // A client that pings in time stays connected.
    let mut connect = connect_packet(V311, "ka3", true);
    connect.keep_alive = 1;
    let (mut c, _) = Raw::connect_with(b.addr, connect);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(), Packet::PingResp);
    }
}

// A keep-alive above --max-keepalive is answered
// with Server Keep Alive.
#[test]
fn v5_server_keep_alive_caps_client_value() {
    let mut cfg = config(2);
    cfg.max_keepalive = 30;
    let b = start_with(cfg);
    let mut connect = connect_packet(V5, "kacap", true);
    connect.keep_alive = 600;
    let (_c, ack) = Raw::connect_with(b.addr, connect);
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

// [v3:MQTT-3.1.4-2] [v5:MQTT-3.1.4-3] a second connection with the same client
// id takes over: the old one is closed (v5: DISCONNECT 0x8E), on whichever
// shard it was accepted.
#[test]
fn takeover_closes_old_connection() {
    let b = start(4);
    // Several rounds, so the kernel's SO_REUSEPORT choice lands the two
    // connections on the same shard in some and on different ones in others.
    for (round, v) in [V311, V5].into_iter().cycle().take(8).enumerate() {
        let id = format!("takeover-{v:?}-{round}");
        // A persistent session (v5: with an expiry; one with expiry 0
        // ends when its connection is taken over).
        let mut c = connect_packet(v, &id, false);
        if v == V5 {
            c.properties.session_expiry_interval = Some(60);
        }
        let (mut old, _) = Raw::connect_with(b.addr, c.clone());
        old.subscribe(1, &[("tk/#", QoS::AtLeastOnce)]);
        let (mut new, ack) = Raw::connect_with(b.addr, c);
        // [v3:MQTT-3.2.2-2] [v5:MQTT-3.2.2-3] the session was resumed.
        assert!(ack.session_present);
        let got = old.expect_closed();
        if v == V5 {
            assert_eq!(
                got,
                vec![Packet::Disconnect(Disconnect::new(
                    ReasonCode::SESSION_TAKEN_OVER
                ))]
            );
        } else {
            assert!(got.is_empty());
        }
        // The subscription moved with the session.
        let (mut p, _) = Raw::connect(b.addr, V311, &format!("tkpub-{round}"), true);
        p.publish("tk/a", b"after", QoS::AtMostOnce, 0, false);
        assert_eq!(&new.recv_publish().payload[..], b"after");
        new.send(&Packet::Disconnect(Disconnect::default()));
    }
}

// [v5:MQTT-4.13.1-1] a malformed packet closes the connection with 0x81
// ([v5:MQTT-3.14.4-1] [v5:MQTT-3.14.4-2]: nothing after that DISCONNECT, and
// the connection closes);
// [v3:MQTT-2.2.2-2] invalid flags close a 3.1.1 connection.
#[test]
fn malformed_packet_closes_with_reason() {
    let b = start(2);
    let (mut c, _) = Raw::connect(b.addr, V5, "mal5", true);
    c.send_bytes(&[0x36, 0x06, 0, 1, b't', 0, 1, 0]); // QoS 3
    assert_eq!(
        c.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::MALFORMED_PACKET
        ))]
    );
    let (mut c, _) = Raw::connect(b.addr, V311, "mal3", true);
    c.send_bytes(&[0x41, 0x02, 0, 1]); // PUBACK with flags 1
    assert!(c.expect_closed().is_empty());
}

// [v5:MQTT-3.8.3-2] [v5:MQTT-3.10.3-2] a SUBSCRIBE or UNSUBSCRIBE with no
// topic filter is a Protocol Error: DISCONNECT 0x82, not 0x81.
#[test]
fn empty_subscribe_and_unsubscribe_are_protocol_errors() {
    let b = start(2);
    // SUBSCRIBE: packet id 1, empty properties, no filters; UNSUBSCRIBE alike.
    for frame in [[0x82u8, 0x03, 0, 1, 0], [0xa2, 0x03, 0, 1, 0]] {
        let (mut c, _) = Raw::connect(b.addr, V5, "empty-sub", true);
        c.send_bytes(&frame);
        assert_eq!(
            c.expect_closed(),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::PROTOCOL_ERROR
            ))],
            "{frame:02x?}"
        );
    }
}

// An oversize packet is refused from its header: v5 gets 0x95.
#[test]
fn oversize_packet_closes() {
    let mut cfg = config(2);
    cfg.max_packet_bytes = 1024;
    let b = start_with(cfg);
    let (mut c, ack) = Raw::connect(b.addr, V5, "big", true);
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    c.publish("t", &vec![0u8; 2000], QoS::AtMostOnce, 0, false);
    assert_eq!(
        c.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PACKET_TOO_LARGE
        ))]
    );
}

// A client that never sends CONNECT is closed after --connect-timeout.
#[test]
fn connect_timeout_closes_silent_client() {
    let mut cfg = config(2);
    cfg.connect_timeout = Duration::from_millis(300);
    let b = start_with(cfg);
    let mut c = Raw::connect_tcp(b.addr, V311);
    c.send_bytes(&[0x10]); // a first byte, then nothing
    assert!(c.expect_closed().is_empty());
}

// Extended authentication is not offered, so a
// CONNECT with an Authentication Method is refused with 0x8C.
#[test]
fn v5_auth_method_refused() {
    let b = start(2);
    let mut connect = connect_packet(V5, "auth", true);
    connect.properties.authentication_method = Some(s("SCRAM-SHA-1"));
    let (mut c, ack) = Raw::connect_with(b.addr, connect);
    assert_eq!(ack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    // [v5:MQTT-3.2.2-7] an error CONNACK is followed by a close.
    assert!(c.expect_closed().is_empty());
}

// --max-connections: past it, CONNECT is refused (v5 0x89, v3 return code 3).
#[test]
fn max_connections_refuses_extra_clients() {
    let mut cfg = config(2);
    cfg.max_connections = 2;
    let b = start_with(cfg);
    let (_a, ack) = Raw::connect(b.addr, V311, "mc1", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let (_b2, ack) = Raw::connect(b.addr, V311, "mc2", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let (_c, ack) = Raw::connect(b.addr, V5, "mc3", true);
    assert_eq!(ack.reason, ReasonCode::SERVER_BUSY);
    let (_d, ack) = Raw::connect(b.addr, V311, "mc4", true);
    assert_eq!(ack.reason, ReasonCode::SERVER_UNAVAILABLE);
}

// [v3:MQTT-3.1.3-5] [v5:MQTT-3.1.3-5] client ids of 1 to 23 bytes of
// 0-9a-zA-Z are allowed.
#[test]
fn short_alphanumeric_client_ids_are_allowed() {
    let b = start(2);
    for (version, id) in [
        (V311, "0123456789abcdefghijKLM"),
        (V5, "ZYXWVUTSRQPONMLKJIHGfed"),
        (V311, "a"),
        (V5, "9"),
    ] {
        let (_c, ack) = Raw::connect(b.addr, version, id, true);
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{version:?} {id}");
    }
}

// [v3:MQTT-3.1.4-5] [v5:MQTT-3.1.4-6] after refusing a CONNECT the server
// processes nothing that followed it: a PUBLISH sent right behind a
// refused CONNECT never reaches a subscriber.
#[test]
fn refused_connect_ignores_what_follows() {
    let b = start(2);
    let (mut sub, _) = Raw::connect(b.addr, V311, "refused-watch", true);
    sub.subscribe(1, &[("refused/t", QoS::AtMostOnce)]);
    for version in [V311, V5] {
        let mut c = Raw::connect_tcp(b.addr, version);
        // A CONNECT the server refuses, then a well-formed PUBLISH in the
        // same write. 3.1.1: a password without a user name is malformed
        // ([v3:MQTT-3.1.2-22]), built by hand since our encoder writes
        // whatever flags the fields imply; 5.0: an authentication method
        // this broker does not support.
        let mut bytes = bytes::BytesMut::new();
        if version == V311 {
            bytes.extend_from_slice(&[
                0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 1, b'r', 0, 2, b'p', b'w',
            ]);
            bytes[1] = (bytes.len() - 2) as u8;
        } else {
            let mut connect = connect_packet(V5, "refused-v5", true);
            connect.properties.authentication_method = Some(s("SCRAM-SHA-1"));
            Packet::Connect(Box::new(connect))
                .encode(V5, &mut bytes)
                .expect("encodes");
        }
        let mut p = ringmq::protocol::Publish::new(s("refused/t"), bytes::Bytes::from_static(b"x"));
        p.qos = QoS::AtMostOnce;
        Packet::Publish(p)
            .encode(version, &mut bytes)
            .expect("encodes");
        c.send_bytes(&bytes);
        let got = c.expect_closed();
        assert!(
            got.iter()
                .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS)),
            "{version:?}: {got:?}"
        );
    }
    sub.expect_silence(Duration::from_millis(300));
}

// [v5:MQTT-3.1.2-6] Clean Start 0 without a stored session: a new session,
// Session Present 0. [v5:MQTT-3.1.2-28] no Response Information unless the
// client asked for it.
#[test]
fn v5_clean_start_0_without_session_starts_fresh() {
    let b = start(2);
    let mut c = connect_packet(V5, "fresh5", false);
    c.properties.request_response_information = Some(false);
    let (_c, ack) = Raw::connect_with(b.addr, c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    assert_eq!(ack.properties.response_information, None);
}

// [v5:MQTT-3.1.2-26] [v5:MQTT-3.1.2-27] [v5:MQTT-3.3.2-11] the server never
// sends a Topic Alias above the client's Topic Alias Maximum, and none when
// it is absent;
// [v5:MQTT-3.3.2-12] it sends the topic with an alias the first time, and the
// alias alone once the client knows it. With room for two aliases and four
// topics the least recently used alias is taken for the next topic.
#[test]
fn v5_server_assigns_topic_aliases_within_the_clients_maximum() {
    let b = start(2);
    let (mut none, _) = Raw::connect(b.addr, V5, &id_on_shard("ta-none", 0, 2), true);
    let mut c = connect_packet(V5, &id_on_shard("ta-two", 1, 2), true);
    c.properties.topic_alias_maximum = Some(2);
    let (mut two, _) = Raw::connect_with(b.addr, c);
    none.subscribe(1, &[("ta/+", QoS::AtMostOnce)]);
    two.subscribe(1, &[("ta/+", QoS::AtMostOnce)]);
    let (mut publ, _) = Raw::connect(b.addr, V5, "ta-pub", true);
    let topics = [
        "ta/a", "ta/b", "ta/a", "ta/b", "ta/c", "ta/a", "ta/c", "ta/c",
    ];
    for t in topics {
        publ.publish(t, b"x", QoS::AtMostOnce, 0, false);
    }
    // (alias, topic sent with it): LRU over two aliases.
    let expected = [
        (1, "ta/a"),
        (2, "ta/b"),
        (1, ""),
        (2, ""),
        (1, "ta/c"),
        (2, "ta/a"),
        (1, ""),
        (1, ""),
    ];
    let mut known = std::collections::HashMap::new();
    for (t, (alias, sent)) in topics.iter().zip(expected) {
        let m = none.recv_publish();
        assert_eq!(m.properties.topic_alias, None);
        assert_eq!(m.topic.as_str(), *t);
        let m = two.recv_publish();
        assert_eq!(m.properties.topic_alias, Some(alias), "{t}");
        assert_eq!(m.topic.as_str(), sent, "{t}");
        if !sent.is_empty() {
            known.insert(alias, sent.to_string());
        }
        assert_eq!(known.get(&alias).map(String::as_str), Some(*t));
    }
}

// A broker can take over a port right after another server stopped, while
// that server's closed connections linger in TIME_WAIT (SO_REUSEADDR).
#[test]
fn binds_a_port_with_connections_in_time_wait() {
    use std::net::{TcpListener, TcpStream};
    let old = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = old.local_addr().expect("addr");
    let client = TcpStream::connect(addr).expect("connect");
    let (served, _) = old.accept().expect("accept");
    drop(served); // the server closes first: its side enters TIME_WAIT
    let mut buf = [0u8; 1];
    let _ = std::io::Read::read(&mut &client, &mut buf);
    drop(client);
    drop(old);
    let mut cfg = config(2);
    cfg.listen = vec![addr];
    let b = start_with(cfg);
    let (_c, ack) = Raw::connect(b.addr, V311, "time-wait", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
}

// --max-topic-alias is the Topic Alias Maximum in CONNACK; a client that
// goes past it ([v5:MQTT-3.2.2-17] [v5:MQTT-3.3.2-9]) is disconnected with
// 0x94, and one within it publishes by alias.
#[test]
fn inbound_topic_aliases_are_capped_by_max_topic_alias() {
    let mut cfg = config(2);
    cfg.max_topic_alias = 2;
    let b = start_with(cfg);
    let (mut sub, _) = Raw::connect(b.addr, V5, "tam-sub", true);
    sub.subscribe(1, &[("tam/t", QoS::AtMostOnce)]);
    let (mut c, ack) = Raw::connect(b.addr, V5, "tam-pub", true);
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));
    let mut p = ringmq::protocol::Publish::new(s("tam/t"), bytes::Bytes::from_static(b"1"));
    p.properties.topic_alias = Some(2);
    c.send(&Packet::Publish(p));
    let mut p = ringmq::protocol::Publish::new(s(""), bytes::Bytes::from_static(b"2"));
    p.properties.topic_alias = Some(2);
    c.send(&Packet::Publish(p));
    assert_eq!(&sub.recv_publish().payload[..], b"1");
    let m = sub.recv_publish();
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("tam/t", &b"2"[..]));
    let mut p = ringmq::protocol::Publish::new(s("tam/t"), bytes::Bytes::from_static(b"3"));
    p.properties.topic_alias = Some(3);
    c.send(&Packet::Publish(p));
    assert_eq!(
        c.expect_closed(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::TOPIC_ALIAS_INVALID
        ))]
    );
}
