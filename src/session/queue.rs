//! The outbound half of a session: inflight window, pending queue, packet ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{Ack, Packet, PacketId, PublishProperties, QoS, ReasonCode};

use super::pending::{Pending, Queued};
use super::Message;
use crate::storage::RecordRef;

/// How a session reads its logged messages back from their records: the
/// record format is the shard's, not the session's.
#[derive(Debug, Clone, Copy)]
pub struct Decode {
    /// The message, with its expiry as an `Instant`.
    pub message: fn(&[u8]) -> Option<Message>,
    /// The message's log id.
    pub id: fn(&[u8]) -> Option<u64>,
}

/// Pending messages of an online session kept in RAM before further ones
/// wait in the log as references.
const RAM_BACKLOG: usize = 1024;

/// Queue bounds and policy for one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages in the pending queue.
    pub max_queued_messages: usize,
    /// Most bytes the pending queue holds ([`Delivery::held_bytes`]).
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages while offline.
    pub queue_qos0: bool,
    /// Reads a logged message back from its record. With it, a logged
    /// delivery waits in the pending queue as a [`Logged`] reference (24
    /// bytes of RAM) instead of holding its message.
    pub decode: Option<Decode>,
    /// `--inflight-ttl`: a QoS 1/2 message unresolved this long, queued or
    /// in flight, is dropped by [`Session::expire_unresolved`].
    pub inflight_ttl: Option<std::time::Duration>,
}

/// One message on its way to this session's client.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// QoS granted for this delivery (min of published and subscribed).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Vec<u32>,
    /// The id of the message's record in this shard's log, when it was
    /// logged for this (persistent) session: what happens to it is then
    /// reported in [`Session::journal`].
    pub stored: Option<u64>,
    /// Where that record is, while it is (see [`Limits::decode`]).
    pub rec: Option<RecordRef>,
}

/// A queued delivery whose message is only in the log: read back when it
/// is sent. Everything else it needs (its log id, its expiry) is read from
/// the record too, so that millions of them fit in a few dozen MB.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The message's record.
    pub rec: RecordRef,
    /// The subscription identifier (MQTT 5); a delivery with more than one
    /// keeps its message in RAM instead.
    pub subscription_id: Option<NonZeroU32>,
    /// QoS granted for this delivery.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
}

impl Logged {
    /// A reference for delivery `d` of a logged message, if it fits one.
    pub fn of(d: &Delivery) -> Option<Logged> {
        d.stored?;
        Logged::fitting(d.rec.clone()?, d.qos, d.retain, &d.subscription_ids)
    }

    /// A reference to `rec`, if the delivery's subscription ids fit one:
    /// none or one; more keep the message in RAM.
    fn fitting(rec: RecordRef, qos: QoS, retain: bool, ids: &[u32]) -> Option<Logged> {
        let subscription_id = match ids {
            [] => None,
            [id] => Some(NonZeroU32::new(*id)?),
            _ => return None,
        };
        Some(Logged {
            rec,
            subscription_id,
            qos,
            retain,
        })
    }

    /// Its subscription identifiers, as a delivery carries them.
    pub fn subscription_ids(&self) -> Vec<u32> {
        self.subscription_id
            .map(NonZeroU32::get)
            .into_iter()
            .collect()
    }
}

/// What the pending queue holds.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Boxed: the queue's slots are the size of the larger variant, and a
    /// logged backlog of millions should not pay for the rarer one.
    Ram(Box<Delivery>),
    Log(Logged),
}

impl Queued for Entry {
    fn qos(&self) -> QoS {
        match self {
            Entry::Ram(d) => d.qos,
            Entry::Log(l) => l.qos,
        }
    }
    fn held_bytes(&self) -> usize {
        match self {
            Entry::Ram(d) => d.held_bytes(),
            Entry::Log(_) => std::mem::size_of::<Option<Entry>>(),
        }
    }
}

impl Entry {
    /// The log id of its message, if it was logged.
    fn stored(&self, decode: Option<Decode>) -> Option<u64> {
        match self {
            Entry::Ram(d) => d.stored,
            Entry::Log(l) => (decode?.id)(l.rec.body()),
        }
    }

    /// The size it will take in the outbox, about.
    fn send_bytes(&self) -> usize {
        match self {
            Entry::Ram(d) => d.held_bytes(),
            Entry::Log(l) => l.rec.body().len() + 64,
        }
    }
}

/// One queued delivery as a checkpoint sees it.
#[derive(Debug)]
pub enum Held<'a> {
    /// The message is in RAM.
    Ram(&'a Delivery),
    /// The message is only in the log.
    Log(&'a Logged),
}

impl Delivery {
    /// Memory this delivery accounts for in a queue: the message (counted
    /// whole for each session that queues it, as each could be its last
    /// holder) and the delivery itself.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Delivery>()
            + self.subscription_ids.len() * std::mem::size_of::<u32>()
            + self.msg.held_bytes()
    }
}

/// A session's deliveries as recovery rebuilds them from the log, in log
/// id order: the pending queue it will become, plus the QoS 2 progress of
/// those that had been sent. RAM per delivery is the pending queue's, so a
/// recovered backlog of millions costs what it will cost once restored.
#[derive(Debug)]
pub struct Backlog {
    decode: Decode,
    pending: Pending<Entry>,
    /// Packet id and whether PUBREC came, by log id.
    sent: HashMap<u64, (u16, bool)>,
    /// The highest id queued: the next one usually comes above it.
    last: u64,
    /// Records that arrived below the highest id (a checkpoint replayed on
    /// its old log writes its messages again): inserted, not appended.
    pub out_of_order: u64,
}

impl Backlog {
    /// An empty backlog reading its records with `decode`.
    pub fn new(decode: Decode) -> Backlog {
        Backlog {
            decode,
            pending: Pending::default(),
            sent: HashMap::new(),
            last: 0,
            out_of_order: 0,
        }
    }

    /// Deliveries held.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if it holds none.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn find(&self, id: u64) -> Option<usize> {
        let decode = Some(self.decode);
        // Deliveries end mostly in order: the front first, without a search.
        if self.pending.front()?.stored(decode) == Some(id) {
            return Some(0);
        }
        self.pending.find(id, |e| e.stored(decode)).ok()
    }

    /// Message `id`, in record `rec`, was queued for this session; a
    /// second record of the same id replaces the first. False if a
    /// delivery that must keep its message in RAM could not read it.
    pub fn queue(&mut self, id: u64, rec: RecordRef, qos: QoS, retain: bool, ids: &[u32]) -> bool {
        let e = match Logged::fitting(rec.clone(), qos, retain, ids) {
            Some(l) => Entry::Log(l),
            None => {
                let Some(m) = (self.decode.message)(rec.body()) else {
                    return false;
                };
                Entry::Ram(Box::new(Delivery {
                    msg: Arc::new(m),
                    qos,
                    retain,
                    subscription_ids: ids.to_vec(),
                    stored: Some(id),
                    rec: Some(rec),
                }))
            }
        };
        if id > self.last || self.pending.is_empty() {
            self.last = self.last.max(id);
            self.pending.push_back(e);
            return true;
        }
        let decode = self.decode;
        match self.pending.find(id, |e| e.stored(Some(decode))) {
            Ok(at) => self.pending.replace(at, e),
            Err(at) if at >= self.pending.slots_len() => self.pending.push_back(e),
            Err(at) => {
                self.out_of_order += 1;
                self.pending.insert(at, e);
            }
        }
        true
    }

    /// Message `id` was sent with `packet_id` (QoS 2).
    pub fn sent(&mut self, id: u64, packet_id: u16) {
        if self.find(id).is_some() {
            self.sent.insert(id, (packet_id, false));
        }
    }

    /// PUBREC came for message `id`.
    pub fn received(&mut self, id: u64) {
        if let Some(s) = self.sent.get_mut(&id) {
            s.1 = true;
        }
    }

    /// Empties the backlog, oldest first (re-homing moves every delivery
    /// to another shard's log, with new ids).
    pub fn into_entries(mut self) -> impl Iterator<Item = BacklogEntry> {
        std::iter::from_fn(move || loop {
            let e = self.pending.pop_front()?;
            let (ids, rec, qos, retain) = match e {
                Entry::Log(l) => (l.subscription_ids(), l.rec, l.qos, l.retain),
                Entry::Ram(d) => match d.rec {
                    Some(rec) => (d.subscription_ids, rec, d.qos, d.retain),
                    None => continue,
                },
            };
            let Some(id) = (self.decode.id)(rec.body()) else {
                continue;
            };
            return Some(BacklogEntry {
                id,
                rec,
                qos,
                retain,
                ids,
                sent: self.sent.get(&id).copied(),
            });
        })
    }

    /// The delivery of message `id` ended.
    pub fn done(&mut self, id: u64) {
        if let Some(at) = self.find(id) {
            self.pending.remove(at);
        }
        self.sent.remove(&id);
    }
}

/// One delivery of a [`Backlog`], as its records describe it.
#[derive(Debug)]
pub struct BacklogEntry {
    /// The message's log id.
    pub id: u64,
    /// The message's record.
    pub rec: RecordRef,
    /// QoS granted for this delivery.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers (MQTT 5).
    pub ids: Vec<u32>,
    /// Packet id and whether PUBREC came, if it was sent at QoS 2.
    pub sent: Option<(u16, bool)>,
}

/// What happened to a logged delivery, for the shard to log in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// A QoS 2 delivery went out with this packet id: after a restart it
    /// must be resent with the same id, or the client could receive it twice.
    Sent {
        /// The message's log id.
        stored: u64,
        /// The packet id it went out with.
        packet_id: u16,
    },
    /// PUBREC arrived: after a restart only the PUBREL is resent.
    Received {
        /// The message's log id.
        stored: u64,
    },
    /// The delivery ended: acknowledged, refused, dropped or expired.
    Done {
        /// The message's log id.
        stored: u64,
    },
}

/// Why a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The pending queue was full.
    QueueFull,
    /// The message expired before it could be sent.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "named after the packet each stage waits for"
)]
enum Awaiting {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    PubComp,
}

#[derive(Debug)]
struct Inflight {
    id: PacketId,
    stage: Awaiting,
    delivery: Delivery,
    /// When it last went to the client (`None`: read back from the log and
    /// not sent on this connection yet).
    sent_at: Option<Instant>,
    /// Resends on a live connection so far (see [`Session::resend_due`]).
    resends: u16,
    /// When it was first sent (`None`: read back from the log), from which
    /// the inflight TTL counts once it left the queue.
    first_sent: Option<Instant>,
}

/// The outbound state of one MQTT session.
///
/// Invariant: `inflight.len() <= window`; messages leave `pending` only
/// from the front, so a publisher's messages keep their order.
#[derive(Debug)]
pub struct Session {
    limits: Limits,
    window: usize,
    inflight: VecDeque<Inflight>,
    /// Boxed: it keeps the session slot small (see the shard's size test).
    pending: Box<Pending<Entry>>,
    next_id: u16,
    /// Bytes the connection's outbox can still take: a drain of the pending
    /// queue stops there (see [`Session::set_room`]).
    room: usize,
    /// Set when a drain stopped for want of room.
    blocked: bool,
    /// The outbox was empty when the room was set.
    idle: bool,
    /// Inbound QoS 2 packet ids for which PUBREC was sent and PUBREL not yet
    /// received (read by checkpoints, set by recovery).
    pub(crate) awaiting_rel: HashSet<u16>,
    /// Messages dropped since the session began.
    pub dropped: u64,
    /// Of those, the ones whose Message Expiry Interval ran out.
    pub expired: u64,
    /// What happened to logged deliveries since the shard last took it.
    pub journal: Vec<Journal>,
}

impl Session {
    /// A new, empty session.
    pub fn new(limits: Limits, window: u16) -> Session {
        Session {
            limits,
            window: usize::from(window.max(1)),
            inflight: VecDeque::new(),
            pending: Box::default(),
            room: usize::MAX,
            blocked: false,
            idle: true,
            next_id: 0,
            awaiting_rel: HashSet::new(),
            dropped: 0,
            expired: 0,
            journal: Vec::new(),
        }
    }

    /// True while inbound QoS 2 `packet_id` waits for its PUBREL: a resent
    /// PUBLISH with it is acknowledged, not delivered again ([v5:MQTT-4.3.3-10]).
    pub fn awaits_rel(&self, packet_id: u16) -> bool {
        self.awaiting_rel.contains(&packet_id)
    }

    /// Inbound QoS 2 ids awaiting PUBREL.
    pub fn rel_pending(&self) -> usize {
        self.awaiting_rel.len()
    }

    /// Inbound QoS 2 `packet_id` was accepted and PUBREC is due: it now
    /// waits for PUBREL. True when it was new (then it must be logged).
    pub fn await_rel(&mut self, packet_id: u16) -> bool {
        self.awaiting_rel.insert(packet_id)
    }

    /// PUBREL for `packet_id` arrived, or its PUBREC refused it (after a
    /// PUBREC of 0x80 or more the id is new again, [v5:MQTT-4.3.3-9]). True
    /// when it was waiting (then its release must be logged).
    pub fn release_rel(&mut self, packet_id: u16) -> bool {
        self.awaiting_rel.remove(&packet_id)
    }

    /// Sets the inflight window (the smaller of the broker's and the client's
    /// Receive Maximum) for the current connection.
    pub fn set_window(&mut self, window: u16) {
        self.window = usize::from(window.max(1));
    }

    /// How many bytes the connection's outbox can take before a drain of
    /// the pending queue stops; the shard sets it from the backlog before
    /// each call that may drain, so that a queue of 100k retained or queued
    /// messages flows as the client reads instead of flooding the outbox.
    /// `idle` (the outbox is empty) lets one message larger than the room
    /// through, or it could never be sent.
    pub fn set_room(&mut self, bytes: usize, idle: bool) {
        self.room = bytes;
        self.idle = idle;
    }

    /// True (once) if a drain stopped for want of room: the shard drains
    /// again when the outbox has emptied.
    pub fn take_blocked(&mut self) -> bool {
        std::mem::take(&mut self.blocked)
    }

    /// Messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages waiting behind the window.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the messages waiting behind the window hold, as
    /// `max_queued_bytes` counts them.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes()
    }

    /// The pending queue is past half its bound, in messages or bytes: an
    /// online client's publishers should be slowed before it overflows.
    pub fn queue_high(&self) -> bool {
        self.pending.len() * 2 >= self.limits.max_queued_messages
            || self.pending.bytes() * 2 >= self.limits.max_queued_bytes
    }

    /// The pending queue is back under a quarter of its bound.
    pub fn queue_low(&self) -> bool {
        self.pending.len() * 4 <= self.limits.max_queued_messages
            && self.pending.bytes() * 4 <= self.limits.max_queued_bytes
    }

    /// Hands a message to the session. Online, it is sent now if nothing is
    /// queued before it and (QoS 1/2) the window has room; otherwise it is
    /// queued, keeping order (offline QoS 0 only with `queue_qos0`). Returns
    /// what was dropped to make room, if anything.
    pub fn deliver(
        &mut self,
        d: Delivery,
        online: bool,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Option<DropReason> {
        if self.drops_expired(&d, now) {
            return Some(DropReason::Expired);
        }
        if d.qos == QoS::AtMostOnce {
            if online && self.pending.is_empty() {
                out.push(self.publish(&d, None, false, now));
                return None;
            }
            // Online with a backlog, QoS 0 waits its turn so the session keeps
            // one order across QoS levels; offline it is queued only on request.
            if !online && !self.limits.queue_qos0 {
                return None;
            }
        }
        if online && self.pending.is_empty() && self.inflight.len() < self.window {
            self.send_new(d, now, out);
            return None;
        }
        self.enqueue_and_drain(d, online, now, out)
    }

    /// Hands a message to the session through its queue, never straight to
    /// the client: retained messages sent on SUBSCRIBE, which may be many,
    /// flow under the queue's bounds and the outbox's room.
    pub fn deliver_queued(
        &mut self,
        d: Delivery,
        online: bool,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Option<DropReason> {
        if self.drops_expired(&d, now) {
            return Some(DropReason::Expired);
        }
        self.enqueue_and_drain(d, online, now, out)
    }

    /// Counts `d` as dropped if it expired before it could be handed over.
    fn drops_expired(&mut self, d: &Delivery, now: Instant) -> bool {
        let expired = d.msg.is_expired(now);
        if expired {
            self.dropped += 1;
            self.expired += 1;
            self.done(d);
        }
        expired
    }

    fn enqueue_and_drain(
        &mut self,
        d: Delivery,
        online: bool,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Option<DropReason> {
        let dropped = self.enqueue(d, online, now);
        if online {
            self.drain(now, out);
        }
        dropped
    }

    fn enqueue(&mut self, d: Delivery, online: bool, now: Instant) -> Option<DropReason> {
        let mut dropped = None;
        let len = d.held_bytes();
        if len > self.limits.max_queued_bytes {
            self.dropped += 1;
            self.done(&d);
            return Some(DropReason::QueueFull);
        }
        while !self.pending.is_empty()
            && (self.pending.len() >= self.limits.max_queued_messages
                || self.pending.bytes() + len > self.limits.max_queued_bytes)
        {
            // QoS 0 goes first, then the oldest message: O(1) either way.
            if let Some(gone) = self.pending.drop_one() {
                self.done_stored(gone.stored(self.limits.decode));
            }
            self.dropped += 1;
            dropped = Some(DropReason::QueueFull);
        }
        // An online client's short backlog stays in RAM (it goes out
        // soon; reading it back would cost every message a decode); an
        // offline one's, or a long one, waits in the log.
        let e = if online && self.pending.len() < RAM_BACKLOG {
            Entry::Ram(Box::new(d))
        } else {
            self.entry_of(d)
        };
        self.pending.push_back(e);
        if let Some(ttl) = self.limits.inflight_ttl {
            self.pending.note_arrival(now, ttl / 16);
        }
        dropped
    }

    /// After a restart: what was read back from the log counts towards the
    /// inflight TTL from `now` (its queueing time is not logged), and what
    /// is in flight from when it is sent again.
    pub fn restarted(&mut self, now: Instant) {
        if self.limits.inflight_ttl.is_some() {
            self.pending.mark_unmarked(now);
        }
        for f in &mut self.inflight {
            f.first_sent.get_or_insert(now);
        }
    }

    /// `--inflight-ttl`: drops every QoS 1/2 message unresolved for the TTL,
    /// in flight (counted from its first send) or queued (from when it was
    /// queued, within 1/16 of the TTL); they are settled in the log and
    /// counted, and (`online`) the window refills. Returns how many went.
    pub fn expire_unresolved(
        &mut self,
        now: Instant,
        online: bool,
        out: &mut Vec<Packet>,
    ) -> usize {
        let Some(ttl) = self.limits.inflight_ttl else {
            return 0;
        };
        let mut n = 0;
        let mut i = 0;
        while i < self.inflight.len() {
            if self.inflight[i]
                .first_sent
                .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
            {
                if let Some(f) = self.inflight.remove(i) {
                    self.done(&f.delivery);
                    n += 1;
                }
            } else {
                i += 1;
            }
        }
        while let Some(e) = self.pending.pop_older_than(now, ttl, ttl / 16) {
            self.done_stored(e.stored(self.limits.decode));
            n += 1;
        }
        self.dropped += n as u64;
        if n > 0 && online {
            self.drain(now, out);
        }
        n
    }

    /// A delivery as the pending queue keeps it: a logged one as a
    /// reference to its record, when the session can read it back.
    fn entry_of(&self, d: Delivery) -> Entry {
        match self.limits.decode.and_then(|_| Logged::of(&d)) {
            Some(l) => Entry::Log(l),
            None => Entry::Ram(Box::new(d)),
        }
    }

    /// A pending entry as a delivery: a logged one read back from the log.
    /// `Err` holds the log id (if readable) of one whose record cannot be
    /// read, to settle it.
    fn delivery_of(&self, e: Entry) -> Result<Delivery, Option<u64>> {
        match e {
            Entry::Ram(d) => Ok(*d),
            Entry::Log(l) => {
                let decode = self.limits.decode.ok_or(None)?;
                let body = l.rec.body();
                let id = (decode.id)(body).ok_or(None)?;
                let msg = (decode.message)(body).ok_or(Some(id))?;
                Ok(Delivery {
                    msg: Arc::new(msg),
                    qos: l.qos,
                    retain: l.retain,
                    subscription_ids: l.subscription_ids(),
                    stored: Some(id),
                    rec: Some(l.rec),
                })
            }
        }
    }

    fn alloc_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id == 0 {
                self.next_id = 1;
            }
            let id = PacketId::new(self.next_id).expect("invariant: never zero");
            if !self.inflight.iter().any(|f| f.id == id) {
                return id;
            }
        }
    }

    fn send_new(&mut self, d: Delivery, now: Instant, out: &mut Vec<Packet>) {
        if d.qos == QoS::AtMostOnce {
            out.push(self.publish(&d, None, false, now));
            return;
        }
        let id = self.alloc_id();
        out.push(self.publish(&d, Some(id), false, now));
        let stage = if d.qos == QoS::AtLeastOnce {
            Awaiting::PubAck
        } else {
            if let Some(stored) = d.stored {
                self.journal.push(Journal::Sent {
                    stored,
                    packet_id: id.get(),
                });
            }
            Awaiting::PubRec
        };
        self.inflight.push_back(Inflight {
            id,
            stage,
            delivery: d,
            sent_at: Some(now),
            resends: 0,
            first_sent: Some(now),
        });
    }

    fn publish(&self, d: &Delivery, id: Option<PacketId>, dup: bool, now: Instant) -> Packet {
        let m = &d.msg;
        let mut properties = PublishProperties {
            subscription_identifiers: d.subscription_ids.clone(),
            ..m.properties.clone()
        };
        if let Some(at) = m.expires_at {
            // [MQTT-3.3.2-6] forward the remaining lifetime, not the original one.
            let left = at.saturating_duration_since(now).as_secs_f64().ceil() as u32;
            properties.message_expiry_interval = Some(left.max(1));
        }
        Packet::Publish(crate::protocol::Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: m.topic.as_mqtt_str().clone(),
            packet_id: id,
            properties: properties.into(),
            payload: m.payload.clone(),
        })
    }

    /// Fills the window from the pending queue, dropping expired messages.
    /// Returns how many expired.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<Packet>) -> usize {
        let mut expired = 0;
        // QoS 0 needs no window slot; QoS 1/2 waits for one. Every message
        // needs room in the outbox.
        while let Some(front) = self.pending.front() {
            if front.qos() != QoS::AtMostOnce && self.inflight.len() >= self.window {
                break;
            }
            let size = front.send_bytes();
            if size > self.room && !self.idle {
                self.blocked = true;
                break;
            }
            self.room = self.room.saturating_sub(size);
            self.idle = false;
            let Some(e) = self.pending.pop_front() else {
                break;
            };
            match self.delivery_of(e) {
                Ok(d) if d.msg.is_expired(now) => {
                    expired += 1;
                    self.dropped += 1;
                    self.expired += 1;
                    self.done(&d);
                }
                Ok(d) => self.send_new(d, now, out),
                Err(stored) => {
                    // Unreadable record (a bug or a bad disk): counted, and
                    // settled so that it does not come back forever.
                    self.dropped += 1;
                    self.done_stored(stored);
                }
            }
        }
        expired
    }

    fn take(&mut self, id: PacketId, stage: Awaiting) -> Option<Inflight> {
        let at = self
            .inflight
            .iter()
            .position(|f| f.id == id && f.stage == stage)?;
        let f = self.inflight.remove(at)?;
        self.done(&f.delivery);
        Some(f)
    }

    fn done(&mut self, d: &Delivery) {
        self.done_stored(d.stored);
    }

    fn done_stored(&mut self, stored: Option<u64>) {
        if let Some(stored) = stored {
            self.journal.push(Journal::Done { stored });
        }
    }

    /// PUBACK received: the QoS 1 delivery is done. Returns false for an
    /// unknown packet id (ignored, as the spec allows).
    pub fn on_puback(&mut self, id: PacketId, now: Instant, out: &mut Vec<Packet>) -> bool {
        let found = self.take(id, Awaiting::PubAck).is_some();
        if found {
            self.drain(now, out);
        }
        found
    }

    /// PUBREC received: answer PUBREL, or drop the message if the client
    /// refused it with an error code (MQTT 5: a PUBREC of 0x80 or more ends the
    /// delivery, [MQTT-4.4.0-2]).
    pub fn on_pubrec(
        &mut self,
        id: PacketId,
        reason: ReasonCode,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> bool {
        let Some(at) = self
            .inflight
            .iter()
            .position(|f| f.id == id && f.stage != Awaiting::PubAck)
        else {
            // Unknown id: MQTT 5 answers PUBREL with "Packet Identifier not found".
            let mut rel = Ack::new(id);
            rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            out.push(Packet::PubRel(rel));
            return false;
        };
        if reason.is_error() {
            if let Some(f) = self.inflight.remove(at) {
                self.done(&f.delivery);
            }
            self.drain(now, out);
            return true;
        }
        if let Some(f) = self.inflight.get_mut(at) {
            if f.stage == Awaiting::PubRec {
                if let Some(stored) = f.delivery.stored {
                    self.journal.push(Journal::Received { stored });
                }
            }
            f.stage = Awaiting::PubComp;
        }
        out.push(Packet::PubRel(Ack::new(id)));
        true
    }

    /// PUBCOMP received: the QoS 2 delivery is done.
    pub fn on_pubcomp(&mut self, id: PacketId, now: Instant, out: &mut Vec<Packet>) -> bool {
        let found = self.take(id, Awaiting::PubComp).is_some();
        if found {
            self.drain(now, out);
        }
        found
    }

    /// Forgets an inflight message as if it were acknowledged (a packet the
    /// client's Maximum Packet Size cannot take, [MQTT-3.1.2-25]).
    pub fn complete(&mut self, id: PacketId, now: Instant, out: &mut Vec<Packet>) {
        if let Some(at) = self.inflight.iter().position(|f| f.id == id) {
            if let Some(f) = self.inflight.remove(at) {
                self.done(&f.delivery);
            }
            self.dropped += 1;
            self.drain(now, out);
        }
    }

    /// Puts back a delivery recovered from the log: into the inflight window
    /// with its packet id if it had been sent (QoS 2; `received` once
    /// PUBREC had come), else at the back of the pending queue. Recovery
    /// restores in log order, which is the order they were queued in.
    pub fn restore(&mut self, d: Delivery, sent: Option<(u16, bool)>) {
        match sent.and_then(|(id, received)| Some((PacketId::new(id)?, received))) {
            Some((id, received)) => self.inflight.push_back(Inflight {
                id,
                stage: if received {
                    Awaiting::PubComp
                } else {
                    Awaiting::PubRec
                },
                delivery: d,
                sent_at: None,
                resends: 0,
                first_sent: None,
            }),
            None => {
                let e = self.entry_of(d);
                self.pending.push_back(e);
            }
        }
    }

    /// Takes the deliveries recovered from the log: those sent at QoS 2
    /// into the inflight window with their packet ids (read back now, to be
    /// resent), the rest as the pending queue, as they are.
    pub fn restore_backlog(&mut self, mut b: Backlog) {
        let mut sent: Vec<(u64, (u16, bool))> = b.sent.drain().collect();
        sent.sort_unstable();
        for (id, s) in sent {
            let Some(at) = b.find(id) else { continue };
            let Some(e) = b.pending.remove(at) else {
                continue;
            };
            match self.delivery_of(e) {
                Ok(d) => self.restore(d, Some(s)),
                Err(_) => {
                    self.dropped += 1;
                    self.done_stored(Some(id));
                }
            }
        }
        if self.pending.is_empty() {
            *self.pending = b.pending;
        } else {
            while let Some(e) = b.pending.pop_front() {
                self.pending.push_back(e);
            }
        }
    }

    /// Points logged deliveries at where a checkpoint rewrote their records
    /// (`moved(stored id)`), so that the segments before it can go.
    pub fn relocate(&mut self, mut moved: impl FnMut(u64) -> Option<RecordRef>) {
        let decode = self.limits.decode;
        self.pending.for_each_mut(|e| {
            if let Entry::Log(l) = e {
                if let Some(r) = decode
                    .and_then(|c| (c.id)(l.rec.body()))
                    .and_then(&mut moved)
                {
                    l.rec = r;
                }
            }
        });
        for f in &mut self.inflight {
            if let Some(r) = f.delivery.stored.and_then(&mut moved) {
                f.delivery.rec = Some(r);
            }
        }
    }

    /// Every delivery the session holds, oldest first, with its packet id
    /// and whether PUBREC came for those sent at QoS 2 (what a checkpoint
    /// writes).
    pub fn for_each_delivery(&self, mut f: impl FnMut(Held<'_>, Option<(u16, bool)>)) {
        for i in &self.inflight {
            let sent = (i.delivery.qos == QoS::ExactlyOnce)
                .then_some((i.id.get(), i.stage == Awaiting::PubComp));
            f(Held::Ram(&i.delivery), sent);
        }
        self.pending.for_each(|e| match e {
            Entry::Ram(d) => f(Held::Ram(d), None),
            Entry::Log(l) => f(Held::Log(l), None),
        });
    }

    /// A client reconnected to this session: resend every unacknowledged
    /// message in order, PUBLISH with DUP for those not yet received and
    /// PUBREL for those received ([MQTT-4.4.0-1]), then fill the window.
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Packet>) {
        for f in &self.inflight {
            out.push(self.resend(f, now));
        }
        for f in &mut self.inflight {
            f.sent_at = Some(now);
            f.resends = 0;
        }
        self.drain(now, out);
    }

    /// The packet that sends `f` again: PUBLISH with DUP until the client
    /// received it, PUBREL after.
    fn resend(&self, f: &Inflight, now: Instant) -> Packet {
        match f.stage {
            Awaiting::PubAck | Awaiting::PubRec => self.publish(&f.delivery, Some(f.id), true, now),
            Awaiting::PubComp => Packet::PubRel(Ack::new(f.id)),
        }
    }

    /// When the oldest inflight message went out, if any did.
    pub fn oldest_sent(&self) -> Option<Instant> {
        self.inflight.iter().filter_map(|f| f.sent_at).min()
    }

    /// Resends on a live connection (3.1 and 3.1.1 only: MQTT 5 forbids it,
    /// [v5:MQTT-4.4.0-1]) every inflight message unanswered for `every`,
    /// DUP set; one already resent `max` times is dropped instead (settled
    /// and counted), and the window refills. Returns how many were resent
    /// and how many dropped.
    pub fn resend_due(
        &mut self,
        now: Instant,
        every: std::time::Duration,
        max: u16,
        out: &mut Vec<Packet>,
    ) -> (usize, usize) {
        let (mut resent, mut dropped) = (0, 0);
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            if f.sent_at.is_none_or(|t| now < t + every) {
                i += 1;
                continue;
            }
            if f.resends >= max {
                if let Some(f) = self.inflight.remove(i) {
                    self.done(&f.delivery);
                    self.dropped += 1;
                    dropped += 1;
                }
                continue;
            }
            out.push(self.resend(f, now));
            let f = &mut self.inflight[i];
            f.sent_at = Some(now);
            f.resends += 1;
            resent += 1;
            i += 1;
        }
        if dropped > 0 {
            self.drain(now, out);
        }
        (resent, dropped)
    }
}

#[cfg(test)]
mod tests;
