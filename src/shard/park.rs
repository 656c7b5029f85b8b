//! Where a quiet connection waits without a task: its socket in one epoll
//! set per shard, watched by one small thread, instead of a reader task
//! with a glommio stream and a readiness poll each.
//!
//! An idle client cost about 2 KB of live memory, half of it its reader:
//! the task (432 B), glommio's poll source (496 B) and stream (144 B). A
//! reader that read nothing through a whole sweep ([`super::conn::WRITER_SWEEP`],
//! its writer already retired) hands its socket and transport state here
//! (the same [`Handoff`] that moves a connection between shards) and ends.
//! The connection itself stays with its shard, online, as before.
//!
//! It comes back as a new reader task when its socket turns readable (the
//! thread saw it) or when the shard wakes it (a message for it, a close, a
//! takeover): both push its id to the shard's inbox and wake the shard's
//! unpark task. The thread only moves ids; the shard's state is touched by
//! the shard alone.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;

use super::Conn;
use crate::transport::{Handoff, Link};

/// The epoll data that stands for the stop eventfd (connection ids start at 1).
const STOP: u64 = u64::MAX;

/// Ids of parked connections due back, pushed by the watcher thread and by
/// wakes; the shard's unpark task drains it.
#[derive(Default)]
pub struct Inbox {
    ready: SegQueue<u64>,
    waker: AtomicWaker,
    stopped: AtomicBool,
}

impl Inbox {
    fn push(&self, id: u64) {
        self.ready.push(id);
        self.waker.wake();
    }

    /// Registers the unpark task and takes the ids due; `None` once the
    /// shard stopped parking.
    pub fn take(&self, waker: &Waker, into: &mut Vec<u64>) -> Option<()> {
        self.waker.register(waker);
        while let Some(id) = self.ready.pop() {
            into.push(id);
        }
        if into.is_empty() && self.stopped.load(Ordering::Acquire) {
            return None;
        }
        Some(())
    }
}

/// What a parked connection's reader waker does: asks for it back, once
/// (a burst of deliveries wakes it for each).
struct Unpark {
    id: u64,
    inbox: Arc<Inbox>,
    asked: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.asked.swap(true, Ordering::Relaxed) {
            self.inbox.push(self.id);
        }
    }
}

/// One shard's epoll set of parked connections (each keeps its own socket,
/// see [`Conn::park_socket`]) and the thread that watches it.
pub struct Parking {
    epoll: Arc<OwnedFd>,
    stop: OwnedFd,
    inbox: Arc<Inbox>,
}

impl Parking {
    /// An empty set and its watcher thread.
    ///
    /// # Errors
    /// No epoll or eventfd (out of fds), or no thread.
    pub fn start(shard: usize) -> io::Result<Parking> {
        // SAFETY: plain syscalls; each fd is owned as soon as it exists.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        let stop = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            stop.as_raw_fd(),
            STOP,
            libc::EPOLLIN,
        )?;
        let epoll = Arc::new(epoll);
        let inbox = Arc::new(Inbox::default());
        let (ep, ib) = (epoll.clone(), inbox.clone());
        std::thread::Builder::new()
            .name(format!("ringmq-park-{shard}"))
            .spawn(move || watch(&ep, &ib))?;
        Ok(Parking { epoll, stop, inbox })
    }

    /// The inbox the shard's unpark task drains.
    pub fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Parks `conn` with its link's socket and transport state. Data that
    /// came before the socket joined the set still counts: epoll reports
    /// what is readable when it is added.
    ///
    /// # Errors
    /// The link is still shared (a task holds it) or epoll refused the
    /// socket: the link comes back, for a reader to serve it again.
    pub fn park(&mut self, conn: &Conn, link: Link) -> Result<(), Link> {
        let h = link.try_handoff().map_err(|(link, e)| {
            tracing::debug!(conn = conn.id, error = %e, "cannot park");
            link
        })?;
        let fd = h.fd.as_raw_fd();
        let events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        if let Err(e) = ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            conn.id,
            events,
        ) {
            tracing::debug!(conn = conn.id, error = %e, "cannot park");
            return Err(serve(conn, h));
        }
        conn.set_fd(fd);
        let waker = Waker::from(Arc::new(Unpark {
            id: conn.id,
            inbox: self.inbox.clone(),
            asked: AtomicBool::new(false),
        }));
        conn.set_reader_waker(Some(&waker));
        conn.park_socket(h);
        Ok(())
    }

    /// Takes `conn`'s socket out of the set and gives it back as a link, if
    /// it is still parked (an id may come twice: readable and woken).
    pub fn unpark(&mut self, conn: &Conn) -> Option<Link> {
        let h = conn.unpark_socket()?;
        let _ = ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            h.fd.as_raw_fd(),
            0,
            0,
        );
        conn.set_reader_waker(None);
        Some(serve(conn, h))
    }
}

/// The link a reader serves `conn` with again.
fn serve(conn: &Conn, h: Handoff) -> Link {
    let link = Link::adopt(h);
    conn.set_fd(link.fd());
    link
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").finish_non_exhaustive()
    }
}

impl Drop for Parking {
    fn drop(&mut self) {
        self.inbox.stopped.store(true, Ordering::Release);
        self.inbox.waker.wake();
        let one = 1u64;
        // SAFETY: an 8-byte write to the eventfd this set owns: the thread
        // sees it and ends (it holds its own reference to the epoll fd).
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// # Safety
/// `fd` is a fresh fd from the syscall just made, or negative.
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, data: u64, events: libc::c_int) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: data,
    };
    // SAFETY: epoll_ctl on fds this set owns, with a live event.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The watcher thread: passes on the ids of parked sockets that turned
/// readable (or closed) until the stop eventfd fires.
fn watch(epoll: &OwnedFd, inbox: &Inbox) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: epoll_wait into a live buffer of its stated length.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                -1,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "epoll_wait of parked connections failed");
            return;
        }
        let mut any = false;
        for e in &events[..n as usize] {
            let id = e.u64;
            if id == STOP {
                return;
            }
            inbox.ready.push(id);
            any = true;
        }
        if any {
            inbox.waker.wake();
        }
    }
}
