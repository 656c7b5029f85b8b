use bytes::{Bytes, BytesMut};
use ringmq::protocol::*;
fn main() {
    let mut p = Publish::new(MqttStr::from_static("site/42/device/4242/temperature"), Bytes::from(vec![7u8; 16]));
    p.qos = QoS::AtLeastOnce; p.packet_id = PacketId::new(42);
    let mut wire = BytesMut::new();
    Packet::Publish(p).encode(ProtocolVersion::V311, &mut wire).unwrap();
    let mut n = 0;
    for _ in 0..200_000 {
        let mut b = BytesMut::from(&wire[..]);
        if let Ok(Some(_)) = decode_packet(&mut b, Some(ProtocolVersion::V311), 1<<20) { n += 1 }
    }
    println!("{n}");
}
