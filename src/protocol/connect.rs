//! CONNECT and CONNACK.

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};
use super::primitives::{MqttStr, Reader, Scan, Sink};
use super::properties::{ConnAckProperties, ConnectProperties, PropertyBlock, WillProperties};
use super::{PacketType, ProtocolVersion, QoS, ReasonCode};

/// CONNECT: a client opens a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The version this connection will speak.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// The client identifier (may be empty).
    pub client_id: MqttStr,
    /// The will message, if any.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<MqttStr>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// MQTT 5 properties.
    pub properties: ConnectProperties,
}

/// The Will Message a CONNECT registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to (a valid topic name).
    pub topic: MqttStr,
    /// The will payload.
    pub payload: Bytes,
    /// QoS of the will.
    pub qos: QoS,
    /// Whether the will is published retained.
    pub retain: bool,
    /// MQTT 5 will properties.
    pub properties: WillProperties,
}

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

/// Reads a topic name: not empty, no wildcard ([MQTT-4.7.3-1],
/// [MQTT-3.3.2-2]); `allow_empty` for MQTT 5's alias-only PUBLISH.
pub(crate) fn read_topic_name(r: &mut Reader, allow_empty: bool) -> Result<MqttStr, DecodeError> {
    let mut scan = Scan::default();
    let t = r.string_scanned(&mut scan)?;
    if scan.wildcard {
        Err(DecodeError::WildcardInTopicName)
    } else if t.is_empty() && !allow_empty {
        Err(DecodeError::EmptyTopicName)
    } else {
        Ok(t)
    }
}

impl Connect {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let protocol = match (name.as_ref(), level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT", _) | (b"MQIsdp", _) => {
                return Err(DecodeError::UnsupportedProtocolLevel { level })
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8()?;
        if flags & FLAG_RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & FLAG_WILL != 0;
        let will_qos = (flags >> 3) & 0b11;
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        if !has_will && (will_qos != 0 || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = read_topic_name(r, false)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: flags & FLAG_CLEAN != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    #[inline(always)]
    pub(crate) fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        let name: &[u8] = match self.protocol {
            ProtocolVersion::V31 => b"MQIsdp",
            _ => b"MQTT",
        };
        s.put_binary(name)?;
        s.put_u8(self.protocol.level());
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN;
        }
        if let Some(w) = &self.will {
            flags |= FLAG_WILL | ((w.qos as u8) << 3);
            if w.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        s.put_u8(flags);
        s.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(s)?;
        }
        s.put_binary(self.client_id.as_bytes())?;
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(s)?;
            }
            s.put_binary(w.topic.as_bytes())?;
            s.put_binary(&w.payload)?;
        }
        if let Some(u) = &self.username {
            s.put_binary(u.as_bytes())?;
        }
        if let Some(p) = &self.password {
            s.put_binary(p)?;
        }
        Ok(())
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// The outcome; 3.1.1 return codes are mapped to their v5 equivalents.
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = r.u8()?;
        let invalid = DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code,
        };
        let (reason, properties) = if version.is_v5() {
            let reason = ReasonCode(code);
            if !reason.allowed_in(PacketType::ConnAck) {
                return Err(invalid);
            }
            (reason, ConnAckProperties::decode(r)?)
        } else {
            let reason = ReasonCode::from_v3_connack(code).ok_or(invalid)?;
            (reason, ConnAckProperties::default())
        };
        r.finish()?;
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            reason,
            properties,
        })
    }

    pub(crate) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u8(u8::from(self.session_present));
        if version.is_v5() {
            s.put_u8(self.reason.0);
            self.properties.encode(s)
        } else {
            s.put_u8(self.reason.to_v3_connack());
            Ok(())
        }
    }
}
