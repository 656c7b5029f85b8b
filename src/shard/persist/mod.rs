//! What a shard writes to its log and how it comes back: sessions,
//! subscriptions, QoS 1/2 messages queued for persistent sessions and what
//! became of each, inbound QoS 2 awaiting PUBREL, retained messages.
//!
//! A message is logged once per shard, with a reference for each
//! persistent session of that shard it is queued for; a session's
//! [`Journal`] then says when each reference is settled. Retained messages
//! are logged by one shard each, `owner_of(topic)`, and every shard gets
//! all of them back at start. A checkpoint rewrites the live state, so
//! recovery and disk grow with what is live, not with history.

mod boot;
mod records;
mod recover;
mod sync;

pub use boot::{open, Opened, ShardStorage};

/// How sessions read their logged messages back.
pub(crate) const DECODE: crate::session::Decode = crate::session::Decode {
    message: records::message_of_record,
    id: records::id_of_record,
};
pub use recover::Recovered;
pub(crate) use sync::{commit_loop, LogThread};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SyncMode;
use crate::session::{Delivery, Effect, Held, Journal, Life, Message, Session};
use crate::storage::{AppendError, Log};
use crate::topic::{TopicFilter, TopicName};

use super::{owner_of, SessionEntry, Shard, ShardMsg, SubOpts};
use records::{wall_ms, wall_of, W};

/// Where a checkpoint takes a message from.
enum Source {
    Ram(Arc<Message>),
    Log(crate::storage::RecordRef),
}

/// One session's reference to message `id` from `source`, as a checkpoint
/// collects it.
struct Item {
    id: u64,
    source: Source,
    r: Ref,
}

/// One session's reference to a message, as a checkpoint writes it.
struct Ref {
    sid: u64,
    qos: crate::protocol::QoS,
    retain: bool,
    ids: Vec<u32>,
}

/// A shard's log and the counters that name its records.
#[derive(Debug)]
pub struct Store {
    pub(crate) log: Log,
    w: W,
    last_sid: u64,
    last_msg: u64,
    pub(crate) sync: SyncMode,
    /// Every append up to this ticket is durable.
    pub(crate) synced: u64,
    /// Bytes the last checkpoint wrote: the live state's size.
    live_bytes: u64,
    /// Mesh messages that may leave only once the log is durable up to
    /// their ticket (`--sync always`).
    /// Tickets only grow, so the queue is in ticket order.
    pub(crate) after_sync: VecDeque<(u64, usize, ShardMsg)>,
    /// The highest ticket an acknowledgement or a mesh message waits for.
    wanted: u64,
    /// Set when something waits for a sync: wakes the commit task.
    pub(crate) sync_waker: Option<std::task::Waker>,
    /// Where msyncs and checkpoint jobs run (inline without one).
    pub(crate) thread: Option<LogThread>,
    refs: Vec<(u64, usize)>,
}

impl Store {
    /// A store over `log`, numbering on from what recovery found.
    pub fn new(log: Log, sync: SyncMode, rec: &Recovered) -> Store {
        let written = log.written();
        Store {
            live_bytes: log.since_checkpoint(),
            log,
            w: W::default(),
            last_sid: rec.last_sid,
            last_msg: rec.last_msg,
            sync,
            synced: written,
            after_sync: VecDeque::new(),
            wanted: 0,
            sync_waker: None,
            thread: None,
            refs: Vec::new(),
        }
    }

    /// Asks the commit task for a sync covering `ticket` (0: only wake it,
    /// to see shutdown).
    pub(crate) fn want_sync(&mut self, ticket: u64) {
        self.wanted = self.wanted.max(ticket);
        if let Some(w) = self.sync_waker.take() {
            w.wake();
        }
    }

    /// True if an acknowledgement or a mesh message waits for a sync.
    pub(crate) fn sync_wanted(&self) -> bool {
        self.wanted > self.synced
    }
}

impl Shard {
    /// True if session entries of this expiry are logged.
    pub(crate) fn is_durable(&self, expiry: Option<Duration>) -> bool {
        self.store.is_some() && expiry != Some(Duration::ZERO)
    }

    /// Appends a record built by `f`; on a full log, says so to every shard
    /// (QoS 1/2 publishes that need this log are refused until it has room).
    fn append(&mut self, kind: u8, f: impl FnOnce(&mut W)) -> Option<u64> {
        let store = self.store.as_mut()?;
        store.w.0.clear();
        f(&mut store.w);
        match store.log.append(kind, &store.w.0) {
            Ok(t) => {
                // A load first: a swap is a locked write to a line every
                // shard reads, and this runs for every record.
                let full = &self.shared.log_full[self.id];
                if full.load(Ordering::Relaxed) && full.swap(false, Ordering::Relaxed) {
                    self.shared.logs_full.fetch_sub(1, Ordering::Relaxed);
                }
                Some(t)
            }
            Err(e) => {
                self.metrics.log_append_errors += 1;
                if matches!(e, AppendError::Full(_))
                    && !self.shared.log_full[self.id].swap(true, Ordering::Relaxed)
                {
                    self.shared.logs_full.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(held) = self.log_limits.log_errors.allow(Instant::now()) {
                    tracing::error!(shard = self.id, error = %e, held_back = held, "log append failed");
                }
                None
            }
        }
    }

    /// The log's ticket now (what an acknowledgement must wait for under
    /// `--sync always`), 0 when acknowledgements need not wait.
    pub(crate) fn ack_ticket(&self) -> u64 {
        match &self.store {
            Some(s) if s.sync == SyncMode::Always && s.log.written() > s.synced => s.log.written(),
            _ => 0,
        }
    }

    /// Gives session `key` a log id if it is durable and has none yet, and
    /// writes its state (created, reconnected, disconnected, will).
    pub(crate) fn log_session(&mut self, key: u32) {
        let Some(e) = self.sessions.get(key as usize).and_then(Option::as_deref) else {
            return;
        };
        if !self.is_durable(e.life.expiry) {
            if e.sid != 0 {
                let sid = e.sid;
                let filters: Vec<TopicFilter> = e.life.subscriptions.keys().cloned().collect();
                self.log_session_end(sid);
                if let Some(e) = self.entry(key) {
                    e.sid = 0;
                }
                // Publishes to it need no longer wait for this log.
                self.move_durable(&filters, false);
            }
            return;
        }
        let mut sid = e.sid;
        let fresh = sid == 0;
        if fresh {
            let store = self
                .store
                .as_mut()
                .expect("invariant: durable means a store");
            store.last_sid += 1;
            sid = store.last_sid;
            if let Some(e) = self.entry(key) {
                e.sid = sid;
            }
        }
        let Some(e) = self.sessions.get(key as usize).and_then(Option::as_deref) else {
            return;
        };
        // A session logged for the first time brings whatever subscriptions
        // it already has (none today: a session with expiry 0 ends at a
        // takeover rather than becoming persistent, see `Life::takeover`).
        let subs: Vec<(TopicFilter, SubOpts)> = if fresh {
            e.life
                .subscriptions
                .iter()
                .map(|(f, o)| (f.clone(), *o))
                .collect()
        } else {
            Vec::new()
        };
        let offline = if e.conn.is_some() { 0 } else { wall_ms() };
        let (client, version, expiry, will, user) = (
            e.life.client_id.clone(),
            e.life.version.level(),
            records::expiry_ms(e.life.expiry),
            e.life.will.clone(),
            e.life.username.clone(),
        );
        self.append(records::SESSION, |w| {
            w.u64(sid).str(&client).u8(version).u64(expiry).u64(offline);
            match &will {
                Some(will) => w.u8(1).will(will),
                None => w.u8(0),
            };
            // Last and optional, so records written before it still read.
            if let Some(u) = &user {
                w.u8(1).str(u);
            }
        });
        // (None today, as above; the durable table would hear of them
        // without a barrier for the CONNACK to wait for.)
        self.move_durable(subs.iter().map(|(f, _)| f), true);
        for (f, o) in subs {
            self.log_sub(sid, &f, Some(&o));
        }
    }

    pub(crate) fn log_session_end(&mut self, sid: u64) {
        if sid != 0 {
            self.append(records::SESSION_END, |w| {
                w.u64(sid);
            });
        }
    }

    pub(crate) fn log_sub(&mut self, sid: u64, filter: &TopicFilter, opts: Option<&SubOpts>) {
        if sid == 0 {
            return;
        }
        match opts {
            Some(o) => self.append(records::SUB, |w| {
                w.u64(sid).str(filter.as_str()).opts(o);
            }),
            None => self.append(records::UNSUB, |w| {
                w.u64(sid).str(filter.as_str());
            }),
        };
    }

    pub(crate) fn log_rel(&mut self, sid: u64, packet_id: u16, add: bool) {
        if sid != 0 {
            self.append(records::REL, |w| {
                w.u64(sid).u16(packet_id).u8(u8::from(add));
            });
        }
    }

    /// Logs what happened to session `key`'s logged deliveries.
    pub(crate) fn log_journal(&mut self, key: u32) {
        let Some(e) = self.entry(key) else { return };
        if e.session.journal.is_empty() {
            return;
        }
        let sid = e.sid;
        let journal = std::mem::take(&mut e.session.journal);
        for j in &journal {
            match *j {
                Journal::Sent { stored, packet_id } => self.append(records::SENT, |w| {
                    w.u64(sid).u64(stored).u16(packet_id);
                }),
                Journal::Received { stored } => self.append(records::RECEIVED, |w| {
                    w.u64(sid).u64(stored);
                }),
                Journal::Done { stored } => self.append(records::DONE, |w| {
                    w.u64(sid).u64(stored);
                }),
            };
        }
        if let Some(e) = self.entry(key) {
            let mut j = journal;
            j.clear();
            e.session.journal = j;
        }
    }

    /// Logs `msg` once for the QoS 1/2 deliveries of `ds` that go to
    /// durable sessions and marks them stored. False if the log refused it.
    pub(crate) fn log_message(&mut self, msg: &Arc<Message>, ds: &mut [(u32, Delivery)]) -> bool {
        if self.store.is_none() || msg.qos == crate::protocol::QoS::AtMostOnce {
            return true;
        }
        // (sid, index in ds) of the logged deliveries; a kept buffer.
        let mut refs = std::mem::take(&mut self.store.as_mut().expect("checked").refs);
        refs.clear();
        for (i, (key, d)) in ds.iter().enumerate() {
            if d.qos == crate::protocol::QoS::AtMostOnce {
                continue;
            }
            if let Some(e) = self.sessions.get(*key as usize).and_then(Option::as_deref) {
                if e.sid != 0 {
                    refs.push((e.sid, i));
                }
            }
        }
        let mut ok = true;
        if !refs.is_empty() {
            let store = self.store.as_mut().expect("checked");
            store.last_msg += 1;
            let id = store.last_msg;
            let expires = match msg.expires_at {
                None => 0,
                at => wall_of(at, Instant::now(), wall_ms()),
            };
            ok = self
                .append(records::MSG, |w| {
                    w.message(id, msg, expires).u32(refs.len() as u32);
                    for &(sid, i) in &refs {
                        let d = &ds[i].1;
                        w.reference(sid, d.qos, d.retain, &d.subscription_ids);
                    }
                })
                .is_some();
            if ok {
                self.metrics.log_messages += 1;
                let rec = self.store.as_ref().map(|s| s.log.last_record());
                for &(_, i) in &refs {
                    ds[i].1.stored = Some(id);
                    ds[i].1.rec = rec.clone();
                }
            } else {
                self.metrics.log_refused += 1;
                self.log_failed = true;
            }
        }
        if let Some(st) = self.store.as_mut() {
            st.refs = refs;
        }
        ok
    }

    /// Logs a retained message (or its removal) if this shard owns its topic.
    pub(crate) fn log_retained(&mut self, topic: &TopicName, msg: Option<&Arc<Message>>) {
        // `$SYS` is the broker's own, published again every interval.
        if self.store.is_none()
            || topic.is_broker_sys()
            || owner_of(topic.as_str(), self.nr_shards) != self.id
        {
            return;
        }
        let now = Instant::now();
        let wall = wall_ms();
        self.append(records::RETAIN, |w| {
            w.str(topic.as_str());
            match msg {
                None => {
                    w.u8(0);
                }
                Some(m) => {
                    w.u8(1)
                        .str(&m.publisher)
                        .u64(wall_of(m.expires_at, now, wall))
                        .publish(m);
                }
            }
        });
    }

    /// Once a second while this shard's log is full: has space come back?
    pub(crate) fn retry_log_space(&mut self) {
        let Some(st) = self.store.as_mut() else {
            return;
        };
        if st.log.is_full()
            && st.log.retry_space()
            && self.shared.log_full[self.id].swap(false, Ordering::Relaxed)
        {
            self.shared.logs_full.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// True if a QoS 1/2 message to `topic` would need a log that is full.
    pub(crate) fn log_refuses(&self, topic: &TopicName) -> bool {
        if self.shared.logs_full.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut full = false;
        self.interest.match_topic(topic, |&s| {
            full |= self.shared.log_full[usize::from(s)].load(Ordering::Relaxed);
        });
        full
    }

    /// Writes a checkpoint when the log has grown to four times the live
    /// state (and past four segments): recovery then reads at most about
    /// five times what is live.
    pub(crate) fn maybe_checkpoint(&mut self) {
        let Some(store) = &self.store else { return };
        let seg = self.config.segment_size as u64;
        if store.log.since_checkpoint() < (4 * store.live_bytes).max(4 * seg) {
            return;
        }
        let started = Instant::now();
        match self.checkpoint() {
            Ok(job) => {
                let store = self.store.as_mut().expect("checked");
                tracing::info!(
                    shard = self.id,
                    live_bytes = store.live_bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "log checkpoint written"
                );
                match &store.thread {
                    Some(t) => t.checkpoint(job),
                    None => {
                        if let Err(e) = job.run() {
                            tracing::error!(shard = self.id, error = %e, "log checkpoint job failed");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(shard = self.id, error = %e, "log checkpoint failed; will retry");
            }
        }
    }

    /// Appends every live record after a checkpoint mark; the job it
    /// returns makes that durable and deletes what it replaces.
    pub(crate) fn checkpoint(&mut self) -> std::io::Result<crate::storage::CheckpointJob> {
        let Some(store) = self.store.as_mut() else {
            return Err(std::io::Error::other("no log"));
        };
        store
            .log
            .begin_checkpoint()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let keys: Vec<u32> = (0..self.sessions.len() as u32)
            .filter(|&k| {
                self.sessions[k as usize]
                    .as_ref()
                    .is_some_and(|e| e.sid != 0)
            })
            .collect();
        // Every reference, in queue order per session. A flat vector sorted
        // once: a BTreeMap of a million entries made a checkpoint of 1 M
        // queued messages take 400-800 ms of its shard.
        let mut items: Vec<Item> = Vec::new();
        let mut sent = Vec::new();
        for &key in &keys {
            // Session records are built from the entry, as at connect.
            let sid = self.sessions[key as usize].as_ref().expect("filtered").sid;
            self.log_session(key);
            let e = self.sessions[key as usize].as_ref().expect("filtered");
            let subs: Vec<(TopicFilter, SubOpts)> = e
                .life
                .subscriptions
                .iter()
                .map(|(f, o)| (f.clone(), *o))
                .collect();
            let rel: Vec<u16> = e.session.awaiting_rel.iter().copied().collect();
            e.session.for_each_delivery(|h, s| {
                let item = match h {
                    Held::Ram(d) => {
                        let Some(id) = d.stored else { return };
                        let r = Ref {
                            sid,
                            qos: d.qos,
                            retain: d.retain,
                            ids: d.subscription_ids.clone(),
                        };
                        Item {
                            id,
                            source: Source::Ram(d.msg.clone()),
                            r,
                        }
                    }
                    Held::Log(l) => {
                        let Some(id) = records::id_of_record(l.rec.body()) else {
                            return;
                        };
                        let r = Ref {
                            sid,
                            qos: l.qos,
                            retain: l.retain,
                            ids: l.subscription_ids(),
                        };
                        Item {
                            id,
                            source: Source::Log(l.rec.clone()),
                            r,
                        }
                    }
                };
                if let Some((pid, received)) = s {
                    sent.push((sid, item.id, pid, received));
                }
                items.push(item);
            });
            for (f, o) in subs {
                self.log_sub(sid, &f, Some(&o));
            }
            for pid in rel {
                self.log_rel(sid, pid, true);
            }
        }
        // Stable: a message's references stay in session order. Queues are in
        // id order, so this mostly walks sorted runs.
        items.sort_by_key(|i| i.id);
        let now = Instant::now();
        let wall = wall_ms();
        // New records by id, ascending.
        let mut moved: Vec<(u64, crate::storage::RecordRef)> = Vec::new();
        for group in items.chunk_by(|a, b| a.id == b.id) {
            let id = group[0].id;
            let ok = self.append(records::MSG, |w| {
                match &group[0].source {
                    Source::Ram(msg) => {
                        let expires = wall_of(msg.expires_at, now, wall);
                        w.message(id, msg, expires);
                    }
                    // The message part of the record as it was written.
                    Source::Log(rec) => {
                        let body = rec.body();
                        let n = records::message_prefix_len(body).unwrap_or(0);
                        w.0.extend_from_slice(&body[..n]);
                    }
                }
                w.u32(group.len() as u32);
                for Item { r, .. } in group {
                    w.reference(r.sid, r.qos, r.retain, &r.ids);
                }
            });
            if ok.is_some() {
                if let Some(st) = &self.store {
                    moved.push((id, st.log.last_record()));
                }
            }
        }
        drop(items);
        // Queued deliveries now read from the checkpoint, so the segments
        // before it are unmapped once the job deletes them. Each queue asks
        // in id order, so a cursor answers most lookups without a search.
        for &key in &keys {
            if let Some(e) = self.sessions[key as usize].as_mut() {
                let mut at = 0;
                e.session.relocate(|id| {
                    if moved.get(at).is_none_or(|m| m.0 != id) {
                        at = moved.binary_search_by_key(&id, |m| m.0).ok()?;
                    }
                    let r = moved[at].1.clone();
                    at += 1;
                    Some(r)
                });
            }
        }
        for (sid, id, pid, received) in sent {
            self.append(records::SENT, |w| {
                w.u64(sid).u64(id).u16(pid);
            });
            if received {
                self.append(records::RECEIVED, |w| {
                    w.u64(sid).u64(id);
                });
            }
        }
        let retained: Vec<Arc<Message>> = self.retained.values().cloned().collect();
        for m in retained {
            self.log_retained(&m.topic, Some(&m));
        }
        let store = self.store.as_mut().expect("checked");
        store.live_bytes = store.log.since_checkpoint();
        store.log.end_checkpoint()
    }

    /// Rebuilds this shard's sessions, subscriptions and queues from `rec`,
    /// and every shard's retained messages from `retained`. Sessions that
    /// were online when the broker stopped count as disconnected now.
    pub(crate) fn restore(
        &mut self,
        rec: Recovered,
        retained: &HashMap<String, Arc<Message>>,
        now: Instant,
    ) {
        let wall = wall_ms();
        for m in retained.values() {
            self.retained.insert(&m.topic, m.clone());
        }
        let limits = self.limits();
        for (sid, s) in rec.sessions {
            // Time spent down counts against the expiry and the will delay.
            let offline = (s.offline_since != 0)
                .then(|| Duration::from_millis(wall.saturating_sub(s.offline_since)));
            let mut life = Life::new(s.client_id, s.version, s.expiry);
            life.will = s.will.map(Box::new);
            life.username = s.username;
            let mut fx = Vec::new();
            life.recover(self.next_generation(), offline, now, &mut fx);
            // A will due already (of a session that expired while the broker
            // was down, or whose delay ran out) goes once every shard has its
            // interest back.
            let mut rest = Vec::with_capacity(fx.len());
            let mut will_went = false;
            for f in fx {
                match f {
                    Effect::PublishWill(w) => {
                        self.overdue_wills.push((life.client_id.clone(), *w));
                        will_went = true;
                    }
                    f => rest.push(f),
                }
            }
            if rest.contains(&Effect::End) {
                // Gone before any client can resume it.
                self.log_session_end(sid);
                continue;
            }
            let mut session = Session::new(limits, self.config.max_inflight);
            session.restore_backlog(s.queue);
            session.restarted(now);
            session.awaiting_rel = s.awaiting_rel;
            let grants = self.grants_for(&life);
            let key = self.alloc_session(SessionEntry::new(life, session, sid));
            // Before its subscriptions, whose marks name these grants.
            self.set_grants(key, grants);
            for (filter, opts) in s.subs {
                if super::shared::is_shared(&filter) {
                    if let Some(e) = self.entry(key) {
                        e.life.subscriptions.insert(filter.clone(), opts);
                    }
                    self.join_shared(&filter, key, opts);
                    continue;
                }
                if self
                    .subs
                    .insert(
                        &filter,
                        super::SubEntry {
                            session: key,
                            opts,
                            acl_free_at: self.acl_free_at(key, filter.as_str()),
                        },
                    )
                    .is_ok()
                {
                    self.metrics.subscriptions += 1;
                    self.hold_filter(&filter, true);
                    if let Some(e) = self.entry(key) {
                        e.life.subscriptions.insert(filter, opts);
                    }
                }
            }
            // The log must hear the will is gone.
            if will_went && !rest.contains(&Effect::Persist) {
                rest.push(Effect::Persist);
            }
            self.apply(key, rest, now);
        }
    }

    /// Publishes the wills of sessions that expired while the broker was down.
    pub(crate) fn publish_overdue_wills(&mut self, now: Instant) {
        for (client, will) in std::mem::take(&mut self.overdue_wills) {
            self.publish_will(&client, will, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MqttStr, Packet, PublishProperties, QoS};
    use crate::session::Limits;
    use crate::storage::{LogOptions, RecoveryMode};

    /// A session reading its logged messages back.
    const LIMITS: Limits = Limits {
        max_queued_messages: 10,
        max_queued_bytes: 1 << 20,
        queue_qos0: false,
        decode: Some(DECODE),
        inflight_ttl: None,
    };

    /// An empty log of 1 MiB segments in a temporary directory.
    fn temp_log() -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            segment_size: 1 << 20,
            recovery: RecoveryMode::Strict,
        };
        let (log, _) = Log::open(dir.path(), opts, |_, _, _| {}).unwrap();
        (dir, log)
    }

    /// A queued delivery of a logged message waits as a reference into the
    /// map (a few dozen bytes, whatever the payload) and goes out as the
    /// message it was, read back from the log.
    #[test]
    fn a_logged_delivery_waits_as_a_reference_and_is_read_back() {
        let (_dir, mut log) = temp_log();
        let msg = Arc::new(Message {
            topic: TopicName::new(MqttStr::from_static("a/b")).unwrap(),
            payload: bytes::Bytes::from(vec![9u8; 4000]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties {
                content_type: Some(MqttStr::from_static("text/plain")),
                ..Default::default()
            },
            publisher: Arc::from("p"),
            expires_at: None,
            received_at: std::time::Instant::now(),
        });
        let mut w = W::default();
        w.message(7, &msg, 0).u32(0);
        log.append(records::MSG, &w.0).unwrap();
        let mut s = Session::new(LIMITS, 10);
        let d = Delivery {
            msg: msg.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![3],
            stored: Some(7),
            rec: Some(log.last_record()),
        };
        let now = Instant::now();
        let mut out = Vec::new();
        // Offline: queued.
        assert_eq!(s.deliver(d, false, now, &mut out), None);
        assert_eq!(s.pending_len(), 1);
        let mut held = 0;
        s.for_each_delivery(|h, _| {
            assert!(matches!(h, Held::Log(_)), "kept as a reference");
            held += 1;
        });
        assert_eq!(held, 1);
        // The queue no longer holds the message: only this test does.
        assert_eq!(Arc::strong_count(&msg), 1);
        s.resume(now, &mut out);
        let Some(Packet::Publish(p)) = out.pop() else {
            panic!("sent: {out:?}")
        };
        assert_eq!(p.payload, msg.payload);
        assert_eq!(p.topic.as_str(), "a/b");
        let props = p.properties.into_inner();
        assert_eq!(
            props.content_type.as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
        assert_eq!(props.subscription_identifiers, vec![3]);
    }

    /// Recovery rebuilds a session's backlog in id order whatever order its
    /// records come in: a replayed checkpoint's second copy replaces the
    /// first, one below the highest id is inserted in place, an ended one
    /// goes, and one sent at QoS 2 resumes in flight with its packet id.
    #[test]
    fn a_recovered_backlog_keeps_id_order_and_qos2_progress() {
        let (_dir, mut log) = temp_log();
        let mut recs = Vec::new();
        for id in 1..=5u64 {
            let msg = Message {
                topic: TopicName::new(MqttStr::from_static("t")).unwrap(),
                payload: bytes::Bytes::from(id.to_string()),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: PublishProperties::default(),
                publisher: Arc::from("p"),
                expires_at: None,
                received_at: std::time::Instant::now(),
            };
            let mut w = W::default();
            w.message(id, &msg, 0).u32(0);
            log.append(records::MSG, &w.0).unwrap();
            recs.push(log.last_record());
        }
        let mut b = crate::session::Backlog::new(DECODE);
        for id in [1u64, 2, 3, 5, 4, 3] {
            let q = if id == 5 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            // Two subscription ids do not fit a reference: 4 is kept in RAM.
            let ids: &[u32] = if id == 4 { &[6, 9] } else { &[] };
            assert!(b.queue(id, recs[id as usize - 1].clone(), q, false, ids));
        }
        assert_eq!(b.len(), 5, "the second 3 replaced the first");
        assert_eq!(b.out_of_order, 1);
        b.done(2);
        b.sent(5, 77);
        b.received(5);
        b.sent(9, 1);
        let mut s = Session::new(LIMITS, 10);
        s.restore_backlog(b);
        assert_eq!((s.inflight_len(), s.pending_len()), (1, 3));
        let mut out = Vec::new();
        s.resume(Instant::now(), &mut out);
        let got: Vec<String> = out
            .iter()
            .map(|p| match p {
                Packet::PubRel(a) => format!("rel {}", a.packet_id.get()),
                Packet::Publish(p) => String::from_utf8_lossy(&p.payload).into_owned(),
                p => format!("{p:?}"),
            })
            .collect();
        assert_eq!(got, ["rel 77", "1", "3", "4"]);
        let Some(Packet::Publish(four)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(
            four.properties.subscription_identifiers,
            [6, 9],
            "read back with both ids"
        );
    }
}
