//! Codec errors. Every protocol violation is one small `Copy` variant that
//! names the normative statement it breaks; [`DecodeError::reason_code`] is
//! the one place that maps a violation to what the server answers with.

use super::{PacketType, ProtocolVersion, ReasonCode};

/// Why a byte stream is not a valid MQTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is larger than the receiver accepts.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Whole packet size (fixed header included).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A Variable Byte Integer with a fifth continuation byte.
    #[error("[MQTT-1.5.5-1] variable byte integer longer than four bytes")]
    MalformedVarInt,
    /// A Variable Byte Integer encoded in more bytes than needed.
    #[error("[MQTT-1.5.5-1] variable byte integer is not minimally encoded")]
    NonMinimalVarInt,
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.
    #[error("[MQTT-2.1.3-1] reserved packet type {packet_type}")]
    ReservedPacketType {
        /// The type nibble.
        packet_type: u8,
    },
    /// Fixed header flags other than the ones the packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet_type:?}")]
    InvalidFlags {
        /// The packet type.
        packet_type: PacketType,
        /// The flags nibble.
        flags: u8,
    },
    /// PUBLISH with both QoS bits set.
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    InvalidQoS,
    /// PUBLISH QoS 0 with DUP set.
    #[error("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of zero.
    #[error("[MQTT-2.2.1-3] packet identifier 0")]
    ZeroPacketId,
    /// The body ended before a field did.
    #[error("packet body ends inside a field")]
    Truncated,
    /// Bytes left over after the last field.
    #[error("unexpected bytes after the last field")]
    TrailingBytes,
    /// A string that is not well-formed UTF-8.
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string that contains U+0000.
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    NullCharacter,
    /// A string longer than 65,535 bytes.
    #[error("string longer than 65535 bytes")]
    StringTooLong,
    /// A packet other than CONNECT before CONNECT.
    #[error("[MQTT-3.1.0-1] first packet is {packet_type:?}, not CONNECT")]
    FirstPacketNotConnect {
        /// What came instead.
        packet_type: PacketType,
    },
    /// CONNECT's protocol name is neither "MQTT" nor "MQIsdp".
    #[error("[MQTT-3.1.2-1] unknown protocol name")]
    InvalidProtocolName,
    /// A protocol level this server does not speak, or one that does not
    /// match the protocol name.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {level}")]
    UnsupportedProtocolLevel {
        /// The level byte.
        level: u8,
    },
    /// CONNECT's reserved flag is set.
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0.
    #[error("[MQTT-3.1.2-11] will QoS or retain set without a will")]
    WillFlagsWithoutWill,
    /// Will QoS 3.
    #[error("[MQTT-3.1.2-12] will QoS 3")]
    InvalidWillQoS,
    /// MQTT 3.1.1: password flag without user name flag.
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    /// A topic name with `+` or `#`.
    #[error("[MQTT-3.3.2-2] wildcard in a topic name")]
    WildcardInTopicName,
    /// An empty topic name where one is required.
    #[error("[MQTT-4.7.3-1] empty topic name")]
    EmptyTopicName,
    /// A property identifier this packet does not allow or MQTT does not define.
    #[error("property {id:#04x} is not allowed in {packet_type:?}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u32,
        /// The packet it appeared in (`Connect` also stands for will properties).
        packet_type: PacketType,
    },
    /// A property that may appear once appeared twice.
    #[error("property {id:#04x} appears more than once")]
    DuplicateProperty {
        /// The property identifier.
        id: u8,
    },
    /// A property value outside its range (e.g. Receive Maximum 0).
    #[error("property {id:#04x} has an invalid value")]
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
    },
    /// Topic Alias 0.
    #[error("[MQTT-3.3.2-8] topic alias 0")]
    TopicAliasZero,
    /// A reason code the packet type does not define.
    #[error("reason code {code:#04x} is not valid in {packet_type:?}")]
    InvalidReasonCode {
        /// The packet type.
        packet_type: PacketType,
        /// The code byte.
        code: u8,
    },
    /// CONNACK flags with reserved bits set.
    #[error("[MQTT-3.2.2-1] CONNACK reserved flags are set")]
    ConnAckReservedFlags,
    /// SUBSCRIBE without a topic filter.
    #[error("[MQTT-3.8.3-2] SUBSCRIBE without topic filters")]
    NoTopicFilters,
    /// UNSUBSCRIBE without a topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters")]
    NoUnsubscribeTopicFilters,
    /// Reserved bits of the subscription options set, QoS 3 or Retain Handling 3.
    #[error("[MQTT-3.8.3-5] invalid subscription options {options:#04x}")]
    InvalidSubscriptionOptions {
        /// The options byte.
        options: u8,
    },
}

impl DecodeError {
    /// The v5 reason code a server sends (in CONNACK or DISCONNECT) before
    /// closing the connection because of this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolLevel { .. } | DecodeError::InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::FirstPacketNotConnect { .. }
            | DecodeError::DuplicateProperty { .. }
            | DecodeError::InvalidPropertyValue { .. }
            | DecodeError::PropertyNotAllowed { .. }
            // 3.8.3 / 3.10.3: a SUBSCRIBE or UNSUBSCRIBE with no payload is
            // a Protocol Error, not a malformed packet.
            | DecodeError::NoTopicFilters
            | DecodeError::NoUnsubscribeTopicFilters => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::WildcardInTopicName | DecodeError::EmptyTopicName => {
                ReasonCode::TOPIC_NAME_INVALID
            }
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code to send for an error in CONNECT,
    /// if the spec asks for one; `None` means close without a CONNACK
    /// ([MQTT-3.1.4-1]).
    pub fn v3_connack_code(&self) -> Option<u8> {
        match self {
            DecodeError::UnsupportedProtocolLevel { .. } => Some(1),
            _ => None,
        }
    }

    /// The normative statement this error violates, numbered as in `version`.
    pub fn spec_id(&self, version: ProtocolVersion) -> Option<&'static str> {
        self.spec_ids(version).first().copied()
    }

    /// Every normative statement this error violates, numbered as in
    /// `version` (the two versions number many rules differently).
    pub fn spec_ids(&self, version: ProtocolVersion) -> &'static [&'static str] {
        use DecodeError as E;
        let v5 = version == ProtocolVersion::V5;
        match (self, v5) {
            (E::MalformedVarInt | E::NonMinimalVarInt, true) => &["MQTT-1.5.5-1"],
            (E::InvalidFlags { packet_type, .. }, _) => match packet_type {
                PacketType::PubRel => &["MQTT-3.6.1-1"],
                PacketType::Subscribe => &["MQTT-3.8.1-1"],
                PacketType::Unsubscribe => &["MQTT-3.10.1-1"],
                PacketType::Disconnect => &["MQTT-3.14.1-1"],
                PacketType::Auth => &["MQTT-3.15.1-1"],
                _ if v5 => &["MQTT-2.1.3-1"],
                _ => &["MQTT-2.2.2-1", "MQTT-2.2.2-2"],
            },
            (E::ReservedPacketType { .. }, true) => &["MQTT-2.1.3-1"],
            (E::ReservedPacketType { .. }, false) => &["MQTT-2.2.2-1"],
            (E::InvalidQoS, _) => &["MQTT-3.3.1-4"],
            (E::DupOnQoS0, _) => &["MQTT-3.3.1-2"],
            (E::ZeroPacketId, true) => &["MQTT-2.2.1-3"],
            (E::ZeroPacketId, false) => &["MQTT-2.3.1-1"],
            (E::InvalidUtf8, true) => &["MQTT-1.5.4-1"],
            (E::InvalidUtf8, false) => &["MQTT-1.5.3-1"],
            (E::NullCharacter, true) => &["MQTT-1.5.4-2"],
            (E::NullCharacter, false) => &["MQTT-1.5.3-2"],
            (E::FirstPacketNotConnect { .. }, _) => &["MQTT-3.1.0-1"],
            (E::InvalidProtocolName, _) => &["MQTT-3.1.2-1"],
            (E::UnsupportedProtocolLevel { .. }, _) => &["MQTT-3.1.2-2"],
            (E::ConnectReservedFlag, _) => &["MQTT-3.1.2-3"],
            (E::WillFlagsWithoutWill, true) => &["MQTT-3.1.2-11", "MQTT-3.1.2-13"],
            (E::WillFlagsWithoutWill, false) => {
                &["MQTT-3.1.2-11", "MQTT-3.1.2-13", "MQTT-3.1.2-15"]
            }
            (E::InvalidWillQoS, true) => &["MQTT-3.1.2-12"],
            (E::InvalidWillQoS, false) => &["MQTT-3.1.2-14"],
            (E::PasswordWithoutUsername, false) => &["MQTT-3.1.2-22"],
            (E::WildcardInTopicName, _) => &["MQTT-3.3.2-2"],
            (E::EmptyTopicName, _) => &["MQTT-4.7.3-1"],
            (E::TopicAliasZero, true) => &["MQTT-3.3.2-8"],
            (E::ConnAckReservedFlags, true) => &["MQTT-3.2.2-1"],
            (E::NoTopicFilters, true) => &["MQTT-3.8.3-2"],
            (E::NoTopicFilters, false) => &["MQTT-3.8.3-3"],
            (E::NoUnsubscribeTopicFilters, _) => &["MQTT-3.10.3-2"],
            (E::InvalidSubscriptionOptions { .. }, true) => &["MQTT-3.8.3-5"],
            (E::InvalidSubscriptionOptions { .. }, false) => &["MQTT-3.8.3-4"],
            (E::InvalidReasonCode { packet_type, .. }, _) => match (packet_type, v5) {
                (PacketType::ConnAck, true) => &["MQTT-3.2.2-8"],
                (PacketType::PubAck, true) => &["MQTT-3.4.2-1"],
                (PacketType::PubRec, true) => &["MQTT-3.5.2-1"],
                (PacketType::PubRel, true) => &["MQTT-3.6.2-1"],
                (PacketType::PubComp, true) => &["MQTT-3.7.2-1"],
                (PacketType::SubAck, _) => &["MQTT-3.9.3-2"],
                (PacketType::UnsubAck, true) => &["MQTT-3.11.3-2"],
                (PacketType::Disconnect, true) => &["MQTT-3.14.2-1"],
                (PacketType::Auth, true) => &["MQTT-3.15.2-1"],
                _ => &[],
            },
            _ => &[],
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("string or binary field longer than 65535 bytes")]
    StringTooLong,
    /// The packet would exceed the peer's Maximum Packet Size ([MQTT-3.1.2-24])
    /// or the largest remaining length MQTT can express.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size the packet would have.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A QoS 1/2 PUBLISH without a packet identifier, or QoS 0 with one.
    #[error("PUBLISH packet identifier does not match its QoS")]
    PacketIdMismatch,
    /// The packet does not exist in this protocol version (AUTH before 5.0).
    #[error("{packet_type:?} does not exist in {version:?}")]
    NotInVersion {
        /// The packet.
        packet_type: PacketType,
        /// The version asked for.
        version: ProtocolVersion,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters.
    #[error("SUBSCRIBE/UNSUBSCRIBE needs at least one topic filter")]
    NoTopicFilters,
    /// The sizing pass and the writing pass disagreed: a codec bug, caught
    /// before anything was exposed in the buffer.
    #[error("internal: encoded size differs from the computed size")]
    SizeMismatch,
}
