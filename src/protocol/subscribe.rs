//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
//!
//! Topic filters are decoded as strings; their syntax is checked by
//! [`crate::topic::TopicFilter`] in the broker, which answers an invalid one
//! with a failure code in SUBACK (0x8F in MQTT 5, 0x80 in 3.1.1) instead of
//! dropping the whole connection.

use super::error::{DecodeError, EncodeError};
use super::primitives::{MqttStr, Reader, Sink};
use super::properties::{AckProperties, PropertyBlock, SubscribeProperties, UnsubscribeProperties};
use super::{PacketId, PacketType, ProtocolVersion, QoS, ReasonCode};

/// When retained messages are sent for a new subscription (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist.
    SendIfNew = 1,
    /// Never send them.
    DoNotSend = 2,
}

/// Subscription options (3.1.1 has only the QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publishes back to it.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// Retained message handling at subscribe time.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn decode(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let invalid = DecodeError::InvalidSubscriptionOptions { options: b };
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if b & reserved != 0 {
            return Err(invalid);
        }
        let qos = QoS::from_u8(b & 0b11).ok_or(invalid)?;
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(invalid),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= u8::from(self.no_local) << 2;
            b |= u8::from(self.retain_as_published) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The filter text, not yet validated as a filter.
    pub filter: MqttStr,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: SubscribeProperties,
    /// At least one filter ([MQTT-3.8.3-2]).
    pub filters: Vec<SubscribeFilter>,
}

fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(s)?;
        }
        for f in &self.filters {
            s.put_binary(f.filter.as_bytes())?;
            s.put_u8(f.options.encode(version));
        }
        Ok(())
    }
}

/// SUBACK: one reason code per filter, in order ([MQTT-3.9.3-1]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: AckProperties,
    /// Granted QoS (0x00..=0x02) or a failure code, per filter.
    pub reasons: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            AckProperties::decode(r, PacketType::SubAck)?
        } else {
            AckProperties::default()
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8()?;
            let invalid = DecodeError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code,
            };
            let reason = if version.is_v5() {
                Some(ReasonCode(code)).filter(|c| c.allowed_in(PacketType::SubAck))
            } else {
                ReasonCode::from_v3_suback(code)
            };
            reasons.push(reason.ok_or(invalid)?);
        }
        if reasons.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok(SubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(s)?;
            for r in &self.reasons {
                s.put_u8(r.0);
            }
        } else {
            for r in &self.reasons {
                s.put_u8(r.to_v3_suback());
            }
        }
        Ok(())
    }
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
    /// At least one filter ([MQTT-3.10.3-2]).
    pub filters: Vec<MqttStr>,
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoUnsubscribeTopicFilters);
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(s)?;
        }
        for f in &self.filters {
            s.put_binary(f.as_bytes())?;
        }
        Ok(())
    }
}

/// UNSUBACK (MQTT 5 carries one reason code per filter; 3.1.1 none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties.
    pub properties: AckProperties,
    /// MQTT 5: one code per filter, in order ([MQTT-3.11.3-1]); empty in 3.1.1.
    pub reasons: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let mut ack = UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reasons: Vec::new(),
        };
        if version.is_v5() {
            ack.properties = AckProperties::decode(r, PacketType::UnsubAck)?;
            while r.remaining() > 0 {
                let code = r.u8()?;
                let reason = ReasonCode(code);
                if !reason.allowed_in(PacketType::UnsubAck) {
                    return Err(DecodeError::InvalidReasonCode {
                        packet_type: PacketType::UnsubAck,
                        code,
                    });
                }
                ack.reasons.push(reason);
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(s)?;
            for r in &self.reasons {
                s.put_u8(r.0);
            }
        }
        Ok(())
    }
}
