//! The async shell of a shard: listeners, connection reader and writer
//! tasks, connection handoff, the mesh tasks and the ticker.
//!
//! A busy connection has two tasks on one [`Link`] (one socket, plain, TLS
//! or WebSocket): the reader decodes packets and calls into the [`Shard`];
//! the writer flushes the connection's outbox (everything one loop turn
//! queued, in one write) and shuts the socket down when the shard closes
//! the connection. A quiet one has neither: its writer retires after a
//! quiet sweep, its reader parks the link (see [`super::park`]) and a new
//! reader serves it when it turns readable or is woken.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::protocol::{
    connect_protocol_level, encode_packet, Codec, ConnAck, ConnAckProperties, Connect, DecodeError,
    Disconnect, Packet, ProtocolVersion, ReasonCode,
};

use super::conn::Take;
use super::mesh::{receiver_loop, sender_loop, Batch, MESH_PAUSE_MSGS};
use super::pipe::{PipeReceiver, PipeSender};
use super::{owner_of, Congestion, Conn, Flow, Shard, ShardMsg, Shared};
use crate::transport::{tls, ws, Handoff, Layer, Link, Read, READ_BYTES};

const TICK: Duration = Duration::from_millis(100);

/// Everything one shard needs to start, handed to its executor thread.
#[derive(Debug)]
pub struct ShardStart {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub nr_shards: usize,
    /// Configuration (listen addresses already resolved for port 0).
    pub config: Arc<Config>,
    /// Shutdown flag and connection count.
    pub shared: Arc<Shared>,
    /// Channel ends to every other shard (index = peer), `None` for self.
    pub senders: Vec<Option<PipeSender<Batch>>>,
    /// Channel ends from every other shard.
    pub receivers: Vec<Option<PipeReceiver<Batch>>>,
    /// Where to report the bound addresses (or the bind error).
    pub bound: mpsc::Sender<io::Result<Vec<SocketAddr>>>,
    /// The shard's log and what it recovered, when the broker persists.
    pub storage: Option<super::persist::ShardStorage>,
    /// Shard 0: the bound `--metrics-listen` socket.
    pub metrics: Option<std::net::TcpListener>,
}

/// Runs one shard until shutdown.
pub async fn run(start: ShardStart) {
    let ShardStart {
        id,
        nr_shards,
        config,
        shared,
        senders,
        receivers,
        bound,
        storage,
        metrics,
    } = start;
    let shard = Rc::new(RefCell::new(Shard::new(
        id,
        nr_shards,
        config.clone(),
        shared,
    )));
    if let Some(st) = storage {
        let mut s = shard.borrow_mut();
        s.store = Some(super::persist::Store::new(
            st.log,
            config.sync,
            &st.recovered,
        ));
        s.restore(st.recovered, &st.retained, Instant::now());
        if st.checkpoint_first {
            // The re-homed sessions must be on disk before the old logs go.
            if let Err(e) = s.checkpoint().and_then(|job| job.run()) {
                let _ = bound.send(Err(io::Error::other(format!(
                    "shard {id}: cannot write the re-homed sessions: {e}"
                ))));
                return;
            }
        }
        match super::persist::LogThread::start(id) {
            Ok(t) => s.store.as_mut().expect("just set").thread = Some(t),
            Err(e) => tracing::error!(shard = id, error = %e, "cannot start the log thread"),
        }
    }
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    let kinds = [
        (
            &config.listen,
            Kind {
                tls: false,
                ws: false,
            },
        ),
        (
            &config.listen_tls,
            Kind {
                tls: true,
                ws: false,
            },
        ),
        (
            &config.listen_ws,
            Kind {
                tls: false,
                ws: true,
            },
        ),
        (
            &config.listen_wss,
            Kind {
                tls: true,
                ws: true,
            },
        ),
    ];
    let all = kinds
        .iter()
        .flat_map(|(addrs, k)| addrs.iter().map(move |a| (a, *k)));
    for (addr, tls) in all {
        match bind_listener(*addr) {
            Ok(l) => {
                addrs.push(l.local_addr().unwrap_or(*addr));
                listeners.push((l, tls));
            }
            Err(e) => {
                let _ = bound.send(Err(io::Error::other(format!(
                    "cannot listen on {addr}: {e}"
                ))));
                return;
            }
        }
    }
    let _ = bound.send(Ok(addrs));

    for (peer, tx) in senders.into_iter().enumerate() {
        if let Some(tx) = tx {
            glommio::spawn_local(sender_loop(shard.clone(), peer, tx)).detach();
        }
    }
    for (peer, rx) in receivers.into_iter().enumerate() {
        if let Some(rx) = rx {
            glommio::spawn_local(receiver_loop(shard.clone(), peer, rx)).detach();
        }
    }
    glommio::spawn_local(stuck_watchdog(shard.clone())).detach();
    match super::park::Parking::start(id) {
        Ok(p) => {
            glommio::spawn_local(unpark_loop(shard.clone(), p.inbox())).detach();
            shard.borrow_mut().parking = Some(p);
        }
        Err(e) => tracing::warn!(shard = id, error = %e, "cannot park quiet connections"),
    }
    shard.borrow_mut().arm_inflight_ttl(Instant::now());
    shard.borrow_mut().arm_sys(Instant::now());
    glommio::spawn_local(timer_loop(shard.clone())).detach();
    let mut commit = None;
    let thread = shard.borrow().store.as_ref().and_then(|s| s.thread.clone());
    if let Some(t) = thread {
        if config.sync != crate::config::SyncMode::None {
            commit = Some(glommio::spawn_local(super::persist::commit_loop(
                shard.clone(),
                t,
            )));
        }
    }
    // Recovered subscriptions are routed to from every shard before the
    // first client is served.
    let barrier = shard.borrow().broadcasts;
    let deadline = Instant::now() + Duration::from_secs(10);
    until(deadline, || {
        let s = shard.borrow();
        barrier == 0 || (0..nr_shards).all(|p| p == id || s.acked[p] >= barrier)
    })
    .await;
    // The wills route by every shard's subscriptions, not only this one's:
    // a shard that starts late (a loaded machine) must have had its
    // recovered ones applied here first, or a will finds no subscriber.
    let shared = shard.borrow().shared.clone();
    shared.recovered.fetch_add(1, Ordering::AcqRel);
    until(deadline, || {
        shared.recovered.load(Ordering::Acquire) >= nr_shards
    })
    .await;
    // Sessions that expired and wills that fell due while the broker was
    // down go now, before any client can resume them, and route everywhere.
    {
        let mut s = shard.borrow_mut();
        s.publish_overdue_wills(Instant::now());
        s.tick(Instant::now());
    }
    let mut accepting = Vec::new();
    for (l, tls) in listeners {
        accepting.push(glommio::spawn_local(accept_loop(shard.clone(), l, tls)));
    }
    if let Some(l) = metrics {
        // SAFETY: a bound, listening socket whose ownership moves here.
        let l = unsafe { TcpListener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(l)) };
        accepting.push(glommio::spawn_local(super::metrics_http::serve(
            shard.clone(),
            l,
        )));
    }
    if config.metrics_listen.is_some() {
        glommio::spawn_local(super::metrics_http::turn_probe(shard.clone())).detach();
    }

    let mut stop_started = None;
    loop {
        glommio::timer::sleep(TICK).await;
        let cut_off = {
            let now = Instant::now();
            let mut s = shard.borrow_mut();
            s.tick(now);
            if !s.stopping {
                continue;
            }
            let since = *stop_started.get_or_insert(now);
            if s.conns.is_empty() {
                break;
            }
            let late = now.duration_since(since) > s.config.shutdown_timeout;
            if late {
                // Clients that did not take their bytes in time (a consumer
                // that never reads) are cut off: both tasks of each socket
                // see the shutdown and end.
                tracing::info!(
                    shard = s.id,
                    left = s.conns.len(),
                    "shutdown timeout: closing the remaining connections"
                );
                for c in s.conns.values() {
                    // SAFETY: plain syscall on a socket this shard owns.
                    unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
                }
            }
            late
        };
        if cut_off {
            glommio::timer::sleep(TICK).await;
            break;
        }
    }
    for t in accepting {
        t.cancel().await;
    }
    // Let the sender loops see "stopping and no connections" and end.
    {
        let mut s = shard.borrow_mut();
        for w in s.mesh_wakers.iter_mut().filter_map(Option::take) {
            w.wake();
        }
        if let Some(st) = s.store.as_mut() {
            st.want_sync(0);
        }
    }
    if let Some(c) = commit {
        c.await;
    }
    // Ends the watcher thread and the unpark task.
    shard.borrow_mut().parking = None;
    // Whatever the mode, a clean stop leaves the log on disk.
    let mut s = shard.borrow_mut();
    if let Some(st) = s.store.as_mut() {
        if let Err(e) = st.log.take_sync_batch().run() {
            tracing::error!(shard = id, error = %e, "log msync at shutdown failed");
        }
    }
}

/// Waits (at start, polling each millisecond) until `done` or `deadline`.
async fn until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Sleeps until the shard's earliest session deadline, fires what is due,
/// and sleeps again: one task and one glommio timer per shard, however many
/// timers are armed. Arming an earlier deadline wakes it (`Shard::arm`), so
/// a will or an expiry fires on time rather than at the next tick.
async fn timer_loop(shard: Rc<RefCell<Shard>>) {
    loop {
        let at = {
            let mut s = shard.borrow_mut();
            let at = s.timers.next_deadline();
            s.timer_at = at;
            at
        };
        let mut sleep =
            at.map(|at| glommio::timer::Timer::new(at.saturating_duration_since(Instant::now())));
        poll_fn(|cx| {
            if let Some(t) = sleep.as_mut() {
                if std::pin::Pin::new(t).poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            let mut s = shard.borrow_mut();
            if s.timers.next_deadline() != at {
                return Poll::Ready(()); // an earlier deadline was armed
            }
            s.timer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        shard.borrow_mut().fire_timers(Instant::now());
    }
}

/// While any connection is congested, checks every [`super::STUCK_CHECK`]
/// whether it is stuck; parked otherwise. The 100 ms tick alone let a stuck
/// consumer hold its shard for up to 300 ms.
async fn stuck_watchdog(shard: Rc<RefCell<Shard>>) {
    let congestion = shard.borrow().congestion.clone();
    loop {
        poll_fn(|cx| {
            if congestion.get() > 0 {
                Poll::Ready(())
            } else {
                congestion.park_watchdog(cx.waker());
                Poll::Pending
            }
        })
        .await;
        glommio::timer::sleep(super::STUCK_CHECK).await;
        shard.borrow_mut().check_congested(Instant::now());
    }
}

/// Sockets past `--max-connections` (counting those still before CONNECT)
/// that are still read, so that they get a CONNACK "server busy" instead of
/// a bare close; past these, new sockets are closed at accept.
pub const OVER_LIMIT_ANSWERED: usize = 64;

/// Longest pause after a failed accept (out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Pending connections the kernel queues per shard listener before accept.
const LISTEN_BACKLOG: i32 = 4096;

/// A listener every shard binds (SO_REUSEPORT spreads connections), which
/// also binds while connections of a previous server on the port linger in
/// TIME_WAIT (SO_REUSEADDR): without it, ringmq could not take over port
/// 1883 from a broker stopped a minute before.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    sk.listen(LISTEN_BACKLOG)?;
    // SAFETY: a bound, listening socket whose ownership moves to the listener.
    Ok(unsafe { TcpListener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(sk)) })
}

/// TLS handshakes a shard runs at once; past them, new TLS sockets are
/// closed at accept. A handshake costs a shard about a millisecond of CPU
/// and rustls some 30 KB: a flood of them must not take the shard.
pub const MAX_TLS_HANDSHAKES: usize = 256;

/// What a listener's connections are wrapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    tls: bool,
    ws: bool,
}

async fn accept_loop(shard: Rc<RefCell<Shard>>, listener: TcpListener, kind: Kind) {
    let (shared, max) = {
        let s = shard.borrow();
        (s.shared.clone(), s.config.max_connections)
    };
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                backoff = Duration::from_millis(10);
                let live = shared.connections.load(Ordering::Relaxed)
                    + shared.pending.load(Ordering::Relaxed);
                if live >= max + OVER_LIMIT_ANSWERED {
                    let mut s = shard.borrow_mut();
                    s.metrics.refused_connections += 1;
                    if let Some(held) = s.log_limits.over_limit.allow(Instant::now()) {
                        tracing::warn!(
                            peer = %peer_of(&stream),
                            max_connections = max,
                            held_back = held,
                            "connection limit reached, closing new sockets at accept"
                        );
                    }
                    continue; // dropping the stream closes it
                }
                shared.pending.fetch_add(1, Ordering::Relaxed);
                let pending = Pending(shared.clone());
                if kind.tls || kind.ws {
                    glommio::spawn_local(serve_wrapped(shard.clone(), stream, pending, kind))
                        .detach();
                } else {
                    let deadline = Instant::now() + shard.borrow().config.connect_timeout;
                    let link = Link::new(stream, Layer::plain());
                    let buf = BytesMut::new();
                    glommio::spawn_local(serve(shard.clone(), link, pending, deadline, buf))
                        .detach();
                }
            }
            Err(e) => {
                // Out of fds and the like: back off instead of spinning, and
                // say so once a second, not once per failed accept.
                {
                    let mut s = shard.borrow_mut();
                    s.metrics.accept_errors += 1;
                    if let Some(held) = s.log_limits.accept_failed.allow(Instant::now()) {
                        tracing::warn!(error = %e, held_back = held, "accept failed, backing off");
                    }
                }
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// One socket counted in [`Shared::pending`] until it has connected (or
/// failed to).
struct Pending(Arc<Shared>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The peer address of `stream`, for log lines.
fn peer_of(stream: &TcpStream) -> String {
    super::conn::peer_name(stream.peer_addr().ok())
}

/// Runs the TLS handshake and the WebSocket upgrade that `kind` asks for
/// (all within the connect timeout, which then goes on to bound CONNECT),
/// then serves the connection as [`serve`] does.
async fn serve_wrapped(shard: Rc<RefCell<Shard>>, stream: TcpStream, pending: Pending, kind: Kind) {
    let deadline = Instant::now() + shard.borrow().config.connect_timeout;
    let link = if kind.tls {
        match tls_handshake(&shard, stream, deadline).await {
            Some(l) => l,
            None => return,
        }
    } else {
        Link::new(stream, Layer::plain())
    };
    let mut buf = BytesMut::new();
    if kind.ws && !ws_upgrade(&shard, &link, deadline, &mut buf).await {
        return;
    }
    serve(shard, link, pending, deadline, buf).await;
}

/// Reads the WebSocket upgrade request (at most
/// [`ws::MAX_REQUEST_BYTES`], before `deadline`), answers it, and from then
/// on frames the link; MQTT bytes that came with the request go to `buf`.
/// False if the socket is to be closed.
async fn ws_upgrade(
    shard: &Rc<RefCell<Shard>>,
    link: &Link,
    deadline: Instant,
    buf: &mut BytesMut,
) -> bool {
    let mut req = BytesMut::new();
    let wait = deadline.saturating_duration_since(Instant::now());
    let got = glommio::timer::timeout(wait, async {
        // What came with the TLS handshake's last flight.
        link.buffered(&mut req)?;
        loop {
            match ws::upgrade(&req) {
                ws::Upgrade::Partial => {}
                done => return Ok(done),
            }
            let room = ws::MAX_REQUEST_BYTES + 1 - req.len();
            if link.read(&mut req, room).await? == Read::Closed {
                return Err(glommio::GlommioError::IoError(
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    })
    .await;
    let mut wire = Vec::new();
    let why = match got {
        Ok(ws::Upgrade::Accept { answer, used }) => {
            // Frames are never held whole, so their cap only refuses
            // nonsense; a client may put many packets in one frame.
            let max = shard
                .borrow()
                .config
                .max_packet_bytes
                .max(ws::MIN_FRAME_CAP);
            let ok = link.write(&answer, &mut wire).await.is_ok()
                && link
                    .install_ws(ws::Ws::server(max), &req[used..], buf)
                    .is_ok_and(|open| open);
            if ok {
                return true;
            }
            "the client went away after the upgrade".to_string()
        }
        Ok(ws::Upgrade::Refuse { answer, why }) => {
            let _ = link.write(&answer, &mut wire).await;
            why
        }
        Ok(ws::Upgrade::Partial) => unreachable!("the loop returns only a verdict"),
        Err(glommio::GlommioError::TimedOut(_)) => "no upgrade request in time".to_string(),
        Err(e) => e.to_string(),
    };
    let mut s = shard.borrow_mut();
    s.metrics.ws_handshake_failures += 1;
    if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
        let peer = super::conn::peer_name(link.peer_addr());
        tracing::info!(
            peer,
            error = why,
            held_back = held,
            "WebSocket upgrade failed"
        );
    }
    false
}

/// The TLS handshake, before `deadline`; `None` (logged, counted) if it
/// failed or this shard runs too many at once.
async fn tls_handshake(
    shard: &Rc<RefCell<Shard>>,
    stream: TcpStream,
    deadline: Instant,
) -> Option<Link> {
    let config = {
        let mut s = shard.borrow_mut();
        let cfg = s.tls_server_config();
        if cfg.is_none() || s.tls_handshakes >= MAX_TLS_HANDSHAKES {
            s.metrics.refused_connections += 1;
            if let Some(held) = s.log_limits.over_limit.allow(Instant::now()) {
                tracing::warn!(
                    peer = %peer_of(&stream),
                    in_flight = s.tls_handshakes,
                    held_back = held,
                    "too many TLS handshakes at once, closing new sockets"
                );
            }
            return None;
        }
        s.tls_handshakes += 1;
        cfg.expect("checked")
    };
    let (config, identity) = config;
    let peer = peer_of(&stream);
    let wait = deadline.saturating_duration_since(Instant::now());
    let done = glommio::timer::timeout(wait, async {
        tls::accept(stream, config, identity)
            .await
            .map_err(glommio::GlommioError::IoError)
    })
    .await;
    let link = {
        let mut s = shard.borrow_mut();
        s.tls_handshakes -= 1;
        match done {
            Ok(link) => Some(link),
            Err(e) => {
                s.metrics.tls_handshake_failures += 1;
                if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
                    let why = match e {
                        glommio::GlommioError::TimedOut(_) => "timed out".to_string(),
                        e => e.to_string(),
                    };
                    tracing::info!(peer, error = why, held_back = held, "TLS handshake failed");
                }
                None
            }
        }
    };
    link
}

/// Reads until CONNECT, then serves the connection here or hands it to the
/// shard that owns its client id.
async fn serve(
    shard: Rc<RefCell<Shard>>,
    link: Link,
    pending: Pending,
    deadline: Instant,
    mut buf: BytesMut,
) {
    let max_connect = {
        let s = shard.borrow();
        s.config.max_connect_bytes.min(s.config.max_packet_bytes)
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    // A socket that is not a client yet may buffer at most one CONNECT.
    let mut codec = Codec::server(max_connect);
    let mut level = None;
    let first = Box::pin(glommio::timer::timeout(timeout, async {
        // TLS records that came with the handshake's last flight.
        link.buffered(&mut buf)?;
        loop {
            level = level.or_else(|| connect_protocol_level(&buf));
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(p)) => {
                    let mut s = shard.borrow_mut();
                    s.metrics.packet_in(p.packet_type(), before - buf.len());
                    return Ok(Ok(p));
                }
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
            if buf.len() > max_connect + 5 {
                // A layer that decoded more than one CONNECT may hold.
                return Err(glommio::GlommioError::IoError(
                    io::ErrorKind::InvalidData.into(),
                ));
            }
            // At most what a CONNECT may still need, so that a socket
            // before CONNECT never holds more than one.
            let room = (max_connect + 5).saturating_sub(buf.len());
            if link.read(&mut buf, room).await? == Read::Closed {
                return Err(glommio::GlommioError::IoError(
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }))
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(_)) => return, // the codec refuses anything else first
        Ok(Err(e)) => return Box::pin(refuse_malformed(&shard, &link, level, e)).await,
        Err(glommio::GlommioError::TimedOut(_)) => {
            let mut s = shard.borrow_mut();
            s.metrics.connect_timeouts += 1;
            if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
                let peer = super::conn::peer_name(link.peer_addr());
                let within = s.config.connect_timeout;
                tracing::info!(
                    peer,
                    held_back = held,
                    "no CONNECT within {within:?}, closing"
                );
            }
            return;
        }
        Err(_) => {
            // The peer closed (or the socket failed): answer a WebSocket
            // close or TLS close_notify that is still owed, best effort.
            link.close(&mut Vec::new()).await;
            return;
        }
    };
    drop(pending);
    let (me, nr) = {
        let s = shard.borrow();
        (s.id, s.nr_shards)
    };
    let (owner, assigned) = if connect.client_id.is_empty() {
        (me, Some(shard.borrow_mut().assign_client_id()))
    } else {
        (owner_of(connect.client_id.as_str(), nr), None)
    };
    if owner == me {
        // A task of its own, as a handoff gets: this one's future holds
        // the CONNECT phase's state (a kilobyte), which an idle client
        // would otherwise keep for its whole life.
        let a = adopt(shard, link, connect, buf.freeze(), assigned);
        glommio::spawn_local(a).detach();
        return;
    }
    let Ok(handoff) = link.into_handoff() else {
        return;
    };
    shard.borrow_mut().mesh_send(
        owner,
        ShardMsg::Adopt {
            link: handoff,
            connect,
            leftover: buf.freeze(),
            assigned,
        },
    );
}

/// A CONNECT that failed to decode: answer where the spec asks, then close.
/// `level` is the protocol level the CONNECT declared, if it got that far.
async fn refuse_malformed(
    shard: &Rc<RefCell<Shard>>,
    link: &Link,
    level: Option<u8>,
    e: DecodeError,
) {
    {
        let mut s = shard.borrow_mut();
        s.metrics.malformed_packets += 1;
        s.metrics.connects_refused_protocol += 1;
        if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
            let peer = super::conn::peer_name(link.peer_addr());
            tracing::info!(peer, error = %e, held_back = held, "bad CONNECT, closing");
        }
    }
    let (version, reason) = if level == Some(5) {
        // MQTT 5 (3.1.4, 3.2.2): a CONNACK with the reason
        // (0x81 malformed, 0x82 protocol error, 0x95 too large), then close.
        (ProtocolVersion::V5, e.reason_code())
    } else if let Some(code) = e.v3_connack_code() {
        // [v3:MQTT-3.1.2-2] unacceptable protocol level: return code 0x01.
        (
            ProtocolVersion::V311,
            ReasonCode::from_v3_connack(code).unwrap_or(ReasonCode::UNSPECIFIED_ERROR),
        )
    } else {
        return; // 3.1.1 closes without a CONNACK (3.1.4).
    };
    let ack = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason,
        properties: ConnAckProperties::default(),
    }));
    let mut out = BytesMut::new();
    if encode_packet(&ack, version, usize::MAX, &mut out).is_ok() {
        let mut wire = Vec::new();
        let _ = link.write(&out, &mut wire).await;
        link.close(&mut wire).await;
    }
}

/// Takes over a connection handed over by another shard.
/// Not async itself: the handoff becomes a link at once, so the task holds
/// only the link.
pub(crate) fn adopt_handoff(
    shard: Rc<RefCell<Shard>>,
    handoff: Handoff,
    connect: Box<Connect>,
    leftover: Bytes,
    assigned: Option<String>,
) -> impl std::future::Future<Output = ()> {
    adopt(shard, Link::adopt(handoff), connect, leftover, assigned)
}

/// Serves a connection whose session this shard owns. The setup runs
/// before the future exists, so that the task, which lives as long as the
/// connection, holds only what the read loop needs.
fn adopt(
    shard: Rc<RefCell<Shard>>,
    link: Link,
    connect: Box<Connect>,
    leftover: Bytes,
    assigned: Option<String>,
) -> impl std::future::Future<Output = ()> {
    let now = Instant::now();
    let version = connect.protocol;
    let (max_packet, max_keepalive) = {
        let s = shard.borrow();
        (s.config.max_packet_bytes, s.config.max_keepalive)
    };
    let keep_alive = if version.is_v5() {
        connect.keep_alive.min(max_keepalive)
    } else {
        connect.keep_alive
    };
    let client_max = connect
        .properties
        .maximum_packet_size
        .map_or(usize::MAX, |v| v as usize);
    let (id, congestion) = {
        let mut s = shard.borrow_mut();
        (s.next_conn_id(), s.congestion.clone())
    };
    let conn = Rc::new(Conn::new(
        id,
        link.fd(),
        version,
        client_max,
        Duration::from_secs(u64::from(keep_alive)),
        now,
        congestion.clone(),
    ));
    conn.peer.set(link.peer_addr());
    if version.is_v5() {
        *conn.out_aliases.borrow_mut() =
            super::aliases::OutAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0))
                .map(Box::new);
    }
    let buf = BytesMut::from(&leftover[..]);
    drop(leftover);
    async move {
        // Boxed: the CONNECT and the password check are done with before
        // the connection's long life in `read_loop`, and a task's future is
        // as large as its largest state (the blocking pool's handle alone
        // is over a kilobyte), so they must not be inline.
        let flow = Box::pin(connect_client(&shard, &conn, &link, connect, assigned)).await;
        let end = if flow == Flow::Continue {
            read_loop(&shard, &conn, &link, max_packet, buf, &congestion).await
        } else {
            End::Closed
        };
        finish(&shard, conn, link, end);
    }
}

/// Serves a connection that comes back from the parking (its socket
/// turned readable, or the shard woke it).
fn resume(
    shard: Rc<RefCell<Shard>>,
    conn: Rc<Conn>,
    link: Link,
) -> impl std::future::Future<Output = ()> {
    let (max_packet, congestion) = {
        let s = shard.borrow();
        (s.config.max_packet_bytes, s.congestion.clone())
    };
    async move {
        let end = read_loop(
            &shard,
            &conn,
            &link,
            max_packet,
            BytesMut::new(),
            &congestion,
        )
        .await;
        finish(&shard, conn, link, end);
    }
}

/// After the read loop: a parked connection's socket goes to the parking,
/// a closed one is closed.
fn finish(shard: &Rc<RefCell<Shard>>, conn: Rc<Conn>, link: Link, end: End) {
    conn.set_reader_waker(None);
    if end == End::Park {
        let Err(link) = park(shard, &conn, link) else {
            return;
        };
        // Not parked after all (epoll refused it): served by a task again.
        glommio::spawn_local(resume(shard.clone(), conn, link)).detach();
        return;
    }
    shard.borrow_mut().on_close(&conn, Instant::now());
    // Flushes what is left, says goodbye at the transport's level and
    // shuts the socket (closing, so a retired writer is started again).
    mind_writer(shard, &conn, &link);
}

/// Hands a quiet connection's socket to the shard's parking; gives the link
/// back if it cannot be parked.
fn park(shard: &Rc<RefCell<Shard>>, conn: &Conn, link: Link) -> Result<(), Link> {
    let mut s = shard.borrow_mut();
    let Some(p) = s.parking.as_mut() else {
        return Err(link);
    };
    p.park(conn, link)?;
    s.metrics.readers_parked += 1;
    Ok(())
}

/// The shard's unpark task: serves again each parked connection the
/// watcher thread or a wake gave back, until the parking stops.
pub(crate) async fn unpark_loop(
    shard: Rc<RefCell<Shard>>,
    inbox: std::sync::Arc<super::park::Inbox>,
) {
    let mut ids = Vec::new();
    loop {
        let more = poll_fn(|cx| match inbox.take(cx.waker(), &mut ids) {
            None => Poll::Ready(false),
            Some(()) if ids.is_empty() => Poll::Pending,
            Some(()) => Poll::Ready(true),
        })
        .await;
        if !more {
            return;
        }
        for id in ids.drain(..) {
            let back = {
                let mut s = shard.borrow_mut();
                let conn = s.conns.get(&id).cloned();
                conn.and_then(|c| Some((s.parking.as_mut()?.unpark(&c)?, c)))
            };
            if let Some((link, conn)) = back {
                glommio::spawn_local(resume(shard.clone(), conn, link)).detach();
            }
        }
    }
}

/// How a read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The connection is closed or closing.
    Closed,
    /// Quiet: its socket goes to the parking.
    Park,
}

/// Checks the client's credentials (a password file check runs on the
/// blocking pool), starts its writer and handles its CONNECT.
async fn connect_client(
    shard: &Rc<RefCell<Shard>>,
    conn: &Rc<Conn>,
    link: &Link,
    connect: Box<Connect>,
    assigned: Option<String>,
) -> Flow {
    let identity = link.identity();
    let check = shard.borrow_mut().auth_check(&connect, identity.as_deref());
    let auth = match check {
        super::connect::AuthCheck::Done(r) => r,
        super::connect::AuthCheck::Verify {
            file,
            user,
            password,
        } => {
            let (u, p) = (user.clone(), password.clone());
            let ok = glommio::executor()
                .spawn_blocking(move || file.verify(&u, &p))
                .await;
            shard.borrow_mut().auth_verified(&user, &password, ok)
        }
    };
    let mut connect = connect;
    if let Some(name) = identity.and_then(|n| crate::protocol::MqttStr::try_from(n.as_str()).ok()) {
        // The certificate names the user; a password is not asked for.
        connect.username = Some(name);
        connect.password = None;
    }
    let now = Instant::now();
    let flow = {
        let mut s = shard.borrow_mut();
        s.add_conn(conn.clone());
        s.on_connect(conn, *connect, assigned, auth, now)
    };
    mind_writer(shard, conn, link);
    flow
}

/// Starts `conn`'s writer when none runs (it ended after a quiet sweep, see
/// [`super::conn::WRITER_SWEEP`], or never started) and it has work. The
/// reader calls it wherever it may be woken, since a send wakes the reader
/// while no writer runs.
fn mind_writer(shard: &Rc<RefCell<Shard>>, conn: &Rc<Conn>, link: &Link) {
    if conn.has_writer() {
        return; // the common case, on every poll of a busy reader
    }
    if link.is_plain() && conn.write_direct(|b| link.try_send(b)) {
        return;
    }
    if conn.start_writer() {
        glommio::spawn_local(write_loop(shard.clone(), conn.clone(), link.clone())).detach();
    }
}

async fn read_loop(
    shard: &Rc<RefCell<Shard>>,
    conn: &Rc<Conn>,
    link: &Link,
    max_packet: usize,
    mut buf: BytesMut,
    congestion: &Congestion,
) -> End {
    let version = conn.version;
    let mut codec = Codec::new(version, max_packet);
    let mut filled = false;
    poll_fn(|cx| {
        conn.set_reader_waker(Some(cx.waker()));
        Poll::Ready(())
    })
    .await;
    loop {
        {
            let mut s = shard.borrow_mut();
            let now = Instant::now();
            conn.last_seen.set(now);
            loop {
                let before = buf.len();
                match codec.decode(&mut buf) {
                    Ok(Some(p)) => {
                        s.metrics.packet_in(p.packet_type(), before - buf.len());
                        if s.on_packet(conn, p, now) == Flow::Close {
                            conn.close();
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        s.metrics.malformed_packets += 1;
                        tracing::info!(
                            client_id = conn.client_id.borrow().as_deref().unwrap_or(""),
                            peer = %conn.peer_str(),
                            error = %e,
                            "malformed packet, closing"
                        );
                        if version.is_v5() {
                            let d = Packet::Disconnect(Disconnect::new(e.reason_code()));
                            s.send(conn, &d);
                        }
                        conn.close_for(e.reason_code());
                        break;
                    }
                }
            }
        }
        if conn.is_closing() {
            return End::Closed;
        }
        if buf.is_empty() {
            // An idle connection holds no read memory (what its messages
            // still share stays with them).
            buf = BytesMut::new();
        }
        // Let the other readers (and the mesh) of this shard have their turn
        // before reading again: a read that finds data completes without
        // yielding, so a busy reader kept the shard to itself until the
        // subscriber congested, and the reader woken first after congestion
        // took all the room (fan-in: one local publisher got 30 times
        // another's messages through). A read that did not fill the buffer
        // drained the socket, so the next one waits in the ring anyway.
        if filled {
            futures_lite::future::yield_now().await;
        }
        // Backpressure: while the mesh is full or a local subscriber cannot
        // keep up, stop reading (a congested connection still reads its own
        // acknowledgements, or it could never drain).
        // Parked on a waker: woken when congestion ends or the mesh drains.
        poll_fn(|cx| {
            // Its first poll runs at once: the answers to this reader's own
            // packets go out here.
            mind_writer(shard, conn, link);
            let paused = !conn.is_closing()
                && (shard.borrow().mesh_backlog() > MESH_PAUSE_MSGS
                    || (congestion.get() > 0 && !conn.is_congested())
                    || conn.holds_own_reader());
            if paused {
                congestion.register(cx.waker());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        if conn.is_closing() {
            return End::Closed;
        }
        // Only a reader with nothing half read may park: the codec keeps no
        // state between packets, so an empty buffer is all it would need.
        let may_park = buf.is_empty();
        let mut read = std::pin::pin!(link.read(&mut buf, READ_BYTES));
        let got = poll_fn(|cx| {
            // Closing wakes this reader while no writer runs: the writer
            // it starts flushes and shuts the socket, and this read ends.
            mind_writer(shard, conn, link);
            if may_park && conn.take_park() && link.is_quiet() {
                return Poll::Ready(None);
            }
            read.as_mut().poll(cx).map(Some)
        })
        .await;
        let Some(got) = got else {
            return End::Park;
        };
        match got {
            Ok(Read::Closed) => return End::Closed,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    // Bytes the transport refused (a text WebSocket frame,
                    // a bad TLS record): say so, the peer closes otherwise.
                    let mut s = shard.borrow_mut();
                    s.metrics.malformed_packets += 1;
                    tracing::info!(
                        client_id = conn.client_id.borrow().as_deref().unwrap_or(""),
                        peer = %conn.peer_str(),
                        transport = link.kind(),
                        error = %e,
                        "transport error, closing"
                    );
                }
                return End::Closed;
            }
            Ok(Read::Data { raw, filled: f }) => {
                filled = f;
                shard.borrow_mut().metrics.bytes_received += raw as u64;
                if link.wants_write() {
                    conn.poke(); // a TLS key update or alert to answer
                }
            }
        }
    }
}

async fn write_loop(shard: Rc<RefCell<Shard>>, conn: Rc<Conn>, link: Link) {
    let mut spare = BytesMut::new();
    let mut wire = Vec::new();
    let mut failed = false;
    if link.wants_write() {
        // TLS session tickets queued at the end of the handshake.
        conn.poke();
    }
    loop {
        let took = poll_fn(|cx| match conn.take_outbox(&mut spare, cx.waker()) {
            Take::Wait => Poll::Pending,
            t => Poll::Ready(t),
        })
        .await;
        match took {
            Take::Bytes => {}
            Take::Retire => return,
            Take::Wait | Take::Done => break,
        }
        if spare.is_empty() && link.write(&[], &mut wire).await.is_err() {
            failed = true;
            break;
        }
        for chunk in spare.chunks(super::conn::WRITE_CHUNK_BYTES) {
            if link.write(chunk, &mut wire).await.is_err() {
                failed = true;
                break;
            }
            let now = Instant::now();
            conn.wrote(chunk.len(), now);
            if conn.drain_blocked.get() && conn.backlog() <= super::conn::DRAIN_ROOM_BYTES / 2 {
                // The session's queue stopped for room: there is room now.
                conn.drain_blocked.set(false);
                shard.borrow_mut().resume_drain(&conn, now);
            }
        }
        if failed {
            break;
        }
        if spare.capacity() > 1 << 20 {
            spare = BytesMut::new();
        } else {
            spare.clear();
        }
        if wire.capacity() > 1 << 20 {
            wire = Vec::new();
        }
    }
    conn.close();
    if !failed {
        link.close(&mut wire).await;
    }
    // Wakes the reader of this socket, whose read then returns 0.
    link.shutdown();
}
