//! Raw bytes into the decoder, in every version and before CONNECT, with a
//! small size limit: it must never panic, and every packet it accepts must
//! encode and decode back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::{decode_packet, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let version = match selector % 4 {
        0 => None,
        1 => Some(ProtocolVersion::V31),
        2 => Some(ProtocolVersion::V311),
        _ => Some(ProtocolVersion::V5),
    };
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(p)) = decode_packet(&mut buf, version, 4096) {
        let v = match &p {
            Packet::Connect(c) => c.protocol,
            _ => version.unwrap_or(ProtocolVersion::V5),
        };
        let mut out = BytesMut::new();
        p.encode(v, &mut out).expect("a decoded packet encodes");
        let again = decode_packet(&mut out, Some(v).filter(|_| version.is_some()), usize::MAX)
            .expect("re-decodes")
            .expect("complete");
        assert_eq!(again, p);
    }
});
