//! One MQTT client on a glommio executor: CONNECT/CONNACK, then a reader
//! task that hands packets to the client's role and a writer task that
//! flushes everything queued in one write, both on one ringmq transport
//! link (plain TCP or TLS).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;
use ringmq::protocol::{
    Codec, ConnAck, Connect, ConnectProperties, MqttStr, Packet, ProtocolVersion, ReasonCode,
};
use ringmq::transport::{tls, Layer, Link, Read, READ_BYTES};

use crate::args::Plan;

/// Past this many queued bytes a publisher waits for the writer.
pub const OUTBOX_LIMIT: usize = 1 << 20;

/// Packets waiting to be written.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<BytesMut>,
    writer: Cell<Option<Waker>>,
    space: Cell<Option<Waker>>,
    closed: Cell<bool>,
    /// The transport has bytes of its own to send (TLS).
    poked: Cell<bool>,
    version: Cell<Option<ProtocolVersion>>,
}

impl Outbox {
    /// Queues `p` and wakes the writer.
    pub fn push(&self, p: &Packet) {
        let v = self.version.get().unwrap_or(ProtocolVersion::V311);
        if p.encode(v, &mut self.buf.borrow_mut()).is_ok() {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }

    /// Waits until fewer than [`OUTBOX_LIMIT`] bytes are queued.
    pub async fn wait_space(&self) {
        poll_fn(|cx| {
            if self.buf.borrow().len() < OUTBOX_LIMIT || self.closed.get() {
                Poll::Ready(())
            } else {
                self.space.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Wakes the writer for the transport's own bytes.
    pub fn poke(&self) {
        self.poked.set(true);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Flushes, then closes the socket.
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// True once closed (by us or because the socket failed).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// What a client does with the packets it receives.
pub trait Role {
    /// Handles one packet; may queue answers on `out`.
    fn on_packet(&self, p: Packet, out: &Outbox);
    /// The connection ended.
    fn on_close(&self) {}
}

/// A connected client.
pub struct Client {
    /// Where to queue packets.
    pub out: Rc<Outbox>,
}

pub(crate) fn connect_packet(plan: &Plan, id: &str, clean: bool) -> Result<Connect, String> {
    let s = |v: &str| MqttStr::try_from(v).map_err(|e| format!("{v:?}: {e}"));
    let mut properties = ConnectProperties::default();
    if plan.version.is_v5() && !clean {
        properties.session_expiry_interval = Some(3600);
    }
    Ok(Connect {
        protocol: plan.version,
        clean_start: clean,
        keep_alive: 60,
        client_id: s(id)?,
        will: None,
        username: plan.username.as_deref().map(s).transpose()?,
        password: plan.password.clone().map(Bytes::from),
        properties,
    })
}

/// Connects, waits for CONNACK (returned), and starts the reader and writer.
///
/// # Errors
/// A message if the TCP connection, CONNECT or CONNACK fails.
pub async fn connect(
    plan: &Plan,
    id: &str,
    clean: bool,
    role: Rc<dyn Role>,
) -> Result<(Client, ConnAck), String> {
    let stream = TcpStream::connect(plan.broker)
        .await
        .map_err(|e| format!("connect to {}: {e}", plan.broker))?;
    let link = match &plan.tls {
        Some((cfg, name)) => tls::connect(stream, cfg.clone(), name)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", plan.broker))?,
        None => Link::new(stream, Layer::plain()),
    };
    let mut inbuf = BytesMut::new();
    if plan.ws {
        let host = plan.tls.as_ref().map_or("localhost", |(_, n)| n.as_str());
        glommio::timer::timeout(Duration::from_secs(10), async {
            link.upgrade_client(host, "/mqtt", &mut inbuf)
                .await
                .map_err(glommio::GlommioError::IoError)
        })
        .await
        .map_err(|e| format!("WebSocket upgrade with {}: {e}", plan.broker))?;
    }
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(plan, id, clean)?))
        .encode(plan.version, &mut buf)
        .map_err(|e| e.to_string())?;
    let mut wire = Vec::new();
    link.write(&buf, &mut wire)
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut codec = Codec::new(plan.version, usize::MAX);
    let ack = glommio::timer::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(p) = codec
                .decode(&mut inbuf)
                .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e.to_string())))?
            {
                return Ok(p);
            }
            if link.read(&mut inbuf, READ_BYTES).await? == Read::Closed {
                return Err(glommio::GlommioError::IoError(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    })
    .await
    .map_err(|e| format!("waiting for CONNACK: {e}"))?;
    let Packet::ConnAck(ack) = ack else {
        return Err(format!("expected CONNACK, got {ack:?}"));
    };
    if ack.reason != ReasonCode::SUCCESS {
        return Err(format!("CONNACK refused: reason {:#04x}", ack.reason.0));
    }
    let out = Rc::new(Outbox::default());
    out.version.set(Some(plan.version));
    glommio::spawn_local(write_loop(out.clone(), link.clone(), wire)).detach();
    glommio::spawn_local(read_loop(link, codec, inbuf, role, out.clone())).detach();
    Ok((Client { out }, *ack))
}

async fn read_loop(
    link: Link,
    mut codec: Codec,
    mut buf: BytesMut,
    role: Rc<dyn Role>,
    out: Rc<Outbox>,
) {
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(p)) => role.on_packet(p, &out),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ringmq-bench: broker sent a malformed packet: {e}");
                    out.close();
                    role.on_close();
                    return;
                }
            }
        }
        match link.read(&mut buf, READ_BYTES).await {
            Ok(Read::Closed) | Err(_) => {
                out.close();
                role.on_close();
                return;
            }
            Ok(Read::Data { .. }) => {
                if link.wants_write() {
                    out.poke();
                }
            }
        }
    }
}

async fn write_loop(out: Rc<Outbox>, link: Link, mut wire: Vec<u8>) {
    let mut spare = BytesMut::new();
    loop {
        let more = poll_fn(|cx| {
            let mut b = out.buf.borrow_mut();
            if out.poked.take() || !b.is_empty() {
                std::mem::swap(&mut *b, &mut spare);
                if let Some(w) = out.space.take() {
                    w.wake();
                }
                Poll::Ready(true)
            } else if out.closed.get() {
                Poll::Ready(false)
            } else {
                out.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        if !more || link.write(&spare, &mut wire).await.is_err() {
            break;
        }
        spare.clear();
    }
    out.closed.set(true);
    if let Some(w) = out.space.take() {
        w.wake();
    }
    link.shutdown();
}
