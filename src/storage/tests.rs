use super::*;

const SEG: usize = 4096;

fn opts(recovery: RecoveryMode) -> LogOptions {
    LogOptions {
        segment_size: SEG,
        recovery,
    }
}

type Replayed = (Log, Vec<(u8, Vec<u8>)>, RecoveryReport);

fn replay(dir: &Path, mode: RecoveryMode) -> io::Result<Replayed> {
    let mut got = Vec::new();
    let (log, report) = Log::open(dir, opts(mode), |k, b, _| got.push((k, b.to_vec())))?;
    Ok((log, got, report))
}

fn body(i: usize) -> Vec<u8> {
    format!("record {i:05} {}", "x".repeat(i % 50)).into_bytes()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn records_round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, got, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert!(got.is_empty());
    for i in 0..500 {
        log.append(FIRST_USER_KIND + (i % 3) as u8, &body(i))
            .unwrap();
    }
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    drop(log);
    let (mut log, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 500);
    for (i, (k, b)) in got.iter().enumerate() {
        assert_eq!(*k, FIRST_USER_KIND + (i % 3) as u8);
        assert_eq!(b, &body(i));
    }
    assert!(report.truncated.is_none());
    // Appends go on after the last record.
    log.append(FIRST_USER_KIND, b"after").unwrap();
    drop(log);
    let (_, got, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 501);
    assert_eq!(got[500].1, b"after");
}

/// Appends 20 records and returns the offset of the 20th in the active segment.
fn twenty(dir: &Path) -> (usize, PathBuf) {
    let (mut log, _, _) = replay(dir, RecoveryMode::Strict).unwrap();
    for i in 0..19 {
        log.append(FIRST_USER_KIND, &body(i)).unwrap();
    }
    let at = log.pos;
    log.append(FIRST_USER_KIND, &body(19)).unwrap();
    let path = log.active().path.clone();
    (at, path)
}

fn poke(path: &Path, at: usize, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_torn_tail_is_cut_off_and_writing_goes_on_there() {
    let dir = tempfile::tempdir().unwrap();
    let (at, path) = twenty(dir.path());
    // The last record's body half overwritten, as a torn page would leave it.
    poke(&path, at + 12, b"garbage");
    let (mut log, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 19);
    let (seg, off, dropped) = report.truncated.expect("tail cut");
    assert_eq!(off, at);
    assert!(dropped > 0);
    assert_eq!(seg, 0);
    log.append(FIRST_USER_KIND, b"new").unwrap();
    drop(log);
    let (_, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[19].1, b"new");
    assert!(report.truncated.is_none(), "the cut is clean: {report:?}");
}

#[test]
fn a_length_written_without_its_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (at, path) = twenty(dir.path());
    // A huge length where the next record would go.
    let end = at + RECORD_HEADER_BYTES + body(19).len();
    poke(&path, end, &u32::MAX.to_le_bytes());
    let (_, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(report.truncated.map(|t| t.1), Some(end));
}

#[test]
fn a_flipped_bit_before_the_tail_stops_strict_recovery_and_truncate_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    for i in 0..300 {
        log.append(FIRST_USER_KIND, &body(i)).unwrap();
    }
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // A flipped bit in the first record of the first segment.
    let first = std::fs::read(&files[0]).unwrap();
    let at = HEADER_BYTES + RECORD_HEADER_BYTES + 2;
    poke(&files[0], at, &[first[at] ^ 0x10]);
    let err = replay(dir.path(), RecoveryMode::Strict).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("segment 0 at offset 32"), "{msg}");
    assert!(msg.contains("--recovery truncate"), "{msg}");
    let (_, got, report) = replay(dir.path(), RecoveryMode::Truncate).unwrap();
    assert_eq!(report.corrupt, vec![(0, HEADER_BYTES)]);
    // Everything of the later segments is still there.
    assert!(got.len() > 200 && got.len() < 300, "{}", got.len());
    assert_eq!(got.last().unwrap().1, body(299));
}

#[test]
fn a_truncated_segment_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    log.append(FIRST_USER_KIND, b"x").unwrap();
    drop(log);
    let f = &segment_files(dir.path())[0];
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_len(10)
        .unwrap();
    let err = replay(dir.path(), RecoveryMode::Strict).unwrap_err();
    assert!(
        err.to_string().contains("shorter than a segment header"),
        "{err}"
    );
}

#[test]
fn leftover_tmp_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000007.seg.tmp"), b"half").unwrap();
    let (_log, got, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert!(got.is_empty());
    assert!(!dir.path().join("00000000000000000007.seg.tmp").exists());
}

#[test]
fn a_checkpoint_replaces_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    for i in 0..300 {
        log.append(FIRST_USER_KIND, &body(i)).unwrap();
    }
    let before = log.segment_count();
    log.begin_checkpoint().unwrap();
    log.append(FIRST_USER_KIND + 1, b"live state").unwrap();
    let job = log.end_checkpoint().unwrap();
    // Appends go on while the job runs elsewhere.
    log.append(FIRST_USER_KIND, b"after").unwrap();
    let removed = std::thread::spawn(move || job.run())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(removed, before - 1);
    drop(log);
    assert_eq!(segment_files(dir.path()).len(), 1);
    let (_, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    let bodies: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(bodies, vec![&b"live state"[..], b"after"]);
    assert!(report.checkpoint.is_some());
}

#[test]
fn a_checkpoint_whose_job_never_ran_is_replayed_after_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    for i in 0..100 {
        log.append(FIRST_USER_KIND, &body(i)).unwrap();
    }
    log.begin_checkpoint().unwrap();
    for _ in 0..200 {
        log.append(FIRST_USER_KIND + 1, b"half a checkpoint")
            .unwrap();
    }
    // The broker dies here: no job, no CHECKPOINT file.
    drop(log);
    let (_, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert_eq!(got.len(), 300);
    assert!(got[..100].iter().all(|(k, _)| *k == FIRST_USER_KIND));
    assert!(report.checkpoint.is_none());
}

#[test]
fn a_pointer_to_nowhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    log.append(FIRST_USER_KIND, b"x").unwrap();
    drop(log);
    std::fs::write(dir.path().join("CHECKPOINT"), "0 33\n").unwrap();
    let err = replay(dir.path(), RecoveryMode::Strict).unwrap_err();
    assert!(err.to_string().contains("holds no checkpoint"), "{err}");
}

#[test]
fn sync_batches_cover_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    let t = log.append(FIRST_USER_KIND, b"one").unwrap();
    let b = log.take_sync_batch();
    assert_eq!(b.ticket, t);
    assert!(!b.is_empty());
    b.run().unwrap();
    assert!(log.take_sync_batch().is_empty());
    for i in 0..100 {
        log.append(FIRST_USER_KIND, &body(i)).unwrap();
    }
    let b = log.take_sync_batch();
    assert!(b.ranges.len() > 1, "spans segments");
    b.run().unwrap();
}

#[test]
fn a_record_larger_than_a_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert!(matches!(
        log.append(FIRST_USER_KIND, &vec![0u8; SEG]),
        Err(AppendError::TooLarge(_))
    ));
}

#[test]
fn the_data_dir_is_locked_and_remembers_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = DataDir::open(dir.path()).unwrap();
    assert_eq!(d.previous_shards, None);
    d.set_shards(3).unwrap();
    let err = DataDir::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another ringmq"),
        "{err}"
    );
    drop(d);
    let d = DataDir::open(dir.path()).unwrap();
    assert_eq!(d.previous_shards, Some(3));
    assert_eq!(d.shard_dir(2), dir.path().join("shard-2"));
}

#[test]
fn an_impossible_data_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = DataDir::open(&file.join("sub")).unwrap_err();
    assert!(err.to_string().contains("cannot create it"), "{err}");
}

#[test]
fn a_record_torn_beside_a_segment_allocated_ahead_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _, _) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    // Past half the segment: the next one is allocated ahead.
    while log.next.is_none() {
        log.append(FIRST_USER_KIND, &body(7)).unwrap();
    }
    // Wait for it to exist on disk.
    let Some(Next::Preparing(rx)) = log.next.take() else {
        panic!("the next segment is being prepared")
    };
    let ready = rx.recv().unwrap().unwrap();
    let at = log.pos;
    let path = log.active().path.clone();
    drop(ready);
    drop(log);
    assert_eq!(segment_files(dir.path()).len(), 2);
    // A kill between writing a record's body and its length.
    poke(&path, at + 4, &[1, 2, 3, 4, 16, 9, 9]);
    let (mut log, got, report) = replay(dir.path(), RecoveryMode::Strict).unwrap();
    assert!(report.truncated.is_some(), "{report:?}");
    assert!(!got.is_empty());
    assert_eq!(segment_files(dir.path()).len(), 1, "the unused one is gone");
    log.append(FIRST_USER_KIND, b"on").unwrap();
}
