use bytes::{Bytes, BytesMut};
use ringmq::protocol::*;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let mut p = Publish::new(
        MqttStr::from_static("site/42/device/4242/temperature"),
        Bytes::from(vec![7u8; 16]),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(42);
    let pk = Packet::Publish(p);
    let mut wire = BytesMut::new();
    pk.encode(ProtocolVersion::V311, &mut wire).unwrap();
    let mut n = 0;
    let mut out = BytesMut::with_capacity(1024);
    let peer = {
        let mut p = mqttbytes::v4::Publish::from_bytes(
            "site/42/device/4242/temperature",
            mqttbytes::QoS::AtLeastOnce,
            Bytes::from(vec![7u8; 16]),
        );
        p.pkid = 42;
        p
    };
    for _ in 0..200_000 {
        match which.as_str() {
            "dec" => {
                let mut b = BytesMut::from(&wire[..]);
                if let Ok(Some(_)) = decode_packet(&mut b, Some(ProtocolVersion::V311), 1 << 20) {
                    n += 1
                }
            }
            "peerdec" => {
                let mut b = BytesMut::from(&wire[..]);
                if mqttbytes::v4::read(&mut b, 1 << 20).is_ok() {
                    n += 1
                }
            }
            "enc" => {
                out.clear();
                pk.encode(ProtocolVersion::V311, &mut out).unwrap();
                n += out.len()
            }
            _ => {
                out.clear();
                n += peer.write(&mut out).unwrap()
            }
        }
    }
    println!("{n}");
}
