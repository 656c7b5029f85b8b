//! One client connection as the shard sees it: an outbox the writer task
//! drains, and the few facts about the client the shard needs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::protocol::{encode_packet, EncodeError, Packet, ProtocolVersion};
use crate::topic::TopicName;

/// Past this many unsent bytes a connection's QoS 0 messages are dropped:
/// a slow consumer must not grow the broker's memory without bound.
pub const MAX_OUTBOX_BYTES: usize = 16 << 20;

/// Past this many unsent bytes a connection is *congested*: the shard stops
/// reading publishers (and mesh batches) until it drains, so a fast
/// publisher is slowed to what its subscribers take instead of having its
/// QoS 0 messages read and then dropped.
pub const CONGESTED_OUTBOX_BYTES: usize = 1 << 20;

/// A congested connection stops holding its shard back once its unsent bytes
/// fall to this.
pub const UNCONGESTED_OUTBOX_BYTES: usize = CONGESTED_OUTBOX_BYTES / 4;

/// A congested connection whose writer made no progress for this long is
/// *stuck*: it stops holding the shard back at once, and loses its QoS 0
/// messages while its backlog is past [`CONGESTED_OUTBOX_BYTES`]. Others are
/// paused for at most about this long (plus [`STUCK_CHECK`]) by a consumer
/// that never reads: 200 ms of holding cost the healthy subscribers of a
/// 5 s fan-out run a p99 of 236 ms instead of 1.7 ms. A consumer that takes
/// less than a write chunk per this long (about 3 MB/s) is too slow to set
/// the pace for publishers anyway.
pub const STUCK_AFTER: Duration = Duration::from_millis(20);

/// A client whose pending queue holds the shard (see
/// [`Conn::hold_for_queue`]) and that acknowledges nothing for this long is
/// stuck. Longer than [`STUCK_AFTER`]: it is reading (its acknowledgements
/// prove it), and a client thread descheduled for 20 ms on a busy host
/// should not lose messages for it; at most this long per
/// [`STUCK_COOLDOWN`] is what it may cost the others.
pub const QUEUE_STUCK_AFTER: Duration = Duration::from_millis(250);

/// How often congested connections are checked for being stuck, while any is.
pub const STUCK_CHECK: Duration = Duration::from_millis(5);

/// A drain of a session's queue stops once the outbox holds this much; the
/// writer asks for more when it has written half of it. Above
/// [`CONGESTED_OUTBOX_BYTES`], so a draining queue still slows publishers.
pub const DRAIN_ROOM_BYTES: usize = 2 * CONGESTED_OUTBOX_BYTES;

/// After being stuck, a connection may not pause its shard again for this
/// long: a consumer that reads in rare bursts must not stall everyone at
/// every burst.
pub const STUCK_COOLDOWN: Duration = Duration::from_secs(10);

/// Most bytes the writer hands the socket at once, so that its progress is
/// seen in steps (see [`STUCK_AFTER`]).
pub const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// A writer that took no bytes through a whole sweep of this period (so for
/// one to two of them) ends; the reader starts a new one at the next byte.
/// An idle client then costs no writer task (a third of what it cost). A
/// client that gets a message every few seconds pays a task spawn for each,
/// about a microsecond.
pub const WRITER_SWEEP: Duration = Duration::from_secs(2);
/// How long a new connection must have read nothing to park at once.
pub const FRESH_QUIET: Duration = Duration::from_millis(50);

/// What [`Conn::take_outbox`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Bytes to write (or, with `spare` empty, the transport's own).
    Bytes,
    /// Nothing yet: the waker was registered.
    Wait,
    /// Closing, and everything was taken: flush the transport and close.
    Done,
    /// Idle through a sweep: end the writer, the connection stays open.
    Retire,
}

/// How many of a shard's connections are congested, and the readers waiting
/// for that to end (shared by the shard's connections, on one thread).
#[derive(Debug, Default)]
pub struct CongestionState {
    /// Ids of the congested connections.
    congested: RefCell<Vec<u64>>,
    waiters: RefCell<Vec<Waker>>,
    /// The stuck-connection watchdog, parked while nothing is congested.
    watchdog: RefCell<Option<Waker>>,
}

impl CongestionState {
    /// Congested connections.
    pub fn get(&self) -> usize {
        self.congested.borrow().len()
    }

    /// Ids of the congested connections, for the watchdog.
    pub fn congested_ids(&self) -> Vec<u64> {
        self.congested.borrow().clone()
    }

    fn add(&self, id: u64) {
        self.congested.borrow_mut().push(id);
        let w = self.watchdog.borrow_mut().take();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn remove(&self, id: u64) {
        let empty = {
            let mut c = self.congested.borrow_mut();
            c.retain(|&x| x != id);
            c.is_empty()
        };
        if empty {
            self.wake_all();
        }
    }

    /// Parks the watchdog until a connection congests.
    pub fn park_watchdog(&self, w: &Waker) {
        *self.watchdog.borrow_mut() = Some(w.clone());
    }

    /// Parks a reader (or the mesh receiver) until [`wake_all`](Self::wake_all).
    pub fn register(&self, w: &Waker) {
        let mut ws = self.waiters.borrow_mut();
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
    }

    /// Wakes every parked reader: congestion ended or the mesh drained.
    pub fn wake_all(&self) {
        let ws = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in ws {
            w.wake();
        }
    }
}

/// A peer address as log lines give it.
pub(crate) fn peer_name(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// A shard's [`CongestionState`].
pub type Congestion = std::rc::Rc<CongestionState>;

/// A live connection, owned by its shard (shared by `Rc` between the shard
/// state and the connection's reader and writer tasks).
pub struct Conn {
    /// Unique on this shard.
    pub id: u64,
    /// The socket, for shutting it down from the shard (a new number after
    /// each park, see [`super::park`]).
    fd: Cell<RawFd>,
    /// Protocol version from CONNECT.
    pub version: ProtocolVersion,
    /// The client's Maximum Packet Size.
    pub max_packet_bytes: usize,
    /// Keep alive agreed at CONNECT (zero: off).
    pub keep_alive: Duration,
    /// When the last packet arrived.
    pub last_seen: Cell<Instant>,
    /// Session slot this connection is attached to (None once detached).
    pub session: Cell<Option<u32>>,
    /// Inbound topic aliases (MQTT 5).
    pub topic_aliases: RefCell<HashMap<u16, TopicName>>,
    /// Set when the client sent DISCONNECT (no will then, unless 0x04).
    pub clean_disconnect: Cell<bool>,
    /// Where the client connects from, for log lines.
    pub peer: Cell<Option<std::net::SocketAddr>>,
    /// Client id once CONNECT was accepted, for log lines.
    pub client_id: RefCell<Option<std::sync::Arc<str>>>,
    /// Set when a drain of the session's queue stopped for room; the writer
    /// clears it and asks the shard for more once it has written enough.
    pub drain_blocked: Cell<bool>,
    /// QoS 1 PUBLISHes from the client whose PUBACK waits at its gate:
    /// with the session's QoS 2 ids awaiting PUBREL, what counts against
    /// the Receive Maximum the broker announced.
    pub acks_held: Cell<u32>,
    /// Set while a resend check is armed for this connection.
    pub resend_armed: Cell<bool>,
    /// Topic aliases the broker sends with (MQTT 5, when the client allows).
    pub out_aliases: RefCell<Option<Box<super::aliases::OutAliases>>>,
    /// Why the connection ended, once known (`None` at close: the peer
    /// closed it or the socket failed).
    pub close_reason: Cell<Option<crate::protocol::ReasonCode>>,
    outbox: RefCell<BytesMut>,
    /// The writer's, while it waits for bytes.
    waker: Cell<Option<Waker>>,
    /// The reader's: woken for bytes while no writer runs, to start one.
    reader_waker: Cell<Option<Waker>>,
    /// A writer task runs for this connection.
    writer_live: Cell<bool>,
    /// The writer took no bytes since the last sweep.
    writer_idle: Cell<bool>,
    /// The sweep told the writer to end.
    retire: Cell<bool>,
    /// The sweep asked the reader to park (see [`super::park`]).
    park: Cell<bool>,
    /// The socket and transport state while parked (`Some` is what parked
    /// means).
    parked: Cell<Option<Box<crate::transport::Handoff>>>,
    /// The transport has bytes of its own to send (TLS): the writer runs
    /// even with an empty outbox.
    poked: Cell<bool>,
    closing: Cell<bool>,
    /// Since when this connection counts in `congestion`, if it does.
    congested_since: Cell<Option<Instant>>,
    /// When the writer last finished a chunk (or the connection started).
    last_progress: Cell<Instant>,
    /// Set while stuck ([`STUCK_AFTER`]); until when it may not congest again.
    stuck_until: Cell<Option<Instant>>,
    /// Bytes handed to the writer and not yet written.
    writing: Cell<usize>,
    /// Set while [`Conn::holds_own_reader`] holds this connection's reader.
    reader_held: Cell<bool>,
    /// Set while the session's pending queue is past its high mark (see
    /// [`Conn::hold_for_queue`]).
    queue_held: Cell<bool>,
    congestion: Congestion,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("closing", &self.closing.get())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection attached to nothing yet.
    pub fn new(
        id: u64,
        fd: RawFd,
        version: ProtocolVersion,
        max_packet_bytes: usize,
        keep_alive: Duration,
        now: Instant,
        congestion: Congestion,
    ) -> Conn {
        Conn {
            id,
            fd: Cell::new(fd),
            version,
            max_packet_bytes,
            keep_alive,
            last_seen: Cell::new(now),
            session: Cell::new(None),
            topic_aliases: RefCell::new(HashMap::new()),
            clean_disconnect: Cell::new(false),
            peer: Cell::new(None),
            client_id: RefCell::new(None),
            close_reason: Cell::new(None),
            drain_blocked: Cell::new(false),
            acks_held: Cell::new(0),
            resend_armed: Cell::new(false),
            out_aliases: RefCell::new(None),
            // Grows with use: an idle connection should hold next to nothing.
            outbox: RefCell::new(BytesMut::new()),
            waker: Cell::new(None),
            reader_waker: Cell::new(None),
            writer_live: Cell::new(false),
            writer_idle: Cell::new(false),
            retire: Cell::new(false),
            park: Cell::new(false),
            parked: Cell::new(None),
            poked: Cell::new(false),
            closing: Cell::new(false),
            congested_since: Cell::new(None),
            last_progress: Cell::new(now),
            stuck_until: Cell::new(None),
            writing: Cell::new(0),
            reader_held: Cell::new(false),
            queue_held: Cell::new(false),
            congestion,
        }
    }

    /// The session's pending queue passed its high mark: hold the shard's
    /// readers (and so the publishers, here and across the mesh) while this
    /// client makes progress, so that a fast publisher is slowed instead of
    /// acknowledged and then dropped. A client that acknowledges nothing
    /// for [`QUEUE_STUCK_AFTER`] is stuck as a silent writer is, and fills
    /// its own queue.
    pub fn hold_for_queue(&self, now: Instant) {
        if self.queue_held.get() || self.stuck_until.get().is_some() || self.closing.get() {
            return;
        }
        self.queue_held.set(true);
        self.last_progress.set(now);
        self.congest(now);
    }

    fn congest(&self, now: Instant) {
        if self.congested_since.get().is_none() {
            self.congested_since.set(Some(now));
            self.congestion.add(self.id);
        }
    }

    /// An acknowledgement came: progress, while the queue holds the shard.
    pub fn acked(&self, now: Instant) {
        if self.queue_held.get() {
            self.last_progress.set(now);
        }
    }

    /// The pending queue fell to its low mark.
    pub fn release_queue(&self, now: Instant) {
        if self.queue_held.take() && self.backlog() <= UNCONGESTED_OUTBOX_BYTES {
            self.uncongest();
        }
        self.maybe_unstick(now);
    }

    /// True while the pending queue holds the shard's readers.
    pub fn is_queue_held(&self) -> bool {
        self.queue_held.get()
    }

    fn uncongest(&self) {
        if self.congested_since.take().is_some() {
            self.congestion.remove(self.id);
        }
    }

    /// True while this connection holds its shard's readers back.
    pub fn is_congested(&self) -> bool {
        self.congested_since.get().is_some()
    }

    /// True while this connection is a stuck consumer that is still behind:
    /// it loses its QoS 0 messages rather than slowing anyone.
    pub fn is_stuck(&self) -> bool {
        self.stuck_until.get().is_some()
            && self.congested_since.get().is_none()
            && self.backlog() > CONGESTED_OUTBOX_BYTES
    }

    /// Marks a congested connection whose writer made no progress for
    /// [`STUCK_AFTER`] as stuck; returns true when it just became so.
    pub fn check_stuck(&self, now: Instant) -> bool {
        if self.congested_since.get().is_none() {
            return false;
        }
        // Silent since its last chunk or since it last took bytes while idle:
        // a consumer that stopped reading long before its backlog reached the
        // mark is stuck the moment it is congested, so it holds the shard for
        // one check, not for another STUCK_AFTER.
        let limit = if self.queue_held.get() {
            QUEUE_STUCK_AFTER
        } else {
            STUCK_AFTER
        };
        if now.saturating_duration_since(self.last_progress.get()) <= limit {
            return false;
        }
        self.stuck_until.set(Some(now + STUCK_COOLDOWN));
        self.queue_held.set(false);
        self.uncongest();
        true
    }

    /// True while this connection's own reader must wait: a stuck client
    /// that goes on sending (QoS 1/2 publishes whose acknowledgements it never
    /// reads, PINGREQs) would otherwise grow its outbox without bound.
    pub fn holds_own_reader(&self) -> bool {
        let hold = self.stuck_until.get().is_some() && self.backlog() > UNCONGESTED_OUTBOX_BYTES;
        if hold {
            self.reader_held.set(true);
        }
        hold
    }

    /// Ends the stuck state once the cooldown passed and the backlog drained.
    fn maybe_unstick(&self, now: Instant) {
        if self
            .stuck_until
            .get()
            .is_some_and(|t| now >= t && self.backlog() <= CONGESTED_OUTBOX_BYTES / 2)
        {
            self.stuck_until.set(None);
        }
    }

    /// Encodes `p` into the outbox and wakes the writer. A packet larger than
    /// the client accepts is not written ([MQTT-3.1.2-24]).
    ///
    /// # Errors
    /// [`EncodeError`] when the packet cannot be sent to this client.
    pub fn send(&self, p: &Packet) -> Result<usize, EncodeError> {
        if self.closing.get() {
            return Ok(0);
        }
        let mut out = self.outbox.borrow_mut();
        let before = out.len();
        encode_packet(p, self.version, self.max_packet_bytes, &mut out)?;
        let n = out.len() - before;
        let congested = out.len() + self.writing.get() > CONGESTED_OUTBOX_BYTES;
        drop(out);
        // (The clock is read only when congestion starts.)
        if congested && !self.is_congested() && self.stuck_until.get().is_none() {
            self.congest(Instant::now());
        }
        self.wake();
        Ok(n)
    }

    /// Puts a topic alias on `p` when the client allows them: the alias
    /// alone once the client knows it. Returns the topic when this PUBLISH
    /// sets the alias up, for [`Conn::unsent_alias`] if it is not sent.
    pub fn alias_topic(
        &self,
        p: &mut crate::protocol::Publish,
    ) -> Option<crate::protocol::MqttStr> {
        let mut aliases = self.out_aliases.borrow_mut();
        let a = aliases.as_mut()?;
        match a.assign(&p.topic) {
            super::aliases::Alias::Known(n) => {
                p.properties.topic_alias = Some(n);
                p.topic = crate::protocol::MqttStr::default();
                None
            }
            super::aliases::Alias::New(n) => {
                p.properties.topic_alias = Some(n);
                Some(p.topic.clone())
            }
        }
    }

    /// The PUBLISH that set up `topic`'s alias was not sent.
    pub fn unsent_alias(&self, topic: &crate::protocol::MqttStr) {
        if let Some(a) = self.out_aliases.borrow_mut().as_mut() {
            a.forget(topic);
        }
    }

    /// Unsent bytes: queued, and handed to the writer but not yet written.
    pub fn backlog(&self) -> usize {
        self.outbox.borrow().len() + self.writing.get()
    }

    /// For the writer: `n` more bytes reached the socket.
    pub fn wrote(&self, n: usize, now: Instant) {
        self.writing.set(self.writing.get().saturating_sub(n));
        self.last_progress.set(now);
        // Released well below the mark, so that the paused readers and the
        // mesh all get a turn before it is reached again, not one wake-up
        // of every reader per 64 KiB written.
        if self.backlog() <= UNCONGESTED_OUTBOX_BYTES {
            if !self.queue_held.get() {
                self.uncongest();
            }
            if self.reader_held.take() {
                self.congestion.wake_all();
            }
        }
        self.maybe_unstick(now);
    }

    /// Asks the writer to flush what is queued and then close the socket.
    pub fn close(&self) {
        self.closing.set(true);
        self.queue_held.set(false);
        self.uncongest();
        self.wake();
        // Its reader may be parked behind another's congestion.
        self.congestion.wake_all();
    }

    /// Closes with `reason` as the cause the log will give, unless an
    /// earlier cause was recorded.
    pub fn close_for(&self, reason: crate::protocol::ReasonCode) {
        if self.close_reason.get().is_none() {
            self.close_reason.set(Some(reason));
        }
        self.close();
    }

    /// The peer address for log lines.
    pub fn peer_str(&self) -> String {
        peer_name(self.peer.get())
    }

    /// True once [`Conn::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        } else if !self.writer_live.get() {
            if let Some(r) = self.reader_waker.take() {
                r.wake_by_ref();
                self.reader_waker.set(Some(r));
            }
        }
    }

    /// True while a writer task runs for this connection.
    pub fn has_writer(&self) -> bool {
        self.writer_live.get()
    }

    /// For the reader: true when no writer runs and one is needed (bytes
    /// wait, the transport has its own, or the connection closes). The
    /// caller starts it; from here on it counts as running.
    pub fn start_writer(&self) -> bool {
        if self.writer_live.get() {
            return false;
        }
        let wanted = self.closing.get() || self.poked.get() || !self.outbox.borrow().is_empty();
        if wanted {
            self.writer_live.set(true);
            self.writer_idle.set(false);
        }
        wanted
    }

    /// Nothing but the outbox is owed: not closing, no bytes of the
    /// transport's own, no drain waiting for room, nothing half written.
    fn owes_only_outbox(&self) -> bool {
        !self.closing.get()
            && !self.poked.get()
            && !self.drain_blocked.get()
            && self.writing.get() == 0
    }

    /// For the reader, while no writer runs: hands the queued bytes to
    /// `send` (a write that does not wait) when they are few and nothing
    /// else is owed, so that a client that gets a packet now and then (a
    /// CONNACK, a PINGRESP) needs no writer task. Returns true when all of
    /// them went; otherwise a writer must take the rest.
    pub fn write_direct(&self, send: impl FnOnce(&[u8]) -> usize) -> bool {
        if self.writer_live.get() || !self.owes_only_outbox() {
            return false;
        }
        let mut out = self.outbox.borrow_mut();
        if out.is_empty() {
            return true;
        }
        if out.len() > WRITE_CHUNK_BYTES {
            return false;
        }
        let n = send(&out[..]);
        let done = n == out.len();
        if done {
            out.clear();
        } else {
            bytes::Buf::advance(&mut *out, n);
        }
        drop(out);
        if n > 0 {
            // Progress, and the outbox shrank: `wrote` counts both (0: these
            // bytes never counted as being written).
            self.wrote(0, Instant::now());
        }
        done
    }

    /// For the reader: where [`Conn::wake`] finds it while no writer runs.
    /// `None` when the reader ends.
    pub fn set_reader_waker(&self, w: Option<&Waker>) {
        self.reader_waker.set(w.cloned());
    }

    /// The socket's fd now.
    pub fn fd(&self) -> RawFd {
        self.fd.get()
    }

    /// For the parking: the socket's new fd.
    pub fn set_fd(&self, fd: RawFd) {
        self.fd.set(fd);
    }

    /// For the shard, every [`WRITER_SWEEP`] (and once for a new
    /// connection, with [`FRESH_QUIET`]): a reader with no writer that read
    /// nothing for `quiet_for`, and waits in a read, is asked to park.
    /// Returns true if asked.
    pub fn sweep_reader(&self, now: Instant, quiet_for: Duration) -> bool {
        let quiet = !self.writer_live.get()
            && self.owes_only_outbox()
            && self.outbox.borrow().is_empty()
            && !self.reader_held.get()
            && !self.queue_held.get()
            && now.saturating_duration_since(self.last_seen.get()) >= quiet_for;
        if !quiet || self.park.get() || self.is_parked() {
            return false;
        }
        let Some(r) = self.reader_waker.take() else {
            return false; // not reading
        };
        self.park.set(true);
        r.wake_by_ref();
        self.reader_waker.set(Some(r));
        true
    }

    /// For the reader, before it reads: true when the sweep asked it to
    /// park and it still may (nothing came or was queued since).
    pub fn take_park(&self) -> bool {
        self.park.take()
            && !self.writer_live.get()
            && self.owes_only_outbox()
            && self.outbox.borrow().is_empty()
    }

    /// True while parked: no task serves the connection.
    pub fn is_parked(&self) -> bool {
        let h = self.parked.take();
        let parked = h.is_some();
        self.parked.set(h);
        parked
    }

    /// For the parking: keeps the socket while no task serves it.
    pub fn park_socket(&self, h: crate::transport::Handoff) {
        self.parked.set(Some(Box::new(h)));
    }

    /// For the parking: the socket back, if parked.
    pub fn unpark_socket(&self) -> Option<crate::transport::Handoff> {
        self.parked.take().map(|b| *b)
    }

    /// For the shard, every [`WRITER_SWEEP`]: a writer that waits and took
    /// nothing since the last sweep is told to end. Returns true if told.
    pub fn sweep_writer(&self) -> bool {
        let quiet =
            self.writer_live.get() && self.owes_only_outbox() && self.outbox.borrow().is_empty();
        if !quiet {
            return false;
        }
        if !self.writer_idle.replace(true) {
            return false;
        }
        let Some(w) = self.waker.take() else {
            return false; // writing, or not yet waiting
        };
        self.retire.set(true);
        w.wake();
        true
    }

    /// Wakes the writer for the transport's own bytes.
    pub fn poke(&self) {
        self.poked.set(true);
        self.wake();
    }

    /// For the writer task: takes the queued bytes, swapping in `spare`, or
    /// registers `waker` (see [`Take`]).
    pub fn take_outbox(&self, spare: &mut BytesMut, waker: &Waker) -> Take {
        if self.poked.take() && self.outbox.borrow().is_empty() {
            self.writer_idle.set(false);
            return Take::Bytes;
        }
        let mut out = self.outbox.borrow_mut();
        if !out.is_empty() {
            std::mem::swap(&mut *out, spare);
            if self.writing.get() == 0 {
                // The writer was idle: its silence counts from now.
                self.last_progress.set(Instant::now());
            }
            self.writing.set(self.writing.get() + spare.len());
            self.writer_idle.set(false);
            self.retire.set(false);
            return Take::Bytes;
        }
        if self.closing.get() {
            return Take::Done;
        }
        if self.retire.take() {
            self.writer_live.set(false);
            self.waker.set(None);
            return Take::Retire;
        }
        self.waker.set(Some(waker.clone()));
        Take::Wait
    }
}
