// The fuzz target's check, shared by `fuzz_targets/decode.rs` and the
// crash regressions in `src/protocol/tests.rs` (both `include!` it, so a
// pinned input is checked exactly as the fuzzer checked it). The includer
// imports `BytesMut`, `decode_packet`, `Packet` and `ProtocolVersion`.

/// The first byte picks the version (or none: before CONNECT); the rest
/// goes to the decoder with a 4 KiB limit. It must never panic, and every
/// packet it accepts must encode and decode back to itself.
fn round_trip(data: &[u8]) {
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
}
