//! Topic aliases the broker assigns towards one MQTT 5 client (3.3.2.3.4).
//!
//! Pure and per connection. The topics sent most recently hold an alias
//! each; a topic without one takes a free alias, or the least recently used
//! one when all are taken (least recently used by a scan of at most
//! [`OUT_ALIAS_MAX`] entries, so the map stays small and eviction cheap).
//! The first PUBLISH with an alias carries the topic too; later ones carry
//! the alias alone ([MQTT-3.3.2-12]).

use std::collections::HashMap;

use crate::protocol::MqttStr;

/// Most aliases the broker keeps per connection, whatever the client allows.
pub const OUT_ALIAS_MAX: u16 = 64;

/// What to put in a PUBLISH for its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// The client knows this alias for the topic: send it, and no topic.
    Known(u16),
    /// The alias now stands for the topic: send both.
    New(u16),
}

/// See the module docs.
#[derive(Debug)]
pub struct OutAliases {
    max: u16,
    /// Topic → (alias, last use).
    by_topic: HashMap<MqttStr, (u16, u64)>,
    /// Alias − 1 → topic.
    topics: Vec<MqttStr>,
    /// Aliases given back by [`OutAliases::forget`].
    free: Vec<u16>,
    clock: u64,
}

impl OutAliases {
    /// Aliases for a client whose CONNECT allowed `client_max` (0: none).
    pub fn new(client_max: u16) -> Option<OutAliases> {
        let max = client_max.min(OUT_ALIAS_MAX);
        (max > 0).then(|| OutAliases {
            max,
            by_topic: HashMap::new(),
            topics: Vec::new(),
            free: Vec::new(),
            clock: 0,
        })
    }

    /// The alias to send `topic` with.
    pub fn assign(&mut self, topic: &MqttStr) -> Alias {
        self.clock += 1;
        if let Some((alias, used)) = self.by_topic.get_mut(topic) {
            *used = self.clock;
            return Alias::Known(*alias);
        }
        let alias = if let Some(alias) = self.free.pop() {
            self.topics[usize::from(alias) - 1] = topic.clone();
            alias
        } else if self.topics.len() < usize::from(self.max) {
            self.topics.push(topic.clone());
            self.topics.len() as u16
        } else {
            let (alias, _) = self
                .by_topic
                .values()
                .copied()
                .min_by_key(|&(_, used)| used)
                .expect("invariant: full means non-empty");
            let old = std::mem::replace(&mut self.topics[usize::from(alias) - 1], topic.clone());
            self.by_topic.remove(&old);
            alias
        };
        self.by_topic.insert(topic.clone(), (alias, self.clock));
        Alias::New(alias)
    }

    /// The PUBLISH that set up `topic`'s alias was never sent (too large
    /// for the client): the client does not know it, so the alias is free.
    pub fn forget(&mut self, topic: &MqttStr) {
        if let Some((alias, _)) = self.by_topic.remove(topic) {
            self.free.push(alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &'static str) -> MqttStr {
        MqttStr::from_static(s)
    }

    // [v5:MQTT-3.3.2-12] the first use sends the topic with the alias; later
    // uses may send the alias alone.
    #[test]
    fn a_topic_is_sent_once_then_by_alias() {
        let mut a = OutAliases::new(10).expect("allowed");
        assert_eq!(a.assign(&t("a")), Alias::New(1));
        assert_eq!(a.assign(&t("b")), Alias::New(2));
        assert_eq!(a.assign(&t("a")), Alias::Known(1));
        assert_eq!(a.assign(&t("b")), Alias::Known(2));
    }

    // [v5:MQTT-3.1.2-26] [v5:MQTT-3.1.2-27] never above the client's maximum,
    // none when it allows none.
    #[test]
    fn aliases_stay_within_the_clients_maximum() {
        assert!(OutAliases::new(0).is_none());
        let mut a = OutAliases::new(2).expect("allowed");
        for i in 0..100u32 {
            let topic = MqttStr::try_from(format!("t/{}", i % 5).as_str()).expect("topic");
            match a.assign(&topic) {
                Alias::Known(n) | Alias::New(n) => assert!((1..=2).contains(&n), "{n}"),
            }
        }
        let mut big = OutAliases::new(u16::MAX).expect("allowed");
        for i in 0..1000u32 {
            let topic = MqttStr::try_from(format!("t/{i}").as_str()).expect("topic");
            match big.assign(&topic) {
                Alias::Known(n) | Alias::New(n) => assert!(n <= OUT_ALIAS_MAX),
            }
        }
    }

    #[test]
    fn the_least_recently_used_alias_is_reassigned() {
        let mut a = OutAliases::new(2).expect("allowed");
        a.assign(&t("a"));
        a.assign(&t("b"));
        a.assign(&t("a"));
        // "b" is the least recently used: "c" takes its alias.
        assert_eq!(a.assign(&t("c")), Alias::New(2));
        assert_eq!(a.assign(&t("a")), Alias::Known(1));
        // "b" must be sent with its topic again.
        assert_eq!(a.assign(&t("b")), Alias::New(2));
    }

    #[test]
    fn a_forgotten_alias_is_sent_with_its_topic_again() {
        let mut a = OutAliases::new(4).expect("allowed");
        a.assign(&t("a"));
        a.assign(&t("b"));
        a.forget(&t("b"));
        assert_eq!(a.assign(&t("c")), Alias::New(2));
        assert_eq!(a.assign(&t("a")), Alias::Known(1));
        assert_eq!(a.assign(&t("b")), Alias::New(3));
    }
}
