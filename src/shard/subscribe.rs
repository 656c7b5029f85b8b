//! SUBSCRIBE and UNSUBSCRIBE, the interest table they feed, and the SUBACK
//! barrier that keeps "subscribed" meaning "routed to from every shard".

use std::rc::Rc;
use std::time::Instant;

use crate::auth::acl::Want;
use crate::protocol::{
    AckProperties, Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::session::Delivery;
use crate::topic::{SubscriptionFilter, TopicFilter};

use super::{Conn, Deferred, Flow, Gate, Shard, ShardMsg, SubEntry, SubOpts};

impl Shard {
    pub(crate) fn on_subscribe(
        &mut self,
        conn: &Rc<Conn>,
        key: u32,
        s: Subscribe,
        now: Instant,
    ) -> Flow {
        let v5 = conn.version.is_v5();
        let sub_id = s.properties.subscription_identifier;
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut barrier = None;
        // [MQTT-3.8.4-5] (v5) / [MQTT-3.8.4-4] (v3): as if one SUBSCRIBE per filter.
        for f in s.filters {
            let parsed = SubscriptionFilter::parse(&f.filter);
            if let Ok(p) = &parsed {
                if !self.acl_allows_subscribe(key, p.filter.as_str()) {
                    let client = conn.client_id.borrow().clone().unwrap_or_default();
                    self.acl_denied(&client, "subscribe", f.filter.as_str(), now);
                    reasons.push(if v5 {
                        ReasonCode::NOT_AUTHORIZED
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            }
            let parsed = match parsed {
                Ok(p) if p.share_group.is_none() => p,
                Ok(_) => {
                    // [v5:MQTT-3.8.3-4] No Local on a shared subscription.
                    if f.options.no_local {
                        return self.protocol_error(conn, ReasonCode::PROTOCOL_ERROR);
                    }
                    let Ok(shared_key) = TopicFilter::new(f.filter.clone()) else {
                        reasons.push(if v5 {
                            ReasonCode::TOPIC_FILTER_INVALID
                        } else {
                            ReasonCode::UNSPECIFIED_ERROR
                        });
                        continue;
                    };
                    let opts = SubOpts {
                        qos: f.options.qos,
                        no_local: false,
                        retain_as_published: f.options.retain_as_published,
                        id: sub_id,
                    };
                    let Some(e) = self.entry(key) else {
                        return Flow::Close;
                    };
                    let sid = e.sid;
                    e.life.subscriptions.insert(shared_key.clone(), opts);
                    barrier = Some(self.join_shared(&shared_key, key, opts));
                    self.log_sub(sid, &shared_key, Some(&opts));
                    // No retained messages on a shared subscription (4.8.2).
                    reasons.push(ReasonCode(f.options.qos as u8));
                    continue;
                }
                Err(_) => {
                    reasons.push(if v5 {
                        ReasonCode::TOPIC_FILTER_INVALID
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            };
            let filter = parsed.filter;
            let opts = SubOpts {
                qos: f.options.qos,
                no_local: f.options.no_local,
                retain_as_published: f.options.retain_as_published,
                id: sub_id,
            };
            let Some(e) = self.entry(key) else {
                return Flow::Close;
            };
            let sid = e.sid;
            // [MQTT-3.8.4-3] an identical filter replaces the subscription.
            let existed = e.life.subscriptions.insert(filter.clone(), opts).is_some();
            if existed {
                if let Some(entries) = self.subs.get_mut(&filter) {
                    for s in entries.iter_mut().filter(|s| s.session == key) {
                        s.opts = opts;
                    }
                }
            } else if self
                .subs
                .insert(
                    &filter,
                    SubEntry {
                        session: key,
                        opts,
                        acl_free_at: self.acl_free_at(key, filter.as_str()),
                    },
                )
                .is_err()
            {
                if let Some(e) = self.entry(key) {
                    e.life.subscriptions.remove(&filter);
                }
                reasons.push(if v5 {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            } else {
                self.metrics.subscriptions += 1;
                if let Some(b) = self.hold_filter(&filter, sid != 0) {
                    barrier = Some(b);
                }
            }
            self.log_sub(sid, &filter, Some(&opts));
            reasons.push(ReasonCode(f.options.qos as u8));
            let send_retained = match f.options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                // [v5:MQTT-3.3.1-10]
                RetainHandling::SendIfNew => !existed,
                // [v5:MQTT-3.3.1-11]
                RetainHandling::DoNotSend => false,
            };
            if send_retained {
                self.collect_retained(key, &filter, opts, &mut retained);
            }
        }
        // [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.9.3-1]
        let suback = Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: AckProperties::default(),
            reasons,
        });
        let gate = Gate {
            barrier: barrier.unwrap_or(0),
            ticket: self.ack_ticket(),
            remote: Vec::new(),
        };
        self.answer_after(conn, key, gate, suback, retained, now);
        Flow::Continue
    }

    /// Sends `ack` (then delivers `retained`) once every peer has applied
    /// broadcast number `barrier`; at once if there is no barrier to wait for.
    pub(crate) fn answer_after(
        &mut self,
        conn: &Rc<Conn>,
        key: u32,
        gate: Gate,
        ack: Packet,
        retained: Vec<Delivery>,
        now: Instant,
    ) {
        if !self.deferred.contains_key(&conn.id) && self.gate_open(&gate) {
            return self.answer_subscribe(conn, key, &ack, retained, now);
        }
        let ticket = gate.ticket;
        if matches!(ack, Packet::PubAck(_)) {
            conn.acks_held.set(conn.acks_held.get() + 1);
        }
        self.deferred
            .entry(conn.id)
            .or_default()
            .push_back(Deferred {
                conn: conn.clone(),
                session: key,
                gate,
                ack,
                retained,
            });
        if ticket > 0 {
            if let Some(st) = self.store.as_mut() {
                st.want_sync(ticket);
            }
        }
    }

    fn gate_open(&self, g: &Gate) -> bool {
        if g.barrier > 0
            && (0..self.nr_shards)
                .filter(|&s| s != self.id)
                .any(|s| self.acked[s] < g.barrier)
        {
            return false;
        }
        if g.ticket > self.store.as_ref().map_or(0, |s| s.synced) {
            return false;
        }
        g.remote
            .iter()
            .all(|&(peer, n)| self.delivers_stored[peer] >= n)
    }

    fn answer_subscribe(
        &mut self,
        conn: &Conn,
        key: u32,
        ack: &Packet,
        retained: Vec<Delivery>,
        now: Instant,
    ) {
        self.send(conn, ack);
        for d in retained {
            let mut one = [(key, d)];
            self.log_message(&one[0].1.msg.clone(), &mut one);
            let [(_, d)] = one;
            self.deliver_to(key, d, true, now);
        }
    }

    /// Retained messages matching `filter`, to send with RETAIN set
    /// ([MQTT-3.3.1-9] v5, [MQTT-3.3.1-6] / [MQTT-3.3.1-8] v3). The index
    /// walks only what the filter can match; one SUBSCRIBE collects at most
    /// what the session's queue holds (the rest would only push the first
    /// ones out), and counts what it leaves.
    fn collect_retained(
        &mut self,
        key: u32,
        filter: &TopicFilter,
        opts: SubOpts,
        out: &mut Vec<Delivery>,
    ) {
        let cap = self.config.max_queued_messages;
        let mut skipped = 0u64;
        let mut denied = 0u64;
        let grants = match &self.acl {
            None => None,
            Some(_) => Some(
                self.sessions
                    .get(key as usize)
                    .and_then(Option::as_deref)
                    .and_then(|e| e.grants.clone())
                    .unwrap_or_default(),
            ),
        };
        self.retained.for_each_match(filter, |m| {
            if grants
                .as_ref()
                .is_some_and(|g| !g.allows(Want::Read, m.topic.as_str()))
            {
                denied += 1;
                return true;
            }
            if out.len() >= cap {
                skipped += 1;
                return true;
            }
            out.push(Delivery {
                msg: m.clone(),
                qos: m.qos.min(opts.qos),
                retain: true,
                subscription_ids: opts.id.into_iter().collect(),
                stored: None,
                rec: None,
            });
            true
        });
        self.metrics.acl_deliveries_denied += denied;
        if skipped > 0 {
            self.metrics.publishes_dropped += skipped;
            tracing::warn!(
                filter = filter.as_str(),
                skipped,
                "more retained messages match than a session queue holds"
            );
        }
    }

    /// Counts one more local subscription to `filter` (of a logged session
    /// if `durable`); the first one adds this shard to every shard's
    /// interest table (and the first durable one to the durable table) and
    /// returns the barrier (broadcast count) a SUBACK must wait for.
    pub(crate) fn hold_filter(&mut self, filter: &TopicFilter, durable: bool) -> Option<u64> {
        let plain = self.count_filter(filter, false, true);
        let logged = durable && self.count_filter(filter, true, true);
        (plain || logged).then_some(self.broadcasts)
    }

    /// Counts one less local subscription to `filter` (of a logged session
    /// if `durable`).
    pub(crate) fn release_filter(&mut self, filter: &TopicFilter, durable: bool) {
        self.metrics.subscriptions = self.metrics.subscriptions.saturating_sub(1);
        self.count_filter(filter, false, false);
        if durable {
            self.count_filter(filter, true, false);
        }
    }

    /// A session's subscriptions moved into (`add`) or out of the durable
    /// table: it was logged for the first time, or is no longer logged.
    pub(crate) fn move_durable<'a>(
        &mut self,
        filters: impl IntoIterator<Item = &'a TopicFilter>,
        add: bool,
    ) {
        for f in filters {
            if !super::shared::is_shared(f) {
                self.count_filter(f, true, add);
            }
        }
    }

    /// One more (`add`) or one less local subscription to `filter` in the
    /// routing or the `durable` table; the first and the last change this
    /// shard's entry in every shard's table. True if that was broadcast.
    fn count_filter(&mut self, filter: &TopicFilter, durable: bool, add: bool) -> bool {
        let (refs, table) = if durable {
            (&mut self.durable_refs, &mut self.durable_interest)
        } else {
            (&mut self.filter_refs, &mut self.interest)
        };
        if add {
            let n = refs.entry(filter.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                return false;
            }
        } else {
            let Some(n) = refs.get_mut(filter) else {
                return false;
            };
            *n -= 1;
            if *n > 0 {
                return false;
            }
            refs.remove(filter);
        }
        let me = self.id as u16;
        if add {
            if table.insert(filter, me).is_err() {
                return false;
            }
        } else {
            table.remove(filter, |&s| s == me);
        }
        self.broadcasts += 1;
        let f = filter.clone();
        self.broadcast(|| ShardMsg::Interest {
            filter: f.clone(),
            add,
            durable,
        });
        true
    }

    /// Sends the acknowledgements whose gates opened, in order per connection.
    pub(crate) fn release_deferred(&mut self, now: Instant) {
        if self.deferred.is_empty() {
            return;
        }
        let mut ready = Vec::new();
        let mut queues = std::mem::take(&mut self.deferred);
        queues.retain(|_, q| {
            while q.front().is_some_and(|d| self.gate_open(&d.gate)) {
                ready.extend(q.pop_front());
            }
            !q.is_empty()
        });
        self.deferred = queues;
        for d in ready {
            if matches!(d.ack, Packet::PubAck(_)) {
                d.conn
                    .acks_held
                    .set(d.conn.acks_held.get().saturating_sub(1));
            }
            let mut refused = false;
            for &(peer, n) in &d.gate.remote {
                refused |= self.delivers_failed[peer].remove(&n);
            }
            if d.conn.session.get() != Some(d.session) {
                continue;
            }
            if refused {
                self.refuse_remotely_unlogged(&d.conn, d.session, &d.ack, now);
            } else {
                self.answer_subscribe(&d.conn, d.session, &d.ack, d.retained, now);
            }
        }
    }

    pub(crate) fn on_unsubscribe(&mut self, conn: &Conn, key: u32, u: Unsubscribe) -> Flow {
        let mut reasons = Vec::with_capacity(u.filters.len());
        // [MQTT-3.10.4-6] as if one UNSUBSCRIBE per filter.
        for f in u.filters {
            let Ok(filter) = TopicFilter::new(f) else {
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            };
            let removed = self
                .entry(key)
                .is_some_and(|e| e.life.subscriptions.remove(&filter).is_some());
            if removed && super::shared::is_shared(&filter) {
                let sid = self.entry(key).map_or(0, |e| e.sid);
                self.log_sub(sid, &filter, None);
                self.leave_shared(&filter, key);
                reasons.push(ReasonCode::SUCCESS);
                continue;
            }
            if removed {
                let sid = self.entry(key).map_or(0, |e| e.sid);
                self.log_sub(sid, &filter, None);
                self.subs.remove(&filter, |s| s.session == key);
                self.release_filter(&filter, sid != 0);
                reasons.push(ReasonCode::SUCCESS);
            } else {
                reasons.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        // [MQTT-3.10.4-4] [MQTT-3.10.4-5] always an UNSUBACK with the same id.
        self.send(
            conn,
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: AckProperties::default(),
                reasons,
            }),
        );
        Flow::Continue
    }
}
