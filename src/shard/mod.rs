//! A shard: one executor thread's connections, sessions, subscriptions,
//! interest replica, retained replica, timers and counters.
//!
//! The [`Shard`] struct is the synchronous heart: every handler takes
//! `&mut self` and `now`, changes state, and writes packets into connection
//! outboxes or messages into the mesh's outgoing batches. It never awaits.
//! The async shell ([`run`]) owns the sockets, the tasks and the channels and
//! calls in between awaits; a `RefCell` borrow never spans an await.
//!
//! Data flow of a publish: reader task → [`Shard::on_packet`] → route by the
//! interest replica → local delivery, plus one `Arc<Message>` per other
//! interested shard in that shard's batch → its [`Shard::on_mesh`] → local
//! delivery there.

mod acl;
pub mod aliases;
mod conn;
mod connect;
mod connection;
mod log_limit;
mod mesh;
mod metrics_http;
mod park;
pub mod persist;
pub mod pipe;
mod publish;
mod shared;
mod subscribe;

pub use conn::{
    Congestion, CongestionState, Conn, CONGESTED_OUTBOX_BYTES, MAX_OUTBOX_BYTES, STUCK_AFTER,
    STUCK_CHECK,
};
pub use connection::{run, ShardStart, OVER_LIMIT_ANSWERED};
pub use log_limit::{LogLimit, LogLimits};
pub use mesh::ShardMsg;

/// Mesh constants and types the bootstrap needs.
pub mod mesh_types {
    pub use super::mesh::MESH_CHANNEL_BATCHES;
}

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{Disconnect, LastWill, Packet, ReasonCode};
use crate::session::{Delivery, Effect, Life, Message, Session, Timer};
use crate::timer::DeadlineQueue;
use crate::topic::{RetainedIndex, SubscriptionTrie, TopicFilter};

/// State shared by every shard and the main thread: written rarely (connect,
/// shutdown), never on the publish path.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by the main thread on SIGINT/SIGTERM or `BrokerHandle::shutdown`.
    pub shutdown: AtomicBool,
    /// Live connections, whole broker, against `--max-connections`.
    pub connections: AtomicUsize,
    /// The most live connections the broker has had at once.
    pub connections_peak: AtomicUsize,
    /// Accepted sockets that have not finished CONNECT yet; they count
    /// against `--max-connections` too.
    pub pending: AtomicUsize,
    /// Per shard: its log could not allocate a segment (disk full).
    pub log_full: Vec<AtomicBool>,
    /// How many of `log_full` are set: one load on the publish path.
    pub logs_full: AtomicUsize,
    /// The password file (`--password-file`), swapped whole by SIGHUP.
    pub passwords: arc_swap::ArcSwapOption<crate::auth::PasswordFile>,
    /// Bumped at each swap: shards then forget the passwords they verified.
    pub passwords_gen: AtomicU64,
    /// The ACL file (`--acl-file`), swapped whole by SIGHUP.
    pub acl: arc_swap::ArcSwapOption<crate::auth::acl::AclFile>,
    /// Bumped at each swap: shards then work out every session's grants again.
    pub acl_gen: AtomicU64,
    /// The TLS listeners' certificates, swapped whole by SIGHUP.
    pub tls: arc_swap::ArcSwapOption<crate::transport::tls::TlsSettings>,
    /// Bumped at each swap: shards then make their server config again.
    pub tls_gen: AtomicU64,
    /// Shards whose recovered subscriptions every shard has applied (at
    /// start); wills due at start wait for all of them.
    pub recovered: AtomicUsize,
}

impl Shared {
    /// State for `shards` shards.
    pub fn new(shards: usize) -> Shared {
        Shared {
            log_full: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            ..Shared::default()
        }
    }
}

impl Shared {
    /// True once shutdown was asked for.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}

/// The shard that owns the session of `client_id`: a stable hash (FNV-1a
/// with a mixing finaliser), so the same id lands on the same shard after a
/// restart.
pub fn owner_of(client_id: &str, nr_shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits depend only on the low bits of each byte (the odd
    // multiplier keeps them), so `% 2` alone would split ids by the parity
    // of their characters: `sensor-a`, `sensor-c`, `sensor-e` on one shard.
    // The murmur3 finaliser spreads every input bit over the low bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % nr_shards as u64) as usize
}

/// What the reader should do after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Close the connection.
    Close,
}

pub(crate) use crate::session::SubOpts;

/// A subscription in the local trie.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubEntry {
    pub session: u32,
    pub opts: SubOpts,
    /// The session's `grants_epoch` when its grants let it read every
    /// topic this filter matches (no deny rule reaches into it): while the
    /// session keeps those grants, deliveries through it skip the
    /// per-message check. New grants (a reload, a reconnect under another
    /// user name) get a new epoch, so the mark lapses. 0: check each.
    pub acl_free_at: u64,
}

/// One session slot: the session's life and queue, and what the shard keeps
/// beside them (its connection, its log id).
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub life: Life,
    pub session: Session,
    pub conn: Option<Rc<Conn>>,
    /// Set after a drop was logged, cleared when the queue drains: one log
    /// line per burst of drops.
    pub drop_logged: bool,
    /// The session's id in this shard's log; 0 when it is not logged
    /// (in memory, or a session that ends with its connection).
    pub sid: u64,
    /// What the ACL lets it do; `None` without an ACL file.
    pub grants: Option<Arc<crate::auth::acl::Grants>>,
    /// Names `grants` (see [`SubEntry::acl_free_at`]); never 0, never reused.
    pub grants_epoch: u64,
}

impl SessionEntry {
    /// A slot for `life`, with an empty queue and no subscriptions.
    pub(crate) fn new(life: Life, session: Session, sid: u64) -> SessionEntry {
        SessionEntry {
            life,
            session,
            conn: None,
            drop_logged: false,
            sid,
            grants: None,
            grants_epoch: 0,
        }
    }

    /// True while a connection that is not closing holds the session.
    pub(crate) fn is_online(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_closing())
    }
}

/// What a deadline in the shard's queue is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerKey {
    /// A timer session slot `session`'s [`Life`] armed (its generation makes
    /// a stale one harmless).
    Session { session: u32, timer: Timer },
    /// Connection `conn`'s keep-alive may have run out (ids never repeat).
    KeepAlive { conn: u64 },
    /// Connection `conn` (3.1.1, `--resend-interval`) may have messages to
    /// resend for session slot `session`.
    Resend { session: u32, conn: u64 },
    /// Sweep every session for messages past `--inflight-ttl`.
    InflightTtl,
    /// Publish `$SYS` (every `--sys-interval`).
    Sys,
}

/// What an acknowledgement waits for: every shard applied broadcast
/// `barrier` (a SUBACK, a retained PUBACK); this shard's log is durable up
/// to `ticket` (`--sync always`); each `(shard, n)` in `remote` has logged
/// the first `n` deliveries this shard sent it. Zero and empty wait for nothing.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub barrier: u64,
    pub ticket: u64,
    pub remote: Vec<(usize, u64)>,
}

/// An acknowledgement (SUBACK, PUBACK, PUBREC) held at its [`Gate`].
/// Released in order per connection, so its acknowledgements keep theirs.
#[derive(Debug)]
pub(crate) struct Deferred {
    pub conn: Rc<Conn>,
    pub session: u32,
    pub gate: Gate,
    pub ack: Packet,
    pub retained: Vec<Delivery>,
}

/// One shard's state. See the module docs.
#[derive(Debug)]
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub nr_shards: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) started: Instant,
    pub(crate) sessions: Vec<Option<Box<SessionEntry>>>,
    free_sessions: Vec<u32>,
    pub(crate) by_client: HashMap<Arc<str>, u32>,
    pub(crate) conns: HashMap<u64, Rc<Conn>>,
    next_conn_id: u64,
    /// Last session generation handed out; only grows.
    last_generation: u64,
    pub(crate) subs: SubscriptionTrie<SubEntry>,
    pub(crate) filter_refs: HashMap<TopicFilter, u32>,
    pub(crate) interest: SubscriptionTrie<u16>,
    /// The same for subscriptions of logged sessions: a QoS 1/2 publish
    /// waits for the `Stored` report of only the peers this table names.
    pub(crate) durable_refs: HashMap<TopicFilter, u32>,
    pub(crate) durable_interest: SubscriptionTrie<u16>,
    /// Shared subscriptions: local members, everyone's counts.
    pub(crate) shared_subs: shared::SharedSubs,
    pub(crate) retained: RetainedIndex<Arc<Message>>,
    pub(crate) timers: DeadlineQueue<TimerKey>,
    /// The deadline the timer task sleeps until, and its waker: arming an
    /// earlier one wakes it to sleep again until that.
    pub(crate) timer_at: Option<Instant>,
    pub(crate) timer_waker: Option<std::task::Waker>,
    /// This shard's counters.
    pub metrics: Metrics,
    pub(crate) peer_metrics: Vec<Metrics>,
    /// Scrapes (`/metrics`): the last one asked for, the last each peer
    /// answered, and the responder waiting for the answers.
    pub(crate) scrape_seq: u64,
    pub(crate) peer_seq: Vec<u64>,
    pub(crate) scrape_wakers: Vec<std::task::Waker>,
    /// `$SYS` values as last published, so that only changes go out.
    pub(crate) sys_sent: HashMap<String, String>,
    /// Outgoing mesh batches, one per destination shard.
    pub(crate) outgoing: Vec<Vec<ShardMsg>>,
    pub(crate) mesh_wakers: Vec<Option<std::task::Waker>>,
    /// Interest and retain broadcasts sent, and how many each peer applied.
    pub(crate) broadcasts: u64,
    pub(crate) acked: Vec<u64>,
    /// Held acknowledgements, per connection id: each connection's stay in
    /// order ([MQTT-4.6.0-2]) without waiting behind another's.
    pub(crate) deferred: HashMap<u64, VecDeque<Deferred>>,
    pub(crate) scratch_packets: Vec<Packet>,
    pub(crate) scratch_matches: Vec<SubEntry>,
    /// True once shutdown began on this shard.
    pub stopping: bool,
    /// When idle writers were last swept ([`conn::WRITER_SWEEP`]).
    writers_swept: Option<Instant>,
    /// Where quiet connections wait without a reader task (none in tests
    /// that run a shard without its threads).
    pub(crate) parking: Option<park::Parking>,
    /// Connections that came since the last tick, and those that came in
    /// the tick before: the latter, if quiet, park at once rather than
    /// at the next sweep (see [`Shard::park_fresh`]).
    fresh: Vec<u64>,
    fresh_due: Vec<u64>,
    /// Readers asked to park since the freed memory was last released.
    parks_since_release: usize,
    released_at: Option<Instant>,
    /// Connections whose outbox is past [`CONGESTED_OUTBOX_BYTES`].
    pub congestion: Congestion,
    /// Rate limits of the log lines a flood would repeat.
    pub log_limits: LogLimits,
    /// The log, when the broker persists.
    pub store: Option<persist::Store>,
    /// Per peer: `Deliver` messages sent to it, and how many of those it
    /// reported logged (what a QoS 1/2 acknowledgement waits for).
    pub(crate) delivers_sent: Vec<u64>,
    pub(crate) delivers_stored: Vec<u64>,
    /// Per peer: `Deliver` messages received, and whether a report is due.
    pub(crate) delivers_received: Vec<u64>,
    pub(crate) report_due: Vec<bool>,
    /// Per peer: numbers of its deliveries this shard's log refused, for
    /// the next `Stored` report.
    pub(crate) failed_from: Vec<Vec<u64>>,
    /// Per peer: numbers of this shard's deliveries the peer's log refused,
    /// until the publish they belong to is answered.
    pub(crate) delivers_failed: Vec<std::collections::HashSet<u64>>,
    /// Peers the publish being handled went to, with their delivery counts.
    pub(crate) routed_remote: Vec<(usize, u64)>,
    pub(crate) scratch_deliveries: Vec<(u32, Delivery)>,
    /// Set when this shard's log refused a message of the publish being
    /// handled: its acknowledgement must not say it is safe.
    pub(crate) log_failed: bool,
    /// User name → SHA-512 of the password last verified for it: reconnects
    /// skip the password file's PBKDF2 (one entry per user in the file).
    pub(crate) auth_cache: HashMap<String, [u8; 64]>,
    /// The `Shared::passwords_gen` the cache was filled under.
    pub(crate) auth_gen: u64,
    /// This shard's copy of `Shared::acl`, taken at `acl_gen`.
    pub(crate) acl: Option<Arc<crate::auth::acl::AclFile>>,
    pub(crate) acl_gen: u64,
    /// The last grants epoch handed out.
    pub(crate) grants_epoch: u64,
    /// This shard's own TLS server config (its session cache is a mutex:
    /// not shared between shards), made at `tls_gen`.
    pub(crate) tls_config: Option<(Arc<rustls::ServerConfig>, bool)>,
    pub(crate) tls_gen: u64,
    /// TLS handshakes running on this shard.
    pub(crate) tls_handshakes: usize,
    /// Wills of sessions that expired while the broker was down, published
    /// once every shard has its recovered interest.
    pub(crate) overdue_wills: Vec<(Arc<str>, LastWill)>,
}

impl Shard {
    /// An empty shard.
    pub fn new(id: usize, nr_shards: usize, config: Arc<Config>, shared: Arc<Shared>) -> Shard {
        let now = Instant::now();
        let mut shard = Shard {
            id,
            nr_shards,
            config,
            shared,
            started: now,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client: HashMap::new(),
            conns: HashMap::new(),
            next_conn_id: 0,
            last_generation: 0,
            subs: SubscriptionTrie::new(),
            filter_refs: HashMap::new(),
            interest: SubscriptionTrie::new(),
            durable_refs: HashMap::new(),
            durable_interest: SubscriptionTrie::new(),
            shared_subs: shared::SharedSubs::default(),
            retained: RetainedIndex::default(),
            timers: DeadlineQueue::default(),
            timer_at: None,
            timer_waker: None,
            metrics: Metrics::default(),
            peer_metrics: vec![Metrics::default(); nr_shards],
            scrape_seq: 0,
            peer_seq: vec![0; nr_shards],
            scrape_wakers: Vec::new(),
            sys_sent: HashMap::new(),
            outgoing: (0..nr_shards).map(|_| Vec::new()).collect(),
            mesh_wakers: vec![None; nr_shards],
            broadcasts: 0,
            acked: vec![0; nr_shards],
            deferred: HashMap::new(),
            scratch_packets: Vec::new(),
            scratch_matches: Vec::new(),
            stopping: false,
            writers_swept: None,
            parking: None,
            fresh: Vec::new(),
            fresh_due: Vec::new(),
            parks_since_release: 0,
            released_at: None,
            congestion: Congestion::default(),
            log_limits: LogLimits::default(),
            store: None,
            delivers_sent: vec![0; nr_shards],
            delivers_stored: vec![0; nr_shards],
            delivers_received: vec![0; nr_shards],
            report_due: vec![false; nr_shards],
            failed_from: vec![Vec::new(); nr_shards],
            delivers_failed: vec![std::collections::HashSet::new(); nr_shards],
            routed_remote: Vec::new(),
            scratch_deliveries: Vec::new(),
            log_failed: false,
            overdue_wills: Vec::new(),
            auth_cache: HashMap::new(),
            auth_gen: 0,
            acl: None,
            acl_gen: u64::MAX,
            grants_epoch: 0,
            tls_config: None,
            tls_gen: u64::MAX,
            tls_handshakes: 0,
        };
        // Before recovery, so recovered sessions get their grants.
        shard.refresh_acl();
        shard
    }

    /// This shard's TLS server config, made again after a SIGHUP brought
    /// new certificates; `None` without TLS settings.
    /// With it, whether a client certificate's CN is the user name.
    pub(crate) fn tls_server_config(&mut self) -> Option<(Arc<rustls::ServerConfig>, bool)> {
        let generation = self.shared.tls_gen.load(Ordering::Acquire);
        if generation != self.tls_gen {
            self.tls_gen = generation;
            self.tls_config = self.shared.tls.load_full().and_then(|t| {
                t.server_config()
                    .map_err(|e| tracing::error!(shard = self.id, error = %e, "TLS config"))
                    .ok()
                    .map(|c| (c, t.identity_as_username()))
            });
        }
        self.tls_config.clone()
    }

    /// A fresh connection id.
    pub fn next_conn_id(&mut self) -> u64 {
        self.next_conn_id += 1;
        ((self.id as u64) << 48) | self.next_conn_id
    }

    /// A session generation never handed out before on this shard.
    pub(crate) fn next_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }

    pub(crate) fn entry(&mut self, key: u32) -> Option<&mut SessionEntry> {
        self.sessions
            .get_mut(key as usize)
            .and_then(Option::as_deref_mut)
    }

    pub(crate) fn alloc_session(&mut self, e: SessionEntry) -> u32 {
        self.metrics.sessions += 1;
        let client = e.life.client_id.clone();
        let key = if let Some(k) = self.free_sessions.pop() {
            self.sessions[k as usize] = Some(Box::new(e));
            k
        } else {
            self.sessions.push(Some(Box::new(e)));
            (self.sessions.len() - 1) as u32
        };
        self.by_client.insert(client, key);
        key
    }

    /// Ends a session: its subscriptions leave the trie (and the interest
    /// table when they were the last local ones for their filter).
    pub(crate) fn remove_session(&mut self, key: u32) {
        let Some(e) = self.sessions.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
        self.metrics.sessions -= 1;
        self.metrics.dropped_expired += e.session.expired;
        self.log_session_end(e.sid);
        self.by_client.remove(&e.life.client_id);
        for filter in e.life.subscriptions.keys() {
            if shared::is_shared(filter) {
                self.leave_shared(filter, key);
                continue;
            }
            self.subs.remove(filter, |s| s.session == key);
            self.release_filter(filter, e.sid != 0);
        }
        self.free_sessions.push(key);
    }

    /// Sends `p` to `conn`, counting it.
    pub(crate) fn send(&mut self, conn: &Conn, p: &Packet) {
        match conn.send(p) {
            Ok(n) => self.metrics.packet_out(p.packet_type(), n),
            Err(e) => tracing::debug!(conn = conn.id, error = %e, "packet not sent"),
        }
    }

    /// Closes `conn` for a protocol violation: MQTT 5 clients get a
    /// DISCONNECT with `reason` first ([MQTT-4.13.1-1]).
    pub(crate) fn protocol_error(&mut self, conn: &Conn, reason: ReasonCode) -> Flow {
        self.metrics.protocol_errors += 1;
        tracing::info!(
            client_id = conn.client_id.borrow().as_deref().unwrap_or(""),
            peer = %conn.peer_str(),
            reason = %reason,
            "protocol error, closing"
        );
        conn.close_reason.set(Some(reason));
        if conn.version.is_v5() {
            self.send(conn, &Packet::Disconnect(Disconnect::new(reason)));
        }
        Flow::Close
    }

    /// The reader of `conn` ended (peer closed, error, or we closed it).
    pub fn on_close(&mut self, conn: &Rc<Conn>, now: Instant) {
        conn.close();
        let client = conn.client_id.borrow().clone();
        if let Some(client) = client {
            if let Some(held) = self.log_limits.connects.allow(now) {
                let reason = match conn.close_reason.get() {
                    Some(ReasonCode::NORMAL_DISCONNECTION) if conn.clean_disconnect.get() => {
                        "DISCONNECT from client (0x00 normal disconnection)".to_string()
                    }
                    Some(r) if conn.clean_disconnect.get() => {
                        format!("DISCONNECT from client ({r})")
                    }
                    Some(r) => r.to_string(),
                    None => "connection lost".to_string(),
                };
                tracing::info!(
                    client_id = &*client,
                    peer = %conn.peer_str(),
                    reason,
                    held_back = held,
                    "client disconnected"
                );
            }
        }
        self.detach_session(conn, now);
        // Counted down last: `BrokerHandle::connections` promises the
        // session is offline and its will armed or sent by then.
        if self.conns.remove(&conn.id).is_some() {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.clients_connected -= 1;
        }
    }

    /// Takes `conn`'s session offline: will, expiry timer, or removal.
    fn detach_session(&mut self, conn: &Conn, now: Instant) {
        let Some(key) = conn.session.take() else {
            return;
        };
        let mut fx = Vec::new();
        let Some(e) = self.entry(key) else {
            return;
        };
        e.conn = None;
        e.life.detach(now, &mut fx);
        self.shared_presence_changed(key);
        self.apply(key, fx, now);
    }

    fn on_timer(&mut self, key: TimerKey, now: Instant) {
        match key {
            TimerKey::Session { session, timer } => {
                let mut fx = Vec::new();
                let Some(e) = self.entry(session) else {
                    return;
                };
                e.life.fire(timer, &mut fx);
                if fx.iter().any(|f| matches!(f, Effect::End)) {
                    self.metrics.sessions_expired += 1;
                }
                self.apply(session, fx, now);
            }
            TimerKey::KeepAlive { conn } => self.check_keep_alive(conn, now),
            TimerKey::Resend { session, conn } => self.resend_due(session, conn, now),
            TimerKey::InflightTtl => self.expire_unresolved(now),
            TimerKey::Sys => {
                self.publish_sys(now);
                self.arm_sys(now);
            }
        }
    }

    /// Arms the next `$SYS` publication, `--sys-interval` from `now`.
    pub(crate) fn arm_sys(&mut self, now: Instant) {
        if let Some(every) = self.config.sys_interval {
            self.arm(now + every, TimerKey::Sys);
        }
    }

    /// Arms the next `--inflight-ttl` sweep, 1/16 of the TTL away (at least
    /// 10 ms): a message goes at most 1/8 of the TTL late.
    pub(crate) fn arm_inflight_ttl(&mut self, now: Instant) {
        if let Some(ttl) = self.config.inflight_ttl {
            let every = (ttl / 16).max(Duration::from_millis(10));
            self.arm(now + every, TimerKey::InflightTtl);
        }
    }

    /// Drops what `--inflight-ttl` says is too old, in every session (each
    /// checks only its queue's front and its window), then arms the next sweep.
    fn expire_unresolved(&mut self, now: Instant) {
        let mut total = 0;
        let mut out = std::mem::take(&mut self.scratch_packets);
        for key in 0..self.sessions.len() as u32 {
            let Some(e) = self.sending(key) else { continue };
            let online = e.is_online();
            let n = e.session.expire_unresolved(now, online, &mut out);
            if n > 0 || !out.is_empty() {
                total += n;
                self.flush_packets(key, &mut out, now);
            }
        }
        self.scratch_packets = out;
        if total > 0 {
            self.metrics.ttl_drops += total as u64;
            self.metrics.publishes_dropped += total as u64;
            if let Some(held) = self.log_limits.ttl_drops.allow(now) {
                tracing::warn!(
                    dropped = total,
                    ttl = ?self.config.inflight_ttl,
                    held_back = held,
                    "messages dropped: unresolved past the inflight TTL"
                );
            }
        }
        self.arm_inflight_ttl(now);
    }

    /// Arms session `key`'s resend check when its 3.1.1 connection has
    /// messages in flight and none is armed: one deadline per connection,
    /// at the oldest unanswered send plus `--resend-interval`.
    pub(crate) fn arm_resend(&mut self, key: u32) {
        let Some(every) = self.config.resend_interval else {
            return;
        };
        let Some(e) = self.entry(key) else { return };
        let Some(conn) = e.conn.clone() else { return };
        if conn.version.is_v5() || conn.resend_armed.get() {
            return;
        }
        if let Some(oldest) = e.session.oldest_sent() {
            conn.resend_armed.set(true);
            self.arm(
                oldest + every,
                TimerKey::Resend {
                    session: key,
                    conn: conn.id,
                },
            );
        }
    }

    fn resend_due(&mut self, key: u32, conn: u64, now: Instant) {
        let Some(every) = self.config.resend_interval else {
            return;
        };
        let max = self.config.max_resends;
        let Some(e) = self.entry(key) else { return };
        // Only for the connection it was armed for, while it holds the session.
        let Some(c) = e.conn.clone().filter(|c| c.id == conn) else {
            return;
        };
        c.resend_armed.set(false);
        let mut out = std::mem::take(&mut self.scratch_packets);
        let e = self
            .sending(key)
            .expect("invariant: the slot was found above");
        let (resent, dropped) = e.session.resend_due(now, every, max, &mut out);
        self.metrics.resends += resent as u64;
        self.metrics.resend_drops += dropped as u64;
        self.metrics.publishes_dropped += dropped as u64;
        if dropped > 0 {
            if let Some(held) = self.log_limits.resend_drops.allow(now) {
                tracing::warn!(
                    client_id = c.client_id.borrow().as_deref().unwrap_or(""),
                    dropped,
                    max_resends = max,
                    held_back = held,
                    "messages dropped: never acknowledged after the last resend"
                );
            }
        }
        // flush_packets arms the next check.
        self.flush_packets(key, &mut out, now);
        self.scratch_packets = out;
    }

    /// Arms `conn`'s keep-alive check: 1.5 × Keep Alive after it was last
    /// heard from ([v5:MQTT-3.1.2-22] / [v3:MQTT-3.1.2-24]). A packet
    /// arriving moves nothing; the check re-arms from the latest packet, so
    /// each connection costs one deadline per interval, not one per packet.
    pub(crate) fn arm_keep_alive(&mut self, conn: &Conn) {
        if let Some(at) = crate::timer::keep_alive_deadline(conn.last_seen.get(), conn.keep_alive) {
            self.arm(at, TimerKey::KeepAlive { conn: conn.id });
        }
    }

    fn check_keep_alive(&mut self, id: u64, now: Instant) {
        let Some(c) = self.conns.get(&id).cloned() else {
            return; // closed since
        };
        if c.is_closing() {
            return;
        }
        if crate::timer::keep_alive_expired(c.last_seen.get(), c.keep_alive, now).is_err() {
            return self.arm_keep_alive(&c);
        }
        self.metrics.keepalive_timeouts += 1;
        if let Some(held) = self.log_limits.keepalive.allow(now) {
            tracing::info!(
                client_id = c.client_id.borrow().as_deref().unwrap_or(""),
                peer = %c.peer_str(),
                held_back = held,
                "keep alive timeout"
            );
        }
        if c.version.is_v5() {
            self.send(
                &c,
                &Packet::Disconnect(Disconnect::new(ReasonCode::KEEP_ALIVE_TIMEOUT)),
            );
        }
        c.close_for(ReasonCode::KEEP_ALIVE_TIMEOUT);
    }

    /// Arms `key` for `at`, waking the timer task if it sleeps past `at`.
    fn arm(&mut self, at: Instant, key: TimerKey) {
        self.timers.insert(at, key);
        if self.timer_at.is_none_or(|t| at < t) {
            if let Some(w) = self.timer_waker.take() {
                w.wake();
            }
        }
    }

    /// Fires every timer due at `now`: session timers and keep-alive checks
    /// (the timer task calls this
    /// when the earliest deadline passes).
    pub fn fire_timers(&mut self, now: Instant) {
        for key in self.timers.pop_expired(now) {
            self.on_timer(key, now);
        }
    }

    /// Carries out what session `key`'s [`Life`] decided, in its order.
    pub(crate) fn apply(&mut self, key: u32, effects: Vec<Effect>, now: Instant) {
        for fx in effects {
            match fx {
                Effect::PublishWill(will) => {
                    let Some(client) = self.entry(key).map(|e| e.life.client_id.clone()) else {
                        continue;
                    };
                    self.publish_will(&client, *will, now);
                }
                Effect::Arm { at, timer } => self.arm(
                    at,
                    TimerKey::Session {
                        session: key,
                        timer,
                    },
                ),
                Effect::Persist => self.log_session(key),
                Effect::End => {
                    if let Some(e) = self.entry(key) {
                        tracing::debug!(client_id = %e.life.client_id, "session ended");
                    }
                    self.remove_session(key);
                }
            }
        }
    }

    /// Periodic work: checkpoints, log space, shutdown. Every deadline
    /// (wills, expiry, keep-alive, resends, TTL, `$SYS`) is on the timer task
    /// ([`Shard::fire_timers`]).
    pub fn tick(&mut self, now: Instant) {
        self.refresh_acl();
        if self.shared.stopping() && !self.stopping {
            self.begin_shutdown();
        }
        self.check_congested(now);
        self.maybe_checkpoint();
        self.retry_log_space();
        let asked = self.sweep_writers(now) + self.park_fresh(now);
        self.release_freed(asked, now);
    }

    /// Parks the connections of the tick before last that went quiet after
    /// their first packets (CONNECT, SUBSCRIBE). Their reader tasks and
    /// polls are then freed within a tick or two, so a storm of clients
    /// that go idle never holds a reader for each at once: an allocator
    /// keeps the pages of the peak, so what never coexists is what saves.
    fn park_fresh(&mut self, now: Instant) -> usize {
        let mut due = std::mem::replace(&mut self.fresh_due, std::mem::take(&mut self.fresh));
        let mut asked = 0;
        for id in due.drain(..) {
            if let Some(c) = self.conns.get(&id) {
                asked += usize::from(c.sweep_reader(now, conn::FRESH_QUIET));
            }
        }
        self.fresh = due;
        asked
    }

    /// After readers parked, gives the pages they freed back to the OS:
    /// mimalloc keeps a thread's empty pages until that thread allocates
    /// again, and an idle shard does not. Once a storm of parks is over (a
    /// tick without new ones), or once a second while it lasts: a forced
    /// collect walks the whole heap.
    fn release_freed(&mut self, asked: usize, now: Instant) {
        self.parks_since_release += asked;
        if self.parks_since_release == 0 {
            return;
        }
        let last = *self.released_at.get_or_insert(now);
        if asked > 0 && now.duration_since(last) < Duration::from_secs(1) {
            return;
        }
        self.parks_since_release = 0;
        self.released_at = Some(now);
        // SAFETY: mimalloc's own collection of this thread's heap (a no-op
        // for memory of another global allocator, when embedded).
        unsafe { libmimalloc_sys::mi_collect(true) };
    }

    /// Ends the writers that stayed idle through a whole sweep period, and
    /// asks the readers that did to park. Returns how many were asked.
    fn sweep_writers(&mut self, now: Instant) -> usize {
        let last = *self.writers_swept.get_or_insert(now);
        if now.duration_since(last) < conn::WRITER_SWEEP {
            return 0;
        }
        self.writers_swept = Some(now);
        let parking = self.parking.is_some();
        let mut asked = 0;
        for c in self.conns.values() {
            if c.sweep_writer() {
                self.metrics.writers_retired += 1;
            } else if parking {
                asked += usize::from(c.sweep_reader(now, conn::WRITER_SWEEP));
            }
        }
        asked
    }

    /// Marks the congested connections whose writers made no progress for
    /// [`STUCK_AFTER`] as stuck, so that they stop holding the shard (run
    /// every [`conn::STUCK_CHECK`] while any connection is congested).
    pub fn check_congested(&mut self, now: Instant) {
        let mut stuck = Vec::new();
        for id in self.congestion.congested_ids() {
            if let Some(c) = self.conns.get(&id) {
                if c.check_stuck(now) {
                    stuck.push(c.clone());
                }
            }
        }
        for c in stuck {
            self.metrics.slow_consumers += 1;
            if let Some(held) = self.log_limits.slow_consumer.allow(now) {
                tracing::warn!(
                    client_id = c.client_id.borrow().as_deref().unwrap_or(""),
                    peer = %c.peer_str(),
                    backlog_bytes = c.backlog(),
                    held_back = held,
                    "slow consumer: not reading; its QoS 0 messages are dropped until it catches up"
                );
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.stopping = true;
        let conns: Vec<Rc<Conn>> = self.conns.values().cloned().collect();
        for c in conns {
            if c.version.is_v5() {
                self.send(
                    &c,
                    &Packet::Disconnect(Disconnect::new(ReasonCode::SERVER_SHUTTING_DOWN)),
                );
            }
            c.close_for(ReasonCode::SERVER_SHUTTING_DOWN);
        }
    }

    /// Registers a connection for keep-alive and shutdown.
    pub(crate) fn add_conn(&mut self, conn: Rc<Conn>) {
        let live = self.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .connections_peak
            .fetch_max(live, Ordering::Relaxed);
        self.metrics.clients_connected += 1;
        self.metrics.clients_total += 1;
        self.arm_keep_alive(&conn);
        if self.parking.is_some() {
            self.fresh.push(conn.id);
        }
        // This shard's own peak, for `$SYS/broker/shard/K/...`.
        self.metrics.clients_maximum = self
            .metrics
            .clients_maximum
            .max(self.metrics.clients_connected);
        self.conns.insert(conn.id, conn);
    }

    /// Queues `msg` for shard `to` (sent in one batch per loop turn).
    pub(crate) fn mesh_send(&mut self, to: usize, msg: ShardMsg) {
        if let Some(q) = self.outgoing.get_mut(to) {
            q.push(msg);
            if let Some(w) = self.mesh_wakers.get_mut(to).and_then(Option::take) {
                w.wake();
            }
        }
    }

    /// Queues `msg` for every other shard.
    pub(crate) fn broadcast(&mut self, msg: impl Fn() -> ShardMsg) {
        for to in 0..self.nr_shards {
            if to != self.id {
                self.mesh_send(to, msg());
            }
        }
    }

    /// Messages waiting to be handed to the mesh.
    pub fn mesh_backlog(&self) -> usize {
        self.outgoing.iter().map(Vec::len).sum()
    }

    /// This shard's counters with its gauges filled in: a walk over its
    /// sessions, so taken per `$SYS` interval or scrape, not per message.
    pub(crate) fn snapshot(&self) -> Metrics {
        let mut m = self.metrics;
        // The broker's own $SYS topics are not the users' retained messages.
        let sys_topics = TopicFilter::new(crate::protocol::MqttStr::from_static("$SYS/#"))
            .expect("a valid filter");
        let mut sys = 0;
        self.retained.for_each_match(&sys_topics, |_| {
            sys += 1;
            true
        });
        m.retained = (self.retained.len() - sys) as u64;
        m.parked = self.conns.values().filter(|c| c.is_parked()).count() as u64;
        for e in self.sessions.iter().flatten() {
            if e.life.expiry != Some(std::time::Duration::ZERO) {
                m.sessions_persistent += 1;
            }
            m.inflight += e.session.inflight_len() as u64;
            m.queued_messages += e.session.pending_len() as u64;
            m.queued_bytes += e.session.pending_bytes() as u64;
            m.dropped_expired += e.session.expired;
        }
        m
    }

    /// A peer's counters arrived: for `$SYS`, or answering scrape `seq`.
    pub(crate) fn on_stats(&mut self, from: usize, m: Metrics, seq: Option<u64>) {
        if let Some(slot) = self.peer_metrics.get_mut(from) {
            *slot = m;
        }
        if let Some(seq) = seq {
            self.peer_seq[from] = seq;
            for w in self.scrape_wakers.drain(..) {
                w.wake();
            }
        }
    }

    fn publish_sys(&mut self, now: Instant) {
        if self.id != 0 {
            let m = self.snapshot();
            self.mesh_send(
                0,
                ShardMsg::Stats {
                    m: Box::new(m),
                    seq: None,
                },
            );
            return;
        }
        self.peer_metrics[0] = self.snapshot();
        let mut total = Metrics::default();
        for m in &self.peer_metrics {
            total.merge(m);
        }
        total.clients_maximum = self.shared.connections_peak.load(Ordering::Relaxed) as u64;
        let uptime = now.duration_since(self.started).as_secs();
        let mut items: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime".into(), format!("{uptime} seconds")),
        ];
        for (name, v) in total.sys_topics() {
            items.push((name.to_string(), v.to_string()));
        }
        for (k, m) in self.peer_metrics.clone().iter().enumerate() {
            for (name, v) in m.sys_topics() {
                items.push((format!("shard/{k}/{name}"), v.to_string()));
            }
        }
        for (name, value) in items {
            // Only what changed, as Mosquitto does.
            if self.sys_sent.get(&name) == Some(&value) {
                continue;
            }
            self.publish_internal(
                &format!("$SYS/broker/{name}"),
                value.clone().into_bytes(),
                now,
            );
            self.sys_sent.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `ids` each of `n` shards owns.
    fn spread(ids: impl Iterator<Item = String>, n: usize) -> Vec<usize> {
        let mut counts = vec![0usize; n];
        for id in ids {
            counts[owner_of(&id, n)] += 1;
        }
        counts
    }

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("client-1", 4), owner_of("client-1", 4));
        let counts = spread((0..4000).map(|i| format!("client-{i}")), 4);
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        for n in [2, 3, 8] {
            let counts = spread((0..8000).map(|i| format!("dev/{i:05}")), n);
            let even = 8000 / n;
            assert!(counts.iter().all(|&c| c > even * 9 / 10), "{n}: {counts:?}");
        }
    }

    /// perf/owner.py mirrors `owner_of` to pick bench client ids on the same
    /// or on different shards; these are the prefixes it prints for 2 shards.
    #[test]
    fn perf_owner_script_agrees() {
        assert_eq!(owner_of("lat0-p0", 2), owner_of("lat0-s0", 2));
        assert_ne!(owner_of("lat1-p0", 2), owner_of("lat1-s0", 2));
    }

    #[test]
    fn ids_differing_in_one_character_spread() {
        // Plain FNV-1a put all of these on one of two shards: their last
        // characters are all odd.
        for n in [2, 4] {
            let counts = spread("acegikmoqsuwy".chars().map(|c| format!("sensor-{c}")), n);
            assert!(
                counts.iter().filter(|&&c| c > 0).count() > n / 2,
                "{n}: {counts:?}"
            );
        }
    }
}
/// What every client costs, whatever it does: an idle one holds a session
/// slot and a connection, so these stay small (10,000 idle clients: about
/// 1.9 KB of RSS each, `perf/idle.sh`); rare parts (a will, outbound topic
/// aliases) and the pending queue are boxed. A session slot stays within
/// mimalloc's 384-byte size class: in the 512 one it shared pages with
/// glommio's poll sources, which parked readers free, and their holes kept
/// those pages from going back. The connection shares the 384 one with the
/// slots: a 320-byte connection (tried) measured no better, likely sharing
/// pages with what a connection storm frees.
#[cfg(test)]
mod size_tests {
    #[test]
    fn per_client_state_stays_small() {
        use std::mem::size_of;
        assert!(
            size_of::<super::SessionEntry>() <= 384,
            "{}",
            size_of::<super::SessionEntry>()
        );
        assert!(
            size_of::<super::Conn>() <= 368,
            "{}",
            size_of::<super::Conn>()
        );
        assert!(size_of::<crate::session::Life>() <= 128);
    }
}
