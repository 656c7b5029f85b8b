//! The small packets: PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT and AUTH.
//!
//! MQTT 5 lets these omit a Success reason code and empty properties; the
//! encoder always uses the shortest form, and the decoder accepts every form.

use super::error::{DecodeError, EncodeError};
use super::primitives::{Reader, Sink};
use super::properties::{AckProperties, AuthProperties, DisconnectProperties, PropertyBlock};
use super::{PacketId, PacketType, ProtocolVersion, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP (the packet type tells which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// The outcome (always Success in 3.1.1).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        r: &mut Reader,
        t: PacketType,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = PacketId::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)?;
        let mut ack = Ack::new(packet_id);
        if version.is_v5() && r.remaining() > 0 {
            ack.reason = reason(r, t)?;
            if r.remaining() > 0 {
                ack.properties = AckProperties::decode(r, t)?;
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
            short_tail(s, self.reason, &self.properties, self.properties.is_empty())?;
        }
        Ok(())
    }
}

fn reason(r: &mut Reader, t: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    let reason = ReasonCode(code);
    if reason.allowed_in(t) {
        Ok(reason)
    } else {
        Err(DecodeError::InvalidReasonCode {
            packet_type: t,
            code,
        })
    }
}

/// Writes "reason code, properties", leaving out what the receiver can infer.
fn short_tail<S: Sink, P: PropertyBlock>(
    s: &mut S,
    reason: ReasonCode,
    props: &P,
    props_empty: bool,
) -> Result<(), EncodeError> {
    if reason == ReasonCode::SUCCESS && props_empty {
        return Ok(());
    }
    s.put_u8(reason.0);
    if !props_empty {
        props.encode(s)?;
    }
    Ok(())
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why the connection ends (always Normal disconnection in 3.1.1).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    pub fn new(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut d = Disconnect::default();
        if version.is_v5() && r.remaining() > 0 {
            d.reason = reason(r, PacketType::Disconnect)?;
            if r.remaining() > 0 {
                d.properties = DisconnectProperties::decode(r)?;
            }
        }
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if version.is_v5() {
            short_tail(s, self.reason, &self.properties, self.properties.is_empty())?;
        }
        Ok(())
    }
}

/// AUTH (MQTT 5 extended authentication).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Properties (method and data).
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut a = Auth::default();
        if r.remaining() > 0 {
            a.reason = reason(r, PacketType::Auth)?;
            if r.remaining() > 0 {
                a.properties = AuthProperties::decode(r)?;
            }
        }
        r.finish()?;
        Ok(a)
    }

    pub(crate) fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        short_tail(s, self.reason, &self.properties, self.properties.is_empty())
    }
}
