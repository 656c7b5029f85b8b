//! Framing: fixed header, size limit, then dispatch to the packet's decoder.
//!
//! ```text
//!   byte 0          bytes 1..=4               remaining length bytes
//! +--------+--------------------------+------------------------------------+
//! |type|flg| remaining length (VBI)   | variable header + payload          |
//! +--------+--------------------------+------------------------------------+
//! ```
//!
//! The header is checked (type, flags, size limit) as soon as its bytes are
//! in, before the body is buffered: an oversize or nonsensical packet is
//! refused without reserving memory for it.

use bytes::BytesMut;

use super::error::{DecodeError, EncodeError};
use super::primitives::{
    read_varint, varint_len, Counter, Reader, Sink, VarIntRead, Writer, MAX_VARINT,
};
use super::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, Publish, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};

/// Default largest packet the broker accepts (1 MiB).
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;

/// A decoder/encoder for one connection.
///
/// A server-side codec starts without a version: the first packet must be
/// CONNECT, whose protocol level then fixes the version for the connection.
#[derive(Debug, Clone)]
pub struct Codec {
    version: Option<ProtocolVersion>,
    max_packet_bytes: usize,
}

impl Codec {
    /// A codec for the server side of a connection, before CONNECT.
    pub fn server(max_packet_bytes: usize) -> Codec {
        Codec {
            version: None,
            max_packet_bytes,
        }
    }

    /// A codec that speaks `version` from the start (the client side).
    pub fn new(version: ProtocolVersion, max_packet_bytes: usize) -> Codec {
        Codec {
            version: Some(version),
            max_packet_bytes,
        }
    }

    /// The version fixed by CONNECT, if it has been seen.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Decodes the next packet, if `buf` holds a whole one, and removes its
    /// bytes from `buf`. `Ok(None)` means more bytes are needed (and `buf`
    /// has been given room for them, up to the size limit).
    ///
    /// # Errors
    /// Any [`DecodeError`]: the connection must be closed (after a CONNACK or
    /// DISCONNECT carrying [`DecodeError::reason_code`] in MQTT 5).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let packet = decode_packet(buf, self.version, self.max_packet_bytes)?;
        if let (None, Some(Packet::Connect(c))) = (self.version, &packet) {
            self.version = Some(c.protocol);
        }
        Ok(packet)
    }

    /// Appends `packet` to `buf`, in this connection's version.
    ///
    /// # Errors
    /// [`EncodeError`]; nothing is written then.
    pub fn encode(&self, packet: &Packet, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        encode_packet(packet, version, usize::MAX, buf)
    }
}

/// Frames smaller than this whose bytes may outlive the loop turn are
/// copied out of the read buffer (see [`decode_packet`]). A larger frame is
/// sliced: it fills most of the buffer it was reserved for, so it pins at
/// most about its own size again, and copying it would cost real time.
pub const OWNED_FRAME_BYTES: usize = 64 * 1024;

/// Packets whose decoded fields the broker may keep past the loop turn.
fn keeps_bytes(t: PacketType) -> bool {
    matches!(
        t,
        PacketType::Publish | PacketType::Subscribe | PacketType::Connect
    )
}

/// The protocol level a CONNECT at the front of `buf` declares, read before
/// the rest of it is validated, so that a CONNECT refused for a malformed
/// field can still be answered in the client's version. `None` until the
/// level byte has arrived, or when `buf` does not start with a CONNECT.
pub fn connect_protocol_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let VarIntRead::Done(_, len_bytes) = read_varint(buf.get(1..)?).ok()? else {
        return None;
    };
    let name_at = 1 + len_bytes;
    let name_len = usize::from(u16::from_be_bytes([
        *buf.get(name_at)?,
        *buf.get(name_at + 1)?,
    ]));
    buf.get(name_at + 2 + name_len).copied()
}

/// Decodes one packet from the front of `buf` (see [`Codec::decode`]).
/// `version` is `None` before CONNECT, when only CONNECT is accepted.
///
/// # Errors
/// Any [`DecodeError`].
pub fn decode_packet(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_bytes: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&byte0) = buf.first() else {
        return Ok(None);
    };
    let nibble = byte0 >> 4;
    let flags = byte0 & 0x0F;
    let packet_type = PacketType::from_nibble(nibble)
        .filter(|t| *t != PacketType::Auth || version.is_none_or(|v| v.is_v5()))
        .ok_or(DecodeError::ReservedPacketType {
            packet_type: nibble,
        })?;
    if packet_type != PacketType::Publish && flags != packet_type.required_flags() {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    if version.is_none() && packet_type != PacketType::Connect {
        return Err(DecodeError::FirstPacketNotConnect { packet_type });
    }
    let (remaining, len_bytes) = match read_varint(buf.get(1..).unwrap_or_default())? {
        VarIntRead::Done(v, n) => (v as usize, n),
        VarIntRead::Incomplete => return Ok(None),
    };
    let size = 1 + len_bytes + remaining;
    if size > max_packet_bytes {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_bytes,
        });
    }
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut frame = if size < OWNED_FRAME_BYTES && keeps_bytes(packet_type) {
        // A small packet whose bytes may be kept (a queued or retained
        // message, a subscription, a will) gets an allocation of its own: a
        // slice would pin the whole read buffer it arrived in, so 20 bytes
        // read beside a 1 MB publish held 1 MB for as long as it was kept.
        let owned = BytesMut::from(buf.get(..size).unwrap_or_default());
        bytes::Buf::advance(buf, size);
        owned
    } else {
        buf.split_to(size)
    };
    bytes::Buf::advance(&mut frame, 1 + len_bytes);
    let mut r = Reader::new(frame.freeze());
    // Only CONNECT may arrive without a version, and it carries its own.
    let v = version.unwrap_or(ProtocolVersion::V5);
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(Box::new(ConnAck::decode(&mut r, v)?)),
        PacketType::Publish => Packet::Publish(Publish::decode(&mut r, flags, v)?),
        PacketType::PubAck => Packet::PubAck(Ack::decode(&mut r, packet_type, v)?),
        PacketType::PubRec => Packet::PubRec(Ack::decode(&mut r, packet_type, v)?),
        PacketType::PubRel => Packet::PubRel(Ack::decode(&mut r, packet_type, v)?),
        PacketType::PubComp => Packet::PubComp(Ack::decode(&mut r, packet_type, v)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(&mut r, v)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, v)?),
        PacketType::PingReq => {
            r.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            r.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, v)?),
        PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
    };
    Ok(Some(packet))
}

fn write_body<S: Sink>(p: &Packet, v: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    match p {
        Packet::Connect(c) => c.write(s),
        Packet::ConnAck(c) => c.write(v, s),
        Packet::Publish(p) => p.write(v, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.write(v, s)
        }
        Packet::Subscribe(x) => x.write(v, s),
        Packet::SubAck(x) => x.write(v, s),
        Packet::Unsubscribe(x) => x.write(v, s),
        Packet::UnsubAck(x) => x.write(v, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => d.write(v, s),
        Packet::Auth(a) => a.write(s),
    }
}

/// Appends `packet` encoded for `version` to `buf`, refusing to produce a
/// packet larger than `max_packet_bytes` (the peer's Maximum Packet Size,
/// [MQTT-3.1.2-24]). CONNECT is always encoded in its own `protocol`.
///
/// # Errors
/// [`EncodeError`]; `buf` is unchanged then.
pub fn encode_packet(
    packet: &Packet,
    version: ProtocolVersion,
    max_packet_bytes: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if let Packet::Publish(p) = packet {
        return p.encode_into(version, max_packet_bytes, buf);
    }
    let version = match packet {
        Packet::Connect(c) => c.protocol,
        Packet::Auth(_) if !version.is_v5() => {
            return Err(EncodeError::NotInVersion {
                packet_type: PacketType::Auth,
                version,
            })
        }
        _ => version,
    };
    let packet_type = packet.packet_type();
    let byte0 = ((packet_type as u8) << 4) | packet_type.required_flags();
    encode_two_pass(
        byte0,
        max_packet_bytes,
        buf,
        |c| write_body(packet, version, c),
        |w| write_body(packet, version, w),
    )
}

/// Appends a packet whose first byte is `byte0` and whose body the two
/// closures write (the same writer function, one per sink): a counting
/// pass, then stores into capacity reserved once (see [`Writer`]). Nothing
/// is exposed in `buf` on error.
pub(crate) fn encode_two_pass(
    byte0: u8,
    max_packet_bytes: usize,
    buf: &mut BytesMut,
    count: impl FnOnce(&mut Counter) -> Result<(), EncodeError>,
    write: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    count(&mut counter)?;
    let body = counter.0;
    let size = 1 + varint_len(body.min(MAX_VARINT as usize) as u32) + body;
    if body > MAX_VARINT as usize || size > max_packet_bytes {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: max_packet_bytes.min(MAX_VARINT as usize + 5),
        });
    }
    buf.reserve(size);
    let start = buf.len();
    let filled = {
        let Some(spare) = buf.spare_capacity_mut().get_mut(..size) else {
            return Err(EncodeError::SizeMismatch);
        };
        let mut w = Writer::new(spare);
        w.put_u8(byte0);
        w.put_varint(body as u32);
        write(&mut w)?;
        w.filled()
    };
    if !filled {
        return Err(EncodeError::SizeMismatch);
    }
    // SAFETY: the writer initialised all `size` bytes of that spare capacity
    // (it only ever writes at the front of what is left, and nothing is left).
    unsafe { buf.set_len(start + size) };
    Ok(())
}

impl Packet {
    #[inline]
    /// Appends this packet encoded for `version` to `buf`, without a size limit.
    ///
    /// # Errors
    /// [`EncodeError`].
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_packet(self, version, usize::MAX, buf)
    }
}
