//! Inbound PUBLISH and its acknowledgements, routing, local delivery,
//! retained messages, wills, and the mesh messages that carry them.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::acl::Want;
use crate::protocol::{Ack, LastWill, MqttStr, Packet, PublishProperties, QoS, ReasonCode};
use crate::session::{Delivery, DropReason, Message};
use crate::topic::TopicName;

use super::{Conn, Flow, Gate, Shard, ShardMsg};

/// A set of shard indexes (up to [`crate::config::MAX_CORES`]).
#[derive(Default)]
struct ShardSet([u64; 4]);

impl ShardSet {
    fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..256).filter(|i| self.0[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Whether a shard other than `me` is in the set.
    fn has_other_than(&self, me: usize) -> bool {
        let mut words = self.0;
        if let Some(w) = words.get_mut(me / 64) {
            *w &= !(1 << (me % 64));
        }
        words.iter().any(|&w| w != 0)
    }
}

impl Shard {
    /// Every packet after CONNECT.
    pub fn on_packet(&mut self, conn: &Rc<Conn>, p: Packet, now: Instant) -> Flow {
        let Some(key) = conn.session.get() else {
            return Flow::Close; // taken over: nothing more from this socket
        };
        let mut out = std::mem::take(&mut self.scratch_packets);
        let flow = match p {
            Packet::Publish(p) => self.on_publish(conn, key, p, now),
            Packet::PubAck(a) => {
                conn.acked(now);
                if let Some(e) = self.sending(key) {
                    e.session.on_puback(a.packet_id, now, &mut out);
                }
                Flow::Continue
            }
            Packet::PubRec(a) => {
                conn.acked(now);
                if let Some(e) = self.sending(key) {
                    e.session.on_pubrec(a.packet_id, a.reason, now, &mut out);
                }
                Flow::Continue
            }
            Packet::PubComp(a) => {
                conn.acked(now);
                if let Some(e) = self.sending(key) {
                    e.session.on_pubcomp(a.packet_id, now, &mut out);
                }
                Flow::Continue
            }
            Packet::PubRel(a) => {
                let (known, sid) = self.entry(key).map_or((false, 0), |e| {
                    (e.session.release_rel(a.packet_id.get()), e.sid)
                });
                if known {
                    self.log_rel(sid, a.packet_id.get(), false);
                }
                let mut comp = Ack::new(a.packet_id);
                if !known {
                    comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send(conn, &Packet::PubComp(comp));
                Flow::Continue
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, key, s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, key, u),
            Packet::PingReq => {
                self.send(conn, &Packet::PingResp);
                Flow::Continue
            }
            Packet::Disconnect(d) => self.on_disconnect(conn, key, d),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error.
            Packet::Connect(_) => self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR),
            // AUTH without an authentication method, or server-only packets.
            Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR),
        };
        self.flush_packets(key, &mut out, now);
        self.scratch_packets = out;
        flow
    }

    fn on_disconnect(&mut self, conn: &Conn, key: u32, d: crate::protocol::Disconnect) -> Flow {
        let Some(e) = self.entry(key) else {
            return Flow::Close;
        };
        if let Err(reason) = e
            .life
            .on_disconnect(d.reason, d.properties.session_expiry_interval)
        {
            return self.protocol_error(conn, reason);
        }
        conn.clean_disconnect.set(true);
        conn.close_reason.set(Some(d.reason));
        Flow::Close
    }

    fn on_publish(
        &mut self,
        conn: &Rc<Conn>,
        key: u32,
        p: crate::protocol::Publish,
        now: Instant,
    ) -> Flow {
        self.metrics.publishes_received += 1;
        let topic = match p.properties.topic_alias {
            // [v5:MQTT-3.3.2-9] 0 or above what CONNACK allowed.
            Some(alias) if alias > self.config.max_topic_alias => {
                return self.protocol_error(conn, ReasonCode::TOPIC_ALIAS_INVALID);
            }
            Some(alias) if p.topic.is_empty() => match conn.topic_aliases.borrow().get(&alias) {
                Some(t) => t.clone(),
                None => return self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR),
            },
            alias => {
                let Ok(t) = TopicName::new(p.topic.clone()) else {
                    return self.protocol_error(conn, ReasonCode::TOPIC_NAME_INVALID);
                };
                if let Some(a) = alias {
                    conn.topic_aliases.borrow_mut().insert(a, t.clone());
                }
                t
            }
        };
        // [MQTT-3.3.4-6] clients do not send subscription identifiers.
        if !p.properties.subscription_identifiers.is_empty() {
            return self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR);
        }
        let Some(e) = self.entry(key) else {
            return Flow::Close;
        };
        let publisher = e.life.client_id.clone();
        let sid = e.sid;
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            // [MQTT-4.3.3-10] (v5): until PUBREL, a resent QoS 2 PUBLISH is
            // acknowledged, not delivered again.
            if e.session.awaits_rel(id.get()) {
                let ack = Packet::PubRec(Ack::new(id));
                self.answer_after(conn, key, Gate::default(), ack, Vec::new(), now);
                return Flow::Continue;
            }
        }
        if p.qos != QoS::AtMostOnce {
            // [v5:MQTT-3.3.4-7] no more unanswered QoS 1/2 PUBLISHes than the
            // Receive Maximum in CONNACK; 3.1.1 has none to announce, so
            // there only the QoS 2 ids a session keeps are bounded.
            let held = if conn.version.is_v5() {
                conn.acks_held.get() as usize + e.session.rel_pending()
            } else if p.qos == QoS::ExactlyOnce {
                e.session.rel_pending()
            } else {
                0
            };
            if held >= usize::from(self.config.max_inflight_in) {
                self.metrics.receive_maximum_exceeded += 1;
                return self.protocol_error(conn, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
            }
        }
        if !self.acl_allows(key, Want::Write, topic.as_str()) {
            self.acl_denied(&publisher, "publish", topic.as_str(), now);
            return self.refuse_for_acl(conn, key, p.qos, p.packet_id, now);
        }
        if p.qos != QoS::AtMostOnce && self.log_refuses(&topic) {
            // A log this message needs is out of space: refused, not
            // acknowledged and then lost.
            return self.refuse_for_log(conn, key, topic.as_str(), p.qos, p.packet_id, now);
        }
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            if self
                .entry(key)
                .is_some_and(|e| e.session.await_rel(id.get()))
            {
                self.log_rel(sid, id.get(), true);
            }
        }
        let expires_at = p
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let properties = PublishProperties {
            topic_alias: None,
            subscription_identifiers: Vec::new(),
            ..p.properties.into_inner()
        };
        let msg = Arc::new(Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            publisher,
            expires_at,
            received_at: now,
        });
        // $SYS belongs to the broker: client publishes there are acknowledged and dropped.
        let (barrier, remote) = if msg.topic.is_broker_sys() {
            self.refuse_sys(&msg.publisher, msg.topic.as_str());
            (None, Vec::new())
        } else {
            let barrier = self.publish_message(msg, now);
            (barrier, std::mem::take(&mut self.routed_remote))
        };
        if std::mem::take(&mut self.log_failed) {
            if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                // After a PUBREC of 0x80 or more the id is new again ([v5:MQTT-4.3.3-9]).
                if let Some(e) = self.entry(key) {
                    e.session.release_rel(id.get());
                }
            }
            return self.refuse_for_log(conn, key, p.topic.as_str(), p.qos, p.packet_id, now);
        }
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(Ack::new(id)),
            (QoS::ExactlyOnce, Some(id)) => Packet::PubRec(Ack::new(id)),
            _ => return Flow::Continue,
        };
        // A retained message is acknowledged once every shard stores it, so
        // a subscriber anywhere that subscribes after the PUBACK gets it;
        // a logged one once every log it went to has it.
        let gate = Gate {
            barrier: barrier.unwrap_or(0),
            ticket: self.ack_ticket(),
            remote,
        };
        if !gate.remote.is_empty() {
            self.metrics.acks_waited_remote_log += 1;
        }
        self.answer_after(conn, key, gate, ack, Vec::new(), now);
        Flow::Continue
    }

    /// Answers a QoS 1/2 publish the log cannot take: v5 PUBACK/PUBREC
    /// 0x97 (quota exceeded); 3.1.1 has no negative acknowledgement, so the
    /// connection is closed and the client resends later.
    fn refuse_for_log(
        &mut self,
        conn: &Rc<Conn>,
        key: u32,
        topic: &str,
        qos: QoS,
        packet_id: Option<crate::protocol::PacketId>,
        now: Instant,
    ) -> Flow {
        self.metrics.log_refused += 1;
        if let Some(held) = self.log_limits.log_errors.allow(now) {
            tracing::warn!(
                client_id = conn.client_id.borrow().as_deref().unwrap_or(""),
                topic,
                held_back = held,
                "publish refused: the log is out of space"
            );
        }
        let Some(id) = packet_id else {
            return Flow::Close;
        };
        if !conn.version.is_v5() {
            conn.close_reason.set(Some(ReasonCode::QUOTA_EXCEEDED));
            return Flow::Close;
        }
        let ack = quota_exceeded(id, qos);
        self.answer_after(conn, key, Gate::default(), ack, Vec::new(), now);
        Flow::Continue
    }

    /// Answers a publish the ACL refused: dropped; v5 PUBACK/PUBREC 0x87,
    /// 3.1.1 (which has no negative acknowledgement) acknowledged as
    /// Mosquitto does, so the client does not send it again forever.
    fn refuse_for_acl(
        &mut self,
        conn: &Rc<Conn>,
        key: u32,
        qos: QoS,
        packet_id: Option<crate::protocol::PacketId>,
        now: Instant,
    ) -> Flow {
        let Some(id) = packet_id else {
            return Flow::Continue;
        };
        let mut ack = Ack::new(id);
        if conn.version.is_v5() {
            ack.reason = ReasonCode::NOT_AUTHORIZED;
        }
        let ack = match qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        };
        self.answer_after(conn, key, Gate::default(), ack, Vec::new(), now);
        Flow::Continue
    }

    /// Answers, in place of `ack`, a publish that a peer's log refused
    /// after this shard routed it (its log filled between the check and
    /// the delivery): as [`Shard::refuse_for_log`] does, so the client
    /// sends it again rather than count on it.
    pub(crate) fn refuse_remotely_unlogged(
        &mut self,
        conn: &Conn,
        key: u32,
        ack: &Packet,
        now: Instant,
    ) {
        let (id, qos) = match ack {
            Packet::PubAck(a) => (a.packet_id, QoS::AtLeastOnce),
            Packet::PubRec(a) => (a.packet_id, QoS::ExactlyOnce),
            other => return self.send(conn, other),
        };
        self.metrics.log_refused += 1;
        if qos == QoS::ExactlyOnce {
            // Its resend must be taken as new, not as a duplicate.
            let sid = self.entry(key).map_or(0, |e| {
                if e.session.release_rel(id.get()) {
                    e.sid
                } else {
                    0
                }
            });
            self.log_rel(sid, id.get(), false);
        }
        if let Some(held) = self.log_limits.log_errors.allow(now) {
            tracing::warn!(
                client_id = conn.client_id.borrow().as_deref().unwrap_or(""),
                held_back = held,
                "publish refused: a peer shard's log is out of space"
            );
        }
        if !conn.version.is_v5() {
            conn.close_for(ReasonCode::QUOTA_EXCEEDED);
            return;
        }
        self.send(conn, &quota_exceeded(id, qos));
    }

    /// Stores (or clears) a retained message and routes the message.
    /// Returns the broadcast barrier a retained message's acknowledgement
    /// waits for (see [`Shard::answer_after`]).
    /// [`Shard::routed_remote`] says afterwards which peers must report it logged.
    pub(crate) fn publish_message(&mut self, msg: Arc<Message>, now: Instant) -> Option<u64> {
        self.routed_remote.clear();
        let mut barrier = None;
        let mut shards = ShardSet::default();
        self.interest
            .match_topic(&msg.topic, |&s| shards.insert(usize::from(s)));
        // Peers whose logged sessions may take it: only their deliveries
        // hold the acknowledgement back (a session that is not logged is
        // lost with the broker anyway, DESIGN.md §4.5). A publish no peer
        // wants skips the walk.
        let mut durable = ShardSet::default();
        if self.store.is_some() && msg.qos != QoS::AtMostOnce && shards.has_other_than(self.id) {
            self.durable_interest
                .match_topic(&msg.topic, |&s| durable.insert(usize::from(s)));
        }
        if msg.retain {
            let stored = if msg.payload.is_empty() {
                // [MQTT-3.3.1-6] / [MQTT-3.3.1-7] (v5), [MQTT-3.3.1-10] / [MQTT-3.3.1-11] (v3)
                None
            } else {
                Some(msg.clone())
            };
            self.set_retained(msg.topic.clone(), stored.clone());
            // A peer this shard does not route the message to may have a
            // subscriber whose interest is still on its way here: it
            // subscribed before the retained message reached its shard, so
            // neither the store nor a delivery would bring it the message.
            // The peer delivers it then, as the delivery it would have had.
            let me = self.id;
            for to in (0..self.nr_shards).filter(|&to| to != me) {
                let m = ShardMsg::Retain {
                    topic: msg.topic.clone(),
                    msg: stored.clone(),
                    routed: shards.contains(to),
                };
                self.mesh_send(to, m);
            }
            self.broadcasts += 1;
            barrier = Some(self.broadcasts);
        }
        self.route(msg, &shards, &durable, now);
        barrier
    }

    fn set_retained(&mut self, topic: TopicName, msg: Option<Arc<Message>>) {
        self.log_retained(&topic, msg.as_ref());
        match msg {
            Some(m) => {
                self.retained.insert(&topic, m);
            }
            None => {
                self.retained.remove(&topic);
            }
        }
    }

    /// Delivers `msg` here and sends it to the other `shards` whose
    /// interest matches it.
    fn route(&mut self, msg: Arc<Message>, shards: &ShardSet, durable: &ShardSet, now: Instant) {
        for s in shards.iter() {
            if s == self.id {
                self.deliver_local(&msg, now);
            } else {
                let msg = msg.clone();
                self.send_delivery(s, msg.qos, durable.contains(s), |report| {
                    ShardMsg::Deliver { msg, report }
                });
            }
        }
        let routed = self.route_shared(&msg, now) > 0 || shards.iter().next().is_some();
        if !routed && !msg.topic.is_broker_sys() {
            self.metrics.no_subscribers += 1;
        }
    }

    /// Sends a delivery (`Deliver` or `DeliverShared`, made by `m` from
    /// whether it asks for a report) of a message at `qos` to shard `s`,
    /// counted for its `Stored` reports: when the peer may log it
    /// (`durable`), the acknowledgement waits for the peer's log.
    pub(crate) fn send_delivery(
        &mut self,
        s: usize,
        qos: QoS,
        durable: bool,
        m: impl FnOnce(bool) -> ShardMsg,
    ) {
        self.delivers_sent[s] += 1;
        let report = durable && self.store.is_some() && qos != QoS::AtMostOnce;
        if report {
            self.routed_remote.push((s, self.delivers_sent[s]));
        }
        self.mesh_send(s, m(report));
    }

    /// A peer's delivery arrived: handled by `deliver`, counted for the next
    /// `Stored` report (sent if it asked for one), with its number if this
    /// shard's log refused it.
    fn on_peer_delivery(&mut self, from: usize, report: bool, deliver: impl FnOnce(&mut Self)) {
        self.delivers_received[from] += 1;
        if report {
            self.report_due[from] = true;
        }
        deliver(self);
        // The log refused it here: the publisher must hear so, however its
        // own shard fared. One it does not wait for (it learns of the
        // logged subscriber after this message) is not reported: its
        // acknowledgement never looks for the number.
        if std::mem::take(&mut self.log_failed) && report {
            self.failed_from[from].push(self.delivers_received[from]);
        }
    }

    /// Logs `msg` once for the deliveries in `ds` that need it, then hands
    /// each to its session (draining `ds`).
    pub(crate) fn deliver_all(
        &mut self,
        msg: &Arc<Message>,
        ds: &mut Vec<(u32, Delivery)>,
        now: Instant,
    ) {
        self.log_message(msg, ds);
        for (key, d) in ds.drain(..) {
            self.deliver_to(key, d, false, now);
        }
    }

    /// Delivers `msg` to this shard's matching sessions: one copy per
    /// session at the highest granted QoS, with every matching subscription
    /// identifier ([MQTT-3.3.4-2], [MQTT-3.3.4-3]).
    pub(crate) fn deliver_local(&mut self, msg: &Arc<Message>, now: Instant) {
        let mut matches = std::mem::take(&mut self.scratch_matches);
        let mut ds = std::mem::take(&mut self.scratch_deliveries);
        matches.clear();
        ds.clear();
        self.subs.match_topic(&msg.topic, |e| matches.push(*e));
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|m| m.session);
        }
        let mut i = 0;
        while i < matches.len() {
            let key = matches[i].session;
            let mut j = i;
            let mut qos = None;
            let mut retain = false;
            let mut ids = Vec::new();
            // Looked up only if a matching subscription has No Local set.
            let mut publisher_is_me = None;
            let mut acl_free = false;
            let free_at = if self.acl.is_some() {
                self.sessions
                    .get(key as usize)
                    .and_then(Option::as_deref)
                    .map_or(0, |e| e.grants_epoch)
            } else {
                0
            };
            while j < matches.len() && matches[j].session == key {
                let o = matches[j].opts;
                acl_free |= free_at != 0 && matches[j].acl_free_at == free_at;
                j += 1;
                // [v5:MQTT-3.8.3-3] No Local.
                if o.no_local
                    && *publisher_is_me.get_or_insert_with(|| {
                        self.sessions
                            .get(key as usize)
                            .and_then(Option::as_deref)
                            .is_some_and(|e| *e.life.client_id == *msg.publisher)
                    })
                {
                    continue;
                }
                qos = Some(qos.map_or(o.qos, |q: QoS| q.max(o.qos)));
                retain |= o.retain_as_published && msg.retain;
                ids.extend(o.id);
            }
            i = j;
            if qos.is_some() && !acl_free && !self.acl_allows(key, Want::Read, msg.topic.as_str()) {
                // Its subscription was allowed, but not this topic under it
                // (a deny rule inside it, or a reloaded file).
                self.metrics.acl_deliveries_denied += 1;
                continue;
            }
            if let Some(q) = qos {
                let d = Delivery {
                    msg: msg.clone(),
                    // [MQTT-3.8.4-8] (v5) / [MQTT-3.8.4-6] (v3): min of published and granted.
                    qos: msg.qos.min(q),
                    retain,
                    subscription_ids: ids,
                    stored: None,
                    rec: None,
                };
                ds.push((key, d));
            }
        }
        self.scratch_matches = matches;
        self.deliver_all(msg, &mut ds, now);
        self.scratch_deliveries = ds;
    }

    /// Delivers `d` to session `key`; `queued` sends it through the session's
    /// queue even when it could go at once (retained messages on SUBSCRIBE).
    pub(crate) fn deliver_to(&mut self, key: u32, d: Delivery, queued: bool, now: Instant) {
        if !queued {
            // Retained messages on SUBSCRIBE (`queued`) are old by design.
            self.metrics.deliver_latency.record(
                &crate::metrics::histogram::DELIVER_BOUNDS_NS,
                now.saturating_duration_since(d.msg.received_at),
            );
        }
        let Some(e) = self.entry(key) else { return };
        let online = e.is_online();
        // A consumer that cannot keep up loses its own QoS 0 messages.
        if d.qos == QoS::AtMostOnce
            && e.conn
                .as_ref()
                .is_some_and(|c| c.is_stuck() || c.backlog() > super::MAX_OUTBOX_BYTES)
        {
            self.metrics.publishes_dropped += 1;
            self.metrics.slow_consumer_drops += 1;
            return;
        }
        let mut out = std::mem::take(&mut self.scratch_packets);
        let Some(e) = self.sending(key) else { return };
        let dropped = if queued {
            e.session.deliver_queued(d, online, now, &mut out)
        } else {
            e.session.deliver(d, online, now, &mut out)
        };
        if let Some(reason) = dropped {
            if !e.drop_logged {
                e.drop_logged = true;
                tracing::warn!(client_id = %e.life.client_id, ?reason, "dropping messages for session");
            }
        } else if e.session.pending_len() == 0 {
            e.drop_logged = false;
        }
        match dropped {
            Some(DropReason::QueueFull) => {
                self.metrics.publishes_dropped += 1;
                self.metrics.dropped_queue_full += 1;
            }
            // Counted by the session (`Session::expired`), as are those
            // that expire in its queue.
            Some(DropReason::Expired) => self.metrics.publishes_dropped += 1,
            None => {}
        }
        self.flush_packets(key, &mut out, now);
        self.scratch_packets = out;
    }

    /// Holds the shard's readers while session `key`'s online client has
    /// a pending queue past its high mark, and lets them go once it is
    /// back under its low mark (see [`super::conn::Conn::hold_for_queue`]).
    fn check_queue_hold(&mut self, key: u32, now: Instant) {
        let Some(e) = self.entry(key) else { return };
        let Some(c) = &e.conn else { return };
        if c.is_queue_held() {
            if e.session.queue_low() {
                c.release_queue(now);
            }
        } else if e.session.queue_high() {
            c.hold_for_queue(now);
            if c.is_queue_held() {
                self.metrics.queue_holds += 1;
            }
        }
    }

    /// Writes `out` to the session's connection, if it has one. A PUBLISH the
    /// client's Maximum Packet Size cannot take is discarded as if delivered
    /// ([MQTT-3.1.2-25]).
    ///
    /// Every change to a session's queue ends here, so here its queue
    /// holds or releases the shard ([`Shard::check_queue_hold`]).
    pub(crate) fn flush_packets(&mut self, key: u32, out: &mut Vec<Packet>, now: Instant) {
        if self.store.is_some() {
            self.log_journal(key);
        }
        self.check_queue_hold(key, now);
        self.arm_resend(key);
        if let Some(e) = self.entry(key) {
            if e.session.take_blocked() {
                if let Some(c) = &e.conn {
                    c.drain_blocked.set(true);
                }
            }
        }
        while !out.is_empty() {
            let Some(conn) = self.entry(key).and_then(|e| e.conn.clone()) else {
                out.clear();
                return;
            };
            let mut retry = Vec::new();
            for mut p in out.drain(..) {
                let new_alias = match &mut p {
                    Packet::Publish(pb) => conn.alias_topic(pb),
                    _ => None,
                };
                match conn.send(&p) {
                    Ok(n) => {
                        self.metrics.packet_out(p.packet_type(), n);
                        if matches!(p, Packet::Publish(_)) {
                            self.metrics.publishes_sent += 1;
                        }
                    }
                    Err(err) => {
                        if let Some(topic) = new_alias {
                            conn.unsent_alias(&topic);
                        }
                        self.metrics.publishes_dropped += 1;
                        self.metrics.dropped_too_large += 1;
                        tracing::debug!(conn = conn.id, error = %err, "packet discarded");
                        if let Packet::Publish(crate::protocol::Publish {
                            packet_id: Some(id),
                            ..
                        }) = p
                        {
                            if let Some(e) = self.sending(key) {
                                e.session.complete(id, now, &mut retry);
                            }
                        }
                    }
                }
            }
            out.append(&mut retry);
        }
    }

    /// Session `key`, told how much room its connection's outbox has left
    /// (see [`crate::session::Session::set_room`]): every call that may send
    /// goes through here.
    pub(crate) fn sending(&mut self, key: u32) -> Option<&mut super::SessionEntry> {
        let e = self.entry(key)?;
        let backlog = e.conn.as_ref().map_or(0, |c| c.backlog());
        e.session.set_room(
            super::conn::DRAIN_ROOM_BYTES.saturating_sub(backlog),
            backlog == 0,
        );
        Some(e)
    }

    /// The writer of `conn` emptied its outbox after a drain had stopped for
    /// room: drain that session's queue again.
    pub fn resume_drain(&mut self, conn: &Conn, now: Instant) {
        let Some(key) = conn.session.get() else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch_packets);
        if let Some(e) = self.sending(key) {
            e.session.drain(now, &mut out);
        }
        self.flush_packets(key, &mut out, now);
        self.scratch_packets = out;
    }

    pub(crate) fn publish_will(&mut self, client: &Arc<str>, will: LastWill, now: Instant) {
        let Ok(topic) = TopicName::new(will.topic) else {
            return;
        };
        if topic.is_broker_sys() {
            return self.refuse_sys(client, topic.as_str());
        }
        let p = will.properties;
        let msg = Arc::new(Message {
            topic,
            payload: will.payload,
            qos: will.qos,
            // [MQTT-3.1.2-14] / [MQTT-3.1.2-15] (v5), [MQTT-3.1.2-16] / [MQTT-3.1.2-17] (v3)
            retain: will.retain,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                content_type: p.content_type,
                ..Default::default()
            },
            publisher: client.clone(),
            expires_at: p
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            received_at: now,
        });
        tracing::debug!(client_id = %client, topic = msg.topic.as_str(), "publishing will");
        self.publish_message(msg, now);
    }

    /// A client's publish or will to `$SYS/...`: dropped, counted, logged.
    fn refuse_sys(&mut self, client: &str, topic: &str) {
        self.metrics.sys_publishes_refused += 1;
        tracing::info!(client_id = client, topic, "publish to $SYS refused");
    }

    /// Publishes a broker message (`$SYS`), retained, QoS 0.
    pub(crate) fn publish_internal(&mut self, topic: &str, payload: Vec<u8>, now: Instant) {
        let Ok(t) = MqttStr::try_from(topic)
            .map_err(|_| ())
            .and_then(|s| TopicName::new(s).map_err(|_| ()))
        else {
            return;
        };
        let msg = Arc::new(Message {
            topic: t,
            payload: Bytes::from(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            publisher: Arc::from("$broker"),
            expires_at: None,
            received_at: now,
        });
        self.publish_message(msg, now);
    }

    /// After a mesh batch: tells each peer whose QoS 1/2 deliveries were
    /// handled how many of its deliveries are now logged here.
    pub fn report_stored(&mut self) {
        for peer in 0..self.nr_shards {
            if std::mem::take(&mut self.report_due[peer]) {
                let upto = self.delivers_received[peer];
                let failed = std::mem::take(&mut self.failed_from[peer]);
                self.send_when_durable(peer, ShardMsg::Stored { upto, failed });
            }
        }
    }

    /// A mesh message from shard `from` (everything but connection handoffs).
    pub fn on_mesh(&mut self, from: usize, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::DeliverShared { msg, key, report } => {
                self.on_peer_delivery(from, report, |s| s.deliver_shared(&msg, &key, now));
            }
            ShardMsg::SharedMembers { key, total, online } => {
                self.on_shared_members(from, &key, total, online);
            }
            ShardMsg::Deliver { msg, report } => {
                self.on_peer_delivery(from, report, |s| s.deliver_local(&msg, now));
            }
            ShardMsg::Stored { upto, failed } => {
                let s = &mut self.delivers_stored[from];
                *s = (*s).max(upto);
                self.delivers_failed[from].extend(failed);
                self.release_deferred(now);
            }
            ShardMsg::Interest {
                filter,
                add,
                durable,
            } => {
                let shard = from as u16;
                let table = if durable {
                    &mut self.durable_interest
                } else {
                    &mut self.interest
                };
                if add {
                    if table.insert(&filter, shard).is_err() {
                        tracing::warn!(filter = filter.as_str(), "interest filter too deep");
                    }
                } else {
                    table.remove(&filter, |&s| s == shard);
                }
                self.mesh_send(from, ShardMsg::Applied);
            }
            ShardMsg::Applied => {
                if let Some(a) = self.acked.get_mut(from) {
                    *a += 1;
                }
                self.release_deferred(now);
            }
            ShardMsg::Retain { topic, msg, routed } => {
                self.set_retained(topic, msg.clone());
                if let (Some(m), false) = (msg, routed) {
                    self.deliver_local(&m, now);
                }
                self.send_when_durable(from, ShardMsg::Applied);
            }
            ShardMsg::Stats { m, seq } => self.on_stats(from, *m, seq),
            ShardMsg::StatsRequest { seq } => {
                let m = self.snapshot();
                self.mesh_send(
                    from,
                    ShardMsg::Stats {
                        m: Box::new(m),
                        seq: Some(seq),
                    },
                );
            }
            ShardMsg::Adopt { .. } => {
                // Handled by the async shell; reaching here means shutdown,
                // and dropping the message closes the socket.
            }
        }
    }
}

/// The v5 refusal of a QoS 1/2 publish the log cannot take: PUBACK or
/// PUBREC with 0x97 (quota exceeded).
fn quota_exceeded(id: crate::protocol::PacketId, qos: QoS) -> Packet {
    let mut a = Ack::new(id);
    a.reason = ReasonCode::QUOTA_EXCEEDED;
    if qos == QoS::AtLeastOnce {
        Packet::PubAck(a)
    } else {
        Packet::PubRec(a)
    }
}
