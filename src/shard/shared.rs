//! Shared subscriptions, `$share/{group}/{filter}`, across shards.
//!
//! A shared subscription is named by its whole filter as subscribed (the
//! key, `$share/g/f`), so that sessions, the log and recovery keep it like
//! any other. Each message matching `f` goes to one member of each key,
//! wherever the members live:
//!
//! * every shard knows, per key, how many members each shard has, and how
//!   many of them are online (`SharedMembers` broadcasts, applied before a
//!   SUBACK goes, like interest);
//! * the publisher's shard picks the shard: round-robin over the online
//!   members of all shards, so each member gets an even share whatever
//!   shard it is on (over the offline ones when none is online: a persistent
//!   member keeps its share queued only then);
//! * that shard picks the member: round-robin over its own, online ones
//!   with room first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::acl::Want;
use crate::session::{Delivery, Message};
use crate::topic::{SubscriptionFilter, SubscriptionTrie, TopicFilter};

use super::{Shard, ShardMsg, SubOpts};

/// True for a key of a shared subscription.
pub(crate) fn is_shared(key: &TopicFilter) -> bool {
    key.as_str().starts_with("$share/")
}

/// The filter messages are matched against, for a shared key.
fn inner(key: &TopicFilter) -> Option<TopicFilter> {
    SubscriptionFilter::parse(key.as_mqtt_str())
        .ok()
        .map(|p| p.filter)
}

/// One key's members on this shard.
#[derive(Debug, Default)]
struct Group {
    members: Vec<(u32, SubOpts)>,
    next: usize,
}

/// Every shard's members of one key: (total, online) per shard.
#[derive(Debug)]
struct Route {
    counts: Vec<(u32, u32)>,
    next: u64,
}

/// This shard's shared subscriptions and its replica of everyone's counts.
#[derive(Debug, Default)]
pub(crate) struct SharedSubs {
    local: HashMap<TopicFilter, Group>,
    routes: HashMap<TopicFilter, Route>,
    /// Inner filter → key, for every key with members anywhere.
    trie: SubscriptionTrie<TopicFilter>,
}

impl SharedSubs {
    /// Sets `shard`'s counts for `key`; keeps the trie to keys with members.
    fn set_counts(&mut self, key: &TopicFilter, shard: usize, n: usize, counts: (u32, u32)) {
        let route = self.routes.entry(key.clone()).or_insert_with(|| Route {
            counts: vec![(0, 0); n],
            next: 0,
        });
        let had = route.counts.iter().any(|c| c.0 > 0);
        if let Some(slot) = route.counts.get_mut(shard) {
            *slot = counts;
        }
        let has = route.counts.iter().any(|c| c.0 > 0);
        if !has {
            // No members anywhere: nothing routes to it, nothing is kept.
            self.routes.remove(key);
        }
        if has == had {
            return;
        }
        let Some(f) = inner(key) else { return };
        if has {
            let _ = self.trie.insert(&f, key.clone());
        } else {
            self.trie.remove(&f, |k| k == key);
        }
    }

    /// The shard that takes the next message of `key`.
    fn pick_shard(&mut self, key: &TopicFilter) -> Option<usize> {
        let route = self.routes.get_mut(key)?;
        let online: u64 = route.counts.iter().map(|c| u64::from(c.1)).sum();
        // Online members when there are any, else every member.
        let weight = |c: &(u32, u32)| u64::from(if online > 0 { c.1 } else { c.0 });
        let total: u64 = route.counts.iter().map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut i = route.next % total;
        route.next = route.next.wrapping_add(1);
        for (s, c) in route.counts.iter().enumerate() {
            let c = weight(c);
            if i < c {
                return Some(s);
            }
            i -= c;
        }
        None
    }
}

impl Shard {
    /// Session `session` joins (or changes its options in) shared `key`.
    /// Returns the broadcast a SUBACK must wait for.
    pub(crate) fn join_shared(&mut self, key: &TopicFilter, session: u32, opts: SubOpts) -> u64 {
        let g = self.shared_subs.local.entry(key.clone()).or_default();
        match g.members.iter_mut().find(|m| m.0 == session) {
            Some(m) => m.1 = opts,
            None => {
                g.members.push((session, opts));
                self.metrics.subscriptions += 1;
            }
        }
        self.announce_shared(key)
    }

    /// Session `session` leaves shared `key`.
    pub(crate) fn leave_shared(&mut self, key: &TopicFilter, session: u32) {
        let Some(g) = self.shared_subs.local.get_mut(key) else {
            return;
        };
        let before = g.members.len();
        g.members.retain(|m| m.0 != session);
        if g.members.len() < before {
            self.metrics.subscriptions = self.metrics.subscriptions.saturating_sub(1);
        }
        if g.members.is_empty() {
            self.shared_subs.local.remove(key);
        }
        self.announce_shared(key);
    }

    /// Session `session` went online or offline: its shared keys' counts change.
    pub(crate) fn shared_presence_changed(&mut self, session: u32) {
        // Every connect and disconnect passes here: without a local shared
        // subscription, nothing to look at.
        if self.shared_subs.local.is_empty() {
            return;
        }
        let keys: Vec<TopicFilter> = match self.entry(session) {
            Some(e) => e
                .life
                .subscriptions
                .keys()
                .filter(|k| is_shared(k))
                .cloned()
                .collect(),
            None => return,
        };
        for k in keys {
            self.announce_shared(&k);
        }
    }

    /// This shard's (total, online) members of `key`, applied here and sent
    /// to every peer; returns the broadcast number to wait for.
    fn announce_shared(&mut self, key: &TopicFilter) -> u64 {
        let counts = self.shared_subs.local.get(key).map_or((0, 0), |g| {
            let online = g.members.iter().filter(|m| self.is_online(m.0)).count();
            (g.members.len() as u32, online as u32)
        });
        let n = self.nr_shards;
        self.shared_subs.set_counts(key, self.id, n, counts);
        self.broadcasts += 1;
        let k = key.clone();
        self.broadcast(|| ShardMsg::SharedMembers {
            key: k.clone(),
            total: counts.0,
            online: counts.1,
        });
        self.broadcasts
    }

    fn is_online(&self, session: u32) -> bool {
        self.sessions
            .get(session as usize)
            .and_then(Option::as_deref)
            .is_some_and(super::SessionEntry::is_online)
    }

    /// A peer's counts for `key`.
    pub(crate) fn on_shared_members(
        &mut self,
        from: usize,
        key: &TopicFilter,
        total: u32,
        online: u32,
    ) {
        let n = self.nr_shards;
        self.shared_subs.set_counts(key, from, n, (total, online));
        self.mesh_send(from, ShardMsg::Applied);
    }

    /// Sends `msg` to one member of each shared subscription it matches:
    /// here, or to the shard picked for it.
    /// Returns how many groups it went to.
    pub(crate) fn route_shared(&mut self, msg: &Arc<Message>, now: Instant) -> usize {
        if self.shared_subs.routes.is_empty() {
            return 0;
        }
        let mut keys: Vec<TopicFilter> = Vec::new();
        self.shared_subs
            .trie
            .match_topic(&msg.topic, |k| keys.push(k.clone()));
        let mut groups = 0;
        for key in keys {
            match self.shared_subs.pick_shard(&key) {
                Some(s) if s == self.id => self.deliver_shared(msg, &key, now),
                Some(s) => {
                    let msg = msg.clone();
                    // Shared members are not in the durable table: always wait.
                    self.send_delivery(s, msg.qos, true, |report| ShardMsg::DeliverShared {
                        msg,
                        key,
                        report,
                    });
                }
                None => continue,
            }
            groups += 1;
        }
        groups
    }

    /// Delivers `msg` to one local member of `key`: the next online one
    /// whose queue is not past half its bound, else the next online one,
    /// else the next one (offline, queued). None left: counted as dropped.
    pub(crate) fn deliver_shared(&mut self, msg: &Arc<Message>, key: &TopicFilter, now: Instant) {
        let Some(g) = self.shared_subs.local.get(key) else {
            self.metrics.publishes_dropped += 1;
            return;
        };
        let n = g.members.len();
        let start = g.next;
        let ranked = |shard: &Shard, i: usize| {
            let (s, _) = g.members[(start + i) % n];
            let e = shard.sessions.get(s as usize).and_then(Option::as_deref);
            let online = shard.is_online(s);
            let room = e.is_some_and(|e| !e.session.queue_high());
            if !shard.acl_allows(s, Want::Read, msg.topic.as_str()) {
                return 0; // never picked
            }
            1 + u8::from(online) * 2 + u8::from(online && room)
        };
        let Some(best) = (0..n).max_by_key(|&i| (ranked(self, i), std::cmp::Reverse(i))) else {
            self.metrics.publishes_dropped += 1;
            return;
        };
        if ranked(self, best) == 0 {
            self.metrics.acl_deliveries_denied += 1;
            return;
        }
        let at = (start + best) % n;
        let (session, opts) = g.members[at];
        if let Some(g) = self.shared_subs.local.get_mut(key) {
            g.next = at + 1;
        }
        let d = Delivery {
            msg: msg.clone(),
            qos: msg.qos.min(opts.qos),
            retain: opts.retain_as_published && msg.retain,
            subscription_ids: opts.id.into_iter().collect(),
            stored: None,
            rec: None,
        };
        self.deliver_all(msg, &mut vec![(session, d)], now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MqttStr;

    fn key(s: &'static str) -> TopicFilter {
        TopicFilter::new(MqttStr::from_static(s)).expect("filter")
    }

    fn picks(s: &mut SharedSubs, k: &TopicFilter, n: usize) -> Vec<usize> {
        let mut per = vec![0; 3];
        for _ in 0..n {
            per[s.pick_shard(k).expect("a shard")] += 1;
        }
        per
    }

    // Shards are picked in proportion to their online members, so every
    // member gets the same share; with none online, in proportion to all.
    #[test]
    fn shards_take_turns_by_their_online_members() {
        let k = key("$share/g/a/#");
        let mut s = SharedSubs::default();
        s.set_counts(&k, 0, 3, (2, 2));
        s.set_counts(&k, 1, 3, (3, 1));
        assert_eq!(picks(&mut s, &k, 300), vec![200, 100, 0]);
        s.set_counts(&k, 0, 3, (2, 0));
        s.set_counts(&k, 1, 3, (3, 0));
        assert_eq!(picks(&mut s, &k, 500), vec![200, 300, 0]);
        // Routed while any shard has members; gone once none has.
        let topic = crate::topic::TopicName::new(MqttStr::from_static("a/b")).expect("topic");
        let mut hits = 0;
        s.trie.match_topic(&topic, |_| hits += 1);
        assert_eq!(hits, 1);
        s.set_counts(&k, 0, 3, (0, 0));
        s.set_counts(&k, 1, 3, (0, 0));
        assert_eq!(s.pick_shard(&k), None);
        let mut hits = 0;
        s.trie.match_topic(&topic, |_| hits += 1);
        assert_eq!(hits, 0);
    }
}
