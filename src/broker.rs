//! Bootstrap: the mesh channels, one executor thread per shard, port 0
//! resolution, signals and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::shard::mesh_types::MESH_CHANNEL_BATCHES;
use crate::shard::pipe::{pipe, PipeReceiver, PipeSender};
use crate::shard::{ShardStart, Shared};

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    metrics_addr: Option<SocketAddr>,
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    wss_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The locked data directory, released when the broker is gone.
    _data: Option<crate::storage::DataDir>,
}

impl BrokerHandle {
    /// The addresses the broker listens on (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Live client connections, whole broker. A connection counts from
    /// before its CONNACK until its close has been handled by its shard (the
    /// session is offline, the will armed), so an embedder or a test can wait
    /// on it instead of sleeping.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Starts a graceful shutdown: stop accepting, MQTT 5 clients get
    /// DISCONNECT 0x8B, every connection is closed.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
    }

    /// Reads the password file again (SIGHUP): connections stay, the next
    /// CONNECTs are checked against the new file. A file that cannot be read
    /// leaves the old one in place.
    ///
    /// # Errors
    /// Why the file could not be used; nothing changed then.
    pub fn reload_passwords(&self, path: &std::path::Path) -> Result<usize, String> {
        let file = read_passwords(path)?;
        let users = file.len();
        self.shared.passwords.store(Some(Arc::new(file)));
        self.shared.passwords_gen.fetch_add(1, Ordering::Release);
        Ok(users)
    }

    /// Reads the ACL file again (SIGHUP): connections stay, and within one
    /// tick (100 ms) every client, connected or not, is held to the new
    /// rules. A file that cannot be read leaves the old one in place.
    ///
    /// # Errors
    /// Why the file could not be used; nothing changed then.
    pub fn reload_acl(&self, path: &std::path::Path) -> Result<usize, String> {
        let file = read_acl(path)?;
        let rules = file.len();
        self.shared.acl.store(Some(Arc::new(file)));
        self.shared.acl_gen.fetch_add(1, Ordering::Release);
        Ok(rules)
    }

    /// Reads the TLS certificate and key again (SIGHUP): connections stay,
    /// new handshakes use the new ones. Files that cannot be used leave the
    /// old ones in place.
    ///
    /// # Errors
    /// Why the files could not be used; nothing changed then.
    pub fn reload_tls(&self, files: &crate::transport::tls::TlsFiles) -> Result<(), String> {
        let t = crate::transport::tls::TlsSettings::load(files)?;
        self.shared.tls.store(Some(Arc::new(t)));
        self.shared.tls_gen.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Where `/metrics` and `/health` are served (`--metrics-listen`, port 0
    /// resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The TLS listeners' addresses (port 0 resolved).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The WebSocket listeners' addresses (port 0 resolved).
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }

    /// The WebSocket-over-TLS listeners' addresses (port 0 resolved).
    pub fn wss_addrs(&self) -> &[SocketAddr] {
        &self.wss_addrs
    }

    /// Waits for every shard to stop.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn read_passwords(path: &std::path::Path) -> Result<crate::auth::PasswordFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
    crate::auth::PasswordFile::parse(&text)
        .map_err(|e| format!("--password-file {}: {e}", path.display()))
}

fn read_acl(path: &std::path::Path) -> Result<crate::auth::acl::AclFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --acl-file {}: {e}", path.display()))?;
    crate::auth::acl::AclFile::parse(&text)
        .map_err(|e| format!("--acl-file {}: {e}", path.display()))
}

/// Starts the broker's shards and returns once every listener is bound.
///
/// # Errors
/// A listener that cannot bind, or an executor that cannot start.
pub fn start(config: Config) -> io::Result<BrokerHandle> {
    let n = config.cores;
    let shared = Shared::new(n);
    if let Some(path) = &config.password_file {
        let file =
            read_passwords(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        tracing::info!(path = %path.display(), users = file.len(), "password file read");
        shared.passwords.store(Some(Arc::new(file)));
    }
    if let Some(files) = &config.tls {
        let t = crate::transport::tls::TlsSettings::load(files)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        shared.tls.store(Some(Arc::new(t)));
    }
    if let Some(path) = &config.acl_file {
        let file = read_acl(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        tracing::info!(path = %path.display(), rules = file.len(), "ACL file read");
        shared.acl.store(Some(Arc::new(file)));
    }
    if !config.anonymous_allowed() && config.password_file.is_none() {
        tracing::warn!(
            "anonymous clients are refused and there is no --password-file: nobody can connect"
        );
    }
    for addr in config.all_listeners() {
        port_free(addr)?;
    }
    // A plain bind (no SO_REUSEPORT: only shard 0 serves it) fails by
    // itself when the address is taken.
    let mut metrics = match config.metrics_listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
        })?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let shared = Arc::new(shared);
    let opened = crate::shard::persist::open(&config)?;
    let (mut data, mut storages, rehoming) = match opened {
        Some(o) => (
            Some(o.dir),
            o.shards.into_iter().map(Some).collect(),
            o.rehoming,
        ),
        None => (None, (0..n).map(|_| None).collect::<Vec<_>>(), false),
    };
    let mut senders: Vec<Vec<Option<PipeSender<_>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<Option<PipeReceiver<_>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = pipe(MESH_CHANNEL_BATCHES);
                senders[from][to] = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut config = config;
    if let Some(room) = fd_room_for_clients(n) {
        if room < config.max_connections {
            tracing::warn!(
                "the file descriptor limit (RLIMIT_NOFILE {}) leaves room for about {room} \
                 clients, below --max-connections {}: clients past {room} get CONNACK \
                 'server busy'; raise it (ulimit -n, systemd LimitNOFILE=) for more",
                nofile_limit().map_or(0, |l| l.0),
                config.max_connections
            );
            config.max_connections = room.max(1);
        } else {
            tracing::info!(
                "file descriptor limit leaves room for about {room} clients (--max-connections {})",
                config.max_connections
            );
        }
    }
    let mut threads = Vec::with_capacity(n);
    let mut addrs = Vec::new();
    let mut tls_addrs = Vec::new();
    let mut ws_addrs = Vec::new();
    let mut wss_addrs = Vec::new();
    let mut shards: Vec<_> = senders.into_iter().zip(receivers).enumerate().collect();
    // Shard 0 binds first, so that port 0 resolves once and the others
    // bind the same port (SO_REUSEPORT).
    for (id, (tx, rx)) in shards.drain(..) {
        let (bound_tx, bound_rx) = mpsc::channel();
        let start = ShardStart {
            id,
            nr_shards: n,
            config: Arc::new(config.clone()),
            shared: shared.clone(),
            senders: tx,
            receivers: rx,
            bound: bound_tx,
            storage: storages[id].take(),
            metrics: if id == 0 { metrics.take() } else { None },
        };
        let placement = if config.pin && n <= cpus {
            Placement::Fixed(id)
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .ring_depth(RING_DEPTH)
            .io_memory(IO_MEMORY)
            .name(&format!("ringmq-shard-{id}"))
            .spawn(move || crate::shard::run(start))
            .map_err(|e| io::Error::other(format!("cannot start shard {id}: {e}")))?;
        threads.push(handle);
        let got = bound_rx
            .recv()
            .map_err(|_| io::Error::other(format!("shard {id} died while binding")))??;
        if id == 0 {
            let (plain, rest) = got.split_at(config.listen.len());
            let (tls, rest) = rest.split_at(config.listen_tls.len());
            let (ws, wss) = rest.split_at(config.listen_ws.len());
            config.listen = plain.to_vec();
            config.listen_tls = tls.to_vec();
            config.listen_ws = ws.to_vec();
            config.listen_wss = wss.to_vec();
            addrs = plain.to_vec();
            tls_addrs = tls.to_vec();
            ws_addrs = ws.to_vec();
            wss_addrs = wss.to_vec();
        }
    }
    if let Some(d) = data.as_mut() {
        crate::shard::persist::Opened::finish(d, n, rehoming)?;
    }
    match &data {
        Some(d) => tracing::info!(
            shards = n,
            listen = ?addrs,
            listen_tls = ?tls_addrs,
            listen_ws = ?ws_addrs,
            listen_wss = ?wss_addrs,
            data_dir = %d.path().display(),
            sync = ?config.sync,
            "ringmq started"
        ),
        None => tracing::info!(
            shards = n,
            listen = ?addrs,
            listen_tls = ?tls_addrs,
            listen_ws = ?ws_addrs,
            listen_wss = ?wss_addrs,
            "ringmq started (in memory)"
        ),
    }
    Ok(BrokerHandle {
        metrics_addr,
        addrs,
        tls_addrs,
        ws_addrs,
        wss_addrs,
        shared,
        threads,
        _data: data,
    })
}

/// How long a port must stay taken before it counts as another
/// process's: a broker killed with SIGKILL leaves its listening socket
/// bound for a few milliseconds after it is gone (7 ms here), until the
/// kernel has torn its io_uring rings down, and a supervisor that restarts
/// at once must not be refused for that.
const PORT_GRACE: Duration = Duration::from_secs(1);

/// Refuses an address another socket listens on. Shards bind with
/// SO_REUSEPORT, which would let a second broker on the port start
/// silently and the kernel split clients between the two (7 of 10 messages
/// never reached their subscriber); a bind without it fails while any
/// socket listens there, ringmq's own included.
fn port_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + PORT_GRACE;
    let bound = loop {
        let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Connections of a stopped broker lingering in TIME_WAIT do not count.
        sk.set_reuse_address(true)?;
        match sk.bind(&addr.into()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other,
        }
    };
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("cannot listen on {addr}: another process (another ringmq?) listens there"),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        )),
    }
}

/// The soft and hard `RLIMIT_NOFILE`.
fn nofile_limit() -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0)
        .then_some((l.rlim_cur, l.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one, as a server that holds
/// a socket per client must; returns the new
/// soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let l = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            return Some(soft);
        }
    }
    nofile_limit().map(|l| l.0)
}

/// How many clients the soft `RLIMIT_NOFILE` has room for: one fd each,
/// after the shards' own (rings, eventfds, listeners)
/// and room to answer over-limit clients with a CONNACK. `None` if unknown.
fn fd_room_for_clients(shards: usize) -> Option<usize> {
    let (soft, _) = nofile_limit()?;
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let reserved = 64 + 16 * shards + 2 * crate::shard::OVER_LIMIT_ANSWERED;
    Some(soft.saturating_sub(reserved))
}

/// io_uring depth of each shard ring. Every idle connection keeps a poll
/// armed, and glommio cancels a timer on each park; the kernel looks the
/// cancelled request up in a hash table of `cq_entries / 32` buckets (at
/// most 256) that also holds those polls. At glommio's default of 128 (8
/// buckets) each park walked ~600 polls with 5,000 clients: 5,000 connects
/// cost 1.3 s of broker CPU; at 4096 (256 buckets) 0.5 s (perf/README.md).
pub const RING_DEPTH: usize = 4096;

/// glommio's buffer pool for DMA file I/O, which it registers with
/// io_uring (pinned, so resident from the start). ringmq does no DMA file
/// I/O (the log is written through memory maps), so it takes glommio's
/// minimum instead of its 10 MiB default: 10 MiB less RSS per shard.
pub const IO_MEMORY: usize = 64 << 10;

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully;
/// SIGHUP reads the password file again.
///
/// # Errors
/// As [`start`].
pub fn run(config: Config) -> io::Result<()> {
    // Block the signals in every thread (shards inherit the mask) and wait
    // for them here, on the main thread, which does nothing else.
    // SAFETY: plain signal-mask calls on a set built here.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    raise_fd_limit();
    let password_file = config.password_file.clone();
    let acl_file = config.acl_file.clone();
    let tls_files = config.tls.clone();
    let handle = start(config)?;
    for a in handle.local_addrs() {
        // One line per listener on stdout, for scripts that asked for port 0.
        println!("ringmq listening on {a}");
    }
    for a in handle.tls_addrs() {
        println!("ringmq listening on {a} (tls)");
    }
    for a in handle.ws_addrs() {
        println!("ringmq listening on {a} (ws)");
    }
    for a in handle.wss_addrs() {
        println!("ringmq listening on {a} (wss)");
    }
    if let Some(a) = handle.metrics_addr() {
        println!("ringmq metrics on http://{a}/metrics");
    }
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: waits on the blocked set; `sig` is a valid out pointer.
        unsafe { libc::sigwait(&set, &mut sig) };
        if sig != libc::SIGHUP {
            break;
        }
        match &password_file {
            Some(path) => match handle.reload_passwords(path) {
                Ok(users) => tracing::info!(users, "SIGHUP: password file read again"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the old password file"),
            },
            None => tracing::info!("SIGHUP: no password file to read again"),
        }
        if let Some(files) = &tls_files {
            match handle.reload_tls(files) {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate read again"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the old TLS certificate"),
            }
        }
        if let Some(path) = &acl_file {
            match handle.reload_acl(path) {
                Ok(rules) => tracing::info!(rules, "SIGHUP: ACL file read again"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the old ACL file"),
            }
        }
    }
    tracing::info!(signal = sig, "shutting down");
    handle.shutdown();
    handle.join();
    tracing::info!("stopped");
    Ok(())
}
