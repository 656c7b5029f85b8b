//! Replaying a shard's records into the state they describe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{LastWill, ProtocolVersion, QoS};
use crate::session::{Backlog, Message};
use crate::storage::RecordRef;

use super::DECODE;
use crate::topic::TopicFilter;

use super::super::SubOpts;
use super::records::{self as rec, R};

/// One session recovered from the log.
#[derive(Debug)]
pub(crate) struct RecSession {
    pub client_id: Arc<str>,
    pub version: ProtocolVersion,
    pub expiry: Option<Duration>,
    /// When its connection ended (wall ms), 0 if it was online when the
    /// broker stopped.
    pub offline_since: u64,
    pub will: Option<LastWill>,
    pub username: Option<Arc<str>>,
    pub subs: HashMap<TopicFilter, SubOpts>,
    /// Its deliveries, by stored message id: the order they were queued in.
    pub queue: Backlog,
    pub awaiting_rel: HashSet<u16>,
}

/// What a shard's log holds.
#[derive(Debug, Default)]
pub struct Recovered {
    pub(crate) sessions: BTreeMap<u64, RecSession>,
    pub(crate) retained: HashMap<String, Arc<Message>>,
    pub(crate) last_sid: u64,
    pub(crate) last_msg: u64,
    /// Records that could not be read (CRC-valid, so written by another
    /// version or a bug): skipped and counted.
    pub bad_records: u64,
    /// A kept buffer for a reference's subscription ids.
    ids: Vec<u32>,
}

impl Recovered {
    /// Sessions recovered.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Queued deliveries recovered, all sessions.
    pub fn queued(&self) -> usize {
        self.sessions.values().map(|s| s.queue.len()).sum()
    }

    /// Retained messages recovered.
    pub fn retained(&self) -> usize {
        self.retained.len()
    }

    /// Applies one record; `now`/`wall_now` turn stored times into instants.
    pub(crate) fn apply(
        &mut self,
        kind: u8,
        body: &[u8],
        rec: RecordRef,
        now: Instant,
        wall_now: u64,
    ) {
        if self.try_apply(kind, body, rec, now, wall_now).is_none() {
            self.bad_records += 1;
            tracing::warn!(kind, len = body.len(), "log: unreadable record skipped");
        }
    }

    fn try_apply(
        &mut self,
        kind: u8,
        body: &[u8],
        record: RecordRef,
        now: Instant,
        wall_now: u64,
    ) -> Option<()> {
        let mut r = R(body);
        match kind {
            rec::SESSION => {
                let sid = r.u64()?;
                let client_id: Arc<str> = r.str()?.into();
                let version = rec::version_of(r.u8()?)?;
                let expiry = rec::expiry_of(r.u64()?);
                let offline_since = r.u64()?;
                let will = match r.u8()? {
                    0 => None,
                    _ => Some(r.will()?),
                };
                let username: Option<Arc<str>> = match r.u8() {
                    Some(1) => Some(r.str()?.into()),
                    _ => None,
                };
                self.last_sid = self.last_sid.max(sid);
                let s = self.sessions.entry(sid).or_insert_with(|| RecSession {
                    client_id: client_id.clone(),
                    version,
                    expiry,
                    offline_since,
                    will: None,
                    username: None,
                    subs: HashMap::new(),
                    queue: Backlog::new(DECODE),
                    awaiting_rel: HashSet::new(),
                });
                s.client_id = client_id;
                s.version = version;
                s.expiry = expiry;
                s.offline_since = offline_since;
                s.will = will;
                s.username = username;
            }
            rec::SESSION_END => {
                self.sessions.remove(&r.u64()?);
            }
            rec::SUB => {
                let sid = r.u64()?;
                let filter = r.filter()?;
                let opts = r.opts()?;
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.subs.insert(filter, opts);
                }
            }
            rec::UNSUB => {
                let sid = r.u64()?;
                let filter = r.filter()?;
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.subs.remove(&filter);
                }
            }
            rec::MSG => {
                // Only what the index needs: the message stays in the log.
                let id = r.u64()?;
                let _publisher = r.bytes()?;
                let _expires = r.u64()?;
                let _frame = r.bytes()?;
                self.last_msg = self.last_msg.max(id);
                let refs = r.u32()?;
                let mut ids = std::mem::take(&mut self.ids);
                for _ in 0..refs {
                    let sid = r.u64()?;
                    let qos = QoS::from_u8(r.u8()?)?;
                    let retain = r.u8()? != 0;
                    let n = r.u16()?;
                    ids.clear();
                    for _ in 0..n {
                        ids.push(r.u32()?);
                    }
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        if !s.queue.queue(id, record.clone(), qos, retain, &ids) {
                            self.bad_records += 1;
                        }
                    }
                }
                self.ids = ids;
            }
            rec::SENT => {
                let (sid, msg, pid) = (r.u64()?, r.u64()?, r.u16()?);
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.queue.sent(msg, pid);
                }
            }
            rec::RECEIVED => {
                let (sid, msg) = (r.u64()?, r.u64()?);
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.queue.received(msg);
                }
            }
            rec::DONE => {
                let (sid, msg) = (r.u64()?, r.u64()?);
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.queue.done(msg);
                }
            }
            rec::REL => {
                let (sid, pid, add) = (r.u64()?, r.u16()?, r.u8()? != 0);
                if let Some(s) = self.sessions.get_mut(&sid) {
                    if add {
                        s.awaiting_rel.insert(pid);
                    } else {
                        s.awaiting_rel.remove(&pid);
                    }
                }
            }
            rec::RETAIN => {
                let topic = r.str()?.to_string();
                if r.u8()? == 0 {
                    self.retained.remove(&topic);
                } else {
                    let publisher: Arc<str> = r.str()?.into();
                    let expires = r.u64()?;
                    let m = r.message(publisher, rec::instant_of(expires, now, wall_now))?;
                    self.retained.insert(topic, Arc::new(m));
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// Keeps one session per client id (the newest), as a clean start that
    /// ended the old one would have.
    pub(crate) fn dedupe_clients(&mut self) {
        let mut newest: HashMap<Arc<str>, u64> = HashMap::new();
        let mut stale = Vec::new();
        for (&sid, s) in &self.sessions {
            if let Some(old) = newest.insert(s.client_id.clone(), sid) {
                stale.push(old);
            }
        }
        for sid in stale {
            self.sessions.remove(&sid);
        }
    }
}
