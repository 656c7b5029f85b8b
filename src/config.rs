//! Broker configuration: plain data with documented defaults and one
//! `validate` that refuses nonsense before any thread starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_PACKET_BYTES;

/// Default listener address: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";
/// Default `--max-connect-size`: a CONNECT with a will of a few KB and
/// credentials fits many times over.
pub const DEFAULT_MAX_CONNECT_BYTES: usize = 64 * 1024;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./ringmq-data";

/// Default `--segment-size`.
pub const DEFAULT_SEGMENT_BYTES: usize = 64 << 20;

/// When the log's writes reach the disk. Every mode writes a message to the
/// log (the page cache, through the map) before its PUBACK/PUBREC, so every
/// mode survives a crash of the broker process (`kill -9`); they differ on
/// power loss or a kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Never msync (the kernel writes back on its own, within ~30 s):
    /// power loss may lose what the kernel had not written yet.
    None,
    /// Group commit: one msync per shard covers every message logged since
    /// the last, and their acknowledgements wait for it. Nothing
    /// acknowledged is lost on power loss.
    Always,
    /// msync every interval, acknowledgements not waiting: power loss
    /// loses at most the last interval.
    Interval(Duration),
}

impl Default for SyncMode {
    fn default() -> Self {
        SyncMode::Interval(Duration::from_secs(1))
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SyncMode, String> {
        match s {
            "none" => Ok(SyncMode::None),
            "always" => Ok(SyncMode::Always),
            _ => match s.strip_prefix("interval=") {
                Some(d) => match parse_duration(d)? {
                    d if d.is_zero() => Err("a sync interval must be greater than 0".into()),
                    d => Ok(SyncMode::Interval(d)),
                },
                None => Err(format!(
                    "'{s}' is not a sync mode: none, always or interval=DURATION (e.g. interval=1s)"
                )),
            },
        }
    }
}

/// Everything the broker needs to start. Immutable once the shards run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (every shard accepts on each, SO_REUSEPORT).
    pub listen: Vec<SocketAddr>,
    /// Addresses to listen on with TLS (`--listen-tls`), with `tls`.
    pub listen_tls: Vec<SocketAddr>,
    /// Addresses to listen on for MQTT over WebSocket (`--listen-ws`).
    pub listen_ws: Vec<SocketAddr>,
    /// Addresses for MQTT over WebSocket over TLS (`--listen-wss`), with `tls`.
    pub listen_wss: Vec<SocketAddr>,
    /// The TLS listeners' certificate, key and client CA.
    pub tls: Option<crate::transport::tls::TlsFiles>,
    /// Number of shards (one executor thread each).
    pub cores: usize,
    /// Where the per-shard logs live; `None` keeps everything in memory
    /// (nothing survives a restart). The binary defaults to
    /// [`DEFAULT_DATA_DIR`]; an embedded broker to memory.
    pub data_dir: Option<PathBuf>,
    /// When a logged write is made durable (see [`SyncMode`]).
    pub sync: SyncMode,
    /// Bytes per log segment file.
    pub segment_size: usize,
    /// What recovery does with a corrupt record before the log's tail.
    pub recovery: crate::storage::RecoveryMode,
    /// Connections accepted at once, whole broker; more are refused.
    pub max_connections: usize,
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_bytes: usize,
    /// Outbound QoS 1/2 window per session (the client's Receive Maximum wins if smaller).
    pub max_inflight: u16,
    /// Topic aliases a client may set up towards the broker (MQTT 5 Topic
    /// Alias Maximum in CONNACK); 0 refuses them.
    pub max_topic_alias: u16,
    /// Inbound QoS 1/2 PUBLISHes a client may have unanswered (the Receive
    /// Maximum in CONNACK); also bounds a session's QoS 2 ids awaiting PUBREL.
    pub max_inflight_in: u16,
    /// 3.1/3.1.1 only: resend an unanswered QoS 1/2 message on a live
    /// connection after this long (`None`: only on reconnect).
    pub resend_interval: Option<Duration>,
    /// Resends on a live connection before the message is dropped.
    pub max_resends: u16,
    /// A QoS 1/2 message unresolved this long for a session, queued or in
    /// flight, is dropped (`None`: kept until acknowledged or expired).
    pub inflight_ttl: Option<Duration>,
    /// Messages queued per session beyond the inflight window.
    pub max_queued_messages: usize,
    /// Bytes queued per session beyond the inflight window (see `Delivery::held_bytes`).
    pub max_queued_bytes: usize,
    /// Largest keep-alive accepted; MQTT 5 clients asking for more are told this value.
    pub max_keepalive: u16,
    /// How long a 3.1.1 clean-session-0 session outlives its connection (`None`: forever).
    pub v3_session_expiry: Option<Duration>,
    /// `$SYS` publication period (`None`: off).
    pub sys_interval: Option<Duration>,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Largest CONNECT accepted: what a socket may buffer before it is a
    /// client, so a thousand half-sent CONNECTs cannot hold gigabytes.
    pub max_connect_bytes: usize,
    /// How long a graceful shutdown may take before the rest is cut off.
    pub shutdown_timeout: Duration,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0: bool,
    /// Mosquitto-format password file (`--password-file`).
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file (`--acl-file`): without one, every client
    /// may publish and subscribe anywhere but `$SYS`.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without a (verified) user name may connect; `None`:
    /// only while every listener is loopback, as Mosquitto 2.0 does.
    pub allow_anonymous: Option<bool>,
    /// Pin each shard to a core (when there are no more shards than cores).
    /// Off by default: on a machine shared with a load generator or any busy
    /// process, a pinned shard cannot leave a busy core (perf/README.md).
    pub pin: bool,
    /// Where to serve Prometheus `/metrics` and `/health` (`--metrics-listen`),
    /// from shard 0; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// Every listen address, of every transport.
    pub fn all_listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listen
            .iter()
            .chain(&self.listen_tls)
            .chain(&self.listen_ws)
            .chain(&self.listen_wss)
            .copied()
    }

    /// Whether anonymous clients are let in: `--allow-anonymous`, else only
    /// while every listener is loopback.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or_else(|| {
            self.listen
                .iter()
                .chain(&self.listen_tls)
                .all(|a| a.ip().is_loopback())
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN
                .parse()
                .expect("invariant: valid default address")],
            listen_tls: Vec::new(),
            listen_ws: Vec::new(),
            listen_wss: Vec::new(),
            tls: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            data_dir: None,
            sync: SyncMode::default(),
            segment_size: DEFAULT_SEGMENT_BYTES,
            recovery: crate::storage::RecoveryMode::Strict,
            max_connections: 100_000,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_inflight: 64,
            max_inflight_in: 1024,
            max_topic_alias: 64,
            resend_interval: None,
            max_resends: 10,
            inflight_ttl: None,
            max_queued_messages: 100_000,
            max_queued_bytes: 100 << 20,
            max_keepalive: u16::MAX,
            v3_session_expiry: None,
            sys_interval: Some(Duration::from_secs(10)),
            connect_timeout: Duration::from_secs(10),
            max_connect_bytes: DEFAULT_MAX_CONNECT_BYTES,
            shutdown_timeout: Duration::from_secs(5),
            queue_qos0: false,
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            pin: false,
            metrics_listen: None,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No listener.
    #[error("at least one --listen address is needed")]
    NoListener,
    /// Zero shards, or more than the mesh supports.
    #[error("--cores must be between 1 and {max}, not {cores}")]
    Cores {
        /// Asked for.
        cores: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A limit that must be positive is zero.
    #[error("--{flag} must be greater than 0")]
    Zero {
        /// The flag's name.
        flag: &'static str,
    },
    /// Max packet size outside what MQTT can express or too small for CONNECT.
    #[error("--max-packet-size must be between 64 and 268435460 bytes, not {0}")]
    PacketSize(usize),
    /// The same address given twice.
    #[error("{0} is given twice as a listen address")]
    DuplicateListen(SocketAddr),
    /// `--listen-tls` without a certificate and key.
    #[error("--listen-tls and --listen-wss need --cert and --key")]
    TlsWithoutCert,
    /// A segment size out of range.
    #[error("--segment-size must be between 1 MiB and 1 GiB, not {0}")]
    SegmentSize(usize),
}

/// Smallest `--segment-size`.
pub const MIN_SEGMENT_BYTES: usize = 1 << 20;
/// Largest `--segment-size`.
pub const MAX_SEGMENT_BYTES: usize = 1 << 30;

/// Most shards the broker runs (the mesh is a full graph of channels).
pub const MAX_CORES: usize = 256;

impl Config {
    /// Checks every field.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty()
            && self.listen_tls.is_empty()
            && self.listen_ws.is_empty()
            && self.listen_wss.is_empty()
        {
            return Err(ConfigError::NoListener);
        }
        let mut seen = std::collections::HashSet::new();
        for a in self.all_listeners().chain(self.metrics_listen) {
            if a.port() != 0 && !seen.insert(a) {
                return Err(ConfigError::DuplicateListen(a));
            }
        }
        if (!self.listen_tls.is_empty() || !self.listen_wss.is_empty()) && self.tls.is_none() {
            return Err(ConfigError::TlsWithoutCert);
        }
        if self.cores == 0 || self.cores > MAX_CORES {
            return Err(ConfigError::Cores {
                cores: self.cores,
                max: MAX_CORES,
            });
        }
        for (flag, v) in [
            ("max-connections", self.max_connections),
            ("max-inflight", usize::from(self.max_inflight)),
            ("max-inflight-in", usize::from(self.max_inflight_in)),
            ("max-queued-messages", self.max_queued_messages),
            ("max-queued-bytes", self.max_queued_bytes),
            ("max-keepalive", usize::from(self.max_keepalive)),
            ("max-connect-size", self.max_connect_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Zero {
                flag: "connect-timeout",
            });
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::Zero {
                flag: "shutdown-timeout",
            });
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_size) {
            return Err(ConfigError::SegmentSize(self.segment_size));
        }
        if !(64..=268_435_460).contains(&self.max_packet_bytes) {
            return Err(ConfigError::PacketSize(self.max_packet_bytes));
        }
        Ok(())
    }
}

/// Parses a duration: `250ms`, `10s`, `5m`, `2h`, `1d`, or bare seconds.
///
/// # Errors
/// A message naming what could not be read.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 10s, 5m, 2h, 1d)"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{s}' is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(format!(
            "'{s}': unknown unit '{unit}' (use ms, s, m, h or d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().listen[0].to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn nonsense_is_refused() {
        let c = Config {
            cores: 0,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Cores { .. })));
        let c = Config {
            max_inflight: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                flag: "max-inflight"
            })
        );
        let c = Config {
            max_packet_bytes: 10,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::PacketSize(10)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }
}
