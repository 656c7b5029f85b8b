//! The async shell of a shard: listeners, connection reader and writer
//! tasks, connection handoff, the mesh tasks and the ticker.
//!
//! Every connection has two tasks on two dup'ed fds of one socket: the
//! reader decodes packets and calls into the [`Shard`]; the writer flushes
//! the connection's outbox (everything one loop turn queued, in one write)
//! and shuts the socket down when the shard closes the connection.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::protocol::{
    connect_protocol_level, encode_packet, Codec, ConnAck, ConnAckProperties, Connect, DecodeError,
    Disconnect, Packet, ProtocolVersion, ReasonCode,
};

use super::mesh::{receiver_loop, sender_loop, Batch, MESH_PAUSE_MSGS};
use super::pipe::{PipeReceiver, PipeSender};
use super::{owner_of, Congestion, Conn, Flow, ReadBuf, Shard, ShardMsg, Shared};

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
    for addr in &config.listen {
        match bind_listener(*addr) {
            Ok(l) => {
                addrs.push(l.local_addr().unwrap_or(*addr));
                listeners.push(l);
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
    while barrier > 0 && Instant::now() < deadline {
        let applied = {
            let s = shard.borrow();
            (0..nr_shards).all(|p| p == id || s.acked[p] >= barrier)
        };
        if applied {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    // Sessions that expired and wills that fell due while the broker was
    // down go now, before any client can resume them, and route everywhere.
    {
        let mut s = shard.borrow_mut();
        s.publish_overdue_wills(Instant::now());
        s.tick(Instant::now());
    }
    let mut accepting = Vec::new();
    for l in listeners {
        accepting.push(glommio::spawn_local(accept_loop(shard.clone(), l)));
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
                    unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
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
    // Whatever the mode, a clean stop leaves the log on disk.
    let mut s = shard.borrow_mut();
    if let Some(st) = s.store.as_mut() {
        if let Err(e) = st.log.take_sync_batch().run() {
            tracing::error!(shard = id, error = %e, "log msync at shutdown failed");
        }
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

async fn accept_loop(shard: Rc<RefCell<Shard>>, listener: TcpListener) {
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
                glommio::spawn_local(serve(shard.clone(), stream, pending)).detach();
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

/// Reads until CONNECT, then serves the connection here or hands it to the
/// shard that owns its client id.
async fn serve(shard: Rc<RefCell<Shard>>, mut stream: TcpStream, pending: Pending) {
    let _ = stream.set_nodelay(true);
    let (timeout, max_connect) = {
        let s = shard.borrow();
        (
            s.config.connect_timeout,
            s.config.max_connect_bytes.min(s.config.max_packet_bytes),
        )
    };
    // A socket that is not a client yet may buffer at most one CONNECT.
    let mut codec = Codec::server(max_connect);
    let mut buf = BytesMut::new();
    let mut tmp = ReadBuf::default();
    let mut level = None;
    let first = glommio::timer::timeout(timeout, async {
        loop {
            level = level.or_else(|| connect_protocol_level(&buf));
            match codec.decode(&mut buf) {
                Ok(Some(p)) => return Ok(Ok(p)),
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
            let n = stream.read(tmp.space()).await?;
            if n == 0 {
                return Err(glommio::GlommioError::IoError(
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            tmp.append_to(n, &mut buf);
        }
    })
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(_)) => return, // the codec refuses anything else first
        Ok(Err(e)) => return refuse_malformed(&shard, &mut stream, level, e).await,
        Err(glommio::GlommioError::TimedOut(_)) => {
            let mut s = shard.borrow_mut();
            s.metrics.connect_timeouts += 1;
            if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
                tracing::info!(peer = %peer_of(&stream), held_back = held, "no CONNECT within {timeout:?}, closing");
            }
            return;
        }
        Err(_) => return,
    };
    drop(tmp);
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
        adopt(shard, stream, *connect, buf.freeze(), assigned).await;
        return;
    }
    // SAFETY: dup of an open socket; the copy's ownership moves to the owner shard.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    drop(stream);
    if fd < 0 {
        return;
    }
    shard.borrow_mut().mesh_send(
        owner,
        ShardMsg::Adopt {
            fd,
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
    stream: &mut TcpStream,
    level: Option<u8>,
    e: DecodeError,
) {
    {
        let mut s = shard.borrow_mut();
        s.metrics.malformed_packets += 1;
        if let Some(held) = s.log_limits.bad_connect.allow(Instant::now()) {
            tracing::info!(peer = %peer_of(stream), error = %e, held_back = held, "bad CONNECT, closing");
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
        let _ = stream.write_all(&out).await;
    }
}

/// Takes over a socket handed over by another shard.
pub(crate) async fn adopt_fd(
    shard: Rc<RefCell<Shard>>,
    fd: RawFd,
    connect: Connect,
    leftover: Bytes,
    assigned: Option<String>,
) {
    // SAFETY: the fd came in an Adopt message, which transferred its ownership.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    adopt(shard, stream, connect, leftover, assigned).await;
}

/// Serves a connection whose session this shard owns.
async fn adopt(
    shard: Rc<RefCell<Shard>>,
    mut stream: TcpStream,
    connect: Connect,
    leftover: Bytes,
    assigned: Option<String>,
) {
    let now = Instant::now();
    let version = connect.protocol;
    let fd = stream.as_raw_fd();
    // SAFETY: a second fd on the same socket, owned by the writer task.
    let wfd = unsafe { libc::dup(fd) };
    if wfd < 0 {
        return;
    }
    // SAFETY: wfd is a fresh, open fd that nothing else owns.
    let writer = unsafe { TcpStream::from_raw_fd(wfd) };
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
        wfd,
        version,
        client_max,
        Duration::from_secs(u64::from(keep_alive)),
        now,
        congestion.clone(),
    ));
    conn.peer.set(stream.peer_addr().ok());
    if version.is_v5() {
        *conn.out_aliases.borrow_mut() =
            super::aliases::OutAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0));
    }
    glommio::spawn_local(write_loop(shard.clone(), conn.clone(), writer)).detach();
    let flow = {
        let mut s = shard.borrow_mut();
        s.add_conn(conn.clone());
        s.on_connect(&conn, connect, assigned, now)
    };
    if flow == Flow::Continue {
        read_loop(
            &shard,
            &conn,
            &mut stream,
            version,
            max_packet,
            leftover,
            &congestion,
        )
        .await;
    }
    shard.borrow_mut().on_close(&conn, Instant::now());
}

async fn read_loop(
    shard: &Rc<RefCell<Shard>>,
    conn: &Rc<Conn>,
    stream: &mut TcpStream,
    version: ProtocolVersion,
    max_packet: usize,
    leftover: Bytes,
    congestion: &Congestion,
) {
    let mut codec = Codec::new(version, max_packet);
    let mut buf = BytesMut::from(&leftover[..]);
    let mut tmp = ReadBuf::default();
    let mut filled = false;
    loop {
        {
            let mut s = shard.borrow_mut();
            let now = Instant::now();
            conn.last_seen.set(now);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(p)) => {
                        s.metrics.messages_received += 1;
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
            return;
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
            return;
        }
        match stream.read(tmp.space()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                filled = n == tmp.space().len();
                tmp.append_to(n, &mut buf);
                shard.borrow_mut().metrics.bytes_received += n as u64;
            }
        }
    }
}

async fn write_loop(shard: Rc<RefCell<Shard>>, conn: Rc<Conn>, mut stream: TcpStream) {
    let mut spare = BytesMut::new();
    loop {
        let more = poll_fn(|cx| match conn.take_outbox(&mut spare, cx.waker()) {
            Some(true) => Poll::Ready(true),
            Some(false) => Poll::Pending,
            None => Poll::Ready(false),
        })
        .await;
        if !more {
            break;
        }
        let mut failed = false;
        for chunk in spare.chunks(super::conn::WRITE_CHUNK_BYTES) {
            if stream.write_all(chunk).await.is_err() {
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
    }
    conn.close();
    // Wakes the reader of this socket, whose read then returns 0.
    // SAFETY: plain syscall on an fd this task owns.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
}
