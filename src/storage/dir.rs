//! The data directory: an exclusive lock, and a small file saying how many
//! shards wrote it (the owner of a session depends on that count).
//!
//! ```text
//! data-dir/LOCK        flock'ed while a broker runs
//! data-dir/META        "ringmq-data 1\nshards N\n"
//! data-dir/shard-K/    one log per shard
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const META: &str = "META";
const META_FORMAT: u32 = 1;

/// An opened, locked data directory. The lock is held until it is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    /// Shards that wrote the logs found, if any were.
    pub previous_shards: Option<usize>,
}

impl DataDir {
    /// Creates `path` if needed and takes its lock.
    ///
    /// # Errors
    /// The directory cannot be created or written, another broker holds it,
    /// or its META file is not ringmq's.
    pub fn open(path: &Path) -> io::Result<DataDir> {
        std::fs::create_dir_all(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("data dir {}: cannot create it: {e}", path.display()),
            )
        })?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join("LOCK"))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("data dir {}: cannot write in it: {e}", path.display()),
                )
            })?;
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "data dir {} is in use by another ringmq ({e}); give each broker its own --data-dir",
                    path.display()
                ),
            ));
        }
        let previous_shards = read_meta(&path.join(META))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            previous_shards,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log directory of shard `k`.
    pub fn shard_dir(&self, k: usize) -> PathBuf {
        self.path.join(format!("shard-{k}"))
    }

    /// Records that `shards` shards own the logs from now on (written
    /// atomically: a new file renamed over the old one).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn set_shards(&mut self, shards: usize) -> io::Result<()> {
        let tmp = self.path.join("META.tmp");
        let mut f = File::create(&tmp)?;
        write!(f, "ringmq-data {META_FORMAT}\nshards {shards}\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path.join(META))?;
        super::segment::sync_dir(&self.path)?;
        self.previous_shards = Some(shards);
        Ok(())
    }
}

fn read_meta(path: &Path) -> io::Result<Option<usize>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut lines = text.lines();
    match lines.next().and_then(|l| l.strip_prefix("ringmq-data ")) {
        Some(v) if v.trim().parse() == Ok(META_FORMAT) => {}
        Some(v) => {
            return Err(bad(&format!(
                "data format {v}, this ringmq reads {META_FORMAT}"
            )))
        }
        None => return Err(bad("not a ringmq data directory")),
    }
    let shards = lines
        .find_map(|l| l.strip_prefix("shards "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| bad("no shard count"))?;
    Ok(Some(shards))
}
