//! Group commit: msync runs on a thread of its own, so the shard goes on
//! serving while the disk works, and one msync covers every record logged
//! since the last.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use atomic_waker::AtomicWaker;

use crate::config::SyncMode;
use crate::storage::{CheckpointJob, SyncBatch};

use super::super::Shard;

#[derive(Debug, Default)]
struct Done {
    ticket: AtomicU64,
    waker: AtomicWaker,
}

#[derive(Debug)]
enum Job {
    Sync(SyncBatch),
    Checkpoint(CheckpointJob, Instant),
}

/// A thread that runs a shard's msyncs and checkpoint jobs, in order (so a
/// sync that completes covers every range an earlier job took).
#[derive(Debug, Clone)]
pub(crate) struct LogThread {
    tx: crossbeam_channel::Sender<Job>,
    done: Arc<Done>,
}

impl LogThread {
    pub fn start(shard: usize) -> std::io::Result<LogThread> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let done = Arc::new(Done::default());
        let d = done.clone();
        std::thread::Builder::new()
            .name(format!("ringmq-log-{shard}"))
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Sync(batch) => {
                            if let Err(e) = batch.run() {
                                // The pages stay dirty and the kernel
                                // retries; there is nothing better to wait for.
                                tracing::error!(shard, error = %e, "log msync failed");
                            }
                            d.ticket.fetch_max(batch.ticket, Ordering::Release);
                            d.waker.wake();
                        }
                        Job::Checkpoint(job, started) => {
                            let ticket = job.ticket();
                            match job.run() {
                                Ok(removed) => tracing::info!(
                                    shard,
                                    segments_removed = removed,
                                    ms = started.elapsed().as_millis() as u64,
                                    "log checkpoint durable"
                                ),
                                Err(e) => {
                                    tracing::error!(shard, error = %e, "log checkpoint job failed")
                                }
                            }
                            d.ticket.fetch_max(ticket, Ordering::Release);
                            d.waker.wake();
                        }
                    }
                }
            })?;
        Ok(LogThread { tx, done })
    }

    /// Queues a checkpoint job.
    pub fn checkpoint(&self, job: CheckpointJob) {
        let _ = self.tx.send(Job::Checkpoint(job, Instant::now()));
    }

    async fn sync(&self, batch: SyncBatch) {
        let ticket = batch.ticket;
        if self.tx.send(Job::Sync(batch)).is_err() {
            return;
        }
        poll_fn(|cx| {
            self.done.waker.register(cx.waker());
            if self.done.ticket.load(Ordering::Acquire) >= ticket {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Runs the shard's syncs: under `--sync always` whenever an
/// acknowledgement waits for one, under `interval=D` every D. Ends at
/// shutdown with a last sync.
pub(crate) async fn commit_loop(shard: Rc<RefCell<Shard>>, thread: LogThread) {
    let mode = match shard.borrow().store.as_ref() {
        Some(s) => s.sync,
        None => return,
    };
    loop {
        match mode {
            SyncMode::Always => {
                poll_fn(|cx| {
                    let mut s = shard.borrow_mut();
                    let stop = s.stopping && s.conns.is_empty();
                    let wanted = s.store.as_ref().is_some_and(|st| st.sync_wanted());
                    match s.store.as_mut() {
                        Some(_) if wanted || stop => Poll::Ready(()),
                        Some(st) => {
                            st.sync_waker = Some(cx.waker().clone());
                            Poll::Pending
                        }
                        None => Poll::Ready(()),
                    }
                })
                .await;
                // Let the loop turn's other tasks log theirs: one msync for all.
                futures_lite::future::yield_now().await;
            }
            SyncMode::Interval(d) => glommio::timer::sleep(d).await,
            SyncMode::None => return,
        }
        let (batch, stop) = {
            let mut s = shard.borrow_mut();
            let stop = s.stopping && s.conns.is_empty();
            let Some(st) = s.store.as_mut() else { return };
            (st.log.take_sync_batch(), stop)
        };
        let ticket = batch.ticket;
        // Even an empty batch goes through the thread: a checkpoint job
        // queued before it may hold ranges this ticket covers.
        thread.sync(batch).await;
        {
            let mut s = shard.borrow_mut();
            s.metrics.log_syncs += 1;
            s.synced_to(ticket, Instant::now());
        }
        if stop {
            return;
        }
    }
}

impl Shard {
    /// The log is durable up to `ticket`: release what waited for it.
    pub(crate) fn synced_to(&mut self, ticket: u64, now: Instant) {
        let Some(st) = self.store.as_mut() else {
            return;
        };
        st.synced = st.synced.max(ticket);
        let synced = st.synced;
        let n = st.after_sync.iter().take_while(|m| m.0 <= synced).count();
        let ready: Vec<_> = st.after_sync.drain(..n).collect();
        for (_, to, msg) in ready {
            self.mesh_send(to, msg);
        }
        self.release_deferred(now);
    }

    /// Sends `msg` to shard `to` once what this shard logged so far is
    /// durable (at once unless `--sync always`).
    pub(crate) fn send_when_durable(&mut self, to: usize, msg: super::super::ShardMsg) {
        let ticket = self.ack_ticket();
        if ticket == 0 {
            self.mesh_send(to, msg);
            return;
        }
        if let Some(st) = self.store.as_mut() {
            st.after_sync.push_back((ticket, to, msg));
            st.want_sync(ticket);
        }
    }
}
