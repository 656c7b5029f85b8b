//! Topic names, topic filters, shared subscriptions, and the subscription trie.
//!
//! [`TopicName`] and [`TopicFilter`] are validated once, at the edge; the trie
//! and the router trust them. Matching follows MQTT 4.7: `+` matches one
//! level, `#` the parent level and everything below it, and a topic that
//! starts with `$` is not matched by a filter that starts with a wildcard.

mod retained;
mod trie;

pub use retained::RetainedIndex;
pub use trie::{SubscriptionTrie, TrieError, MAX_FILTER_LEVELS};

use crate::protocol::MqttStr;

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    /// `+` or `#` in a topic name.
    #[error("[MQTT-4.7.0-1] wildcard in a topic name")]
    WildcardInName,
    /// `#` not alone in the last level.
    #[error("[MQTT-4.7.1-1] '#' must be the whole last level")]
    MisplacedMultiLevel,
    /// `+` sharing a level with other characters.
    #[error("[MQTT-4.7.1-2] '+' must be a whole level")]
    MisplacedSingleLevel,
    /// A `$share/` filter without a share name, or with `/`, `+` or `#` in it,
    /// or without a filter after it.
    #[error("[MQTT-4.8.2-1] invalid shared subscription")]
    InvalidShare,
}

/// A validated topic name: not empty, no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttStr);

impl TopicName {
    /// Validates `s` as a topic name.
    ///
    /// # Errors
    /// [`TopicError::Empty`] or [`TopicError::WildcardInName`].
    pub fn new(s: MqttStr) -> Result<TopicName, TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.as_bytes().iter().any(|&b| b == b'+' || b == b'#') {
            return Err(TopicError::WildcardInName);
        }
        Ok(TopicName(s))
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The underlying string (shares the buffer).
    pub fn as_mqtt_str(&self) -> &MqttStr {
        &self.0
    }

    /// True for `$`-topics such as `$SYS/...`.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// True when the first topic level is exactly `$SYS`: the broker's own
    /// tree, where clients may not publish (`$SYSTEM/x` is not in it).
    pub fn is_broker_sys(&self) -> bool {
        self.as_str().split('/').next() == Some("$SYS")
    }
}

/// A validated topic filter (wildcards allowed, in their places).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttStr);

impl TopicFilter {
    /// Validates `s` as a topic filter.
    ///
    /// # Errors
    /// [`TopicError::Empty`], [`TopicError::MisplacedMultiLevel`] or
    /// [`TopicError::MisplacedSingleLevel`].
    pub fn new(s: MqttStr) -> Result<TopicFilter, TopicError> {
        validate_filter(&s)?;
        Ok(TopicFilter(s))
    }

    /// The filter's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The underlying string (shares the buffer).
    pub fn as_mqtt_str(&self) -> &MqttStr {
        &self.0
    }

    /// True if the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// Whether this filter matches `topic` (the reference matcher; the trie
    /// gives the same answers for many filters at once).
    pub fn matches(&self, topic: &TopicName) -> bool {
        matches(self.as_str(), topic.as_str())
    }
}

fn validate_filter(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevel);
        }
    }
    Ok(())
}

/// A subscription filter split into its share group (if `$share/`) and filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// The share name of a shared subscription.
    pub share_group: Option<MqttStr>,
    /// The filter messages are matched against.
    pub filter: TopicFilter,
}

impl SubscriptionFilter {
    /// Parses a SUBSCRIBE filter, recognising `$share/{group}/{filter}`.
    ///
    /// # Errors
    /// [`TopicError`] for an invalid filter or share.
    pub fn parse(s: &MqttStr) -> Result<SubscriptionFilter, TopicError> {
        let Some(rest) = s.strip_prefix("$share/") else {
            return Ok(SubscriptionFilter {
                share_group: None,
                filter: TopicFilter::new(s.clone())?,
            });
        };
        let (group, filter) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
        if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        let start = "$share/".len() + group.len() + 1;
        let bytes = s.as_bytes();
        let sub = |from: usize, to: usize| {
            MqttStr::from_bytes(bytes.slice(from..to)).map_err(|_| TopicError::InvalidShare)
        };
        Ok(SubscriptionFilter {
            share_group: Some(sub("$share/".len(), start - 1)?),
            filter: TopicFilter::new(sub(start, bytes.len())?)?,
        })
    }
}

/// Reference matcher: does `filter` match `topic`? (MQTT 4.7)
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
