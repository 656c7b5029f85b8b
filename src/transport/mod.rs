//! Byte streams, and nothing about MQTT: the one socket a connection owns,
//! what it is wrapped in (plain TCP or TLS), the growing read buffer, and
//! the handoff that moves a connection to the shard that owns its client.
//!
//! A connection's reader and writer are two tasks on one shard thread (the
//! writer only while there is traffic; a quiet connection's reader writes
//! the odd small packet itself, [`Link::try_send`], and a quiet reader
//! parks its link as a [`Handoff`] and ends); they share one socket
//! (one fd: a 20,000-fd limit holds 19,000 clients, not half that) and one
//! [`Layer`], each borrowed only inside a poll, never across an await. The
//! layer is sans-IO: ciphertext in, plaintext out and back, so the shard's
//! one-write-per-batch holds for TLS as for TCP.

pub mod tls;
pub mod ws;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Most bytes one read takes off a socket.
pub const READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// The buffer every socket of this thread (shard) reads into. glommio
    /// reads a socket only synchronously, inside a poll (a `recv` that
    /// would block arms a readiness poll and returns pending, holding no
    /// buffer), so one buffer per thread serves all its connections and
    /// an idle one holds none: a 2 KiB buffer per connection was a third
    /// of what an idle client cost.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_BYTES].into_boxed_slice());

    /// Decrypted WebSocket frames on their way to the framing (wss), used
    /// within one read: one per thread, like [`SCRATCH`].
    static FRAMES_IN: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// What a connection's bytes are wrapped in: nothing (plain TCP), TLS,
/// WebSocket framing, or WebSocket inside TLS.
#[derive(Debug, Default)]
pub struct Layer {
    tls: Option<Box<rustls::Connection>>,
    ws: Option<Box<ws::Ws>>,
    /// Between TLS and WebSocket: frames to encrypt out.
    mid: Vec<u8>,
    /// The client certificate's subject CN, when it stands for the user
    /// name (`--use-identity-as-username`).
    identity: Option<String>,
    /// The peer closed at this layer's level (TLS close_notify, a WebSocket
    /// close) in a read that also carried data: the data goes up first,
    /// the close with the next read.
    eof: bool,
}

impl Layer {
    /// Plain TCP: bytes are MQTT.
    pub fn plain() -> Layer {
        Layer::default()
    }

    /// TLS, after its handshake (the broker's side or a client's).
    pub fn tls(conn: rustls::Connection) -> Layer {
        Layer {
            tls: Some(Box::new(conn)),
            ..Layer::default()
        }
    }

    /// Sets the name the client's certificate gave it.
    pub fn set_identity(&mut self, identity: Option<String>) {
        self.identity = identity;
    }

    /// Adds WebSocket framing (after the upgrade) inside whatever is there.
    pub fn set_ws(&mut self, ws: ws::Ws) {
        self.ws = Some(Box::new(ws));
    }

    fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// Feeds bytes read from the socket; the MQTT bytes they carry are
    /// appended to `plain`. Returns false once the peer closed its side
    /// (TLS close_notify, a WebSocket close).
    ///
    /// # Errors
    /// Bytes that are not valid for the layer (a TLS alert is then queued
    /// for the writer).
    pub fn input(&mut self, raw: &[u8], plain: &mut BytesMut) -> io::Result<bool> {
        match (&mut self.tls, &mut self.ws) {
            (None, None) => {
                plain.extend_from_slice(raw);
                Ok(true)
            }
            (None, Some(ws)) => ws.input(raw, plain),
            (Some(tls), None) => tls_input(tls, raw, plain),
            (Some(tls), Some(ws)) => FRAMES_IN.with_borrow_mut(|frames| {
                frames.clear();
                let open = tls_input(tls, raw, frames)?;
                Ok(ws.input(frames, plain)? && open)
            }),
        }
    }

    /// Appends to `wire` what goes on the socket for `plain`, and whatever
    /// the layer has to send of its own (handshake, alerts, pongs).
    ///
    /// # Errors
    /// The layer cannot take more (a closed TLS session).
    pub fn output(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        match (&mut self.tls, &mut self.ws) {
            (None, None) => {
                wire.extend_from_slice(plain);
                Ok(())
            }
            (None, Some(ws)) => {
                ws.output(plain, wire);
                Ok(())
            }
            (Some(tls), None) => tls_output(tls, plain, wire),
            (Some(tls), Some(ws)) => {
                self.mid.clear();
                ws.output(plain, &mut self.mid);
                let r = tls_output(tls, &self.mid, wire);
                if self.mid.capacity() > 1 << 20 {
                    self.mid = Vec::new();
                }
                r
            }
        }
    }

    /// True when the layer has bytes of its own to send.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
            || self.ws.as_ref().is_some_and(|w| w.wants_write())
    }

    /// Says goodbye at the layer's level (WebSocket close, TLS
    /// close_notify), for the writer to flush before the socket closes.
    pub fn close(&mut self) {
        if let Some(w) = &mut self.ws {
            w.close();
        }
        if let Some(tls) = &mut self.tls {
            if let Some(ws) = &mut self.ws {
                // The close frame goes inside TLS, before close_notify.
                let mut frames = Vec::new();
                ws.output(&[], &mut frames);
                let _ = tls.writer().write_all(&frames);
            }
            tls.send_close_notify();
        }
    }

    /// The name log lines give the transport.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

fn tls_input(
    tls: &mut rustls::Connection,
    mut raw: &[u8],
    plain: &mut BytesMut,
) -> io::Result<bool> {
    loop {
        if !raw.is_empty() {
            tls.read_tls(&mut raw)?;
        }
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            let at = plain.len();
            plain.resize(at + left, 0);
            let n = tls.reader().read(&mut plain[at..])?;
            plain.truncate(at + n);
            left -= n.min(left);
            if n == 0 {
                break;
            }
        }
        if state.peer_has_closed() {
            return Ok(false);
        }
        if raw.is_empty() {
            return Ok(true);
        }
    }
}

fn tls_output(
    tls: &mut rustls::Connection,
    mut plain: &[u8],
    wire: &mut Vec<u8>,
) -> io::Result<()> {
    while !plain.is_empty() {
        let n = tls.writer().write(plain)?;
        plain = &plain[n..];
        while tls.wants_write() {
            tls.write_tls(wire)?;
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    while tls.wants_write() {
        tls.write_tls(wire)?;
    }
    Ok(())
}

/// A connection on its way to the shard that owns its client: the socket
/// (closed if the message is dropped at shutdown) and its layer's state.
#[derive(Debug)]
pub struct Handoff {
    /// The socket.
    pub fd: OwnedFd,
    /// TLS state and the like.
    pub layer: Layer,
}

/// One connection's socket and layer, shared by its reader and writer.
#[derive(Clone)]
pub struct Link {
    socket: Rc<RefCell<TcpStream>>,
    layer: Rc<RefCell<Layer>>,
}

/// What one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Bytes came off the socket.
    Data {
        /// How many (before TLS took its share).
        raw: usize,
        /// They filled the buffer: more are probably waiting.
        filled: bool,
    },
    /// The peer closed.
    Closed,
}

impl Link {
    /// A link over `stream`.
    pub fn new(stream: TcpStream, layer: Layer) -> Link {
        let _ = stream.set_nodelay(true);
        Link {
            socket: Rc::new(RefCell::new(stream)),
            layer: Rc::new(RefCell::new(layer)),
        }
    }

    /// Takes over a handed-off (or parked) connection, whose socket was set
    /// up by [`Link::new`] before.
    pub fn adopt(h: Handoff) -> Link {
        // SAFETY: the fd came in a Handoff, which owned it.
        let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
        Link {
            socket: Rc::new(RefCell::new(stream)),
            layer: Rc::new(RefCell::new(h.layer)),
        }
    }

    /// The socket's fd, for a shutdown from the shard.
    pub fn fd(&self) -> RawFd {
        self.socket.borrow().as_raw_fd()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket.borrow().peer_addr().ok()
    }

    /// The user name the client's certificate gave, if the listener takes
    /// it as one.
    pub fn identity(&self) -> Option<String> {
        self.layer.borrow().identity.clone()
    }

    /// The layer's name, for log lines.
    pub fn kind(&self) -> &'static str {
        self.layer.borrow().name()
    }

    /// Whatever the layer already holds for the reader (TLS records that
    /// arrived with the handshake's last flight), appended to `plain`.
    ///
    /// # Errors
    /// As [`Layer::input`].
    pub fn buffered(&self, plain: &mut BytesMut) -> io::Result<bool> {
        self.layer.borrow_mut().input(&[], plain)
    }

    /// Reads the socket once, at most `limit` bytes (up to
    /// [`READ_BYTES`]), and appends what they carried to `plain`.
    ///
    /// # Errors
    /// The socket failed, or the layer refused what came.
    pub async fn read(&self, plain: &mut BytesMut, limit: usize) -> io::Result<Read> {
        let limit = limit.clamp(1, READ_BYTES);
        if self.layer.borrow().eof {
            return Ok(Read::Closed);
        }
        poll_fn(|cx| {
            SCRATCH.with_borrow_mut(|scratch| {
                let space = &mut scratch[..limit];
                let n = match Pin::new(&mut *self.socket.borrow_mut()).poll_read(cx, space) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r?,
                };
                if n == 0 {
                    return Poll::Ready(Ok(Read::Closed));
                }
                let before = plain.len();
                let mut layer = self.layer.borrow_mut();
                if !layer.input(&space[..n], plain)? {
                    // A PUBLISH and DISCONNECT then close_notify, in one
                    // read (mosquitto_pub over TLS): the packets count.
                    if plain.len() == before {
                        return Poll::Ready(Ok(Read::Closed));
                    }
                    layer.eof = true;
                }
                Poll::Ready(Ok(Read::Data {
                    raw: n,
                    filled: n == limit,
                }))
            })
        })
        .await
    }

    /// True when the layer has bytes of its own for the writer.
    pub fn wants_write(&self) -> bool {
        self.layer.borrow().wants_write()
    }

    /// True when nothing but new bytes on the socket can give the reader
    /// work: the layer owes no bytes and holds no close for it.
    pub fn is_quiet(&self) -> bool {
        let layer = self.layer.borrow();
        !layer.wants_write() && !layer.eof
    }

    /// The client side of a WebSocket upgrade (ringmq-bench): sends the
    /// request, reads the answer, and frames the link from then on; MQTT
    /// bytes behind the answer go to `plain`. The caller bounds it in time.
    ///
    /// # Errors
    /// The socket failed or the server refused the upgrade.
    pub async fn upgrade_client(
        &self,
        host: &str,
        path: &str,
        plain: &mut BytesMut,
    ) -> io::Result<()> {
        let mut wire = Vec::new();
        self.write(&ws::client_request(host, path), &mut wire)
            .await?;
        let mut answer = BytesMut::new();
        loop {
            if let Some(n) = ws::client_answer(&answer).map_err(io::Error::other)? {
                let open = self.install_ws(ws::Ws::client(usize::MAX), &answer[n..], plain)?;
                return if open {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            if self.read(&mut answer, ws::MAX_REQUEST_BYTES).await? == Read::Closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Frames the link with WebSocket from now on (the upgrade answer was
    /// sent); `after`, what came behind the upgrade request, is fed through
    /// it into `plain`.
    ///
    /// # Errors
    /// As [`ws::Ws::input`].
    pub fn install_ws(&self, ws: ws::Ws, after: &[u8], plain: &mut BytesMut) -> io::Result<bool> {
        let mut layer = self.layer.borrow_mut();
        layer.set_ws(ws);
        layer.ws.as_mut().expect("just set").input(after, plain)
    }

    /// Writes `plain` (and the layer's own bytes) to the socket; `wire` is
    /// scratch space kept between calls.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn write(&self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        let direct = self.is_plain();
        let bytes: &[u8] = if direct {
            plain
        } else {
            wire.clear();
            self.layer.borrow_mut().output(plain, wire)?;
            wire
        };
        self.write_raw(bytes).await
    }

    async fn write_raw(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *self.socket.borrow_mut()).poll_write(cx, bytes))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// True for plain TCP (no TLS or WebSocket state between MQTT and the
    /// socket), where [`Link::try_send`] may be used.
    pub fn is_plain(&self) -> bool {
        self.layer.borrow().is_plain()
    }

    /// Writes what the socket takes of `bytes` now, without waiting, and
    /// returns how many it took (0 when it would block or failed: the
    /// writer task then goes the long way and sees the error). Plain TCP
    /// only.
    pub fn try_send(&self, bytes: &[u8]) -> usize {
        debug_assert!(self.is_plain());
        // SAFETY: a send from a live buffer on the socket this link owns.
        let n = unsafe {
            libc::send(
                self.fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    /// Says goodbye at the layer's level and flushes that (best effort).
    pub async fn close(&self, wire: &mut Vec<u8>) {
        if self.is_plain() {
            return;
        }
        self.layer.borrow_mut().close();
        let _ = self.write(&[], wire).await;
    }

    /// Shuts the socket down both ways: the other task's read or write ends.
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on the socket this link owns.
        unsafe { libc::shutdown(self.fd(), libc::SHUT_RDWR) };
    }

    /// The link as a [`Handoff`] for another shard. Only while nothing
    /// else holds it (before the reader and writer start).
    ///
    /// # Errors
    /// The link is shared.
    pub fn into_handoff(self) -> io::Result<Handoff> {
        self.try_handoff().map_err(|(_, e)| e)
    }

    /// As [`Link::into_handoff`], but a link that cannot be handed off
    /// comes back whole, still serving its socket.
    ///
    /// # Errors
    /// As [`Link::into_handoff`], with the link.
    pub fn try_handoff(self) -> Result<Handoff, (Link, io::Error)> {
        if Rc::strong_count(&self.socket) != 1 || Rc::strong_count(&self.layer) != 1 {
            return Err((self, io::Error::other("link still shared at handoff")));
        }
        let Link { socket, layer } = self;
        let stream = sole(socket);
        // SAFETY: the stream gave the fd up unclosed; it is owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
        Ok(Handoff {
            fd,
            layer: sole(layer),
        })
    }
}

/// What a counted-alone `Rc<RefCell<T>>` holds.
fn sole<T>(rc: Rc<RefCell<T>>) -> T {
    Rc::try_unwrap(rc)
        .map_err(|_| ())
        .expect("counted above")
        .into_inner()
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("fd", &self.fd())
            .finish_non_exhaustive()
    }
}
