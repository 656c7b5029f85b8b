//! Subscribers that never read: they connect, subscribe, take their SUBACK
//! and then leave every byte the broker sends them unread, so the broker's
//! buffers for them fill and stay full (a crashed or wedged consumer).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq::protocol::{Codec, Packet};

use crate::args::Plan;

/// Connects `plan.stuck` such subscribers to subscriber 0's filter; they stay
/// connected (and unread) until the returned sockets are dropped.
pub fn subscribe(plan: &Plan) -> Result<Vec<TcpStream>, String> {
    (0..plan.stuck)
        .map(|n| one(plan, &format!("{}-stuck{n}", plan.client_prefix)))
        .collect()
}

fn one(plan: &Plan, id: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(plan.broker).map_err(|e| e.to_string())?;
    // A small receive buffer: the broker's writes back up at once.
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on our own socket with a valid int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut connect = crate::client::connect_packet(plan, id, true)?;
    // Long enough for any run: it never pings.
    connect.keep_alive = 3600;
    let connect = Packet::Connect(Box::new(connect));
    let subscribe = crate::run::subscribe_packet(plan, 0);
    let mut out = BytesMut::new();
    connect
        .encode(plan.version, &mut out)
        .map_err(|e| e.to_string())?;
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut codec = Codec::new(plan.version, usize::MAX);
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tmp = [0u8; 4096];
    while Instant::now() < deadline {
        while let Some(p) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            match p {
                Packet::SubAck(_) => return Ok(stream),
                Packet::ConnAck(a) if a.reason.is_error() => {
                    return Err(format!("refused: {}", a.reason))
                }
                // SUBSCRIBE only after CONNACK: not every broker takes both at once.
                Packet::ConnAck(_) => {
                    let mut out = BytesMut::new();
                    subscribe
                        .encode(plan.version, &mut out)
                        .map_err(|e| e.to_string())?;
                    stream.write_all(&out).map_err(|e| e.to_string())?;
                }
                _ => {}
            }
        }
        let n = stream.read(&mut tmp).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before SUBACK".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Err("no SUBACK".into())
}
