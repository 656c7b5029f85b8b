//! The outbound half of a session: inflight window, pending queue, packet ids.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{Ack, Packet, PacketId, PublishProperties, QoS, ReasonCode};

use super::pending::Pending;
use super::Message;

/// Queue bounds and policy for one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages in the pending queue.
    pub max_queued_messages: usize,
    /// Most bytes the pending queue holds ([`Delivery::held_bytes`]).
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages while offline.
    pub queue_qos0: bool,
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
    pending: Pending,
    next_id: u16,
    /// Bytes the connection's outbox can still take: a drain of the pending
    /// queue stops there (see [`Session::set_room`]).
    room: usize,
    /// Set when a drain stopped for want of room.
    blocked: bool,
    /// The outbox was empty when the room was set.
    idle: bool,
    /// Inbound QoS 2 packet ids for which PUBREC was sent and PUBREL not yet received.
    pub awaiting_rel: HashSet<u16>,
    /// Messages dropped since the session began.
    pub dropped: u64,
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
            pending: Pending::default(),
            room: usize::MAX,
            blocked: false,
            idle: true,
            next_id: 0,
            awaiting_rel: HashSet::new(),
            dropped: 0,
            journal: Vec::new(),
        }
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
        let dropped = self.enqueue(d);
        if online {
            self.drain(now, out);
        }
        dropped
    }

    fn enqueue(&mut self, d: Delivery) -> Option<DropReason> {
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
                self.done(&gone);
            }
            self.dropped += 1;
            dropped = Some(DropReason::QueueFull);
        }
        self.pending.push_back(d);
        dropped
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
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window {
                break;
            }
            let size = front.held_bytes();
            if size > self.room && !self.idle {
                self.blocked = true;
                break;
            }
            self.room = self.room.saturating_sub(size);
            self.idle = false;
            let Some(d) = self.pending.pop_front() else {
                break;
            };
            if d.msg.is_expired(now) {
                expired += 1;
                self.dropped += 1;
                self.done(&d);
                continue;
            }
            self.send_new(d, now, out);
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
        if let Some(stored) = d.stored {
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
            }),
            None => self.pending.push_back(d),
        }
    }

    /// Every delivery the session holds, oldest first, with its packet id
    /// and whether PUBREC came for those sent at QoS 2 (what a checkpoint
    /// writes).
    pub fn for_each_delivery(&self, mut f: impl FnMut(&Delivery, Option<(u16, bool)>)) {
        for i in &self.inflight {
            let sent = (i.delivery.qos == QoS::ExactlyOnce)
                .then_some((i.id.get(), i.stage == Awaiting::PubComp));
            f(&i.delivery, sent);
        }
        self.pending.for_each(|d| f(d, None));
    }

    /// A client reconnected to this session: resend every unacknowledged
    /// message in order, PUBLISH with DUP for those not yet received and
    /// PUBREL for those received ([MQTT-4.4.0-1]), then fill the window.
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Packet>) {
        for f in &self.inflight {
            match f.stage {
                Awaiting::PubAck | Awaiting::PubRec => {
                    out.push(self.publish(&f.delivery, Some(f.id), true, now))
                }
                Awaiting::PubComp => out.push(Packet::PubRel(Ack::new(f.id))),
            }
        }
        self.drain(now, out);
    }
}

#[cfg(test)]
mod tests;
