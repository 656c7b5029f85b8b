//! The per-shard append-only log: preallocated memory-mapped segments of
//! CRC-framed records, recovery that truncates a torn tail, checkpoints
//! that bound recovery time and disk, and group-commit sync batches.
//!
//! It knows records (a kind byte and a body) and nothing of MQTT; the
//! shard's `persist` module gives the kinds their meaning.
//!
//! A checkpoint appends every live record after a mark, wherever the log
//! is; a [`CheckpointJob`], run on any thread, then makes it durable, points
//! the `CHECKPOINT` file at the mark and deletes the segments before it.
//! Recovery replays from the mark the file names (from the start without
//! one). A checkpoint the broker died in, or whose file was not written yet,
//! is replayed over the state before it: its records are upserts of live
//! state, so replaying them twice changes nothing.

mod segment;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use segment::{read_slot, Dirty, Segment, Slot, HEADER_BYTES, RECORD_HEADER_BYTES};

pub mod dir;
#[cfg(test)]
mod tests;

pub use dir::DataDir;

/// fsyncs a directory, so a created, renamed or removed name in it is durable.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    segment::sync_dir(dir)
}

/// Record kinds below this belong to the log itself.
pub const FIRST_USER_KIND: u8 = 16;
const CHECKPOINT_BEGIN: u8 = 1;

/// What recovery does with a corrupt record that is not at the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to start, naming the segment and offset.
    #[default]
    Strict,
    /// Drop the rest of that segment, say so, and go on with the next.
    Truncate,
}

/// How a log is laid out and recovered.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Bytes per segment file.
    pub segment_size: usize,
    /// See [`RecoveryMode`].
    pub recovery: RecoveryMode,
}

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Segments replayed.
    pub segments: usize,
    /// Records handed to the caller.
    pub records: u64,
    /// Bytes of records replayed.
    pub bytes: u64,
    /// A torn tail that was cut off: segment, offset, bytes dropped.
    pub truncated: Option<(u64, usize, usize)>,
    /// Corrupt records skipped under [`RecoveryMode::Truncate`]: segment and offset.
    pub corrupt: Vec<(u64, usize)>,
    /// Where replay started (segment, offset), from the `CHECKPOINT` file.
    pub checkpoint: Option<(u64, usize)>,
    /// Time the replay took.
    pub elapsed: Duration,
}

/// Where one record's body lies in a segment: what RAM keeps of a queued
/// message instead of the message (16 bytes). It keeps its segment mapped,
/// even after a checkpoint deleted the file.
#[derive(Debug, Clone)]
pub struct RecordRef {
    seg: Arc<Segment>,
    at: u32,
    len: u32,
}

impl RecordRef {
    /// The record's body, read from the map.
    pub fn body(&self) -> &[u8] {
        self.seg
            .bytes(self.at as usize + RECORD_HEADER_BYTES, self.len as usize)
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// No segment could be allocated (full disk, usually); retried later.
    #[error("log is out of space: {0}")]
    Full(String),
    /// The record is larger than a segment.
    #[error("record of {0} bytes does not fit in a segment")]
    TooLarge(usize),
}

/// Writes that a sync batch makes durable, and the append position they
/// reach: hand it to any thread, run it, then report its `ticket`.
#[derive(Debug)]
pub struct SyncBatch {
    ranges: Vec<Dirty>,
    /// Every append whose [`Log::written`] was at most this is durable
    /// once the batch has run.
    pub ticket: u64,
}

impl SyncBatch {
    /// msyncs every range.
    ///
    /// # Errors
    /// The first msync that failed.
    pub fn run(&self) -> io::Result<()> {
        for d in &self.ranges {
            d.seg.flush(d.from, d.to)?;
        }
        Ok(())
    }

    /// True if there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The segment after the active one.
#[derive(Debug)]
enum Next {
    /// Being allocated and faulted in on a helper thread.
    Preparing(mpsc::Receiver<io::Result<Segment>>),
    /// Allocated (found by [`Log::retry_space`] while the log was full).
    Ready(Segment),
}

/// One shard's log. See the module docs.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    /// Every segment, oldest first; the last is the one written.
    segments: VecDeque<Arc<Segment>>,
    pos: usize,
    /// The next segment, being allocated and faulted in on another thread.
    next: Option<Next>,
    /// When allocating a segment last failed (the log is full until one
    /// succeeds; retried at most every second).
    full_since: Option<(Instant, String)>,
    written: u64,
    dirty: Vec<Dirty>,
    dirty_from: usize,
    since_checkpoint: u64,
    checkpoint_at: Option<(u64, usize)>,
    last_at: usize,
    /// Appends that waited for a segment that was not ready.
    pub stalls: u64,
}

/// A segment still being prepared finishes before the log goes: its helper
/// thread must not create files in a directory that a new log (a restart
/// in the same process, a test) is opening.
impl Drop for Log {
    fn drop(&mut self) {
        if let Some(Next::Preparing(rx)) = self.next.take() {
            let _ = rx.recv();
        }
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, replaying every record of its
    /// newest complete checkpoint and after into `apply`, in order.
    ///
    /// # Errors
    /// An I/O error, or under [`RecoveryMode::Strict`] a corrupt record
    /// before the tail (the message names the segment and offset).
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        mut apply: impl FnMut(u8, &[u8], RecordRef),
    ) -> io::Result<(Log, RecoveryReport)> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)?;
        let mut report = RecoveryReport::default();
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A segment whose creation did not finish: never held data.
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            } else if let Some(seq) = segment::parse_name(&name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            segments.push(Arc::new(Segment::open(
                &dir.join(segment::file_name(seq)),
                seq,
            )?));
        }
        // Where to replay from: the last finished checkpoint.
        let pointer = read_pointer(dir)?;
        if let Some((seq, at)) = pointer {
            let ok = segments.iter().any(|s| s.seq == seq)
                && matches!(segments.iter().find(|s| s.seq == seq).map(|s| read_slot(s, at)),
                    Some(Slot::Record { kind, .. }) if kind == CHECKPOINT_BEGIN);
            if !ok {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "log {}: the CHECKPOINT file names segment {seq} offset {at}, which holds no checkpoint",
                        dir.display()
                    ),
                ));
            }
            for s in segments.iter().filter(|s| s.seq < seq) {
                // Left by a checkpoint job that did not finish its deletes.
                std::fs::remove_file(&s.path)?;
            }
            segments.retain(|s| s.seq >= seq);
            report.checkpoint = pointer;
        }
        // Segments allocated ahead and never written to: the writer was
        // still in the one before, so that one is the tail (a record torn
        // there by a kill is a torn tail, not corruption).
        while segments.len() > 1
            && segments
                .last()
                .is_some_and(|s| read_slot(s, HEADER_BYTES) == Slot::End)
        {
            if let Some(s) = segments.pop() {
                std::fs::remove_file(&s.path)?;
            }
        }
        let mut pos = HEADER_BYTES;
        let last = segments.len().saturating_sub(1);
        let mut next_progress = started + Duration::from_secs(1);
        for (i, seg) in segments.iter().enumerate() {
            report.segments += 1;
            let mut at = match pointer {
                Some((_, at)) if i == 0 => at,
                _ => HEADER_BYTES,
            };
            loop {
                match read_slot(seg, at) {
                    Slot::Record { kind, body, next } => {
                        if kind >= FIRST_USER_KIND {
                            let r = RecordRef {
                                seg: seg.clone(),
                                at: at as u32,
                                len: body.len() as u32,
                            };
                            apply(kind, body, r);
                        }
                        report.records += 1;
                        report.bytes += (next - at) as u64;
                        at = next;
                        if report.records % 65_536 == 0 && Instant::now() >= next_progress {
                            next_progress += Duration::from_secs(1);
                            progress(dir, &report, started, &segments, i, at);
                        }
                    }
                    Slot::End => break,
                    Slot::Bad(why) if i == last => {
                        // A torn tail: the write the broker died in.
                        let dropped = nonzero_extent(seg, at);
                        tracing::warn!(
                            log = %dir.display(),
                            segment = seg.seq,
                            offset = at,
                            dropped_bytes = dropped,
                            why,
                            "log: cutting off a torn tail"
                        );
                        seg.write(at, &vec![0u8; dropped]);
                        seg.flush(at, at + dropped)?;
                        report.truncated = Some((seg.seq, at, dropped));
                        break;
                    }
                    Slot::Bad(why) => {
                        if opts.recovery == RecoveryMode::Strict {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "log {}: corrupt record in segment {} at offset {at} ({why}); \
                                     start with --recovery truncate to drop the rest of that \
                                     segment and go on",
                                    dir.display(),
                                    seg.seq
                                ),
                            ));
                        }
                        tracing::error!(
                            log = %dir.display(),
                            segment = seg.seq,
                            offset = at,
                            why,
                            "log: corrupt record; the rest of this segment is dropped"
                        );
                        report.corrupt.push((seg.seq, at));
                        break;
                    }
                }
            }
            if i == last {
                pos = at;
            }
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            opts,
            segments: segments.into_iter().collect(),
            pos,
            next: None,
            full_since: None,
            written: 0,
            dirty: Vec::new(),
            dirty_from: pos,
            since_checkpoint: report.bytes,
            checkpoint_at: None,
            last_at: pos,
            stalls: 0,
        };
        if log.segments.is_empty() {
            let seg = Segment::create(dir, 0, opts.segment_size)?;
            log.segments.push_back(Arc::new(seg));
            log.pos = HEADER_BYTES;
            log.dirty_from = HEADER_BYTES;
        }
        report.elapsed = started.elapsed();
        Ok((log, report))
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes appended since the log was opened: the ticket of the last append.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of records since the last checkpoint began (or since the
    /// oldest segment, before the first checkpoint).
    pub fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Segment files the log holds.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// True while the log cannot allocate a segment.
    pub fn is_full(&self) -> bool {
        self.full_since.is_some()
    }

    /// The record appended last (after an `append` that succeeded).
    pub fn last_record(&self) -> RecordRef {
        RecordRef {
            seg: self.active().clone(),
            at: self.last_at as u32,
            len: (self.pos - self.last_at - RECORD_HEADER_BYTES) as u32,
        }
    }

    fn active(&self) -> &Arc<Segment> {
        self.segments
            .back()
            .expect("invariant: a log has a segment")
    }

    /// Appends one record and returns its ticket (see [`Log::written`]).
    ///
    /// # Errors
    /// [`AppendError::Full`] if the active segment is full and no new one
    /// could be allocated; the log is unchanged.
    pub fn append(&mut self, kind: u8, body: &[u8]) -> Result<u64, AppendError> {
        debug_assert!(kind >= FIRST_USER_KIND, "kinds below 16 are the log's");
        self.append_raw(kind, body)
    }

    fn append_raw(&mut self, kind: u8, body: &[u8]) -> Result<u64, AppendError> {
        let need = RECORD_HEADER_BYTES + body.len();
        if HEADER_BYTES + need > self.opts.segment_size {
            return Err(AppendError::TooLarge(body.len()));
        }
        if self.pos + need > self.active().len() {
            self.roll()?;
        }
        let at = self.pos;
        self.active().write_record(at, kind, body);
        self.last_at = at;
        self.pos += need;
        self.written += need as u64;
        self.since_checkpoint += need as u64;
        if self.next.is_none() && self.pos > self.active().len() / 2 && self.full_since.is_none() {
            self.prepare_next();
        }
        Ok(self.written)
    }

    /// Starts allocating the next segment on a helper thread, so that rolling
    /// over costs the shard a channel receive, not an fallocate and 16k page
    /// faults.
    fn prepare_next(&mut self) {
        let (tx, rx) = mpsc::channel();
        let dir = self.dir.clone();
        let seq = self.active().seq + 1;
        let size = self.opts.segment_size;
        let spawned = std::thread::Builder::new()
            .name("ringmq-segment".into())
            .spawn(move || {
                let _ = tx.send(Segment::create(&dir, seq, size));
            });
        if spawned.is_ok() {
            self.next = Some(Next::Preparing(rx));
        }
    }

    fn roll(&mut self) -> Result<(), AppendError> {
        if let Some((since, why)) = &self.full_since {
            if since.elapsed() < Duration::from_secs(1) {
                return Err(AppendError::Full(why.clone()));
            }
        }
        if self.next.is_none() {
            self.prepare_next();
            self.stalls += 1;
        }
        let got = match self.next.take() {
            Some(Next::Ready(seg)) => Ok(seg),
            Some(Next::Preparing(rx)) => match rx.recv() {
                Ok(Ok(seg)) => Ok(seg),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("segment allocation thread failed".to_string()),
            },
            None => Err("segment allocation thread failed".to_string()),
        };
        match got {
            Ok(seg) => {
                self.close_dirty();
                self.segments.push_back(Arc::new(seg));
                self.pos = HEADER_BYTES;
                self.dirty_from = HEADER_BYTES;
                if self.full_since.take().is_some() {
                    tracing::info!(log = %self.dir.display(), "log has space again");
                }
                Ok(())
            }
            Err(why) => {
                if self.full_since.is_none() {
                    tracing::error!(log = %self.dir.display(), error = %why, "log is out of space");
                }
                self.full_since = Some((Instant::now(), why.clone()));
                Err(AppendError::Full(why))
            }
        }
    }

    /// While the log is full, tries (at most every second) to allocate the
    /// next segment, so that the log knows when space was freed even if
    /// nothing is appended meanwhile. Returns true once it has room again.
    pub fn retry_space(&mut self) -> bool {
        match &self.full_since {
            None => return true,
            Some((since, _)) if since.elapsed() < Duration::from_secs(1) => return false,
            Some(_) => {}
        }
        // Allocated on the helper thread, as always: a shard never waits
        // for an fallocate and the faulting-in of a segment here.
        let seg = match self.next.take() {
            None => {
                self.prepare_next();
                return false;
            }
            Some(Next::Ready(seg)) => seg,
            Some(Next::Preparing(rx)) => match rx.try_recv() {
                Ok(Ok(seg)) => seg,
                Err(mpsc::TryRecvError::Empty) => {
                    self.next = Some(Next::Preparing(rx));
                    return false;
                }
                Ok(Err(e)) => {
                    self.full_since = Some((Instant::now(), e.to_string()));
                    return false;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.full_since = Some((Instant::now(), "allocation thread failed".into()));
                    return false;
                }
            },
        };
        self.next = Some(Next::Ready(seg));
        self.full_since = None;
        tracing::info!(log = %self.dir.display(), "log has space again");
        true
    }

    /// Records the active segment's unflushed range.
    fn close_dirty(&mut self) {
        if self.pos > self.dirty_from {
            self.dirty.push(Dirty {
                seg: self.active().clone(),
                from: self.dirty_from,
                to: self.pos,
            });
            self.dirty_from = self.pos;
        }
    }

    /// Everything written since the last batch, to be msynced anywhere.
    pub fn take_sync_batch(&mut self) -> SyncBatch {
        self.close_dirty();
        SyncBatch {
            ranges: std::mem::take(&mut self.dirty),
            ticket: self.written,
        }
    }

    /// Starts a checkpoint: a mark where the log is. Append every live
    /// record, then call [`Log::end_checkpoint`].
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn begin_checkpoint(&mut self) -> Result<(), AppendError> {
        self.append_raw(CHECKPOINT_BEGIN, &[])?;
        let seg = self.active();
        // The mark is the last record written.
        let at = self.pos - RECORD_HEADER_BYTES;
        self.checkpoint_at = Some((seg.seq, at));
        self.since_checkpoint = 0;
        Ok(())
    }

    /// Ends a checkpoint: the job that makes it durable, points recovery at
    /// it and deletes the segments before it. The log stops holding those
    /// segments now; run the job on any thread, jobs in order.
    ///
    /// # Errors
    /// No checkpoint was begun.
    pub fn end_checkpoint(&mut self) -> io::Result<CheckpointJob> {
        let (seq, at) = self
            .checkpoint_at
            .take()
            .ok_or_else(|| io::Error::other("no checkpoint begun"))?;
        let mut old = Vec::new();
        while self.segments.front().is_some_and(|s| s.seq < seq) {
            old.extend(self.segments.pop_front());
        }
        Ok(CheckpointJob {
            sync: self.take_sync_batch(),
            dir: self.dir.clone(),
            pointer: (seq, at),
            old,
        })
    }
}

/// Makes a checkpoint durable, records where it starts, and deletes what it
/// replaces (see [`Log::end_checkpoint`]).
#[derive(Debug)]
pub struct CheckpointJob {
    sync: SyncBatch,
    dir: PathBuf,
    pointer: (u64, usize),
    old: Vec<Arc<Segment>>,
}

impl CheckpointJob {
    /// Runs the job; returns how many segments it deleted.
    ///
    /// # Errors
    /// The msync, write or unlink that failed: the older segments then stay
    /// and recovery replays them with the checkpoint (harmless, only slower).
    pub fn run(self) -> io::Result<usize> {
        // Durable before anything older goes: the checkpoint replaces it.
        self.sync.run()?;
        let tmp = self.dir.join("CHECKPOINT.tmp");
        let (seq, at) = self.pointer;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{seq} {at}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("CHECKPOINT"))?;
        segment::sync_dir(&self.dir)?;
        let n = self.old.len();
        for s in self.old {
            std::fs::remove_file(&s.path)?;
        }
        Ok(n)
    }

    /// The sync ticket the job's msync covers.
    pub fn ticket(&self) -> u64 {
        self.sync.ticket
    }
}

fn read_pointer(dir: &Path) -> io::Result<Option<(u64, usize)>> {
    let text = match std::fs::read_to_string(dir.join("CHECKPOINT")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(seq)), Some(Ok(at))) => Ok(Some((seq, at as usize))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a checkpoint pointer",
                dir.join("CHECKPOINT").display()
            ),
        )),
    }
}

/// How many bytes from `at` may hold data (up to the last non-zero byte).
fn nonzero_extent(seg: &Segment, at: usize) -> usize {
    let rest = seg.bytes(at, seg.len() - at);
    rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn progress(
    dir: &Path,
    r: &RecoveryReport,
    started: Instant,
    segs: &[Arc<Segment>],
    i: usize,
    at: usize,
) {
    let secs = started.elapsed().as_secs_f64();
    let total: usize = segs.iter().map(|s| s.len()).sum();
    let done: usize = segs[..i].iter().map(|s| s.len()).sum::<usize>() + at;
    let rate = done as f64 / secs;
    let eta = (total - done) as f64 / rate.max(1.0);
    tracing::info!(
        log = %dir.display(),
        records = r.records,
        mb_per_s = format!("{:.0}", rate / 1e6),
        eta_s = format!("{eta:.0}"),
        "log: replaying"
    );
}
