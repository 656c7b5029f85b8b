//! CONNECT: validation, takeover, session resume or creation, CONNACK.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::acl::Want;
use crate::protocol::{
    ConnAck, ConnAckProperties, Connect, Disconnect, MqttStr, Packet, ProtocolVersion, ReasonCode,
};
use crate::session::{connect_expiry, Life, Limits, Session, Takeover};

use super::{Conn, Flow, SessionEntry, Shard};

impl Shard {
    fn refuse(&mut self, conn: &Conn, reason: ReasonCode) -> Flow {
        match reason {
            ReasonCode::SERVER_BUSY | ReasonCode::SERVER_UNAVAILABLE => {
                self.metrics.refused_connections += 1;
            }
            ReasonCode::NOT_AUTHORIZED | ReasonCode::BAD_USER_NAME_OR_PASSWORD => {
                self.metrics.auth_refused += 1;
            }
            _ => self.metrics.connects_refused_protocol += 1,
        }
        if let Some(held) = self.log_limits.refused.allow(conn.last_seen.get()) {
            tracing::info!(
                peer = %conn.peer_str(),
                version = %conn.version,
                reason = %reason,
                held_back = held,
                "connection refused"
            );
        }
        // [MQTT-3.2.2-6] (v5) / [MQTT-3.2.2-4] (v3): no session present on refusal.
        let ack = ConnAck {
            session_present: false,
            reason,
            properties: ConnAckProperties::default(),
        };
        self.send(conn, &Packet::ConnAck(Box::new(ack)));
        Flow::Close
    }

    /// Who may connect: a client whose certificate named it (with
    /// `--use-identity-as-username`); a user name from the password file
    /// with its password; anyone else only while anonymous clients are
    /// allowed (a user name the broker has no file to check counts as
    /// anonymous). Refusals: bad user name or password (v5 0x86, 3.1.1 code
    /// 4), not authorized (0x87, code 5). A password not verified before
    /// (the cache holds the last good one per user) is checked off the
    /// shard: see [`AuthCheck::Verify`].
    pub(crate) fn auth_check(&mut self, c: &Connect, identity: Option<&str>) -> AuthCheck {
        if identity.is_some() {
            return AuthCheck::Done(Ok(()));
        }
        let passwords = self.shared.passwords.load_full();
        let generation = self.shared.passwords_gen.load(Ordering::Acquire);
        if generation != self.auth_gen {
            self.auth_cache.clear();
            self.auth_gen = generation;
        }
        match (passwords, &c.username) {
            (Some(file), Some(user)) => {
                let password = c.password.clone().unwrap_or_default();
                if self.auth_cache.get(user.as_str()) == Some(&digest(&password)) {
                    AuthCheck::Done(Ok(()))
                } else {
                    AuthCheck::Verify {
                        file,
                        user: user.as_str().to_string(),
                        password,
                    }
                }
            }
            _ if self.config.anonymous_allowed() => AuthCheck::Done(Ok(())),
            _ => AuthCheck::Done(Err(ReasonCode::NOT_AUTHORIZED)),
        }
    }

    /// The verdict of an [`AuthCheck::Verify`]: a good password is cached.
    pub(crate) fn auth_verified(
        &mut self,
        user: &str,
        password: &[u8],
        ok: bool,
    ) -> Result<(), ReasonCode> {
        if !ok {
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        // Not if the file changed meanwhile: the verdict was for the old one.
        if self.shared.passwords_gen.load(Ordering::Acquire) == self.auth_gen {
            self.auth_cache.insert(user.to_string(), digest(password));
        }
        Ok(())
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_queued_messages: self.config.max_queued_messages,
            max_queued_bytes: self.config.max_queued_bytes,
            queue_qos0: self.config.queue_qos0,
            decode: self.store.is_some().then_some(super::persist::DECODE),
            inflight_ttl: self.config.inflight_ttl,
        }
    }

    /// A client id the broker picks for an empty one: unique, and owned by
    /// this shard, so the connection stays where it was accepted.
    pub fn assign_client_id(&mut self) -> String {
        loop {
            let n = self.next_conn_id();
            let id = format!(
                "ringmq-{:x}-{:x}",
                self.started.elapsed().as_nanos() as u64,
                n
            );
            if super::owner_of(&id, self.nr_shards) == self.id {
                return id;
            }
        }
    }

    /// A CONNECT arrived on `conn`, which this shard owns. `assigned` is the
    /// id picked by the accepting shard for an empty client id; `auth` the
    /// verdict on its credentials (see [`Shard::auth_check`]).
    pub fn on_connect(
        &mut self,
        conn: &Rc<Conn>,
        c: Connect,
        assigned: Option<String>,
        auth: Result<(), ReasonCode>,
        now: Instant,
    ) -> Flow {
        let v5 = c.protocol.is_v5();
        let mut props = ConnAckProperties::default();
        let client_id: Arc<str> = if c.client_id.is_empty() {
            // [MQTT-3.1.3-8] 3.1.1: an empty id needs clean session; 3.1 has no empty ids.
            if c.protocol == ProtocolVersion::V31 || (!v5 && !c.clean_start) {
                return self.refuse(conn, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            let id = assigned.unwrap_or_else(|| self.assign_client_id());
            if v5 {
                props.assigned_client_identifier = MqttStr::try_from(id.as_str()).ok();
            }
            id.into()
        } else {
            c.client_id.as_str().into()
        };
        if v5 && c.properties.authentication_method.is_some() {
            return self.refuse(conn, ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        if let Err(reason) = auth {
            return self.refuse(conn, reason);
        }
        self.refresh_acl();
        let grants = self
            .acl
            .as_ref()
            .map(|a| a.grants(c.username.as_ref().map(|u| u.as_str()), &client_id));
        if let (Some(g), Some(w)) = (&grants, &c.will) {
            // Checked here rather than when the will goes (as Mosquitto
            // does, silently): the client learns at once.
            if !g.allows(Want::Write, w.topic.as_str()) {
                self.acl_denied(&client_id, "will", w.topic.as_str(), now);
                return self.refuse(conn, ReasonCode::NOT_AUTHORIZED);
            }
        }
        if self.stopping {
            return self.refuse(conn, ReasonCode::SERVER_UNAVAILABLE);
        }
        if self.shared.connections.load(Ordering::Relaxed) > self.config.max_connections {
            return self.refuse(conn, ReasonCode::SERVER_BUSY);
        }
        let expiry = connect_expiry(&c, self.config.v3_session_expiry);
        let window = self
            .config
            .max_inflight
            .min(c.properties.receive_maximum.unwrap_or(u16::MAX));

        // Takeover: the old connection is closed, wherever it was accepted
        // (every connection of a client id is handled here, on its owner).
        let mut existing = self.by_client.get(&client_id).copied();
        if let Some(key) = existing {
            let mut fx = Vec::new();
            let e = self
                .entry(key)
                .expect("invariant: by_client names live slots");
            let old = e.conn.take();
            if e.life.takeover(c.clean_start, &mut fx) == Takeover::Replace {
                existing = None;
            }
            if let Some(old) = old {
                self.metrics.takeovers += 1;
                old.session.set(None);
                old.close_reason.set(Some(ReasonCode::SESSION_TAKEN_OVER));
                if let Some(held) = self.log_limits.takeover.allow(now) {
                    tracing::info!(
                        client_id = %client_id,
                        old_peer = %old.peer_str(),
                        peer = %conn.peer_str(),
                        held_back = held,
                        "session taken over"
                    );
                }
                if old.version.is_v5() {
                    // [v5:MQTT-3.1.4-3]
                    self.send(
                        &old,
                        &Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
                    );
                }
                old.close();
            }
            self.apply(key, fx, now);
        }
        let present = existing.is_some();
        let key = match existing {
            Some(k) => k,
            None => {
                let limits = self.limits();
                let life = Life::new(client_id.clone(), c.protocol, expiry);
                self.alloc_session(SessionEntry::new(life, Session::new(limits, window), 0))
            }
        };
        let max_keepalive = self.config.max_keepalive;
        let generation = self.next_generation();
        let mut fx = Vec::new();
        let e = self
            .entry(key)
            .expect("invariant: session just found or created");
        e.conn = Some(conn.clone());
        e.life
            .attach(generation, c.protocol, expiry, c.will, &mut fx);
        e.life.username = c.username.as_ref().map(|u| Arc::from(u.as_str()));
        e.session.set_window(window);
        self.set_grants(key, grants);
        conn.session.set(Some(key));
        self.shared_presence_changed(key);
        self.apply(key, fx, now);
        if v5 {
            if c.keep_alive > max_keepalive {
                props.server_keep_alive = Some(max_keepalive);
            }
            props.maximum_packet_size = u32::try_from(self.config.max_packet_bytes).ok();
            // [v5:MQTT-3.2.2-17] a client may not go past it.
            props.topic_alias_maximum = Some(self.config.max_topic_alias);
            props.receive_maximum = Some(self.config.max_inflight_in);
            props.shared_subscription_available = Some(true);
        }
        // [MQTT-3.2.2-2] / [MQTT-3.2.2-3]: session present only for a resumed session.
        *conn.client_id.borrow_mut() = Some(client_id.clone());
        if let Some(held) = self.log_limits.connects.allow(now) {
            tracing::info!(
                client_id = %client_id,
                peer = %conn.peer_str(),
                version = %c.protocol,
                clean_start = c.clean_start,
                keep_alive = c.keep_alive,
                session_present = present,
                held_back = held,
                "client connected"
            );
        }
        let ack = ConnAck {
            session_present: present,
            reason: ReasonCode::SUCCESS,
            properties: props,
        };
        self.send(conn, &Packet::ConnAck(Box::new(ack)));
        let mut out = std::mem::take(&mut self.scratch_packets);
        if let Some(e) = self.sending(key) {
            e.session.resume(now, &mut out);
        }
        self.flush_packets(key, &mut out, now);
        self.scratch_packets = out;
        Flow::Continue
    }
}

/// What [`Shard::auth_check`] found.
pub(crate) enum AuthCheck {
    /// The verdict.
    Done(Result<(), ReasonCode>),
    /// A password to check against the file: PBKDF2 costs up to
    /// milliseconds (more for a file with many iterations), so it runs on
    /// the executor's blocking thread, not on the shard, and a flood of bad
    /// passwords slows only itself.
    Verify {
        /// The file.
        file: Arc<crate::auth::PasswordFile>,
        /// The user name.
        user: String,
        /// The password given.
        password: bytes::Bytes,
    },
}

/// What the verified-password cache keeps of a password: its SHA-512, so a
/// client that reconnects costs no PBKDF2 and the cache holds no password.
fn digest(password: &[u8]) -> [u8; 64] {
    use sha2::Digest;
    sha2::Sha512::digest(password).into()
}
