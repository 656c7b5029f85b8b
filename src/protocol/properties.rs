//! MQTT 5 properties: one struct per packet kind, one decoding loop for all.
//!
//! The loop ([`decode_properties`]) reads identifier/value pairs, rejects an
//! identifier the packet does not allow and a duplicate of a property that may
//! appear once; each struct then checks the values it keeps. Encoding sizes a
//! property block with a [`Counter`] and writes it with the same function.

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};
use super::primitives::{Counter, MqttStr, Reader, Sink, MAX_VARINT};
use super::{PacketType, QoS};

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A User Property: a name/value pair of strings ([MQTT-1.5.7-1]); order and
/// repetition are kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProperty {
    /// The name.
    pub name: MqttStr,
    /// The value.
    pub value: MqttStr,
}

/// One property value as read from the wire.
enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(MqttStr),
    Bin(Bytes),
    Pair(MqttStr, MqttStr),
}

fn read_value(id: u8, r: &mut Reader) -> Result<Value, DecodeError> {
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(r.u8()?),
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            Value::U16(r.u16()?)
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => Value::U32(r.u32()?),
        SUBSCRIPTION_IDENTIFIER => Value::VarInt(r.varint()?),
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::Str(r.string()?),
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Bin(r.binary()?),
        USER_PROPERTY => Value::Pair(r.string()?, r.string()?),
        _ => return Err(mismatch(id)),
    })
}

/// Reads a property block (length, then pairs), calling `keep` for each.
fn decode_properties(
    r: &mut Reader,
    packet_type: PacketType,
    allowed: &[u8],
    mut keep: impl FnMut(u8, Value) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint()? as usize;
    let mut r = r.sub(len)?;
    let mut seen: u64 = 0;
    while r.remaining() > 0 {
        let raw = r.varint()?;
        let id = u8::try_from(raw)
            .ok()
            .filter(|id| allowed.contains(id))
            .ok_or(DecodeError::PropertyNotAllowed {
                id: raw,
                packet_type,
            })?;
        let repeatable = id == USER_PROPERTY
            || (id == SUBSCRIPTION_IDENTIFIER && packet_type == PacketType::Publish);
        if !repeatable {
            let bit = 1u64 << id;
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty { id });
            }
            seen |= bit;
        }
        let value = read_value(id, &mut r)?;
        keep(id, value)?;
    }
    Ok(())
}

fn flag(id: u8, b: u8) -> Result<bool, DecodeError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue { id }),
    }
}

fn nonzero_u16(id: u8, v: u16) -> Result<u16, DecodeError> {
    if v == 0 {
        Err(DecodeError::InvalidPropertyValue { id })
    } else {
        Ok(v)
    }
}

fn nonzero_u32(id: u8, v: u32) -> Result<u32, DecodeError> {
    if v == 0 {
        Err(DecodeError::InvalidPropertyValue { id })
    } else {
        Ok(v)
    }
}

/// The value did not have the type its identifier demands: cannot happen,
/// since [`read_value`] picks the type from the identifier.
fn mismatch(id: u8) -> DecodeError {
    DecodeError::InvalidPropertyValue { id }
}

// Writers: each skips an absent value.

fn w_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u8(v);
    }
}

fn w_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u16(v);
    }
}

fn w_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u32(v);
    }
}

fn w_bin<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_binary(v)?;
    }
    Ok(())
}

fn w_str<S: Sink>(s: &mut S, id: u8, v: &Option<MqttStr>) -> Result<(), EncodeError> {
    w_bin(s, id, v.as_ref().map(|v| v.as_bytes().as_ref()))
}

fn w_users<S: Sink>(s: &mut S, users: &[UserProperty]) -> Result<(), EncodeError> {
    for u in users {
        s.put_u8(USER_PROPERTY);
        s.put_binary(u.name.as_bytes())?;
        s.put_binary(u.value.as_bytes())?;
    }
    Ok(())
}

fn w_varint<S: Sink>(s: &mut S, id: u8, v: u32) {
    s.put_u8(id);
    s.put_varint(v.min(MAX_VARINT));
}

/// A property block: a length prefix, then the properties.
pub(crate) trait PropertyBlock {
    /// Writes the properties without the length prefix.
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;

    /// Writes the length prefix (sized by a counting pass), then the properties.
    fn encode<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let mut c = Counter::default();
        self.write(&mut c)?;
        let len = u32::try_from(c.0).ok().filter(|&n| n <= MAX_VARINT).ok_or(
            EncodeError::PacketTooLarge {
                size: c.0,
                max: MAX_VARINT as usize,
            },
        )?;
        s.put_varint(len);
        s.put_sized(c.0, |s| self.write(s))
    }
}

/// Properties of CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection (absent: 0).
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1/2 publishes the client accepts unacknowledged (non-zero).
    pub receive_maximum: Option<u16>,
    /// The largest packet the client accepts (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// Highest topic alias the client accepts from the server.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client asks for Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send reason strings and user properties.
    pub request_problem_information: Option<bool>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Extended authentication method.
    pub authentication_method: Option<MqttStr>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
}

impl ConnectProperties {
    const ALLOWED: &'static [u8] = &[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_PACKET_SIZE,
        TOPIC_ALIAS_MAXIMUM,
        REQUEST_RESPONSE_INFORMATION,
        REQUEST_PROBLEM_INFORMATION,
        USER_PROPERTY,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ];

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Connect, Self::ALLOWED, |id, v| {
            match (id, v) {
                (SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = Some(nonzero_u16(id, v)?),
                (MAXIMUM_PACKET_SIZE, Value::U32(v)) => {
                    p.maximum_packet_size = Some(nonzero_u32(id, v)?)
                }
                (TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
                (REQUEST_RESPONSE_INFORMATION, Value::Byte(b)) => {
                    p.request_response_information = Some(flag(id, b)?)
                }
                (REQUEST_PROBLEM_INFORMATION, Value::Byte(b)) => {
                    p.request_problem_information = Some(flag(id, b)?)
                }
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for ConnectProperties {
    #[inline(always)]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        w_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_u8(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information.map(u8::from),
        );
        w_u8(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information.map(u8::from),
        );
        w_users(s, &self.user_properties)?;
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())
    }
}

/// Properties of the Will Message in CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds to wait after the connection closes before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0: unspecified bytes, 1: UTF-8 text.
    pub payload_format_indicator: Option<u8>,
    /// Lifetime of the will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// MIME-like content type.
    pub content_type: Option<MqttStr>,
    /// Topic for a response.
    pub response_topic: Option<MqttStr>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order ([MQTT-3.1.3-10]).
    pub user_properties: Vec<UserProperty>,
}

impl WillProperties {
    const ALLOWED: &'static [u8] = &[
        WILL_DELAY_INTERVAL,
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
    ];

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Connect, Self::ALLOWED, |id, v| {
            match (id, v) {
                (WILL_DELAY_INTERVAL, Value::U32(v)) => p.will_delay_interval = Some(v),
                (PAYLOAD_FORMAT_INDICATOR, Value::Byte(b)) => {
                    p.payload_format_indicator = Some(u8::from(flag(id, b)?))
                }
                (MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_interval = Some(v),
                (CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
                (RESPONSE_TOPIC, Value::Str(v)) => p.response_topic = Some(response_topic(v)?),
                (CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for WillProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        w_u8(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_str(s, CONTENT_TYPE, &self.content_type)?;
        w_str(s, RESPONSE_TOPIC, &self.response_topic)?;
        w_bin(s, CORRELATION_DATA, self.correlation_data.as_deref())?;
        w_users(s, &self.user_properties)
    }
}

/// A Response Topic is a topic name: no wildcards, not empty ([MQTT-3.3.2-14]).
fn response_topic(v: MqttStr) -> Result<MqttStr, DecodeError> {
    if v.is_empty() || v.contains(['+', '#']) {
        Err(DecodeError::InvalidPropertyValue { id: RESPONSE_TOPIC })
    } else {
        Ok(v)
    }
}

/// Properties of CONNACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<MqttStr>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<MqttStr>,
    pub user_properties: Vec<UserProperty>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<MqttStr>,
    pub server_reference: Option<MqttStr>,
    pub authentication_method: Option<MqttStr>,
    pub authentication_data: Option<Bytes>,
}

impl ConnAckProperties {
    const ALLOWED: &'static [u8] = &[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ];

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::ConnAck, Self::ALLOWED, |id, v| {
            match (id, v) {
                (SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = Some(nonzero_u16(id, v)?),
                (MAXIMUM_QOS, Value::Byte(b)) => {
                    p.maximum_qos = Some(if flag(id, b)? {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    })
                }
                (RETAIN_AVAILABLE, Value::Byte(b)) => p.retain_available = Some(flag(id, b)?),
                (MAXIMUM_PACKET_SIZE, Value::U32(v)) => {
                    p.maximum_packet_size = Some(nonzero_u32(id, v)?)
                }
                (ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v)) => {
                    p.assigned_client_identifier = Some(v)
                }
                (TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
                (REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(b)) => {
                    p.wildcard_subscription_available = Some(flag(id, b)?)
                }
                (SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Byte(b)) => {
                    p.subscription_identifiers_available = Some(flag(id, b)?)
                }
                (SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(b)) => {
                    p.shared_subscription_available = Some(flag(id, b)?)
                }
                (SERVER_KEEP_ALIVE, Value::U16(v)) => p.server_keep_alive = Some(v),
                (RESPONSE_INFORMATION, Value::Str(v)) => p.response_information = Some(v),
                (SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
                (AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for ConnAckProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_u16(s, RECEIVE_MAXIMUM, self.receive_maximum);
        w_u8(s, MAXIMUM_QOS, self.maximum_qos.map(|q| q as u8));
        w_u8(s, RETAIN_AVAILABLE, self.retain_available.map(u8::from));
        w_u32(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        w_str(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_users(s, &self.user_properties)?;
        let flags = [
            (
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                self.wildcard_subscription_available,
            ),
            (
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                self.subscription_identifiers_available,
            ),
            (
                SHARED_SUBSCRIPTION_AVAILABLE,
                self.shared_subscription_available,
            ),
        ];
        for (id, v) in flags {
            w_u8(s, id, v.map(u8::from));
        }
        w_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        w_str(s, RESPONSE_INFORMATION, &self.response_information)?;
        w_str(s, SERVER_REFERENCE, &self.server_reference)?;
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())
    }
}

/// PUBLISH properties stored out of line, and not at all while empty.
///
/// Most PUBLISH packets carry no properties; inline, the 160-byte struct
/// would triple the size of every [`super::Packet`] the decoder returns and
/// the broker moves. Reads go through `Deref` (an empty set when absent);
/// the first write through `DerefMut` allocates.
#[derive(Clone, Default)]
pub struct SparseProperties(Option<Box<PublishProperties>>);

static EMPTY_PUBLISH_PROPERTIES: PublishProperties = PublishProperties {
    payload_format_indicator: None,
    message_expiry_interval: None,
    topic_alias: None,
    response_topic: None,
    correlation_data: None,
    user_properties: Vec::new(),
    subscription_identifiers: Vec::new(),
    content_type: None,
};

impl SparseProperties {
    /// The properties by value.
    pub fn into_inner(self) -> PublishProperties {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

impl From<PublishProperties> for SparseProperties {
    fn from(p: PublishProperties) -> Self {
        if p.is_empty() {
            SparseProperties(None)
        } else {
            SparseProperties(Some(Box::new(p)))
        }
    }
}

impl std::ops::Deref for SparseProperties {
    type Target = PublishProperties;
    fn deref(&self) -> &PublishProperties {
        self.0.as_deref().unwrap_or(&EMPTY_PUBLISH_PROPERTIES)
    }
}

impl std::ops::DerefMut for SparseProperties {
    fn deref_mut(&mut self) -> &mut PublishProperties {
        self.0.get_or_insert_with(Default::default)
    }
}

impl PartialEq for SparseProperties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SparseProperties {}

impl std::fmt::Debug for SparseProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Properties of PUBLISH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0: unspecified bytes, 1: UTF-8 text; forwarded unaltered ([MQTT-3.3.2-4]).
    pub payload_format_indicator: Option<u8>,
    /// Lifetime in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias (non-zero, [MQTT-3.3.2-8]).
    pub topic_alias: Option<u16>,
    /// Topic for a response (a topic name, [MQTT-3.3.2-14]).
    pub response_topic: Option<MqttStr>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order ([MQTT-3.3.2-18]).
    pub user_properties: Vec<UserProperty>,
    /// Subscription identifiers (server to client only, [MQTT-3.3.4-6]).
    pub subscription_identifiers: Vec<u32>,
    /// MIME-like content type.
    pub content_type: Option<MqttStr>,
}

impl PublishProperties {
    const ALLOWED: &'static [u8] = &[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        TOPIC_ALIAS,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
        SUBSCRIPTION_IDENTIFIER,
        CONTENT_TYPE,
    ];

    /// True when no property is set (the common case, encoded as one zero byte).
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Publish, Self::ALLOWED, |id, v| {
            match (id, v) {
                (PAYLOAD_FORMAT_INDICATOR, Value::Byte(b)) => {
                    p.payload_format_indicator = Some(u8::from(flag(id, b)?))
                }
                (MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_interval = Some(v),
                (TOPIC_ALIAS, Value::U16(0)) => return Err(DecodeError::TopicAliasZero),
                (TOPIC_ALIAS, Value::U16(v)) => p.topic_alias = Some(v),
                (RESPONSE_TOPIC, Value::Str(v)) => p.response_topic = Some(response_topic(v)?),
                (CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => {
                    p.subscription_identifiers.push(nonzero_u32(id, v)?)
                }
                (CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for PublishProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u8(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_u16(s, TOPIC_ALIAS, self.topic_alias);
        w_str(s, RESPONSE_TOPIC, &self.response_topic)?;
        w_bin(s, CORRELATION_DATA, self.correlation_data.as_deref())?;
        w_users(s, &self.user_properties)?;
        for &id in &self.subscription_identifiers {
            w_varint(s, SUBSCRIPTION_IDENTIFIER, id);
        }
        w_str(s, CONTENT_TYPE, &self.content_type)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttStr>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    const ALLOWED: &'static [u8] = &[REASON_STRING, USER_PROPERTY];

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }

    pub(crate) fn decode(r: &mut Reader, t: PacketType) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, t, Self::ALLOWED, |id, v| {
            match (id, v) {
                (REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for AckProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_users(s, &self.user_properties)
    }
}

/// Properties of SUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Identifier attached to messages delivered by these subscriptions (1..=268,435,455).
    pub subscription_identifier: Option<u32>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl SubscribeProperties {
    const ALLOWED: &'static [u8] = &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY];

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Subscribe, Self::ALLOWED, |id, v| {
            match (id, v) {
                (SUBSCRIPTION_IDENTIFIER, Value::VarInt(v)) => {
                    p.subscription_identifier = Some(nonzero_u32(id, v)?)
                }
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for SubscribeProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(v) = self.subscription_identifier {
            w_varint(s, SUBSCRIPTION_IDENTIFIER, v);
        }
        w_users(s, &self.user_properties)
    }
}

/// Properties of UNSUBSCRIBE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl UnsubscribeProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Unsubscribe, &[USER_PROPERTY], |id, v| {
            match v {
                Value::Pair(name, value) => p.user_properties.push(UserProperty { name, value }),
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for UnsubscribeProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_users(s, &self.user_properties)
    }
}

/// Properties of DISCONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry (client to server only, [MQTT-3.14.2-2]).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttStr>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Another server the client may use.
    pub server_reference: Option<MqttStr>,
}

impl DisconnectProperties {
    const ALLOWED: &'static [u8] = &[
        SESSION_EXPIRY_INTERVAL,
        REASON_STRING,
        USER_PROPERTY,
        SERVER_REFERENCE,
    ];

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Disconnect, Self::ALLOWED, |id, v| {
            match (id, v) {
                (SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_interval = Some(v),
                (REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                (SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for DisconnectProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_users(s, &self.user_properties)?;
        w_str(s, SERVER_REFERENCE, &self.server_reference)
    }
}

/// Properties of AUTH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Authentication method.
    pub authentication_method: Option<MqttStr>,
    /// Authentication data.
    pub authentication_data: Option<Bytes>,
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttStr>,
    /// User properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl AuthProperties {
    const ALLOWED: &'static [u8] = &[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ];

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_properties(r, PacketType::Auth, Self::ALLOWED, |id, v| {
            match (id, v) {
                (AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                (REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(name, value)) => {
                    p.user_properties.push(UserProperty { name, value })
                }
                _ => return Err(mismatch(id)),
            }
            Ok(())
        })?;
        Ok(p)
    }
}

impl PropertyBlock for AuthProperties {
    #[inline]
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_str(s, AUTHENTICATION_METHOD, &self.authentication_method)?;
        w_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())?;
        w_str(s, REASON_STRING, &self.reason_string)?;
        w_users(s, &self.user_properties)
    }
}
