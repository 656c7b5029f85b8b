//! Opening the data directory at start: every shard's log replayed in
//! parallel, retained messages gathered for every shard, and sessions
//! re-homed when the shard count changed.
//!
//! Re-homing moves the old logs under `data-dir/rehome/` first; each new
//! shard then starts from an empty log, restores its share and writes it as
//! a checkpoint; only after every shard has, `rehome/` goes and META names
//! the new count. A crash in between finds `rehome/` and starts over from it.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::session::{Backlog, BacklogEntry, Message};
use crate::storage::{DataDir, Log, LogOptions, RecordRef, RecoveryReport};

use super::super::owner_of;
use super::records::{self, wall_ms};
use super::Recovered;

/// What one shard starts from.
#[derive(Debug)]
pub struct ShardStorage {
    /// Its log, positioned after the last record.
    pub log: Log,
    /// The state its log (or its share of the re-homed logs) holds.
    pub recovered: Recovered,
    /// Every retained message, all shards.
    pub retained: Arc<HashMap<String, Arc<Message>>>,
    /// Write a checkpoint before serving (after re-homing).
    pub checkpoint_first: bool,
}

/// The opened data directory, and what each shard starts from.
#[derive(Debug)]
pub struct Opened {
    /// The locked directory (held for the broker's life).
    pub dir: DataDir,
    /// One per shard.
    pub shards: Vec<ShardStorage>,
    /// Sessions are being re-homed: call [`Opened::finish`] once every
    /// shard has written its checkpoint.
    pub rehoming: bool,
}

impl Opened {
    /// Ends a re-homing (the new logs hold everything) and records the
    /// shard count.
    ///
    /// # Errors
    /// The directory cannot be written.
    pub fn finish(dir: &mut DataDir, shards: usize, rehoming: bool) -> io::Result<()> {
        if rehoming {
            std::fs::remove_dir_all(dir.path().join(REHOME))?;
        }
        if dir.previous_shards != Some(shards) || rehoming {
            dir.set_shards(shards)?;
        }
        Ok(())
    }
}

const REHOME: &str = "rehome";

fn shard_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        if let Some(k) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|k| k.parse().ok())
        {
            v.push((k, e.path()));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// Opens `config.data_dir` (`None` when the broker runs in memory).
///
/// # Errors
/// The directory cannot be used (locked, unwritable, not ringmq's), or a
/// log cannot be recovered.
pub fn open(config: &Config) -> io::Result<Option<Opened>> {
    let Some(path) = &config.data_dir else {
        return Ok(None);
    };
    let dir = DataDir::open(path)?;
    let n = config.cores;
    let opts = LogOptions {
        segment_size: config.segment_size,
        recovery: config.recovery,
    };
    let rehome = path.join(REHOME);
    let rehoming = rehome.exists() || dir.previous_shards.is_some_and(|p| p != n);
    let sources = if rehoming {
        if !rehome.exists() {
            let tmp = path.join("rehome.tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir(&tmp)?;
            for d in shard_dirs(path)? {
                std::fs::rename(&d, tmp.join(d.file_name().expect("a shard dir")))?;
            }
            std::fs::rename(&tmp, &rehome)?;
            crate::storage::sync_dir(path)?;
            tracing::info!(
                from = dir.previous_shards.unwrap_or(0),
                to = n,
                "the shard count changed: re-homing every session to its new shard"
            );
        }
        // New logs left by a re-homing that did not finish.
        for d in shard_dirs(path)? {
            std::fs::remove_dir_all(d)?;
        }
        shard_dirs(&rehome)?
    } else {
        (0..n).map(|k| dir.shard_dir(k)).collect()
    };
    let now = Instant::now();
    let wall = wall_ms();
    let replayed: Vec<io::Result<(Log, Recovered, RecoveryReport)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = sources
            .iter()
            .map(|d| {
                sc.spawn(move || {
                    let mut rec = Recovered::default();
                    let (log, report) =
                        Log::open(d, opts, |k, b, r| rec.apply(k, b, r, now, wall))?;
                    rec.dedupe_clients();
                    Ok((log, rec, report))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("log recovery panicked")))
            })
            .collect()
    });
    let mut logs = Vec::new();
    let mut recs = Vec::new();
    for (d, r) in sources.iter().zip(replayed) {
        let (log, rec, report) = r?;
        let secs = report.elapsed.as_secs_f64().max(1e-6);
        tracing::info!(
            log = %d.display(),
            records = report.records,
            mb = format!("{:.1}", report.bytes as f64 / 1e6),
            mb_per_s = format!("{:.0}", report.bytes as f64 / 1e6 / secs),
            sessions = rec.sessions(),
            queued = rec.queued(),
            retained = rec.retained(),
            torn_tail_bytes = report.truncated.map_or(0, |t| t.2),
            corrupt_records = report.corrupt.len(),
            "log recovered"
        );
        logs.push(log);
        recs.push(rec);
    }
    let mut retained = HashMap::new();
    for r in &mut recs {
        retained.extend(r.retained.drain());
    }
    let retained = Arc::new(retained);
    let recs = if rehoming {
        drop(logs);
        logs = (0..n)
            .map(|k| Log::open(&dir.shard_dir(k), opts, |_, _, _| {}).map(|(l, _)| l))
            .collect::<io::Result<_>>()?;
        rehome_sessions(recs, &mut logs)?
    } else {
        recs
    };
    let shards = logs
        .into_iter()
        .zip(recs)
        .map(|(log, recovered)| ShardStorage {
            log,
            recovered,
            retained: retained.clone(),
            checkpoint_first: rehoming,
        })
        .collect();
    Ok(Some(Opened {
        dir,
        shards,
        rehoming,
    }))
}

/// Deals the sessions of `recs` to their owners among the new shards'
/// `logs`, with session and message ids renumbered per new shard (queue
/// order kept). Each message a new shard needs is copied into its log
/// first, under its new id, so that its queued deliveries point there.
fn rehome_sessions(recs: Vec<Recovered>, logs: &mut [Log]) -> io::Result<Vec<Recovered>> {
    let n = logs.len();
    let mut out: Vec<Recovered> = (0..n).map(|_| Recovered::default()).collect();
    for rec in recs {
        let mut sessions: Vec<(usize, super::recover::RecSession, Vec<BacklogEntry>)> = Vec::new();
        // Old ids each target needs, numbered in their old order, so every
        // queue keeps its order and a message shared by sessions keeps one id.
        let mut used: Vec<std::collections::BTreeMap<u64, RecordRef>> = vec![Default::default(); n];
        for (_, mut s) in rec.sessions {
            let k = owner_of(&s.client_id, n);
            let queue = std::mem::replace(&mut s.queue, Backlog::new(super::DECODE));
            let entries: Vec<BacklogEntry> = queue.into_entries().collect();
            for e in &entries {
                used[k].entry(e.id).or_insert_with(|| e.rec.clone());
            }
            sessions.push((k, s, entries));
        }
        let mut moved: Vec<HashMap<u64, (u64, RecordRef)>> = vec![HashMap::new(); n];
        for (k, olds) in used.into_iter().enumerate() {
            let t = &mut out[k];
            for (old, rec) in olds {
                let Some(body) = records::renumbered(rec.body(), t.last_msg + 1) else {
                    continue;
                };
                logs[k]
                    .append(records::MSG, &body)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                t.last_msg += 1;
                moved[k].insert(old, (t.last_msg, logs[k].last_record()));
            }
        }
        for (k, mut s, entries) in sessions {
            for e in entries {
                let Some((id, rec)) = moved[k].get(&e.id).cloned() else {
                    continue;
                };
                s.queue.queue(id, rec, e.qos, e.retain, &e.ids);
                if let Some((pid, received)) = e.sent {
                    s.queue.sent(id, pid);
                    if received {
                        s.queue.received(id);
                    }
                }
            }
            let t = &mut out[k];
            t.last_sid += 1;
            t.sessions.insert(t.last_sid, s);
        }
    }
    for o in &mut out {
        o.dedupe_clients();
    }
    Ok(out)
}
