//! Codec tests: annotated byte vectors for every packet and version, spec
//! violations with the normative ids they break, and property tests.
#![expect(
    clippy::indexing_slicing,
    reason = "tests index fixed vectors they just built"
)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use ProtocolVersion::{V31, V311, V5};

/// Parses "10 0d 00 04 ..." (whitespace ignored) into bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex string");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn s(v: &'static str) -> MqttStr {
    MqttStr::from_static(v)
}

fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero")
}

fn decode_one(v: Option<ProtocolVersion>, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let out = decode_packet(&mut buf, v, DEFAULT_MAX_PACKET_BYTES);
    if let Ok(Some(_)) = out {
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    }
    out
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).expect("encodes");
    buf.to_vec()
}

/// The packet decodes from exactly these bytes and encodes to exactly them.
fn both(v: ProtocolVersion, bytes: &str, packet: Packet) {
    let bytes = hex(bytes);
    let version = if matches!(packet, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    assert_eq!(
        decode_one(version, &bytes),
        Ok(Some(packet.clone())),
        "decode"
    );
    assert_eq!(encode(&packet, v), bytes, "encode");
}

fn err(v: Option<ProtocolVersion>, bytes: &str) -> DecodeError {
    match decode_one(v, &hex(bytes)) {
        Err(e) => e,
        other => panic!("expected an error for {bytes}, got {other:?}"),
    }
}

fn connect(protocol: ProtocolVersion, client_id: &'static str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

// ---------------------------------------------------------------- CONNECT

// [v3:MQTT-3.1.3-1] [v3:MQTT-3.1.3-3] fields in order, client id first.
#[test]
fn v311_connect_minimal() {
    both(
        V311,
        "10 0d  00 04 4d 51 54 54  04  02  00 3c  00 01 61",
        Packet::Connect(Box::new(connect(V311, "a"))),
    );
}

#[test]
fn v31_connect_uses_mqisdp() {
    both(
        V31,
        "10 0f  00 06 4d 51 49 73 64 70  03  02  00 3c  00 01 61",
        Packet::Connect(Box::new(connect(V31, "a"))),
    );
}

// [v3:MQTT-3.1.3-1] Client Identifier, Will Topic, Will Message, User Name, Password.
#[test]
fn v311_connect_full_payload_order() {
    let mut c = connect(V311, "c");
    c.clean_start = false;
    c.keep_alive = 10;
    c.will = Some(LastWill {
        topic: s("w"),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    c.username = Some(s("u"));
    c.password = Some(Bytes::from_static(b"p"));
    // flags: user 0x80 | pass 0x40 | will retain 0x20 | will qos1 0x08 | will 0x04 = 0xec
    both(
        V311,
        "10 19  00 04 4d 51 54 54  04  ec  00 0a  00 01 63  00 01 77  00 01 78  00 01 75  00 01 70",
        Packet::Connect(Box::new(c)),
    );
}

// [v5:MQTT-3.1.3-1] [v5:MQTT-3.1.2-9] will properties, topic and payload present.
#[test]
fn v5_connect_with_properties_and_will() {
    let mut c = connect(V5, "c");
    c.properties.session_expiry_interval = Some(30);
    c.properties.receive_maximum = Some(10);
    c.will = Some(LastWill {
        topic: s("w"),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(5),
            ..Default::default()
        },
    });
    both(
        V5,
        "10 22  00 04 4d 51 54 54  05  06  00 3c \
         08  11 00 00 00 1e  21 00 0a \
         00 01 63 \
         05  18 00 00 00 05  00 01 77  00 01 78",
        Packet::Connect(Box::new(c)),
    );
}

// [v5:MQTT-2.2.2-1] no properties: a property length of zero.
#[test]
fn v5_connect_without_properties_has_zero_length() {
    both(
        V5,
        "10 0e  00 04 4d 51 54 54  05  02  00 3c  00  00 01 61",
        Packet::Connect(Box::new(connect(V5, "a"))),
    );
}

// [v5:MQTT-3.1.2-16] [v5:MQTT-3.1.2-17] [v5:MQTT-3.1.2-18] [v5:MQTT-3.1.2-19]
// user name and password are present exactly when their flags say so; MQTT 5
// allows a password without a user name.
#[test]
fn v5_connect_password_without_username() {
    let mut c = connect(V5, "a");
    c.password = Some(Bytes::from_static(b"pw"));
    both(
        V5,
        "10 12  00 04 4d 51 54 54  05  42  00 3c  00  00 01 61  00 02 70 77",
        Packet::Connect(Box::new(c)),
    );
    // Flag set, field missing.
    assert_eq!(
        err(
            None,
            "10 0e  00 04 4d 51 54 54  05  82  00 3c  00  00 01 61"
        ),
        DecodeError::Truncated
    );
    // Flag clear, field present: trailing bytes.
    assert_eq!(
        err(
            None,
            "10 12  00 04 4d 51 54 54  05  02  00 3c  00  00 01 61  00 02 70 77"
        ),
        DecodeError::TrailingBytes
    );
}

// [v3:MQTT-3.1.2-18] [v3:MQTT-3.1.2-19] [v3:MQTT-3.1.2-20] [v3:MQTT-3.1.2-21]
#[test]
fn v311_username_password_presence_follows_flags() {
    let mut c = connect(V311, "a");
    c.username = Some(s("u"));
    both(
        V311,
        "10 10  00 04 4d 51 54 54  04  82  00 3c  00 01 61  00 01 75",
        Packet::Connect(Box::new(c.clone())),
    );
    assert_eq!(
        err(None, "10 0d  00 04 4d 51 54 54  04  82  00 3c  00 01 61"),
        DecodeError::Truncated
    );
    assert_eq!(
        err(
            None,
            "10 13  00 04 4d 51 54 54  04  82  00 3c  00 01 61  00 01 75  00 01 70"
        ),
        DecodeError::TrailingBytes
    );
}

/// Each row: the id the error must report, the version, the bytes, the error.
type Row = (
    &'static str,
    Option<ProtocolVersion>,
    &'static str,
    DecodeError,
);

fn check_rows(rows: &[Row]) {
    for (id, v, bytes, want) in rows {
        let got = err(*v, bytes);
        assert_eq!(got, *want, "{id}: {bytes}");
        let (ver, bare) = match id.split_once(':') {
            Some(("v5", bare)) => (V5, bare),
            Some((_, bare)) => (V311, bare),
            None => (v.unwrap_or(V5), *id),
        };
        // String and length errors do not know which field they were in;
        // every other error must report the statement the row cites.
        let contextual = matches!(
            got,
            DecodeError::InvalidUtf8
                | DecodeError::NullCharacter
                | DecodeError::Truncated
                | DecodeError::TrailingBytes
                | DecodeError::InvalidPropertyValue { .. }
        );
        if bare.starts_with("MQTT") && !contextual {
            let ids = got.spec_ids(ver);
            assert!(ids.contains(&bare), "{id}: {got:?} reports {ids:?}");
        }
    }
}

#[test]
fn connect_violations() {
    check_rows(&[
        // Protocol name is neither MQTT nor MQIsdp.
        (
            "v5:MQTT-3.1.2-1",
            None,
            "10 0d  00 04 4d 51 54 58  05  02  00 3c  00 01 61",
            DecodeError::InvalidProtocolName,
        ),
        (
            "v3:MQTT-3.1.2-1",
            None,
            "10 0d  00 04 4d 51 54 58  04  02  00 3c  00 01 61",
            DecodeError::InvalidProtocolName,
        ),
        // Unsupported level: answered with CONNACK 0x01 (3.1.1) / 0x84 (5.0).
        (
            "v5:MQTT-3.1.2-2",
            None,
            "10 0d  00 04 4d 51 54 54  06  02  00 3c  00 01 61",
            DecodeError::UnsupportedProtocolLevel { level: 6 },
        ),
        (
            "v3:MQTT-3.1.2-2",
            None,
            "10 0d  00 04 4d 51 54 54  03  02  00 3c  00 01 61",
            DecodeError::UnsupportedProtocolLevel { level: 3 },
        ),
        // Reserved connect flag.
        (
            "v5:MQTT-3.1.2-3",
            None,
            "10 0e  00 04 4d 51 54 54  05  03  00 3c  00  00 01 61",
            DecodeError::ConnectReservedFlag,
        ),
        (
            "v3:MQTT-3.1.2-3",
            None,
            "10 0d  00 04 4d 51 54 54  04  03  00 3c  00 01 61",
            DecodeError::ConnectReservedFlag,
        ),
        // Will QoS without the will flag.
        (
            "v5:MQTT-3.1.2-11",
            None,
            "10 0e  00 04 4d 51 54 54  05  0a  00 3c  00  00 01 61",
            DecodeError::WillFlagsWithoutWill,
        ),
        (
            "v3:MQTT-3.1.2-13",
            None,
            "10 0d  00 04 4d 51 54 54  04  0a  00 3c  00 01 61",
            DecodeError::WillFlagsWithoutWill,
        ),
        (
            "v3:MQTT-3.1.2-11",
            None,
            "10 0d  00 04 4d 51 54 54  04  12  00 3c  00 01 61",
            DecodeError::WillFlagsWithoutWill,
        ),
        // Will retain without the will flag.
        (
            "v5:MQTT-3.1.2-13",
            None,
            "10 0e  00 04 4d 51 54 54  05  22  00 3c  00  00 01 61",
            DecodeError::WillFlagsWithoutWill,
        ),
        (
            "v3:MQTT-3.1.2-15",
            None,
            "10 0d  00 04 4d 51 54 54  04  22  00 3c  00 01 61",
            DecodeError::WillFlagsWithoutWill,
        ),
        // Will QoS 3.
        (
            "v5:MQTT-3.1.2-12",
            None,
            "10 14  00 04 4d 51 54 54  05  1e  00 3c  00  00 01 61  00  00 01 77  00 00",
            DecodeError::InvalidWillQoS,
        ),
        (
            "v3:MQTT-3.1.2-14",
            None,
            "10 12  00 04 4d 51 54 54  04  1e  00 3c  00 01 61  00 01 77  00 00",
            DecodeError::InvalidWillQoS,
        ),
        // Password without user name in 3.1.1.
        (
            "v3:MQTT-3.1.2-22",
            None,
            "10 10  00 04 4d 51 54 54  04  42  00 3c  00 01 61  00 01 70",
            DecodeError::PasswordWithoutUsername,
        ),
        // Will flag set but the will topic and payload are missing.
        (
            "v5:MQTT-3.1.2-9",
            None,
            "10 0f  00 04 4d 51 54 54  05  06  00 3c  00  00 01 61  00",
            DecodeError::Truncated,
        ),
        // Client id is not UTF-8.
        (
            "v5:MQTT-3.1.3-4",
            None,
            "10 0e  00 04 4d 51 54 54  05  02  00 3c  00  00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.1.3-4",
            None,
            "10 0d  00 04 4d 51 54 54  04  02  00 3c  00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        // Client id missing.
        (
            "v5:MQTT-3.1.3-3",
            None,
            "10 0b  00 04 4d 51 54 54  05  02  00 3c  00",
            DecodeError::Truncated,
        ),
        (
            "v3:MQTT-3.1.3-3",
            None,
            "10 0a  00 04 4d 51 54 54  04  02  00 3c",
            DecodeError::Truncated,
        ),
        // Will topic is not UTF-8 / has a wildcard.
        (
            "v5:MQTT-3.1.3-11",
            None,
            "10 14  00 04 4d 51 54 54  05  06  00 3c  00  00 01 61  00  00 01 c0  00 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.1.3-10",
            None,
            "10 12  00 04 4d 51 54 54  04  06  00 3c  00 01 61  00 01 c0  00 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5 will topic wildcard",
            None,
            "10 14  00 04 4d 51 54 54  05  06  00 3c  00  00 01 61  00  00 01 23  00 00",
            DecodeError::WildcardInTopicName,
        ),
        // User name is not UTF-8.
        (
            "v5:MQTT-3.1.3-12",
            None,
            "10 11  00 04 4d 51 54 54  05  82  00 3c  00  00 01 61  00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.1.3-11",
            None,
            "10 10  00 04 4d 51 54 54  04  82  00 3c  00 01 61  00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        // The first packet must be CONNECT.
        (
            "v5:MQTT-3.1.0-1",
            None,
            "c0 00",
            DecodeError::FirstPacketNotConnect {
                packet_type: PacketType::PingReq,
            },
        ),
        (
            "v3:MQTT-3.1.0-1",
            None,
            "30 05 00 01 74 68 69",
            DecodeError::FirstPacketNotConnect {
                packet_type: PacketType::Publish,
            },
        ),
        // A CONNECT property that CONNECT does not allow (Topic Alias), a duplicate, a zero Receive Maximum.
        (
            "v5 connect misplaced property",
            None,
            "10 11  00 04 4d 51 54 54  05  02  00 3c  03 23 00 01  00 01 61",
            DecodeError::PropertyNotAllowed {
                id: 0x23,
                packet_type: PacketType::Connect,
            },
        ),
        (
            "v5 connect duplicate property",
            None,
            "10 14  00 04 4d 51 54 54  05  02  00 3c  06 21 00 01 21 00 02  00 01 61",
            DecodeError::DuplicateProperty { id: 0x21 },
        ),
        (
            "v5 receive maximum 0",
            None,
            "10 11  00 04 4d 51 54 54  05  02  00 3c  03 21 00 00  00 01 61",
            DecodeError::InvalidPropertyValue { id: 0x21 },
        ),
    ]);
}

// [v5:MQTT-3.1.2-2] the server answers an unsupported level with 0x84;
// [v3:MQTT-3.1.2-2] a 3.1.1 server with return code 0x01.
#[test]
fn unsupported_level_maps_to_connack_codes() {
    let e = DecodeError::UnsupportedProtocolLevel { level: 6 };
    assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(e.v3_connack_code(), Some(1));
    // [v3:MQTT-3.1.4-1] any other CONNECT error: close without CONNACK.
    assert_eq!(DecodeError::ConnectReservedFlag.v3_connack_code(), None);
}

// ---------------------------------------------------------------- CONNACK

// [v3:MQTT-3.2.2-1] [v3:MQTT-3.2.2-4] session present and return code.
#[test]
fn v311_connack() {
    both(
        V311,
        "20 02 01 00",
        Packet::ConnAck(Box::new(ConnAck {
            session_present: true,
            reason: ReasonCode::SUCCESS,
            properties: ConnAckProperties::default(),
        })),
    );
    // v5 codes map to the 3.1.1 return codes.
    let refuse = |reason| {
        Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason,
            properties: ConnAckProperties::default(),
        }))
    };
    assert_eq!(
        encode(&refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION), V311),
        hex("20 02 00 01")
    );
    assert_eq!(
        encode(&refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID), V311),
        hex("20 02 00 02")
    );
    assert_eq!(
        encode(&refuse(ReasonCode::SERVER_UNAVAILABLE), V311),
        hex("20 02 00 03")
    );
    assert_eq!(
        encode(&refuse(ReasonCode::BAD_USER_NAME_OR_PASSWORD), V311),
        hex("20 02 00 04")
    );
    assert_eq!(
        encode(&refuse(ReasonCode::NOT_AUTHORIZED), V311),
        hex("20 02 00 05")
    );
    // Codes MQTT 3.1.1 does not have become "server unavailable".
    assert_eq!(
        encode(&refuse(ReasonCode::QUOTA_EXCEEDED), V311),
        hex("20 02 00 03")
    );
    assert!(matches!(
        err(Some(V311), "20 02 00 06"),
        DecodeError::InvalidReasonCode { .. }
    ));
}

// [v5:MQTT-3.2.2-16] assigned client identifier travels in CONNACK.
#[test]
fn v5_connack_with_properties() {
    both(
        V5,
        "20 0f  00 00  0c  21 00 14  24 01  25 00  12 00 02 69 64",
        Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: ConnAckProperties {
                assigned_client_identifier: Some(s("id")),
                receive_maximum: Some(20),
                maximum_qos: Some(QoS::AtLeastOnce),
                retain_available: Some(false),
                ..Default::default()
            },
        })),
    );
}

#[test]
fn connack_violations() {
    check_rows(&[
        (
            "v5:MQTT-3.2.2-1",
            Some(V5),
            "20 03 02 00 00",
            DecodeError::ConnAckReservedFlags,
        ),
        (
            "v5:MQTT-3.2.2-8",
            Some(V5),
            "20 03 00 01 00",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code: 1,
            },
        ),
        (
            "v5 maximum qos 2",
            Some(V5),
            "20 05 00 00 02 24 02",
            DecodeError::InvalidPropertyValue { id: 0x24 },
        ),
    ]);
}

// ---------------------------------------------------------------- PUBLISH

// [v3:MQTT-2.3.1-5] [v5:MQTT-2.2.1-2] QoS 0 carries no packet identifier.
// [v3:MQTT-3.3.2-1] [v5:MQTT-3.3.2-1] the topic name comes first.
#[test]
fn publish_qos0() {
    let p = Publish::new(s("a/b"), Bytes::from_static(b"hi"));
    both(
        V311,
        "30 07  00 03 61 2f 62  68 69",
        Packet::Publish(p.clone()),
    );
    both(
        V5,
        "30 08  00 03 61 2f 62  00  68 69",
        Packet::Publish(p.clone()),
    );
    let mut with_id = p;
    with_id.packet_id = Some(pid(1));
    assert_eq!(
        Packet::Publish(with_id).encode(V311, &mut BytesMut::new()),
        Err(EncodeError::PacketIdMismatch)
    );
}

#[test]
fn publish_qos1_and_qos2_with_flags() {
    let mut p = Publish::new(s("t"), Bytes::from_static(b"x"));
    p.qos = QoS::AtLeastOnce;
    p.retain = true;
    p.packet_id = Some(pid(10));
    both(
        V311,
        "33 06  00 01 74  00 0a  78",
        Packet::Publish(p.clone()),
    );
    p.qos = QoS::ExactlyOnce;
    p.dup = true;
    p.retain = false;
    both(
        V311,
        "3c 06  00 01 74  00 0a  78",
        Packet::Publish(p.clone()),
    );
    both(V5, "3c 07  00 01 74  00 0a  00  78", Packet::Publish(p));
}

// [v5:MQTT-3.3.2-18] user properties keep their order; [v5:MQTT-3.3.2-4]
// [v5:MQTT-3.3.2-16] [v5:MQTT-3.3.2-20] properties round-trip unaltered.
#[test]
fn v5_publish_with_properties() {
    let mut p = Publish::new(s("t"), Bytes::from_static(b"x"));
    p.properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: Some(3),
        response_topic: Some(s("r")),
        correlation_data: Some(Bytes::from_static(b"c")),
        user_properties: vec![
            UserProperty {
                name: s("k"),
                value: s("2"),
            },
            UserProperty {
                name: s("k"),
                value: s("1"),
            },
        ],
        subscription_identifiers: vec![1, 300],
        content_type: Some(s("j")),
    }
    .into();
    both(
        V5,
        "30 2e  00 01 74  29 \
         01 01  02 00 00 00 3c  23 00 03  08 00 01 72  09 00 01 63 \
         26 00 01 6b 00 01 32  26 00 01 6b 00 01 31 \
         0b 01  0b ac 02  03 00 01 6a \
         78",
        Packet::Publish(p),
    );
}

// An empty topic is allowed only with a topic alias (MQTT 5).
#[test]
fn v5_publish_empty_topic_with_alias() {
    let mut p = Publish::new(s(""), Bytes::new());
    p.properties.topic_alias = Some(1);
    both(V5, "30 06  00 00  03 23 00 01", Packet::Publish(p));
}

#[test]
fn publish_violations() {
    check_rows(&[
        (
            "v5:MQTT-3.3.1-4",
            Some(V5),
            "36 06 00 01 74 00 01 00",
            DecodeError::InvalidQoS,
        ),
        (
            "v3:MQTT-3.3.1-4",
            Some(V311),
            "36 05 00 01 74 00 01",
            DecodeError::InvalidQoS,
        ),
        (
            "v5:MQTT-3.3.1-2",
            Some(V5),
            "38 04 00 01 74 00",
            DecodeError::DupOnQoS0,
        ),
        (
            "v3:MQTT-3.3.1-2",
            Some(V311),
            "38 03 00 01 74",
            DecodeError::DupOnQoS0,
        ),
        (
            "v5:MQTT-2.2.1-3",
            Some(V5),
            "32 06 00 01 74 00 00 00",
            DecodeError::ZeroPacketId,
        ),
        (
            "v3:MQTT-2.3.1-1",
            Some(V311),
            "32 05 00 01 74 00 00",
            DecodeError::ZeroPacketId,
        ),
        (
            "v5:MQTT-3.3.2-2",
            Some(V5),
            "30 06 00 03 61 2f 2b 00",
            DecodeError::WildcardInTopicName,
        ),
        (
            "v3:MQTT-3.3.2-2",
            Some(V311),
            "30 05 00 03 61 2f 23",
            DecodeError::WildcardInTopicName,
        ),
        (
            "v5:MQTT-3.3.2-1",
            Some(V5),
            "30 04 00 01 ff 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.3.2-1",
            Some(V311),
            "30 03 00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5:MQTT-1.5.4-2",
            Some(V5),
            "30 06 00 03 61 00 62 00",
            DecodeError::NullCharacter,
        ),
        (
            "v3:MQTT-1.5.3-2",
            Some(V311),
            "30 05 00 03 61 00 62",
            DecodeError::NullCharacter,
        ),
        // Surrogate halves (ED A0 80) are not well-formed UTF-8.
        (
            "v5:MQTT-1.5.4-1",
            Some(V5),
            "30 06 00 03 ed a0 80 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-1.5.3-1",
            Some(V311),
            "30 05 00 03 ed a0 80",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5:MQTT-3.3.2-8",
            Some(V5),
            "30 07 00 01 74 03 23 00 00",
            DecodeError::TopicAliasZero,
        ),
        (
            "v5:MQTT-4.7.3-1",
            Some(V5),
            "30 03 00 00 00",
            DecodeError::EmptyTopicName,
        ),
        (
            "v3:MQTT-4.7.3-1",
            Some(V311),
            "30 02 00 00",
            DecodeError::EmptyTopicName,
        ),
        // Response topic must be a topic name and UTF-8; content type UTF-8.
        (
            "v5:MQTT-3.3.2-14",
            Some(V5),
            "30 09 00 01 74 05 08 00 02 61 23",
            DecodeError::InvalidPropertyValue { id: 0x08 },
        ),
        (
            "v5:MQTT-3.3.2-13",
            Some(V5),
            "30 08 00 01 74 04 08 00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5:MQTT-3.3.2-19",
            Some(V5),
            "30 08 00 01 74 04 03 00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        // User property strings are UTF-8 strings.
        (
            "v5:MQTT-1.5.7-1",
            Some(V5),
            "30 0b 00 01 74 07 26 00 01 ff 00 01 61",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5 subscription identifier 0",
            Some(V5),
            "30 06 00 01 74 02 0b 00",
            DecodeError::InvalidPropertyValue { id: 0x0b },
        ),
        (
            "v5 payload format 2",
            Some(V5),
            "30 06 00 01 74 02 01 02",
            DecodeError::InvalidPropertyValue { id: 0x01 },
        ),
        (
            "v5 duplicate message expiry",
            Some(V5),
            "30 0e 00 01 74 0a 02 00 00 00 01 02 00 00 00 01",
            DecodeError::DuplicateProperty { id: 0x02 },
        ),
        (
            "v5 unknown property",
            Some(V5),
            "30 06 00 01 74 02 7f 00",
            DecodeError::PropertyNotAllowed {
                id: 0x7f,
                packet_type: PacketType::Publish,
            },
        ),
        (
            "v5 property block longer than packet",
            Some(V5),
            "30 05 00 01 74 09 01",
            DecodeError::Truncated,
        ),
    ]);
}

// [v5:MQTT-1.5.4-3] [v3:MQTT-1.5.3-3] a BOM is kept, not skipped or stripped.
#[test]
fn bom_is_preserved() {
    for v in [V311, V5] {
        let p = Publish::new(MqttStr::try_from("\u{feff}t").expect("valid"), Bytes::new());
        let bytes = encode(&Packet::Publish(p.clone()), v);
        assert_eq!(&bytes[2..7], &hex("00 04 ef bb bf 74")[..5]);
        let Ok(Some(Packet::Publish(back))) = decode_one(Some(v), &bytes) else {
            panic!("decodes")
        };
        assert_eq!(back.topic.as_str(), "\u{feff}t");
    }
}

// ---------------------------------------------------------------- acks

#[test]
fn v311_acks() {
    let a = Ack::new(pid(0x1234));
    both(V311, "40 02 12 34", Packet::PubAck(a.clone()));
    both(V311, "50 02 12 34", Packet::PubRec(a.clone()));
    both(V311, "62 02 12 34", Packet::PubRel(a.clone()));
    both(V311, "70 02 12 34", Packet::PubComp(a));
}

#[test]
fn v5_acks_short_and_long_forms() {
    let ok = Ack::new(pid(1));
    both(V5, "40 02 00 01", Packet::PubAck(ok.clone()));
    // Success with an explicit reason code and empty properties decodes the same.
    assert_eq!(
        decode_one(Some(V5), &hex("40 04 00 01 00 00")),
        Ok(Some(Packet::PubAck(ok)))
    );
    let mut no_match = Ack::new(pid(1));
    no_match.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    both(V5, "40 03 00 01 10", Packet::PubAck(no_match));
    let mut with_props = Ack::new(pid(2));
    with_props.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    with_props.properties.reason_string = Some(s("gone"));
    both(
        V5,
        "62 0b 00 02 92 07 1f 00 04 67 6f 6e 65",
        Packet::PubRel(with_props),
    );
}

#[test]
fn ack_violations() {
    check_rows(&[
        (
            "v5:MQTT-3.4.2-1",
            Some(V5),
            "40 03 00 01 92",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::PubAck,
                code: 0x92,
            },
        ),
        (
            "v5:MQTT-3.5.2-1",
            Some(V5),
            "50 03 00 01 01",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::PubRec,
                code: 0x01,
            },
        ),
        (
            "v5:MQTT-3.6.2-1",
            Some(V5),
            "62 03 00 01 10",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::PubRel,
                code: 0x10,
            },
        ),
        (
            "v5:MQTT-3.7.2-1",
            Some(V5),
            "70 03 00 01 80",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::PubComp,
                code: 0x80,
            },
        ),
        (
            "v5:MQTT-3.6.1-1",
            Some(V5),
            "60 02 00 01",
            DecodeError::InvalidFlags {
                packet_type: PacketType::PubRel,
                flags: 0,
            },
        ),
        (
            "v3:MQTT-3.6.1-1",
            Some(V311),
            "60 02 00 01",
            DecodeError::InvalidFlags {
                packet_type: PacketType::PubRel,
                flags: 0,
            },
        ),
        (
            "v5:MQTT-2.1.3-1",
            Some(V5),
            "41 02 00 01",
            DecodeError::InvalidFlags {
                packet_type: PacketType::PubAck,
                flags: 1,
            },
        ),
        (
            "v3:MQTT-2.2.2-1",
            Some(V311),
            "41 02 00 01",
            DecodeError::InvalidFlags {
                packet_type: PacketType::PubAck,
                flags: 1,
            },
        ),
        (
            "v3:MQTT-2.2.2-2",
            Some(V311),
            "c4 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::PingReq,
                flags: 4,
            },
        ),
        (
            "v5 puback id 0",
            Some(V5),
            "40 02 00 00",
            DecodeError::ZeroPacketId,
        ),
        (
            "v3 puback with reason",
            Some(V311),
            "40 03 00 01 00",
            DecodeError::TrailingBytes,
        ),
        (
            "v5 puback property not allowed",
            Some(V5),
            "40 06 00 01 00 02 01 01",
            DecodeError::PropertyNotAllowed {
                id: 0x01,
                packet_type: PacketType::PubAck,
            },
        ),
    ]);
}

// ---------------------------------------------------------------- SUBSCRIBE

#[test]
fn v311_subscribe_and_suback() {
    let sub = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        filters: vec![
            SubscribeFilter {
                filter: s("a/#"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            },
            SubscribeFilter {
                filter: s("b"),
                options: SubscriptionOptions::default(),
            },
        ],
    };
    both(
        V311,
        "82 0c  00 01  00 03 61 2f 23 01  00 01 62 00",
        Packet::Subscribe(sub),
    );
    // [v3:MQTT-3.9.3-1] one return code per filter, in order.
    let ack = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
    };
    both(V311, "90 04  00 01  01 80", Packet::SubAck(ack.clone()));
    // [v3:MQTT-3.9.3-2] v5-only failure codes become 0x80 in 3.1.1.
    let mut v5_code = ack;
    v5_code.reasons[1] = ReasonCode::TOPIC_FILTER_INVALID;
    assert_eq!(
        encode(&Packet::SubAck(v5_code), V311),
        hex("90 04 00 01 01 80")
    );
}

#[test]
fn v5_subscribe_options_and_suback() {
    let sub = Subscribe {
        packet_id: pid(7),
        properties: SubscribeProperties {
            subscription_identifier: Some(5),
            user_properties: vec![],
        },
        filters: vec![SubscribeFilter {
            filter: s("t"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
    };
    both(
        V5,
        "82 09  00 07  02 0b 05  00 01 74  2e",
        Packet::Subscribe(sub),
    );
    let ack = SubAck {
        packet_id: pid(7),
        properties: AckProperties::default(),
        reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::TOPIC_FILTER_INVALID],
    };
    both(V5, "90 05  00 07  00  02 8f", Packet::SubAck(ack));
}

#[test]
fn unsubscribe_and_unsuback() {
    let unsub = Unsubscribe {
        packet_id: pid(2),
        properties: UnsubscribeProperties::default(),
        filters: vec![s("a"), s("b/+")],
    };
    both(
        V311,
        "a2 0a  00 02  00 01 61  00 03 62 2f 2b",
        Packet::Unsubscribe(unsub.clone()),
    );
    both(
        V5,
        "a2 0b  00 02  00  00 01 61  00 03 62 2f 2b",
        Packet::Unsubscribe(unsub),
    );
    let ack = UnsubAck {
        packet_id: pid(2),
        properties: AckProperties::default(),
        reasons: vec![],
    };
    both(V311, "b0 02 00 02", Packet::UnsubAck(ack));
    // [v5:MQTT-3.11.3-1] one reason code per filter, in order.
    let ack5 = UnsubAck {
        packet_id: pid(2),
        properties: AckProperties::default(),
        reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
    };
    both(V5, "b0 05 00 02 00 00 11", Packet::UnsubAck(ack5));
}

#[test]
fn subscribe_violations() {
    check_rows(&[
        (
            "v5:MQTT-3.8.1-1",
            Some(V5),
            "80 06 00 01 00 01 74 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Subscribe,
                flags: 0,
            },
        ),
        (
            "v3:MQTT-3.8.1-1",
            Some(V311),
            "83 06 00 01 00 01 74 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Subscribe,
                flags: 3,
            },
        ),
        (
            "v5:MQTT-3.8.3-2",
            Some(V5),
            "82 03 00 01 00",
            DecodeError::NoTopicFilters,
        ),
        (
            "v3:MQTT-3.8.3-3",
            Some(V311),
            "82 02 00 01",
            DecodeError::NoTopicFilters,
        ),
        (
            "v5:MQTT-3.8.3-1",
            Some(V5),
            "82 07 00 01 00 00 01 ff 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.8.3-1",
            Some(V311),
            "82 06 00 01 00 01 ff 00",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5:MQTT-3.8.3-5",
            Some(V5),
            "82 07 00 01 00 00 01 74 40",
            DecodeError::InvalidSubscriptionOptions { options: 0x40 },
        ),
        (
            "v3:MQTT-3.8.3-4",
            Some(V311),
            "82 06 00 01 00 01 74 04",
            DecodeError::InvalidSubscriptionOptions { options: 0x04 },
        ),
        (
            "v3:MQTT-3.8.3-4",
            Some(V311),
            "82 06 00 01 00 01 74 03",
            DecodeError::InvalidSubscriptionOptions { options: 0x03 },
        ),
        (
            "v5 retain handling 3",
            Some(V5),
            "82 07 00 01 00 00 01 74 30",
            DecodeError::InvalidSubscriptionOptions { options: 0x30 },
        ),
        (
            "v5:MQTT-2.2.1-3",
            Some(V5),
            "82 07 00 00 00 00 01 74 00",
            DecodeError::ZeroPacketId,
        ),
        (
            "v3:MQTT-2.3.1-1",
            Some(V311),
            "a2 05 00 00 00 01 74",
            DecodeError::ZeroPacketId,
        ),
        (
            "v5:MQTT-3.9.3-2",
            Some(V5),
            "90 04 00 01 00 03",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code: 3,
            },
        ),
        (
            "v5:MQTT-3.10.1-1",
            Some(V5),
            "a0 05 00 01 00 01 74",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Unsubscribe,
                flags: 0,
            },
        ),
        (
            "v3:MQTT-3.10.1-1",
            Some(V311),
            "a0 05 00 01 00 01 74",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Unsubscribe,
                flags: 0,
            },
        ),
        (
            "v5:MQTT-3.10.3-1",
            Some(V5),
            "a2 06 00 01 00 00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v3:MQTT-3.10.3-1",
            Some(V311),
            "a2 05 00 01 00 01 ff",
            DecodeError::InvalidUtf8,
        ),
        (
            "v5:MQTT-3.10.3-2",
            Some(V5),
            "a2 03 00 01 00",
            DecodeError::NoUnsubscribeTopicFilters,
        ),
        (
            "v3:MQTT-3.10.3-2",
            Some(V311),
            "a2 02 00 01",
            DecodeError::NoUnsubscribeTopicFilters,
        ),
        (
            "v5:MQTT-3.11.3-2",
            Some(V5),
            "b0 04 00 01 00 01",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::UnsubAck,
                code: 1,
            },
        ),
    ]);
    // [v3:MQTT-3.9.3-2] SUBACK return codes other than 0, 1, 2 and 0x80 are refused.
    assert!(matches!(
        err(Some(V311), "90 03 00 01 03"),
        DecodeError::InvalidReasonCode { .. }
    ));
}

// ---------------------------------------------------------------- the rest

#[test]
fn ping_disconnect_auth() {
    both(V311, "c0 00", Packet::PingReq);
    both(V5, "d0 00", Packet::PingResp);
    both(V311, "e0 00", Packet::Disconnect(Disconnect::default()));
    both(V5, "e0 00", Packet::Disconnect(Disconnect::default()));
    both(
        V5,
        "e0 01 8e",
        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
    );
    let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    d.properties.session_expiry_interval = Some(0);
    both(V5, "e0 07 00 05 11 00 00 00 00", Packet::Disconnect(d));
    // The server's takeover disconnect is dropped to an empty packet in 3.1.1.
    assert_eq!(
        encode(
            &Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
            V311
        ),
        hex("e0 00")
    );
    both(V5, "f0 00", Packet::Auth(Auth::default()));
    let auth = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("m")),
            authentication_data: Some(Bytes::from_static(b"d")),
            ..Default::default()
        },
    };
    both(
        V5,
        "f0 0a 18 08 15 00 01 6d 16 00 01 64",
        Packet::Auth(auth.clone()),
    );
    assert!(matches!(
        Packet::Auth(auth).encode(V311, &mut BytesMut::new()),
        Err(EncodeError::NotInVersion { .. })
    ));
}

#[test]
fn misc_violations() {
    check_rows(&[
        (
            "v5:MQTT-3.14.1-1",
            Some(V5),
            "e1 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Disconnect,
                flags: 1,
            },
        ),
        (
            "v3:MQTT-3.14.1-1",
            Some(V311),
            "e2 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Disconnect,
                flags: 2,
            },
        ),
        (
            "v5:MQTT-3.14.2-1",
            Some(V5),
            "e0 01 01",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::Disconnect,
                code: 1,
            },
        ),
        (
            "v5:MQTT-3.15.1-1",
            Some(V5),
            "f1 00",
            DecodeError::InvalidFlags {
                packet_type: PacketType::Auth,
                flags: 1,
            },
        ),
        (
            "v5:MQTT-3.15.2-1",
            Some(V5),
            "f0 01 01",
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::Auth,
                code: 1,
            },
        ),
        (
            "v3 AUTH is reserved",
            Some(V311),
            "f0 00",
            DecodeError::ReservedPacketType { packet_type: 15 },
        ),
        (
            "v5 type 0 is reserved",
            Some(V5),
            "00 00",
            DecodeError::ReservedPacketType { packet_type: 0 },
        ),
        (
            "v3 pingreq with a body",
            Some(V311),
            "c0 01 00",
            DecodeError::TrailingBytes,
        ),
        (
            "v3 disconnect with a body",
            Some(V311),
            "e0 01 00",
            DecodeError::TrailingBytes,
        ),
        // Variable byte integers: minimal and at most four bytes.
        (
            "v5:MQTT-1.5.5-1",
            Some(V5),
            "c0 80 00",
            DecodeError::NonMinimalVarInt,
        ),
        (
            "v5:MQTT-1.5.5-1",
            Some(V5),
            "c0 80 80 80 80 01",
            DecodeError::MalformedVarInt,
        ),
        (
            "v3 non-minimal length",
            Some(V311),
            "c0 ff 80 00",
            DecodeError::NonMinimalVarInt,
        ),
    ]);
}

// [MQTT-4.13.1-1] malformed packets and protocol errors map to reason codes
// the server sends before it closes.
#[test]
fn errors_map_to_reason_codes() {
    assert_eq!(
        DecodeError::InvalidQoS.reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
    assert_eq!(
        DecodeError::DuplicateProperty { id: 1 }.reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        DecodeError::TopicAliasZero.reason_code(),
        ReasonCode::TOPIC_ALIAS_INVALID
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 10, max: 5 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
    assert_eq!(
        DecodeError::WildcardInTopicName.reason_code(),
        ReasonCode::TOPIC_NAME_INVALID
    );
    for e in [
        DecodeError::NoTopicFilters,
        DecodeError::NoUnsubscribeTopicFilters,
    ] {
        assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
}

// ---------------------------------------------------------------- framing

#[test]
fn varint_boundaries() {
    for (v, bytes) in [
        (0u32, "00"),
        (127, "7f"),
        (128, "80 01"),
        (16_383, "ff 7f"),
        (16_384, "80 80 01"),
        (2_097_151, "ff ff 7f"),
        (2_097_152, "80 80 80 01"),
        (MAX_VARINT, "ff ff ff 7f"),
    ] {
        let (enc, n) = primitives::encode_varint(v);
        let buf = enc[..n].to_vec();
        assert_eq!(buf, hex(bytes), "{v}");
        assert_eq!(read_varint(&buf), Ok(VarIntRead::Done(v, buf.len())));
        assert_eq!(varint_len(v), buf.len());
    }
    assert_eq!(read_varint(&hex("80 80")), Ok(VarIntRead::Incomplete));
}

#[test]
fn oversize_packet_refused_from_its_header_without_reserving() {
    let mut buf = BytesMut::from(&hex("30 ff ff ff 7f 00")[..]);
    let before = buf.capacity();
    let e = decode_packet(&mut buf, Some(V5), 1024).expect_err("too large");
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 1 + 4 + MAX_VARINT as usize,
            max: 1024
        }
    );
    assert_eq!(buf.capacity(), before);
    // Exactly at the limit is fine; one byte over is not.
    let mut ok = BytesMut::from(&hex("30 05 00 01 74 00 78")[..]);
    assert!(decode_packet(&mut ok, Some(V5), 7).expect("fits").is_some());
    let mut over = BytesMut::from(&hex("30 05 00 01 74 00 78")[..]);
    assert!(decode_packet(&mut over, Some(V5), 6).is_err());
}

#[test]
fn encode_respects_peer_maximum_packet_size() {
    // [v5:MQTT-3.1.2-24] the server must not send a packet over the client's maximum.
    let p = Packet::Publish(Publish::new(s("t"), Bytes::from(vec![0u8; 100])));
    let mut buf = BytesMut::new();
    assert!(matches!(
        encode_packet(&p, V5, 50, &mut buf),
        Err(EncodeError::PacketTooLarge { .. })
    ));
    assert!(buf.is_empty());
    assert!(encode_packet(&p, V5, 200, &mut buf).is_ok());
}

#[test]
fn codec_learns_version_from_connect() {
    let mut codec = Codec::server(DEFAULT_MAX_PACKET_BYTES);
    let mut buf = BytesMut::from(&hex("10 0e  00 04 4d 51 54 54  05  02  00 3c  00  00 01 61")[..]);
    buf.extend_from_slice(&hex("30 08  00 03 61 2f 62  00  68 69"));
    assert!(matches!(
        codec.decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(codec.version(), Some(V5));
    let Ok(Some(Packet::Publish(p))) = codec.decode(&mut buf) else {
        panic!("publish")
    };
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(codec.decode(&mut buf), Ok(None));
}

// A small PUBLISH owns its bytes (a slice would pin the whole read buffer
// while the message sits in a queue); a large one is a slice of the read
// buffer, not a copy.
#[test]
fn small_publish_owns_its_frame_large_one_is_zero_copy() {
    let mut buf = BytesMut::from(&hex("30 08  00 03 61 2f 62  00  68 69 ff ff")[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(p))) = decode_packet(&mut buf, Some(V5), 1024) else {
        panic!("publish")
    };
    assert_eq!(&p.payload[..], b"hi");
    assert!(!range.contains(&(p.payload.as_ptr() as usize)));
    assert!(!range.contains(&(p.topic.as_bytes().as_ptr() as usize)));
    assert_eq!(&buf[..], &[0xff, 0xff]);

    let payload = vec![5u8; super::codec::OWNED_FRAME_BYTES];
    let mut big = Publish::new(MqttStr::from_static("a/b"), payload.into());
    big.qos = QoS::AtMostOnce;
    let mut buf = BytesMut::new();
    Packet::Publish(big).encode(V5, &mut buf).expect("encodes");
    let base = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode_packet(&mut buf, Some(V5), 1 << 20) else {
        panic!("publish")
    };
    // Fixed header (1 + 3 length bytes), topic (2 + 3), properties (1).
    assert_eq!(p.payload.as_ptr() as usize, base + 10);
}

// ---------------------------------------------------------------- properties

fn arb_str() -> impl Strategy<Value = MqttStr> {
    "\\PC{0,6}".prop_map(|s| MqttStr::try_from(s).expect("no NUL in \\PC"))
}

fn arb_topic() -> impl Strategy<Value = MqttStr> {
    "[a-z$/\u{e9}]{1,8}".prop_map(|s| MqttStr::try_from(s).expect("valid"))
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn arb_users() -> impl Strategy<Value = Vec<UserProperty>> {
    proptest::collection::vec(
        (arb_str(), arb_str()).prop_map(|(name, value)| UserProperty { name, value }),
        0..3,
    )
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_pid() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).expect("non-zero"))
}

fn arb_code(set: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(set).prop_map(ReasonCode)
}

fn arb_publish(v5: bool) -> impl Strategy<Value = Publish> {
    (
        arb_topic(),
        arb_qos(),
        any::<(bool, bool)>(),
        arb_pid(),
        arb_bytes(),
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(1u16..),
        proptest::option::of(arb_topic()),
        arb_users(),
        proptest::collection::vec(1u32..=MAX_VARINT, 0..3),
        proptest::option::of(arb_str()),
    )
        .prop_map(
            move |(
                topic,
                qos,
                (dup, retain),
                id,
                payload,
                pfi,
                mei,
                alias,
                rt,
                users,
                subs,
                ct,
            )| {
                let mut p = Publish::new(topic, payload);
                p.qos = qos;
                p.retain = retain;
                if qos != QoS::AtMostOnce {
                    p.dup = dup;
                    p.packet_id = Some(id);
                }
                if v5 {
                    p.properties = PublishProperties {
                        payload_format_indicator: pfi,
                        message_expiry_interval: mei,
                        topic_alias: alias,
                        response_topic: rt,
                        correlation_data: None,
                        user_properties: users,
                        subscription_identifiers: subs,
                        content_type: ct,
                    }
                    .into();
                }
                p
            },
        )
}

const CONNACK_V5: &[u8] = &[0x00, 0x80, 0x85, 0x86, 0x87, 0x88, 0x8A, 0x95, 0x9F];
const CONNACK_V3: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL: &[u8] = &[0x00, 0x92];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT: &[u8] = &[0x00, 0x04, 0x80, 0x81, 0x82, 0x8B, 0x8E, 0x93, 0x95];
const AUTH: &[u8] = &[0x00, 0x18, 0x19];

fn arb_ack(v5: bool, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    (
        arb_pid(),
        arb_code(codes),
        proptest::option::of(arb_str()),
        arb_users(),
    )
        .prop_map(move |(id, reason, rs, users)| {
            let mut a = Ack::new(id);
            if v5 {
                a.reason = reason;
                a.properties = AckProperties {
                    reason_string: rs,
                    user_properties: users,
                };
            }
            a
        })
}

fn arb_connect(version: ProtocolVersion) -> impl Strategy<Value = Connect> {
    let v5 = version.is_v5();
    (
        (any::<bool>(), any::<u16>(), arb_str()),
        proptest::option::of((
            arb_topic(),
            arb_bytes(),
            arb_qos(),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
        )),
        proptest::option::of(arb_str()),
        proptest::option::of(arb_bytes()),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(1u16..),
            arb_users(),
        ),
    )
        .prop_map(
            move |((clean, ka, id), will, user, pass, (sei, rm, users))| {
                let mut c = Connect {
                    protocol: version,
                    clean_start: clean,
                    keep_alive: ka,
                    client_id: id,
                    will: will.map(|(topic, payload, qos, retain, delay)| LastWill {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties: WillProperties {
                            will_delay_interval: if v5 { delay } else { None },
                            ..Default::default()
                        },
                    }),
                    username: user,
                    password: pass,
                    properties: ConnectProperties::default(),
                };
                if v5 {
                    c.properties.session_expiry_interval = sei;
                    c.properties.receive_maximum = rm;
                    c.properties.user_properties = users;
                } else if c.username.is_none() {
                    c.password = None;
                }
                c
            },
        )
}

fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let filter = (arb_str(), arb_qos(), any::<(bool, bool)>(), 0u8..3).prop_map(
        move |(filter, qos, (nl, rap), rh)| SubscribeFilter {
            filter,
            options: SubscriptionOptions {
                qos,
                no_local: v5 && nl,
                retain_as_published: v5 && rap,
                retain_handling: match (v5, rh) {
                    (true, 1) => RetainHandling::SendIfNew,
                    (true, 2) => RetainHandling::DoNotSend,
                    _ => RetainHandling::SendAtSubscribe,
                },
            },
        },
    );
    let mut choices: Vec<BoxedStrategy<Packet>> = vec![
        arb_connect(version)
            .prop_map(|c| Packet::Connect(Box::new(c)))
            .boxed(),
        (
            any::<bool>(),
            arb_code(if v5 { CONNACK_V5 } else { CONNACK_V3 }),
            proptest::option::of(arb_str()),
        )
            .prop_map(move |(sp, reason, id)| {
                Packet::ConnAck(Box::new(ConnAck {
                    session_present: sp,
                    reason,
                    properties: ConnAckProperties {
                        assigned_client_identifier: if v5 { id } else { None },
                        ..Default::default()
                    },
                }))
            })
            .boxed(),
        arb_publish(v5).prop_map(Packet::Publish).boxed(),
        arb_ack(v5, PUBACK).prop_map(Packet::PubAck).boxed(),
        arb_ack(v5, PUBACK).prop_map(Packet::PubRec).boxed(),
        arb_ack(v5, PUBREL).prop_map(Packet::PubRel).boxed(),
        arb_ack(v5, PUBREL).prop_map(Packet::PubComp).boxed(),
        (
            arb_pid(),
            proptest::collection::vec(filter, 1..4),
            proptest::option::of(1u32..=MAX_VARINT),
        )
            .prop_map(move |(packet_id, filters, sid)| {
                Packet::Subscribe(Subscribe {
                    packet_id,
                    properties: SubscribeProperties {
                        subscription_identifier: if v5 { sid } else { None },
                        user_properties: vec![],
                    },
                    filters,
                })
            })
            .boxed(),
        (
            arb_pid(),
            proptest::collection::vec(arb_code(if v5 { SUBACK_V5 } else { SUBACK_V3 }), 1..4),
        )
            .prop_map(|(packet_id, reasons)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties: AckProperties::default(),
                    reasons,
                })
            })
            .boxed(),
        (arb_pid(), proptest::collection::vec(arb_str(), 1..4))
            .prop_map(|(packet_id, filters)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties: UnsubscribeProperties::default(),
                    filters,
                })
            })
            .boxed(),
        (
            arb_pid(),
            proptest::collection::vec(arb_code(UNSUBACK), 0..4),
        )
            .prop_map(move |(packet_id, reasons)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties: AckProperties::default(),
                    reasons: if v5 { reasons } else { vec![] },
                })
            })
            .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        (arb_code(DISCONNECT), proptest::option::of(any::<u32>()))
            .prop_map(move |(reason, sei)| {
                let mut d = Disconnect::default();
                if v5 {
                    d.reason = reason;
                    d.properties.session_expiry_interval = sei;
                }
                Packet::Disconnect(d)
            })
            .boxed(),
    ];
    if v5 {
        choices.push(
            (arb_code(AUTH), proptest::option::of(arb_str()))
                .prop_map(|(reason, m)| {
                    Packet::Auth(Auth {
                        reason,
                        properties: AuthProperties {
                            authentication_method: m,
                            ..Default::default()
                        },
                    })
                })
                .boxed(),
        );
    }
    proptest::strategy::Union::new(choices).boxed()
}

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311), Just(V5)]
}

fn arb_versioned_packets(n: usize) -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    arb_version().prop_flat_map(move |v| (Just(v), proptest::collection::vec(arb_packet(v), 1..n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity((v, packets) in arb_versioned_packets(2)) {
        let p = &packets[0];
        let bytes = encode(p, v);
        prop_assert_eq!(decode_one(Some(v), &bytes), Ok(Some(p.clone())));
    }

    #[test]
    fn every_prefix_is_incomplete((v, packets) in arb_versioned_packets(2)) {
        let bytes = encode(&packets[0], v);
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_one(Some(v), &bytes[..cut]), Ok(None), "prefix {}", cut);
        }
    }

    #[test]
    fn split_stream_yields_same_packets(
        (v, packets) in arb_versioned_packets(8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for p in &packets {
            stream.extend(encode(p, v));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        let mut codec = Codec::new(v, DEFAULT_MAX_PACKET_BYTES);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&stream[from..to]);
            from = to;
            while let Some(p) = codec.decode(&mut buf).expect("valid stream") {
                out.push(p);
            }
        }
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        v in proptest::option::of(arb_version()),
    ) {
        const MAX: usize = 256;
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_packet(&mut buf, v, MAX) {}
        prop_assert!(buf.capacity() <= 2 * bytes.len().max(MAX), "capacity {}", buf.capacity());
    }

    #[test]
    fn mutated_packets_never_panic((v, packets) in arb_versioned_packets(2), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&packets[0], v);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        for version in [Some(v), None] {
            let _ = decode_packet(&mut BytesMut::from(&bytes[..]), version, DEFAULT_MAX_PACKET_BYTES);
        }
    }
}

// Property blocks of 128 bytes and more need a longer length prefix: the
// encoder writes them in one pass and shifts the body to make room.
#[test]
fn long_property_blocks_round_trip() {
    for len in [100usize, 200, 20_000] {
        let mut p = Publish::new(s("t"), Bytes::from_static(b"x"));
        p.properties.user_properties = vec![UserProperty {
            name: s("k"),
            value: MqttStr::try_from("v".repeat(len)).expect("valid"),
        }];
        let bytes = encode(&Packet::Publish(p.clone()), V5);
        let props_len = 1 + 2 + 1 + 2 + len;
        let (enc, n) = primitives::encode_varint(props_len as u32);
        let want = &enc[..n];
        let at = 2 + 3;
        let header_len = if bytes.len() - 2 < 128 {
            2
        } else if bytes.len() - 3 < 16_384 {
            3
        } else {
            4
        };
        let at = at + header_len - 2;
        assert_eq!(&bytes[at..at + want.len()], want, "len {len}");
        assert_eq!(decode_one(Some(V5), &bytes), Ok(Some(Packet::Publish(p))));
    }
}

// The fuzz target's own check, so a pinned input is checked exactly as the
// fuzzer checked it.
include!("../../fuzz/round_trip.rs");

#[test]
fn fuzz_regressions() {
    // A v5 PUBLISH whose only property is an empty Content Type: the
    // property must survive the round trip (found 2026-11-22).
    round_trip(&hex(
        "ff 32 10 0001 2d 0101 03 03 0000 28 40 5f 24 01 00 03 25 f3",
    ));
}

#[test]
fn writer_refuses_to_pass_its_end() {
    use primitives::{Sink, Writer};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 3];
    let mut w = Writer::new(&mut space);
    w.put_u16(0x0102);
    assert!(!w.filled(), "one byte left");
    w.put_slice(b"ab"); // does not fit: refused, remembered
    w.put_u8(3);
    assert!(!w.filled(), "a refused write is never forgotten");
    let mut exact = [std::mem::MaybeUninit::<u8>::uninit(); 3];
    let mut w = Writer::new(&mut exact);
    w.put_u8(1);
    w.put_slice(b"bc");
    assert!(w.filled());
}
