//! The records a shard writes to its log, as bytes: what a session, a
//! subscription, a queued message or a delivery step looks like on disk.
//! Messages are stored as MQTT 5 PUBLISH frames (the codec already knows
//! every property), beside what a frame cannot say (publisher, expiry).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::protocol::{
    decode_packet, encode_packet, LastWill, MqttStr, Packet, PacketId, ProtocolVersion, Publish,
    PublishProperties, QoS, WillProperties,
};
use crate::session::Message;
use crate::storage::FIRST_USER_KIND;
use crate::topic::{TopicFilter, TopicName};

use super::super::SubOpts;

pub(crate) const SESSION: u8 = FIRST_USER_KIND;
pub(crate) const SESSION_END: u8 = FIRST_USER_KIND + 1;
pub(crate) const SUB: u8 = FIRST_USER_KIND + 2;
pub(crate) const UNSUB: u8 = FIRST_USER_KIND + 3;
pub(crate) const MSG: u8 = FIRST_USER_KIND + 4;
pub(crate) const SENT: u8 = FIRST_USER_KIND + 5;
pub(crate) const RECEIVED: u8 = FIRST_USER_KIND + 6;
pub(crate) const DONE: u8 = FIRST_USER_KIND + 7;
pub(crate) const REL: u8 = FIRST_USER_KIND + 8;
pub(crate) const RETAIN: u8 = FIRST_USER_KIND + 9;

/// Milliseconds since the epoch: what survives a restart, unlike `Instant`.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall-clock time of `at` (0 for none).
pub(crate) fn wall_of(at: Option<Instant>, now: Instant, wall_now: u64) -> u64 {
    match at {
        None => 0,
        Some(at) if at >= now => wall_now + at.duration_since(now).as_millis() as u64,
        Some(at) => wall_now
            .saturating_sub(now.duration_since(at).as_millis() as u64)
            .max(1),
    }
}

/// The `Instant` of wall-clock time `ms` (`None` for 0).
pub(crate) fn instant_of(ms: u64, now: Instant, wall_now: u64) -> Option<Instant> {
    if ms == 0 {
        None
    } else if ms >= wall_now {
        Some(now + Duration::from_millis(ms - wall_now))
    } else {
        Some(
            now.checked_sub(Duration::from_millis(wall_now - ms))
                .unwrap_or(now),
        )
    }
}

/// Appends fields to a record body.
#[derive(Debug, Default)]
pub(crate) struct W(pub Vec<u8>, BytesMut);

impl W {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// The message part of a MSG record: `id | publisher | expires | frame`
    /// (read back by [`message_of_record`], measured by [`message_prefix_len`]).
    pub fn message(&mut self, id: u64, m: &Message, expires_ms: u64) -> &mut Self {
        self.u64(id).str(&m.publisher).u64(expires_ms).publish(m)
    }

    /// One session's reference in a MSG record, after its count.
    pub fn reference(&mut self, sid: u64, qos: QoS, retain: bool, ids: &[u32]) -> &mut Self {
        self.u64(sid)
            .u8(qos as u8)
            .u8(u8::from(retain))
            .u16(ids.len() as u16);
        for &s in ids {
            self.u32(s);
        }
        self
    }

    /// A message as an MQTT 5 PUBLISH frame.
    pub fn publish(&mut self, m: &Message) -> &mut Self {
        let p = Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic: m.topic.as_mqtt_str().clone(),
            packet_id: (m.qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("non-zero")),
            properties: m.properties.clone().into(),
            payload: m.payload.clone(),
        };
        self.frame(&Packet::Publish(p))
    }

    fn frame(&mut self, p: &Packet) -> &mut Self {
        // A scratch buffer kept between records: no allocation per message.
        let mut buf = std::mem::take(&mut self.1);
        buf.clear();
        // Messages were accepted under --max-packet-size: they re-encode.
        if encode_packet(p, ProtocolVersion::V5, usize::MAX, &mut buf).is_err() {
            buf.clear();
        }
        self.bytes(&buf);
        self.1 = buf;
        self
    }

    /// A will: its delay, then the rest as a PUBLISH frame.
    pub fn will(&mut self, w: &LastWill) -> &mut Self {
        let wp = &w.properties;
        self.u32(wp.will_delay_interval.unwrap_or(0));
        let p = Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic.clone(),
            packet_id: (w.qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("non-zero")),
            properties: PublishProperties {
                payload_format_indicator: wp.payload_format_indicator,
                message_expiry_interval: wp.message_expiry_interval,
                response_topic: wp.response_topic.clone(),
                correlation_data: wp.correlation_data.clone(),
                user_properties: wp.user_properties.clone(),
                content_type: wp.content_type.clone(),
                ..Default::default()
            }
            .into(),
            payload: w.payload.clone(),
        };
        self.frame(&Packet::Publish(p))
    }

    pub fn opts(&mut self, o: &SubOpts) -> &mut Self {
        self.u8(o.qos as u8)
            .u8(u8::from(o.no_local) | (u8::from(o.retain_as_published) << 1))
            .u32(o.id.unwrap_or(0))
    }
}

/// Reads fields of a record body; `None` past its end.
#[derive(Debug)]
pub(crate) struct R<'a>(pub &'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn frame(&mut self) -> Option<Publish> {
        let mut buf = BytesMut::from(self.bytes()?);
        match decode_packet(&mut buf, Some(ProtocolVersion::V5), usize::MAX) {
            Ok(Some(Packet::Publish(p))) => Some(p),
            _ => None,
        }
    }

    /// A message written by [`W::publish`].
    pub fn message(&mut self, publisher: Arc<str>, expires_at: Option<Instant>) -> Option<Message> {
        let p = self.frame()?;
        Some(Message {
            topic: TopicName::new(p.topic).ok()?,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties.into_inner(),
            publisher,
            expires_at,
            received_at: Instant::now(),
        })
    }

    pub fn will(&mut self) -> Option<LastWill> {
        let delay = self.u32()?;
        let p = self.frame()?;
        let pp = p.properties.into_inner();
        Some(LastWill {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: WillProperties {
                will_delay_interval: (delay > 0).then_some(delay),
                payload_format_indicator: pp.payload_format_indicator,
                message_expiry_interval: pp.message_expiry_interval,
                content_type: pp.content_type,
                response_topic: pp.response_topic,
                correlation_data: pp.correlation_data,
                user_properties: pp.user_properties,
            },
        })
    }

    pub fn filter(&mut self) -> Option<TopicFilter> {
        let s = MqttStr::from_bytes(Bytes::copy_from_slice(self.bytes()?)).ok()?;
        TopicFilter::new(s).ok()
    }

    pub fn opts(&mut self) -> Option<SubOpts> {
        let qos = QoS::from_u8(self.u8()?)?;
        let flags = self.u8()?;
        let id = self.u32()?;
        Some(SubOpts {
            qos,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            id: (id != 0).then_some(id),
        })
    }
}

/// The message of a MSG record (`id | publisher | expires | frame | refs`):
/// how a queued delivery is read back from the log when it is sent.
pub(crate) fn message_of_record(body: &[u8]) -> Option<Message> {
    let mut r = R(body);
    let _id = r.u64()?;
    let publisher: Arc<str> = r.str()?.into();
    let expires = match r.u64()? {
        // No clock read for the message that never expires (most of them).
        0 => None,
        ms => instant_of(ms, Instant::now(), wall_ms()),
    };
    r.message(publisher, expires)
}

/// The log id of a MSG record's message.
pub(crate) fn id_of_record(body: &[u8]) -> Option<u64> {
    R(body).u64()
}

/// A MSG record's message part with its id replaced and no references:
/// what re-homing writes to a new shard's log.
pub(crate) fn renumbered(body: &[u8], id: u64) -> Option<Vec<u8>> {
    let n = message_prefix_len(body)?;
    let mut w = W::default();
    w.u64(id);
    w.0.extend_from_slice(&body[8..n]);
    w.u32(0);
    Some(w.0)
}

/// Bytes of a MSG record before its references (what a checkpoint copies).
pub(crate) fn message_prefix_len(body: &[u8]) -> Option<usize> {
    let mut r = R(body);
    r.u64()?;
    r.bytes()?;
    r.u64()?;
    r.bytes()?;
    Some(body.len() - r.0.len())
}

/// The protocol version of a level byte.
pub(crate) fn version_of(level: u8) -> Option<ProtocolVersion> {
    match level {
        3 => Some(ProtocolVersion::V31),
        4 => Some(ProtocolVersion::V311),
        5 => Some(ProtocolVersion::V5),
        _ => None,
    }
}

/// A session expiry on disk: milliseconds, `u64::MAX` for never.
pub(crate) fn expiry_ms(e: Option<Duration>) -> u64 {
    e.map_or(u64::MAX, |d| {
        d.as_millis().min(u128::from(u64::MAX - 1)) as u64
    })
}

pub(crate) fn expiry_of(ms: u64) -> Option<Duration> {
    (ms != u64::MAX).then(|| Duration::from_millis(ms))
}
