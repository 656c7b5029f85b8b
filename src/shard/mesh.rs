//! The mesh: one bounded SPSC channel per ordered pair of shards, carrying
//! batches of [`ShardMsg`].
//!
//! Handlers append to a per-destination batch ([`Shard::mesh_send`]); one
//! sender task per destination hands the whole batch to the channel when it
//! next runs, so a loop turn's messages to a shard cost one channel push.
//! A [`pipe`](super::pipe) wakes a parked peer only when the peer waits, and
//! through its eventfd only when it sleeps, so a busy mesh costs no syscall
//! per message. A full pipe makes the sender task wait; meanwhile readers of
//! publishing connections pause once the batches pass [`MESH_PAUSE_MSGS`].

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::protocol::Connect;
use crate::session::Message;
use crate::topic::{TopicFilter, TopicName};

use super::pipe::{PipeReceiver, PipeSender};
use super::Shard;

/// Batches a channel holds before its sender waits.
pub const MESH_CHANNEL_BATCHES: usize = 64;
/// Most messages in one batch: bounds what a channel holds (and so the
/// latency a flood of publishes can build up) to 64 × 1024 messages.
pub const MESH_BATCH_MSGS: usize = 1024;
/// Queued mesh messages past which connection readers stop reading.
pub const MESH_PAUSE_MSGS: usize = 8 * 1024;

/// What shards tell each other. Plain `Send` data only: no `Rc`, no slab keys.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to the receiving shard's matching sessions; `report` when
    /// the sender's acknowledgement waits for a `Stored` report (the
    /// receiver had a durable subscriber to it, as far as the sender knew).
    Deliver {
        /// The message.
        msg: Arc<Message>,
        /// The sender waits for this delivery to be logged.
        report: bool,
    },
    /// Deliver to one of the receiving shard's members of shared
    /// subscription `key` (counted with `Deliver` for `Stored`).
    DeliverShared {
        /// The message.
        msg: Arc<Message>,
        /// As for `Deliver` (shared members are not in the durable table,
        /// so a QoS 1/2 one always asks when the broker logs).
        report: bool,
        /// The shared subscription, `$share/{group}/{filter}`.
        key: TopicFilter,
    },
    /// The sender has `total` members of shared subscription `key`, `online`
    /// of them connected (answered with `Applied`).
    SharedMembers {
        /// The shared subscription.
        key: TopicFilter,
        /// Members on the sender.
        total: u32,
        /// Of which online.
        online: u32,
    },
    /// The sender gained its first (`add`) or lost its last local
    /// subscription to `filter`; with `durable`, its first or last one of a
    /// logged session (a second table: what QoS 1/2 acknowledgements wait for).
    Interest {
        /// The filter.
        filter: TopicFilter,
        /// Gained or lost.
        add: bool,
        /// The durable table, not the routing one.
        durable: bool,
    },
    /// An `Interest` or `Retain` message was applied (FIFO, so a count
    /// suffices): what SUBACK and the PUBACK of a retained publish wait for.
    Applied,
    /// Set (`Some`) or clear the retained message of `topic`.
    Retain {
        /// The topic.
        topic: TopicName,
        /// The message, or `None` to delete.
        msg: Option<Arc<Message>>,
        /// The sender also routed the message here for delivery; if not,
        /// local subscribers that match get it now.
        routed: bool,
    },
    /// The receiver has handled the first `upto` `Deliver` messages the
    /// sender sent it (counted over the pair's life), and logged every one
    /// of them it had to but those numbered in `failed` (its log was full):
    /// QoS 1/2 acknowledgements wait for it, and those of `failed` become
    /// refusals. Sent after deliveries that asked for a report; `failed`
    /// numbers only those.
    Stored {
        /// Deliveries handled.
        upto: u64,
        /// 1-based numbers of those the log refused since the last report.
        failed: Vec<u64>,
    },
    /// Counters for `$SYS` (`seq` none) or a scrape, sent to shard 0.
    Stats {
        /// The sender's snapshot.
        m: Box<Metrics>,
        /// The scrape it answers.
        seq: Option<u64>,
    },
    /// Shard 0 asks for a snapshot for scrape `seq` (`/metrics`).
    StatsRequest {
        /// The scrape.
        seq: u64,
    },
    /// A connection whose session this shard owns: the socket and its
    /// transport's state, its CONNECT, and bytes read after it.
    Adopt {
        /// The socket (closed if the message is dropped) and its TLS state.
        link: crate::transport::Handoff,
        /// The parsed CONNECT.
        connect: Box<Connect>,
        /// Bytes that followed CONNECT in the read buffer.
        leftover: Bytes,
        /// The client id picked for an empty one.
        assigned: Option<String>,
    },
}

/// A batch: what one shard sends another in one channel push.
pub type Batch = Vec<ShardMsg>;

/// Moves batches for one destination from the shard to the channel.
pub(crate) async fn sender_loop(shard: Rc<RefCell<Shard>>, to: usize, tx: PipeSender<Batch>) {
    loop {
        let batch = poll_fn(|cx| {
            let mut s = shard.borrow_mut();
            let done = s.stopping && s.conns.is_empty();
            match s.outgoing.get_mut(to) {
                Some(q) if q.len() > MESH_BATCH_MSGS => {
                    Poll::Ready(Some(q.drain(..MESH_BATCH_MSGS).collect()))
                }
                Some(q) if !q.is_empty() => Poll::Ready(Some(std::mem::take(q))),
                Some(_) if done => Poll::Ready(None),
                Some(_) => {
                    s.mesh_wakers[to] = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        })
        .await;
        let Some(batch) = batch else { return };
        {
            // Readers paused on a full mesh wait for this.
            let mut s = shard.borrow_mut();
            s.metrics.mesh_batches += 1;
            s.metrics.mesh_messages += batch.len() as u64;
            if s.mesh_backlog() <= MESH_PAUSE_MSGS {
                s.congestion.wake_all();
            }
        }
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// Applies batches from one peer; connection handoffs start a task.
pub(crate) async fn receiver_loop(shard: Rc<RefCell<Shard>>, from: usize, rx: PipeReceiver<Batch>) {
    let congestion = shard.borrow().congestion.clone();
    while let Some(batch) = rx.recv().await {
        let mut batch = batch.into_iter().peekable();
        while batch.peek().is_some() {
            // Hold further messages while a local subscriber is congested:
            // the channel fills and the sending shard stops reading its
            // publishers. Checked per delivery, not per batch, so that a
            // queue that just passed its high mark is not handed the rest
            // of a batch of up to MESH_BATCH_MSGS.
            poll_fn(|cx| {
                if congestion.get() > 0 {
                    congestion.register(cx.waker());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            let mut adopts = Vec::new();
            {
                let mut s = shard.borrow_mut();
                let now = Instant::now();
                for m in batch.by_ref() {
                    let deliver =
                        matches!(m, ShardMsg::Deliver { .. } | ShardMsg::DeliverShared { .. });
                    match m {
                        ShardMsg::Adopt { .. } if !s.stopping => adopts.push(m),
                        other => s.on_mesh(from, other, now),
                    }
                    if deliver && congestion.get() > 0 {
                        break;
                    }
                }
                s.report_stored();
            }
            for m in adopts {
                if let ShardMsg::Adopt {
                    link,
                    connect,
                    leftover,
                    assigned,
                } = m
                {
                    let f = super::connection::adopt_handoff(
                        shard.clone(),
                        link,
                        connect,
                        leftover,
                        assigned,
                    );
                    glommio::spawn_local(f).detach();
                }
            }
        }
    }
}
