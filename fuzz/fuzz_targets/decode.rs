//! Raw bytes into the decoder, in every version and before CONNECT, with a
//! small size limit: it must never panic, and every packet it accepts must
//! encode and decode back to itself (`../round_trip.rs`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::{decode_packet, Packet, ProtocolVersion};

include!("../round_trip.rs");

fuzz_target!(|data: &[u8]| round_trip(data));
