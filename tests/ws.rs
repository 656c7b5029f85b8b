//! MQTT over WebSocket (MQTT 6.0): paho's websockets transport, plain and
//! over TLS, across shards; and a client of the test's own that frames
//! bytes exactly as it likes (split packets, several per frame, text
//! frames, pings, a missing subprotocol, an upgrade that never ends).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use ringmq::protocol::{Codec, Packet, ProtocolVersion::V5, QoS, ReasonCode};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

fn ws_config(cores: usize) -> ringmq::config::Config {
    let mut cfg = config(cores);
    cfg.listen_ws = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg
}

fn ws_addr(b: &Broker) -> SocketAddr {
    b.handle.as_ref().expect("running").ws_addrs()[0]
}

const UPGRADE: &str = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Sends the upgrade request with `protocols`; returns the socket and the
/// response head.
fn upgrade(addr: SocketAddr, protocols: &str) -> (TcpStream, String) {
    let mut t = TcpStream::connect(addr).expect("tcp");
    t.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let req = format!("{UPGRADE}Sec-WebSocket-Protocol: {protocols}\r\n\r\n");
    t.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match t.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    (t, String::from_utf8_lossy(&head).into_owned())
}

/// A masked client frame.
fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    let h = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    h.format(payload.len() as u64, &mut out).expect("format");
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(V5, &mut out).expect("encodes");
    out.to_vec()
}

/// Reads server frames (unmasked) until `want` MQTT packets decoded or a
/// control frame of `until` arrives; returns packets and control opcodes.
fn read_frames(t: &mut TcpStream, want: usize) -> (Vec<Packet>, Vec<OpCode>, bool) {
    let mut raw = Vec::new();
    let mut mqtt = BytesMut::new();
    let mut codec = Codec::new(V5, usize::MAX);
    let (mut packets, mut controls) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // Parse whole frames out of `raw`.
        loop {
            let mut c = std::io::Cursor::new(&raw[..]);
            let Some((h, len)) = FrameHeader::parse(&mut c).expect("valid frame") else {
                break;
            };
            let start = c.position() as usize;
            if raw.len() < start + len as usize {
                break;
            }
            assert!(h.mask.is_none(), "server frames are not masked");
            let payload = raw[start..start + len as usize].to_vec();
            raw.drain(..start + len as usize);
            match h.opcode {
                OpCode::Data(Data::Binary) => mqtt.extend_from_slice(&payload),
                op => controls.push(op),
            }
        }
        while let Some(p) = codec.decode(&mut mqtt).expect("valid MQTT") {
            packets.push(p);
        }
        if packets.len() >= want {
            return (packets, controls, false);
        }
        assert!(Instant::now() < deadline, "timed out");
        let mut b = [0u8; 4096];
        match t.read(&mut b) {
            Ok(0) | Err(_) => return (packets, controls, true),
            Ok(n) => raw.extend_from_slice(&b[..n]),
        }
    }
}

// [v5:MQTT-6.0.0-2] one CONNECT split over three frames, then SUBSCRIBE
// and PUBLISH in one frame: the broker reads one byte stream; a ping frame
// in between gets its pong; the subscriber gets its message back in a
// binary frame [v5:MQTT-6.0.0-1]; [v5:MQTT-6.0.0-4] the subprotocol
// returned is mqtt.
#[test]
fn packets_span_frames_and_share_them() {
    let b = start_with(ws_config(2));
    let (mut t, head) = upgrade(ws_addr(&b), "mqtt");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let connect = encode(&Packet::Connect(Box::new(connect_packet(
        V5,
        &id_on_shard("ws-split", 1, 2),
        true,
    ))));
    let (a, rest) = connect.split_at(3);
    let (b1, c) = rest.split_at(5);
    let mut wire = frame(OpCode::Data(Data::Binary), a);
    wire.extend(frame(OpCode::Data(Data::Continue), b1));
    wire.extend(frame(OpCode::Control(Control::Ping), b"hi"));
    wire.extend(frame(OpCode::Data(Data::Continue), c));
    // (The first two frames are not final: one message across three frames.)
    wire[0] &= 0x7F;
    let second = 2 + 4 + a.len();
    wire[second] &= 0x7F;
    t.write_all(&wire).expect("write");
    let (p, controls, _) = read_frames(&mut t, 1);
    assert!(
        matches!(&p[0], Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS),
        "{p:?}"
    );
    assert_eq!(controls, vec![OpCode::Control(Control::Pong)]);
    let mut both = encode(&subscribe_packet(1, &[("ws/t", QoS::AtMostOnce)]));
    t.write_all(&frame(OpCode::Data(Data::Binary), &both))
        .expect("write");
    let (p, _, _) = read_frames(&mut t, 1);
    assert!(matches!(&p[0], Packet::SubAck(_)));
    let mut publish = ringmq::protocol::Publish::new(s("ws/t"), bytes::Bytes::from_static(b"m1"));
    publish.qos = QoS::AtMostOnce;
    both = encode(&Packet::Publish(publish.clone()));
    publish.payload = bytes::Bytes::from_static(b"m2");
    both.extend(encode(&Packet::Publish(publish)));
    t.write_all(&frame(OpCode::Data(Data::Binary), &both))
        .expect("write");
    let (p, _, _) = read_frames(&mut t, 2);
    let payloads: Vec<&[u8]> = p
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => &p.payload[..],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads, vec![&b"m1"[..], &b"m2"[..]]);
    // A plain TCP publisher on the other shard reaches the WebSocket client.
    let (mut tcp, _) = Raw::connect(b.addr, V5, &id_on_shard("ws-tcp", 0, 2), true);
    tcp.publish("ws/t", b"from tcp", QoS::AtLeastOnce, 1, false);
    assert!(matches!(tcp.recv(), Packet::PubAck(_)));
    let (p, _, _) = read_frames(&mut t, 1);
    assert!(matches!(&p[0], Packet::Publish(p) if &p.payload[..] == b"from tcp"));
}

// [v5:MQTT-6.0.0-1] a text frame closes the connection; an upgrade without
// the mqtt subprotocol [v5:MQTT-6.0.0-3] is refused with 400; a close
// frame is answered with a close frame.
#[test]
fn what_the_broker_refuses() {
    let b = start_with(ws_config(1));
    let (mut t, head) = upgrade(ws_addr(&b), "mqtt");
    assert!(head.starts_with("HTTP/1.1 101"));
    let connect = encode(&Packet::Connect(Box::new(connect_packet(
        V5, "ws-text", true,
    ))));
    t.write_all(&frame(OpCode::Data(Data::Binary), &connect))
        .expect("write");
    read_frames(&mut t, 1);
    t.write_all(&frame(OpCode::Data(Data::Text), b"{\"hello\":1}"))
        .expect("write");
    let (_, _, closed) = read_frames(&mut t, 1);
    assert!(closed, "text frame did not close the connection");

    let (_, head) = upgrade(ws_addr(&b), "chat, superchat");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    let (mut t, _) = upgrade(ws_addr(&b), "mqtt");
    t.write_all(&frame(
        OpCode::Control(Control::Close),
        &1000u16.to_be_bytes(),
    ))
    .expect("write");
    let (_, controls, closed) = read_frames(&mut t, 1);
    assert_eq!(controls, vec![OpCode::Control(Control::Close)]);
    assert!(closed);
}

// An upgrade request that never ends is cut off at the connect timeout,
// and one past 8 KiB at once.
#[test]
fn an_unfinished_upgrade_is_cut_off() {
    let mut cfg = ws_config(1);
    cfg.connect_timeout = Duration::from_secs(1);
    let b = start_with(cfg);
    let started = Instant::now();
    let mut t = TcpStream::connect(ws_addr(&b)).expect("tcp");
    t.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    t.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut buf = [0u8; 64];
    assert!(matches!(t.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let mut t = TcpStream::connect(ws_addr(&b)).expect("tcp");
    t.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
    let _ = t.write_all(long.as_bytes());
    let mut head = String::new();
    let _ = t.read_to_string(&mut head);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

const PAHO_WS: &str = r#"
import sys, threading, json, ssl
import paho.mqtt.client as mqtt
port, tcp_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = {}
for name, proto in (("v311", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
    got, done, subscribed = [], threading.Event(), threading.Event()
    def on_message(c, u, m):
        got.append(m.payload.decode())
        if len(got) == 2:
            done.set()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-sub-" + name,
                      protocol=proto, transport="websockets")
    sub.ws_set_options(path="/mqtt")
    if ca != "-":
        sub.tls_set(ca_certs=ca)
    sub.on_message = on_message
    sub.on_subscribe = lambda c, u, mid, rc, props=None: subscribed.set()
    sub.connect("localhost", port)
    sub.loop_start()
    sub.subscribe("paho/ws/" + name, qos=1)
    assert subscribed.wait(10), "no SUBACK"
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-pub-" + name, protocol=proto)
    pub.connect("127.0.0.1", tcp_port)
    pub.loop_start()
    pub.publish("paho/ws/" + name, "a" * 100000, qos=1).wait_for_publish(10)
    pub.publish("paho/ws/" + name, "small", qos=0).wait_for_publish(10)
    done.wait(10)
    out[name] = [len(g) for g in got[:2]]
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
print(json.dumps(out))
"#;

fn paho_ws(port: u16, tcp_port: u16, ca: &str) -> String {
    python(PAHO_WS, &[&port.to_string(), &tcp_port.to_string(), ca])
}

// paho-mqtt with transport="websockets" (3.1.1 and 5.0) receives what a
// plain TCP client publishes, a 100 kB message among them (frames larger
// than any one read): [v3:MQTT-6.0.0-1] [v3:MQTT-6.0.0-2] binary frames,
// packets across them; [v3:MQTT-6.0.0-4] paho accepts only mqtt back.
#[test]
fn paho_over_websocket() {
    let b = start_with(ws_config(2));
    let text = paho_ws(ws_addr(&b).port(), b.addr.port(), "-");
    assert!(text.contains(r#""v311": [100000, 5]"#), "{text}");
    assert!(text.contains(r#""v5": [100000, 5]"#), "{text}");
}

// The same over TLS (--listen-wss), with a certificate from openssl.
#[test]
fn paho_over_secure_websocket() {
    let dir = TempDir::new("wss");
    let mut cfg = config(2);
    cfg.listen_wss = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls = Some(openssl_tls(&dir.0));
    let b = start_with(cfg);
    let port = b.handle.as_ref().expect("running").wss_addrs()[0].port();
    let ca = dir.0.join("ca.pem");
    let text = paho_ws(port, b.addr.port(), ca.to_str().expect("utf-8"));
    assert!(text.contains(r#""v311": [100000, 5]"#), "{text}");
    assert!(text.contains(r#""v5": [100000, 5]"#), "{text}");
}

// Eight WebSocket clients owned by both shards (so some are accepted on
// the other one and handed over with their framing state): each
// subscribes and gets its own message back through the mesh.
#[test]
fn websocket_connections_move_between_shards() {
    let b = start_with(ws_config(2));
    for i in 0..8 {
        let (mut t, head) = upgrade(ws_addr(&b), "mqtt");
        assert!(head.starts_with("HTTP/1.1 101"));
        let id = id_on_shard(&format!("ws-move{i}"), i % 2, 2);
        let mut bytes = encode(&Packet::Connect(Box::new(connect_packet(V5, &id, true))));
        bytes.extend(encode(&subscribe_packet(
            1,
            &[(&format!("ws/move/{i}"), QoS::AtMostOnce)],
        )));
        // CONNECT and SUBSCRIBE in one frame: the SUBSCRIBE travels with
        // the handoff as bytes already read.
        t.write_all(&frame(OpCode::Data(Data::Binary), &bytes))
            .expect("write");
        let (p, _, _) = read_frames(&mut t, 2);
        assert!(matches!(&p[1], Packet::SubAck(_)), "{p:?}");
        let publish = ringmq::protocol::Publish::new(
            s(&format!("ws/move/{i}")),
            bytes::Bytes::from_static(b"back"),
        );
        t.write_all(&frame(
            OpCode::Data(Data::Binary),
            &encode(&Packet::Publish(publish)),
        ))
        .expect("write");
        let (p, _, _) = read_frames(&mut t, 1);
        assert!(
            matches!(&p[0], Packet::Publish(p) if &p.payload[..] == b"back"),
            "{p:?}"
        );
    }
}

// A quiet WebSocket connection parks with its framing state: the start of
// a frame that came before it parked is completed by the rest after, and the
// PUBLISH it carried comes back to the (parked, woken) subscriber itself.
#[test]
fn a_parked_websocket_keeps_its_half_frame() {
    let cfg = ws_config(2);
    let (b, m) = start_with_metrics(cfg);
    let (mut t, head) = upgrade(ws_addr(&b), "mqtt");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut hello = encode(&Packet::Connect(Box::new(connect_packet(
        V5,
        &id_on_shard("ws-park", 1, 2),
        true,
    ))));
    hello.extend(encode(&subscribe_packet(1, &[("wp/t", QoS::AtMostOnce)])));
    t.write_all(&frame(OpCode::Data(Data::Binary), &hello))
        .expect("write");
    let (p, _, _) = read_frames(&mut t, 2);
    assert!(matches!(&p[1], Packet::SubAck(_)), "{p:?}");
    let publish = ringmq::protocol::Publish::new(s("wp/t"), bytes::Bytes::from_static(b"whole"));
    let wire = frame(
        OpCode::Data(Data::Binary),
        &encode(&Packet::Publish(publish)),
    );
    // Inside the frame's header (its mask key): the framing holds these
    // bytes, and the MQTT bytes behind the reader stay empty (a reader with
    // half a packet of its own does not park).
    let (first, rest) = wire.split_at(4);
    t.write_all(first).expect("write");
    let parks = metric_sum(m, "ringmq_readers_parked_total");
    wait_metric(m, "ringmq_readers_parked_total", parks + 1.0);
    wait_metric(m, "ringmq_parked_connections", 1.0);
    t.write_all(rest).expect("write");
    let (p, _, closed) = read_frames(&mut t, 1);
    assert!(!closed);
    assert!(
        matches!(&p[0], Packet::Publish(p) if &p.payload[..] == b"whole"),
        "{p:?}"
    );
}
