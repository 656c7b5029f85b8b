//! PUBLISH.

use bytes::{Bytes, BytesMut};

use super::connect::read_topic_name;
use super::error::{DecodeError, EncodeError};
use super::primitives::{encode_varint, varint_len, MqttStr, Reader, Sink, MAX_VARINT};
use super::properties::{PropertyBlock, PublishProperties, SparseProperties};
use super::{PacketId, ProtocolVersion, QoS};

/// PUBLISH: an application message. Topic and payload share the read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery flag (never set on QoS 0, [MQTT-3.3.1-2]).
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty only in MQTT 5 when a topic alias stands for it.
    pub topic: MqttStr,
    /// Present exactly when QoS > 0 ([MQTT-2.2.1-2]).
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties (read and written like a [`PublishProperties`]).
    pub properties: SparseProperties,
    /// The application payload.
    pub payload: Bytes,
}

impl std::fmt::Debug for Publish {
    // Payloads are user data: log their size, not their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("packet_id", &self.packet_id)
            .field("properties", &self.properties)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Publish {
    /// A QoS 0 message with no properties.
    pub fn new(topic: MqttStr, payload: Bytes) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: SparseProperties::default(),
            payload,
        }
    }

    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let dup = flags & 0b1000 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let topic = read_topic_name(r, version.is_v5())?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)?)
        };
        let properties = if version.is_v5() {
            SparseProperties::from(PublishProperties::decode(r)?)
        } else {
            SparseProperties::default()
        };
        // An empty topic is how MQTT 5 says "use the alias".
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        Ok(Publish {
            dup,
            qos,
            retain: flags & 1 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// Appends the whole packet to `buf`: the broker's hottest encode, sized
    /// by arithmetic and written in one pass. Nothing is written on error.
    #[inline]
    #[expect(
        clippy::indexing_slicing,
        reason = "head holds 1 type byte + at most 4 length bytes + 2 topic length bytes; tail 2 id bytes + 1 property length"
    )]
    pub fn encode_into(
        &self,
        version: ProtocolVersion,
        max_packet_bytes: usize,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if version.is_v5() && !self.properties.is_empty() {
            // Properties go through the general two-pass writer.
            return super::codec::encode_two_pass(
                0x30 | self.flags(),
                max_packet_bytes,
                buf,
                |c| self.write(version, c),
                |w| self.write(version, w),
            );
        }
        let v5 = version.is_v5();
        let id_len = match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) => 0,
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(_)) => 2,
            _ => return Err(EncodeError::PacketIdMismatch),
        };
        let topic = self.topic.as_bytes();
        // An `MqttStr` is at most 65,535 bytes (checked when it was made).
        let topic_len = topic.len() as u16;
        let remaining = 2 + topic.len() + id_len + usize::from(v5) + self.payload.len();
        let size = 1 + varint_len(remaining.min(MAX_VARINT as usize) as u32) + remaining;
        if remaining > MAX_VARINT as usize || size > max_packet_bytes {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: max_packet_bytes.min(MAX_VARINT as usize + 5),
            });
        }
        // Header, topic length and packet id in one stack buffer, then three
        // copies into capacity reserved once.
        let mut head = [0u8; 8];
        head[0] = 0x30 | self.flags();
        let (len, len_bytes) = encode_varint(remaining as u32);
        head[1..5].copy_from_slice(&len);
        let mut n = 1 + len_bytes;
        [head[n], head[n + 1]] = topic_len.to_be_bytes();
        n += 2;
        let mut tail = [0u8; 8];
        if let Some(id) = self.packet_id {
            [tail[0], tail[1]] = id.get().to_be_bytes();
        }
        // After the id, a v5 empty property block: one zero byte.
        let t = id_len + usize::from(v5);
        // Eight bytes of slack let the header and the tail go out as fixed
        // eight-byte stores (the next copy overwrites the excess) instead of
        // two memcpy calls of a few bytes each.
        buf.reserve(size + 8);
        let start = buf.len();
        let spare = buf.spare_capacity_mut();
        debug_assert!(spare.len() >= size + 8 && n + topic.len() + t + self.payload.len() == size);
        let dst = spare.as_mut_ptr().cast::<u8>();
        // SAFETY: `reserve(size + 8)` made at least `size + 8` bytes of spare
        // capacity. Every write below stays within it: the 8-byte stores
        // start at offsets below `size`, and the copies end at exactly
        // `size` (n + topic + t + payload, as `remaining` counted). Sources
        // are separate buffers that cannot overlap the spare capacity.
        // `set_len` then exposes exactly the `size` bytes written in order.
        unsafe {
            std::ptr::write_unaligned(dst.cast::<[u8; 8]>(), head);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), dst.add(n), topic.len());
            std::ptr::write_unaligned(dst.add(n + topic.len()).cast::<[u8; 8]>(), tail);
            std::ptr::copy_nonoverlapping(
                self.payload.as_ptr(),
                dst.add(n + topic.len() + t),
                self.payload.len(),
            );
            buf.set_len(start + size);
        }
        Ok(())
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_binary(self.topic.as_bytes())?;
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => s.put_u16(id.get()),
            _ => return Err(EncodeError::PacketIdMismatch),
        }
        if version.is_v5() {
            self.properties.encode(s)?;
        }
        s.put_slice(&self.payload);
        Ok(())
    }
}
