//! `--metrics-listen`: a small HTTP/1.1 responder on shard 0 for
//! `GET /metrics` (Prometheus text 0.0.4) and `GET /health`.
//!
//! A scrape asks every peer for a snapshot over the mesh and waits for the
//! answers (at most [`SCRAPE_WAIT`]); a shard that does not answer in time
//! (stuck, or holding its mesh input behind a congested subscriber) shows
//! its last counters with `ringmq_shard_up 0`, and `/health` says 503.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};

use crate::metrics::histogram::TURN_BOUNDS_NS;
use crate::metrics::prometheus::{render, Scrape};

use super::{Shard, ShardMsg};

/// How long a scrape waits for the other shards' snapshots.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(2);
/// How long a scraper may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The largest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 << 10;
/// Scrapes answered at once; more connections are closed at accept.
const MAX_SCRAPERS: usize = 16;
/// The loop-turn probe's period.
const PROBE: Duration = Duration::from_millis(10);

/// Accepts scrapers until the task is cancelled.
pub(crate) async fn serve(shard: Rc<RefCell<Shard>>, listener: TcpListener) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.get() >= MAX_SCRAPERS {
            continue; // dropped: closed
        }
        active.set(active.get() + 1);
        let (shard, active) = (shard.clone(), active.clone());
        glommio::spawn_local(async move {
            if let Err(e) = respond(&shard, stream).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
}

async fn respond(shard: &Rc<RefCell<Shard>>, mut stream: TcpStream) -> io::Result<()> {
    let head = read_head(&mut stream)
        .or(async {
            glommio::timer::sleep(REQUEST_DEADLINE).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"))
        })
        .await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&head);
    let (method, path) = match (parsed, req.method, req.path) {
        (Ok(httparse::Status::Complete(_)), Some(m), Some(p)) => {
            (m.to_string(), p.split('?').next().unwrap_or(p).to_string())
        }
        _ => {
            return reply(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
                true,
            )
            .await;
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
            false,
        )
        .await;
    }
    match path.as_str() {
        "/metrics" => {
            let body = render(&gather(shard).await);
            reply(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/health" => {
            let scrape = gather(shard).await;
            let down: Vec<String> = scrape
                .shards
                .iter()
                .enumerate()
                .filter(|(_, (_, up))| !up)
                .map(|(i, _)| i.to_string())
                .collect();
            if down.is_empty() {
                reply(&mut stream, "200 OK", "text/plain", "ok\n", head_only).await
            } else {
                let body = format!(
                    "shard {} did not answer within {} ms\n",
                    down.join(", "),
                    SCRAPE_WAIT.as_millis()
                );
                reply(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    &body,
                    head_only,
                )
                .await
            }
        }
        _ => {
            reply(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /metrics or /health\n",
                head_only,
            )
            .await
        }
    }
}

/// Reads until the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.close().await
}

/// Every shard's snapshot: this one's now, the peers' as they answer.
pub(crate) async fn gather(shard: &Rc<RefCell<Shard>>) -> Scrape {
    let (seq, me, n) = {
        let mut s = shard.borrow_mut();
        s.scrape_seq += 1;
        let seq = s.scrape_seq;
        s.broadcast(|| ShardMsg::StatsRequest { seq });
        (seq, s.id, s.nr_shards)
    };
    let answered = poll_fn(|cx| {
        let mut s = shard.borrow_mut();
        if (0..n).all(|p| p == me || s.peer_seq[p] >= seq) {
            Poll::Ready(())
        } else {
            s.scrape_wakers.push(cx.waker().clone());
            Poll::Pending
        }
    });
    answered.or(glommio::timer::sleep(SCRAPE_WAIT)).await;
    let s = shard.borrow();
    let mut shards: Vec<_> = (0..n)
        .map(|p| (s.peer_metrics[p], p == me || s.peer_seq[p] >= seq))
        .collect();
    shards[me].0 = s.snapshot();
    Scrape {
        shards,
        connections_peak: s.shared.connections_peak.load(Ordering::Relaxed) as u64,
        uptime_secs: s.started.elapsed().as_secs(),
    }
}

/// Records how late a [`PROBE`] timer fires: the loop turns (a long
/// SUBSCRIBE, a flood of reads) the shard ran before it got back to it.
pub(crate) async fn turn_probe(shard: Rc<RefCell<Shard>>) {
    loop {
        let start = Instant::now();
        glommio::timer::sleep(PROBE).await;
        let late = start.elapsed().saturating_sub(PROBE);
        let mut s = shard.borrow_mut();
        if s.stopping {
            return;
        }
        s.metrics.loop_turn.record(&TURN_BOUNDS_NS, late);
    }
}
