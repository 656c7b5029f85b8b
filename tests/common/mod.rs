//! Test harness: an in-process broker on 127.0.0.1:0, a raw client that
//! speaks MQTT through ringmq's codec over a blocking socket (for
//! byte-exact conformance checks), and helpers for rumqttc clients.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringmq::broker::BrokerHandle;
use ringmq::config::Config;
use ringmq::protocol::{
    Codec, Connect, ConnectProperties, MqttStr, Packet, PacketId, ProtocolVersion, Publish, QoS,
    SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
};

/// Every wait in these tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A broker running in this process; shut down on drop.
pub struct Broker {
    pub handle: Option<BrokerHandle>,
    pub addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
            h.join();
        }
    }
}

impl Broker {
    /// Waits until the broker counts `n` live connections: a dropped
    /// client's close has then been handled by its shard.
    pub fn wait_connections(&self, n: usize) {
        let h = self.handle.as_ref().expect("running");
        let deadline = Instant::now() + TIMEOUT;
        while h.connections() != n {
            assert!(
                Instant::now() < deadline,
                "broker still has {} connections, want {n}",
                h.connections()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub fn config(cores: usize) -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        cores,
        sys_interval: None,
        ..Config::default()
    }
}

pub fn start(cores: usize) -> Broker {
    start_with(config(cores))
}

pub fn start_with(config: Config) -> Broker {
    let handle = ringmq::broker::start(config).expect("broker starts");
    let addr = handle.local_addrs()[0];
    Broker {
        handle: Some(handle),
        addr,
    }
}

pub fn s(v: &str) -> MqttStr {
    MqttStr::try_from(v).expect("valid string")
}

pub fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("non-zero")
}

/// A client that sends and receives packets exactly as written.
pub struct Raw {
    pub stream: TcpStream,
    codec: Codec,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    pub fn connect_tcp(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            codec: Codec::new(version, usize::MAX),
            buf: BytesMut::new(),
            version,
        }
    }

    /// Connects and completes CONNECT/CONNACK; returns (client, CONNACK).
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
    ) -> (Raw, ringmq::protocol::ConnAck) {
        Self::connect_with(addr, connect_packet(version, client_id, clean))
    }

    pub fn connect_with(addr: SocketAddr, c: Connect) -> (Raw, ringmq::protocol::ConnAck) {
        let mut raw = Raw::connect_tcp(addr, c.protocol);
        raw.send(&Packet::Connect(Box::new(c)));
        match raw.recv() {
            Packet::ConnAck(a) => (raw, *a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).expect("encodes");
        self.stream.write_all(&out).expect("write");
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write");
    }

    /// A packet already read, if a whole one is buffered.
    fn buffered(&mut self) -> Option<Packet> {
        self.codec
            .decode(&mut self.buf)
            .expect("broker sends valid packets")
    }

    /// The next packet, or None if the broker closed the connection.
    pub fn try_recv(&mut self) -> Option<Packet> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = self.buffered() {
                return Some(p);
            }
            assert!(Instant::now() < deadline, "timed out waiting for a packet");
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next packet, or None if the broker closed the connection or
    /// nothing arrived within `d` of quiet.
    pub fn recv_within(&mut self, d: Duration) -> Option<Packet> {
        loop {
            if let Some(p) = self.buffered() {
                return Some(p);
            }
            self.stream.set_read_timeout(Some(d)).expect("timeout");
            let mut tmp = [0u8; 65536];
            let r = self.stream.read(&mut tmp);
            self.stream
                .set_read_timeout(Some(TIMEOUT))
                .expect("timeout");
            match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    pub fn recv(&mut self) -> Packet {
        self.try_recv()
            .expect("connection closed while waiting for a packet")
    }

    /// Nothing arrives within `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
        let mut tmp = [0u8; 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!("connection closed"),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                let p = self.codec.decode(&mut self.buf);
                panic!("expected silence, got {p:?}");
            }
            Err(_) => {}
        }
        self.stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("timeout");
    }

    /// The broker closes the connection, maybe after sending packets, which are returned.
    pub fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.try_recv() {
            got.push(p);
            assert!(got.len() < 10_000, "never closed");
        }
        got
    }

    pub fn subscribe(&mut self, id: u16, filters: &[(&str, QoS)]) -> SubAck {
        self.send(&subscribe_packet(id, filters));
        loop {
            match self.recv() {
                // [v3:MQTT-2.3.1-7] [v5:MQTT-2.2.1-6] SUBACK carries the
                // SUBSCRIBE's packet identifier.
                Packet::SubAck(a) => {
                    assert_eq!(a.packet_id, pid(id), "SUBACK packet id");
                    return a;
                }
                Packet::Publish(_) => continue,
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, id: u16, retain: bool) {
        let mut p = Publish::new(s(topic), Bytes::copy_from_slice(payload));
        p.qos = qos;
        p.retain = retain;
        if qos != QoS::AtMostOnce {
            p.packet_id = Some(pid(id));
        }
        self.send(&Packet::Publish(p));
    }

    /// Receives the next PUBLISH, skipping nothing else.
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// A SUBSCRIBE of `filters`, each with its QoS and default options.
pub fn subscribe_packet(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Default::default(),
        filters: filters
            .iter()
            .map(|(f, q)| SubscribeFilter {
                filter: s(f),
                options: SubscriptionOptions {
                    qos: *q,
                    ..Default::default()
                },
            })
            .collect(),
    })
}

pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A client id whose session lives on `shard` of `n`.
pub fn id_on_shard(prefix: &str, shard: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| ringmq::shard::owner_of(id, n) == shard)
        .expect("some id hashes there")
}

/// A tokio runtime for rumqttc clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The real `ringmq` binary on 127.0.0.1:0, killed on drop; its stderr
/// (the log) is kept for assertions.
pub struct BinBroker {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ringmq-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl BinBroker {
    /// Starts the binary with `args` (after `--listen 127.0.0.1:0`).
    pub fn spawn(args: &[&str]) -> BinBroker {
        Self::spawn_with(
            std::process::Command::new(env!("CARGO_BIN_EXE_ringmq")),
            args,
        )
    }

    /// Starts `cmd` (the binary, maybe behind a wrapper) with `args`.
    pub fn spawn_with(cmd: std::process::Command, args: &[&str]) -> BinBroker {
        let dir = TempDir::new("bin");
        let mut b = Self::spawn_cmd(cmd, args, &dir.0);
        b._dir = Some(dir);
        b
    }

    /// Starts the binary on data directory `dir` (kept: for restarts).
    pub fn spawn_in(dir: &std::path::Path, args: &[&str]) -> BinBroker {
        Self::spawn_cmd(
            std::process::Command::new(env!("CARGO_BIN_EXE_ringmq")),
            args,
            dir,
        )
    }

    fn spawn_cmd(
        mut cmd: std::process::Command,
        args: &[&str],
        dir: &std::path::Path,
    ) -> BinBroker {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(out).lines();
        let line = match lines.next() {
            Some(Ok(l)) => l,
            other => panic!(
                "no listening line ({other:?}); log: {:?}",
                log.lock().expect("log")
            ),
        };
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        BinBroker {
            child,
            addr,
            log,
            _dir: None,
        }
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `RssAnon`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in status"))
    }

    /// Waits (bounded) until a log line contains `needle`: stderr arrives
    /// through a pipe and a thread, after the line that says the broker
    /// listens.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Sends `sig` to the broker.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded by `within`) for the process to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the broker said: a timeout alone says
        // nothing of which side lost what.
        if std::thread::panicking() {
            let log = self.log();
            eprintln!(
                "--- broker {} (pid {}), last {} of {} log lines:",
                self.addr,
                self.child.id(),
                log.len().min(60),
                log.len()
            );
            for l in &log[log.len().saturating_sub(60)..] {
                eprintln!("  {l}");
            }
        }
    }
}

/// Fails with a hint unless `tool` is on PATH (tools/test.sh installs the
/// interop tools: mosquitto clients, openssl, paho in a venv).
pub fn need(tool: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is not installed: run tools/test.sh, which installs it"
    );
}

/// The README's three openssl commands, run in `dir`: a CA (`ca.pem`), a
/// server key and request, and the server certificate (`server.pem`,
/// `server.key`) signed by the CA for localhost and 127.0.0.1.
pub fn openssl_certificates(dir: &std::path::Path) {
    need("openssl");
    std::fs::create_dir_all(dir).expect("dir");
    for cmd in [
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=ringmq-ca -keyout ca.key -out ca.pem",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out server.pem",
    ] {
        let out = std::process::Command::new("bash")
            .args(["-c", cmd])
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// [`openssl_certificates`] in `dir`, as the TLS settings of a listener.
pub fn openssl_tls(dir: &std::path::Path) -> ringmq::transport::tls::TlsFiles {
    openssl_certificates(dir);
    ringmq::transport::tls::TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca: None,
        require_certificate: false,
        use_identity_as_username: false,
    }
}

/// Runs a Python script (paho-mqtt, from tools/test.sh's venv) with `args`
/// and returns what it printed; fails with its stderr if it failed.
pub fn python(script: &str, args: &[&str]) -> String {
    need("python3");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "paho script failed (run tools/test.sh to install paho-mqtt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Says why a test (or part of one) did not run: on stderr, and in
/// `target/tmp/skipped.txt`, which tools/test.sh prints at the end (cargo
/// hides a passing test's output).
pub fn skipped(why: &str) {
    use std::io::Write as _;
    eprintln!("SKIPPED: {why}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{why}");
    }
}

/// A broker serving `/metrics` too, and that address.
#[allow(dead_code)]
pub fn start_with_metrics(mut cfg: Config) -> (Broker, SocketAddr) {
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let b = start_with(cfg);
    let m = b
        .handle
        .as_ref()
        .and_then(|h| h.metrics_addr())
        .expect("metrics addr");
    (b, m)
}

/// The sum over shards of `name` (a sample without labels other than
/// `shard`) from a broker's `/metrics`, read with a bare HTTP GET.
#[allow(dead_code)]
pub fn metric_sum(metrics: SocketAddr, name: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(metrics).expect("metrics connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `name` sums to at least `n` (bounded), and returns it.
#[allow(dead_code)]
pub fn wait_metric(metrics: SocketAddr, name: &str, n: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = metric_sum(metrics, name);
        if got >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{name} is {got}, want {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
