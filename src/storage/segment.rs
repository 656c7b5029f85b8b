//! One preallocated, memory-mapped segment file and the framing of the
//! records in it.
//!
//! ```text
//! header (32 B): magic "RINGMQSG" | format u32 | reserved u32 | seq u64 | size u64
//! record:        total u32 | crc32c u32 | kind u8 | body      (total = 9 + body)
//! ```
//!
//! The file is allocated in full when it is created (`posix_fallocate`), so
//! a write through the map can never meet a full disk (which would be a
//! SIGBUS, not an error); the disk fills at creation time, where it is an
//! `io::Error`. Unwritten space is zeros, so a `total` of 0 is the end.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

pub(crate) const MAGIC: &[u8; 8] = b"RINGMQSG";
/// Bumped whenever the framing or a storage record changes meaning.
pub(crate) const FORMAT: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 32;
pub(crate) const RECORD_HEADER_BYTES: usize = 9;

/// The file name of segment `seq`: sorts in sequence order.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// The sequence number in a segment file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// A mapped segment. Shared (`Arc`) with the sync thread, which flushes
/// ranges of it while the shard writes further on.
#[derive(Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    map: MmapRaw,
    _file: File,
}

impl Segment {
    /// Creates segment `seq` of `size` bytes in `dir`, allocated on disk and
    /// faulted into memory, so the shard's first writes to it do not stall.
    pub fn create(dir: &Path, seq: u64, size: usize) -> io::Result<Segment> {
        let path = dir.join(file_name(seq));
        let tmp = dir.join(format!("{}.tmp", file_name(seq)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if rc != 0 {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::from_raw_os_error(rc));
        }
        let map = MmapOptions::new().len(size).map_raw(&file)?;
        // Faulted in writable here, on the helper thread: otherwise every
        // page's first write is a fault on the shard (dirty tracking of a
        // shared mapping), 5 % of its time in the QoS 1 pairs bench.
        if map.advise(memmap2::Advice::PopulateWrite).is_err() {
            // Kernels before 5.14: read-faulting at least saves the zeroing.
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
        let seg = Segment {
            seq,
            path: path.clone(),
            map,
            _file: file,
        };
        let mut h = [0u8; HEADER_BYTES];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        h[24..32].copy_from_slice(&(size as u64).to_le_bytes());
        seg.write(0, &h);
        // The header must be on disk before the name says the file is a
        // segment: a crash between the two leaves only a `.tmp` file.
        seg.map.flush_range(0, HEADER_BYTES)?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(seg)
    }

    /// Maps an existing segment and checks its header.
    pub fn open(path: &Path, seq: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < HEADER_BYTES {
            return Err(bad(path, "shorter than a segment header"));
        }
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let seg = Segment {
            seq,
            path: path.to_path_buf(),
            map,
            _file: file,
        };
        let h = seg.bytes(0, HEADER_BYTES);
        if &h[..8] != MAGIC {
            return Err(bad(path, "not a ringmq segment (bad magic)"));
        }
        let format = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(bad(
                path,
                &format!("segment format {format}, this ringmq reads {FORMAT}"),
            ));
        }
        let hseq = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        if hseq != seq {
            return Err(bad(path, &format!("header says segment {hseq}")));
        }
        Ok(seg)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `len` bytes at `at`.
    pub fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.map.len(), "read past the segment");
        // SAFETY: in bounds (checked); the map lives as long as `self`.
        // Only the owning shard writes, and never to a range it has handed
        // out for reading.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), len) }
    }

    /// Writes `data` at `at`.
    pub fn write(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.map.len(), "write past the segment");
        // SAFETY: in bounds (checked); one writer (the owning shard), and the
        // range written is past everything read or being flushed.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(at), data.len())
        };
    }

    /// Writes one record at `at`: body and kind first, the length last, so
    /// a process killed mid-write leaves a zero length (the end), and a torn
    /// page after power loss fails the CRC.
    pub fn write_record(&self, at: usize, kind: u8, body: &[u8]) {
        let total = (RECORD_HEADER_BYTES + body.len()) as u32;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), body);
        self.write(at + RECORD_HEADER_BYTES, body);
        self.write(at + 8, &[kind]);
        self.write(at + 4, &crc.to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.write(at, &total.to_le_bytes());
    }

    /// Flushes `[from, to)` to disk (msync).
    pub fn flush(&self, from: usize, to: usize) -> io::Result<()> {
        if to > from {
            self.map.flush_range(from, to - from)?;
        }
        Ok(())
    }
}

/// What sits at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Slot<'a> {
    /// A valid record and the offset after it.
    Record {
        kind: u8,
        body: &'a [u8],
        next: usize,
    },
    /// Zeros: nothing was written here.
    End,
    /// Something that is not a valid record (torn or corrupt).
    Bad(&'static str),
}

/// Reads the record at `at`.
pub(crate) fn read_slot(seg: &Segment, at: usize) -> Slot<'_> {
    if at + RECORD_HEADER_BYTES > seg.len() {
        return Slot::End;
    }
    let h = seg.bytes(at, RECORD_HEADER_BYTES);
    let total = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
    if total == 0 {
        return if h.iter().all(|&b| b == 0) {
            Slot::End
        } else {
            Slot::Bad("zero length with data after it")
        };
    }
    if total < RECORD_HEADER_BYTES || at + total > seg.len() {
        return Slot::Bad("length out of range");
    }
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let kind = h[8];
    let body = seg.bytes(at + RECORD_HEADER_BYTES, total - RECORD_HEADER_BYTES);
    if crc32c::crc32c_append(crc32c::crc32c(&[kind]), body) != crc {
        return Slot::Bad("checksum mismatch");
    }
    Slot::Record {
        kind,
        body,
        next: at + total,
    }
}

fn bad(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// fsyncs a directory, so a created, renamed or removed name is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A range of a segment written since the last sync: what a group commit flushes.
#[derive(Debug, Clone)]
pub(crate) struct Dirty {
    pub seg: Arc<Segment>,
    pub from: usize,
    pub to: usize,
}
