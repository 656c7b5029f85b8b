//! Sessions: the sans-IO state machine of one client's MQTT session.
//!
//! A [`Life`] holds what a session is: its client id, expiry and will, and
//! decides takeover, will delay, expiry and recovery as effects for the
//! shard to carry out.
//!
//! A [`Session`] holds the subscriptions' outbound half: the inflight window
//! of QoS 1/2 messages sent and not yet acknowledged, the pending queue behind
//! it (bounded, with a drop policy), packet identifiers, and the inbound QoS 2
//! identifiers awaiting PUBREL. It never touches a socket or a clock: every
//! method takes `now` where time matters and pushes the packets to send into
//! an output vector that the shard encodes and writes.

mod chunked;
mod life;
pub(crate) mod pending;
mod queue;

pub use life::{connect_expiry, Effect, Life, SubOpts, Takeover, Timer, TimerKind};

pub use queue::{
    Backlog, BacklogEntry, Decode, Delivery, DropReason, Held, Journal, Limits, Logged, Session,
};

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{PublishProperties, QoS};
use crate::topic::TopicName;

/// An application message as it travels between shards: shared (`Arc`), never copied.
#[derive(Debug)]
pub struct Message {
    /// Where it was published.
    pub topic: TopicName,
    /// The payload: a slice of the decoded frame, which owns an allocation
    /// of its own unless it is large (see `protocol::codec`), so a message
    /// kept in a queue or the retained store never pins a read buffer.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers (no topic alias, no
    /// subscription identifiers: those are per connection).
    pub properties: PublishProperties,
    /// Client id of the publisher, for No Local.
    pub publisher: Arc<str>,
    /// When the Message Expiry Interval runs out, if one was set.
    pub expires_at: Option<Instant>,
    /// When the broker read it (for the publish-to-deliver histogram).
    pub received_at: Instant,
}

impl Message {
    /// Bytes this message keeps alive: its frame's topic, payload and
    /// properties plus the struct itself. What queue bounds count, so that
    /// `--max-queued-bytes` bounds memory rather than payload alone.
    pub fn held_bytes(&self) -> usize {
        let p = &self.properties;
        let strs = p.response_topic.as_ref().map_or(0, |s| s.len())
            + p.content_type.as_ref().map_or(0, |s| s.len())
            + p.correlation_data.as_ref().map_or(0, |b| b.len())
            + p.user_properties
                .iter()
                .map(|u| u.name.len() + u.value.len() + 4)
                .sum::<usize>();
        std::mem::size_of::<Message>() + self.topic.as_str().len() + self.payload.len() + strs
    }

    /// True once the message's expiry has passed ([MQTT-3.3.2-5]).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}
