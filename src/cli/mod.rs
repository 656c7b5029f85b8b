//! Command-line flags (the only module that knows clap) turned into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

pub mod file;

use crate::config::{parse_duration, Config, ConfigError, DEFAULT_DATA_DIR, DEFAULT_LISTEN};

/// A duration, or none ("never", "off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeDuration(pub Option<Duration>);

fn duration_or_never(s: &str) -> Result<MaybeDuration, String> {
    match s {
        "never" | "off" => Ok(MaybeDuration(None)),
        _ => parse_duration(s).map(|d| MaybeDuration(Some(d))),
    }
}

/// A `--log-level`: a level word, or directives (which name a target with
/// `=`). A lone unknown word would be read as a target name and silence
/// every log line, so it is refused.
fn log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let ok = s.split(',').all(|d| {
        let d = d.trim();
        d.contains('=') || LEVELS.contains(&d.to_ascii_lowercase().as_str())
    });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a level (off, error, warn, info, debug, trace) or a directive (target=level)"
        ))
    }
}

/// A listen address as people type it: `127.0.0.1:1883`, `[::]:1883`,
/// `localhost:1883` (resolved, IPv4 first), or a bare `1883` for every
/// IPv4 interface on that port.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("'{s}' is not an address to listen on (HOST:PORT or PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

fn recovery_mode(s: &str) -> Result<crate::storage::RecoveryMode, String> {
    match s {
        "strict" => Ok(crate::storage::RecoveryMode::Strict),
        "truncate" => Ok(crate::storage::RecoveryMode::Truncate),
        _ => Err(format!("'{s}' is not a recovery mode: strict or truncate")),
    }
}

/// The version `--version` prints: the crate's and the git commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGMQ_COMMIT"),
    ")"
);

/// ringmq: a thread-per-core MQTT 3.1/3.1.1/5.0 broker on io_uring.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, long_about = None)]
pub struct Cli {
    /// TOML file of settings, one key per flag (`max-connections = 1000`,
    /// `listen = ["0.0.0.0:1883"]`); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (defaults, file and flags) as a
    /// file --config reads, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Address to listen on; repeat for several. Use 0.0.0.0:1883 for every
    /// interface (then anonymous clients are refused unless --allow-anonymous).
    #[arg(long = "listen", value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = listen_addr)]
    pub listen: Vec<SocketAddr>,

    /// Address to listen on with TLS (8883 is MQTT's); repeat for several.
    /// Needs --cert and --key.
    #[arg(long = "listen-tls", value_name = "ADDR", value_parser = listen_addr)]
    pub listen_tls: Vec<SocketAddr>,

    /// Address to listen on for MQTT over WebSocket (any path; subprotocol
    /// mqtt); repeat for several.
    #[arg(long = "listen-ws", value_name = "ADDR", value_parser = listen_addr)]
    pub listen_ws: Vec<SocketAddr>,

    /// Address to listen on for MQTT over WebSocket over TLS (--cert, --key).
    #[arg(long = "listen-wss", value_name = "ADDR", value_parser = listen_addr)]
    pub listen_wss: Vec<SocketAddr>,

    /// PEM certificate chain for the TLS listeners, the server's own first.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,

    /// PEM private key of --cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,

    /// PEM CA certificates that sign client certificates: a client that
    /// presents one must have it signed by these.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// Refuse TLS clients that present no certificate signed by --ca.
    #[arg(long)]
    pub require_certificate: bool,

    /// With --require-certificate: the client certificate's subject CN is
    /// the client's user name (for the ACL), and no password is asked for.
    #[arg(long)]
    pub use_identity_as_username: bool,

    /// Shards (executor threads). Default: every core this process may use.
    /// More shards than cores is allowed (`--pin` then does not apply).
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,

    /// Directory for the per-shard logs: sessions, subscriptions, queued
    /// QoS 1/2 messages and retained messages survive a restart there.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Keep everything in memory, write nothing (a restart loses every
    /// session, queue and retained message).
    #[arg(long, conflicts_with = "data_dir")]
    pub in_memory: bool,

    /// When logged messages reach the disk. Every mode logs a message before
    /// its PUBACK/PUBREC, so all survive `kill -9`. none: never msync (power
    /// loss may lose ~30 s); always: acks wait for a group msync (power loss
    /// loses nothing acknowledged); interval=D: msync every D, acks do not
    /// wait (power loss loses at most D).
    #[arg(long, value_name = "MODE", default_value = "interval=1s")]
    pub sync: crate::config::SyncMode,

    /// Bytes per log segment file (preallocated).
    #[arg(long, value_name = "BYTES", default_value_t = crate::config::DEFAULT_SEGMENT_BYTES)]
    pub segment_size: usize,

    /// A corrupt record before the log's tail: strict refuses to start
    /// (naming segment and offset); truncate drops the rest of that segment
    /// and starts. A torn tail is always cut off.
    #[arg(long, value_name = "MODE", default_value = "strict", value_parser = recovery_mode)]
    pub recovery: crate::storage::RecoveryMode,

    /// Connections accepted at once, whole broker.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Largest packet accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::protocol::DEFAULT_MAX_PACKET_BYTES)]
    pub max_packet_size: usize,

    /// Outbound QoS 1/2 messages in flight per session (a smaller client Receive Maximum wins).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_inflight: u16,

    /// Topic aliases an MQTT 5 client may set up towards the broker (the Topic
    /// Alias Maximum in CONNACK; each holds a topic name); 0 refuses them.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_topic_alias: u16,

    /// Inbound QoS 1/2 messages a client may have unacknowledged (the Receive
    /// Maximum in CONNACK; a v5 client past it is disconnected with 0x93).
    /// Also bounds each session's QoS 2 messages awaiting PUBREL.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_inflight_in: u16,

    /// Messages queued per session behind the inflight window; past it the oldest
    /// QoS 0 message, then the oldest message, is dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_queued_messages: usize,

    /// Bytes queued per session behind the inflight window (payload, topic,
    /// properties and about 200 bytes of bookkeeping per message).
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    pub max_queued_bytes: usize,

    /// Largest keep-alive in seconds; MQTT 5 clients asking for more are told this value.
    #[arg(long, value_name = "SECS", default_value_t = u16::MAX)]
    pub max_keepalive: u16,

    /// How long a 3.1.1 clean-session-0 session outlives its connection
    /// (e.g. 1h, 7d; "never" keeps it forever, as the spec says).
    #[arg(long, value_name = "DURATION", default_value = "never", value_parser = duration_or_never)]
    pub v3_session_expiry: MaybeDuration,

    /// 3.1 and 3.1.1 connections only: resend an unacknowledged QoS 1/2
    /// message with DUP after this long on the same connection ("off": only
    /// on reconnect, as MQTT 5 requires of its clients).
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = duration_or_never)]
    pub resend_interval: MaybeDuration,

    /// A QoS 1/2 message unresolved this long for a session, queued or in
    /// flight, is dropped and counted ("off": kept until acknowledged, or
    /// until its Message Expiry Interval, which wins where shorter).
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = duration_or_never)]
    pub inflight_ttl: MaybeDuration,

    /// Resends on a live connection before a message is dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_resends: u16,

    /// Period of $SYS publication ("off" to disable).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_or_never)]
    pub sys_interval: MaybeDuration,

    /// How long a new connection may take to send CONNECT.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Largest CONNECT accepted, in bytes: what a socket may buffer before it
    /// has connected (larger ones are refused: v5 CONNACK 0x95).
    #[arg(long, value_name = "BYTES", default_value_t = crate::config::DEFAULT_MAX_CONNECT_BYTES)]
    pub max_connect_size: usize,

    /// How long SIGINT/SIGTERM waits for clients to take their DISCONNECT
    /// and queued bytes before closing the rest.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Queue QoS 0 messages for offline persistent sessions too.
    #[arg(long)]
    pub queue_qos0: bool,

    /// Mosquitto-format password file (lines `user:$7$...` or `user:$6$...`,
    /// as `mosquitto_passwd` writes them): clients with a user name must
    /// give its password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,

    /// Mosquitto-format ACL file (`topic`, `user` and `pattern` lines with
    /// `read|write|readwrite|deny`, `%c` and `%u`): what a client may
    /// publish, subscribe to and receive. A topic no rule grants is denied.
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<std::path::PathBuf>,

    /// Let in clients without a user name (or, with no password file, any
    /// client). Default: only while every --listen address is loopback, as
    /// Mosquitto 2.0 does.
    #[arg(long, value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,

    /// Pin each shard to its own core. Off by default: beside any other busy
    /// process (a load generator, a neighbour) a pinned shard cannot leave a
    /// busy core, and its p99 suffers; pin on a machine the broker has alone.
    #[arg(long)]
    pub pin: bool,

    /// Serve Prometheus metrics (GET /metrics) and a health check (GET
    /// /health) over HTTP on this address, e.g. 127.0.0.1:9183. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// Log filter: off, error, warn, info, debug, trace, or tracing
    /// directives such as `ringmq=debug,info`.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = log_level)]
    pub log_level: String,
}

/// Why the command line (or its `--config` file) cannot run.
#[derive(Debug)]
pub enum CliError {
    /// clap's own (also `--help` and `--version`, which exit 0).
    Flags(clap::Error),
    /// The config file: unreadable, or `NAME:LINE: why`.
    File(String),
}

/// Flags and the config file, parsed: the [`Cli`] and what `--print-config`
/// renders.
#[derive(Debug)]
pub struct Loaded {
    /// The flags, file and command line merged.
    pub cli: Cli,
    matches: clap::ArgMatches,
}

impl Loaded {
    /// The effective configuration as a TOML file.
    #[must_use]
    pub fn render(&self) -> String {
        file::render(&Cli::command(), &self.matches)
    }
}

impl Cli {
    /// Parses `args` (with the program name first), reading `--config`'s
    /// file into flags that the command line's own override.
    ///
    /// # Errors
    /// [`CliError`].
    pub fn load(args: &[String]) -> Result<Loaded, CliError> {
        let cmd = Cli::command();
        let first = cmd
            .clone()
            .try_get_matches_from(args)
            .map_err(CliError::Flags)?;
        let mut all = args.to_vec();
        if let Some(path) = first.get_one::<PathBuf>("config") {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::File(format!("--config {name}: {e}")))?;
            let given = args.get(1..).unwrap_or_default();
            let from_file =
                file::args_from_toml(&name, &text, &cmd, given).map_err(CliError::File)?;
            all = args[..1.min(args.len())]
                .iter()
                .cloned()
                .chain(from_file)
                .chain(given.iter().cloned())
                .collect();
        }
        let matches = cmd.try_get_matches_from(&all).map_err(CliError::Flags)?;
        let cli = Cli::from_arg_matches(&matches).map_err(CliError::Flags)?;
        Ok(Loaded { cli, matches })
    }

    /// The validated configuration these flags describe.
    ///
    /// # Errors
    /// [`ConfigError`] for values that cannot run.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let config = Config {
            listen: self.listen,
            listen_tls: self.listen_tls,
            listen_ws: self.listen_ws,
            listen_wss: self.listen_wss,
            tls: match (self.cert, self.key) {
                (Some(cert), Some(key)) => Some(crate::transport::tls::TlsFiles {
                    cert,
                    key,
                    ca: self.ca,
                    require_certificate: self.require_certificate,
                    use_identity_as_username: self.use_identity_as_username,
                }),
                _ => None,
            },
            cores: self.cores.unwrap_or(defaults.cores),
            data_dir: (!self.in_memory).then_some(self.data_dir),
            sync: self.sync,
            segment_size: self.segment_size,
            recovery: self.recovery,
            max_connections: self.max_connections,
            max_packet_bytes: self.max_packet_size,
            max_inflight: self.max_inflight,
            max_inflight_in: self.max_inflight_in,
            max_topic_alias: self.max_topic_alias,
            resend_interval: self.resend_interval.0.filter(|d| !d.is_zero()),
            max_resends: self.max_resends,
            inflight_ttl: self.inflight_ttl.0.filter(|d| !d.is_zero()),
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            max_keepalive: self.max_keepalive,
            v3_session_expiry: self.v3_session_expiry.0,
            sys_interval: self.sys_interval.0.filter(|d| !d.is_zero()),
            connect_timeout: self.connect_timeout,
            max_connect_bytes: self.max_connect_size,
            shutdown_timeout: self.shutdown_timeout,
            queue_qos0: self.queue_qos0,
            password_file: self.password_file,
            acl_file: self.acl_file,
            allow_anonymous: self.allow_anonymous,
            pin: self.pin,
            metrics_listen: self.metrics_listen,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_what_people_type() {
        for (typed, want) in [
            ("1883", "0.0.0.0:1883"),
            ("0.0.0.0:1883", "0.0.0.0:1883"),
            ("[::]:1883", "[::]:1883"),
            ("localhost:1883", "127.0.0.1:1883"),
        ] {
            assert_eq!(
                listen_addr(typed).map(|a| a.to_string()),
                Ok(want.to_string())
            );
        }
        assert!(listen_addr("localhost").is_err());
        assert!(listen_addr("no such host.invalid:1").is_err());
    }

    fn load(file: &str, flags: &[&str]) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ringmq.toml");
        std::fs::write(&path, file).expect("write");
        let mut args = vec![
            "ringmq".to_string(),
            "--config".into(),
            path.display().to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        Cli::load(&args).map_err(|e| match e {
            CliError::Flags(e) => e.to_string(),
            CliError::File(e) => e.replace(&path.display().to_string(), "FILE"),
        })
    }

    /// Every flag, set to a value other than its default, through a file
    /// that --print-config wrote: the file sets each one.
    #[test]
    fn every_flag_is_a_key() {
        let set: &[(&str, &[&str])] = &[
            ("listen", &["127.0.0.1:2883", "[::1]:2884"]),
            ("listen-tls", &["127.0.0.1:8883"]),
            ("listen-ws", &["127.0.0.1:8080"]),
            ("listen-wss", &["127.0.0.1:8443"]),
            ("cert", &["/etc/c.pem"]),
            ("key", &["/etc/k.pem"]),
            ("ca", &["/etc/ca.pem"]),
            ("require-certificate", &[]),
            ("use-identity-as-username", &[]),
            ("cores", &["3"]),
            ("data-dir", &["/var/lib/x"]),
            ("sync", &["always"]),
            ("segment-size", &["1048576"]),
            ("recovery", &["truncate"]),
            ("max-connections", &["77"]),
            ("max-packet-size", &["9999"]),
            ("max-inflight", &["7"]),
            ("max-topic-alias", &["3"]),
            ("max-inflight-in", &["9"]),
            ("max-queued-messages", &["11"]),
            ("max-queued-bytes", &["12345"]),
            ("max-keepalive", &["99"]),
            ("v3-session-expiry", &["1h"]),
            ("resend-interval", &["20s"]),
            ("inflight-ttl", &["5m"]),
            ("max-resends", &["4"]),
            ("sys-interval", &["off"]),
            ("connect-timeout", &["3s"]),
            ("max-connect-size", &["4096"]),
            ("shutdown-timeout", &["2s"]),
            ("queue-qos0", &[]),
            ("password-file", &["/etc/p"]),
            ("acl-file", &["/etc/a"]),
            ("allow-anonymous", &["true"]),
            ("pin", &[]),
            ("metrics-listen", &["127.0.0.1:9183"]),
            ("log-level", &["debug"]),
        ];
        let skip = ["config", "print-config", "help", "version", "in-memory"];
        for arg in Cli::command().get_arguments() {
            let long = arg.get_long().expect("long");
            assert!(
                skip.contains(&long) || set.iter().any(|(f, _)| *f == long),
                "--{long} is missing from this test"
            );
        }
        let mut args = vec!["ringmq".to_string()];
        for (flag, values) in set {
            if values.is_empty() {
                args.push(format!("--{flag}"));
            }
            for v in *values {
                args.push(format!("--{flag}"));
                args.push((*v).to_string());
            }
        }
        let from_flags = Cli::load(&args).expect("flags parse");
        let text = from_flags.render();
        assert!(!text.contains("\n# cores ="), "{text}");
        let from_file = load(&text, &[]).expect("the printed file loads");
        assert_eq!(from_file.render(), text);
        let c = from_file.cli.into_config().expect("valid");
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.max_connections, 77);
        assert_eq!(c.sys_interval, None);
        assert!(c.pin && c.queue_qos0);
        assert_eq!(c.v3_session_expiry, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml example") + 8;
        let len = readme[start..].find("```").expect("closed");
        let c = load(&readme[start..start + len], &[])
            .expect("loads")
            .cli
            .into_config()
            .expect("valid");
        assert_eq!(c.listen_tls.len(), 1);
        assert!(c.acl_file.is_some() && c.tls.is_some());
    }

    #[test]
    fn config_file_errors_name_the_line() {
        let e = |text| load(text, &[]).expect_err("refused");
        assert_eq!(
            e("max-connections = 5\n\nmax-conections = 7\n"),
            "FILE:3: unknown key 'max-conections'"
        );
        assert!(
            e("# x\nsync = \"sometimes\"\n").starts_with("FILE:2: sync: invalid value 'sometimes'"),
            "{}",
            e("# x\nsync = \"sometimes\"\n")
        );
        assert!(e("pin = 1\n").starts_with("FILE:1: pin: must be true or false"));
        assert!(e("\ncores = [1, 2]\n").starts_with("FILE:2: cores: takes one value"));
        assert!(e("\n\nmax-inflight = \n").starts_with("FILE:3: "));
        assert!(e("config = \"x\"\n").contains("unknown key 'config'"));
        assert!(e("[listeners]\nudp = [\"1\"]\n").starts_with("FILE:2: unknown listener 'udp'"));
        assert!(e("max-inflight = 70000\n").starts_with("FILE:1: max-inflight: invalid value"));
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let file = "listen = [\"127.0.0.1:1900\"]\nmax-connections = 5\npin = true\nmax_resends = 2\n\n[listeners]\nws = [\"127.0.0.1:1901\"]\n";
        let c = load(file, &[])
            .expect("loads")
            .cli
            .into_config()
            .expect("valid");
        assert_eq!(c.listen[0].to_string(), "127.0.0.1:1900");
        assert_eq!(c.listen_ws[0].to_string(), "127.0.0.1:1901");
        assert_eq!((c.max_connections, c.max_resends), (5, 2));
        assert!(c.pin);
        let c = load(file, &["--listen", "1902", "--max-connections=6"])
            .expect("loads")
            .cli
            .into_config()
            .expect("valid");
        assert_eq!(
            c.listen.len(),
            1,
            "the command line's --listen replaces the file's"
        );
        assert_eq!(c.listen[0].to_string(), "0.0.0.0:1902");
        assert_eq!(c.max_connections, 6);
        assert!(
            c.pin,
            "what the command line leaves alone comes from the file"
        );
        let missing = Cli::load(&[
            "ringmq".into(),
            "--config".into(),
            "/nonexistent/r.toml".into(),
        ]);
        assert!(matches!(missing, Err(CliError::File(e)) if e.contains("/nonexistent/r.toml")));
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["ringmq"]).expect("parses");
        let c = cli.into_config().expect("valid");
        assert_eq!(c.listen[0].to_string(), "127.0.0.1:1883");
        assert_eq!(c.v3_session_expiry, None);
        assert_eq!(
            c.data_dir.as_deref(),
            Some(std::path::Path::new("./ringmq-data"))
        );
        assert_eq!(
            c.sync,
            crate::config::SyncMode::Interval(Duration::from_secs(1))
        );
    }

    #[test]
    fn storage_flags() {
        use crate::config::SyncMode;
        let c = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("ringmq").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|c| c.into_config().map_err(|e| e.to_string()))
        };
        assert_eq!(c(&["--sync", "always"]).unwrap().sync, SyncMode::Always);
        assert_eq!(c(&["--sync", "none"]).unwrap().sync, SyncMode::None);
        assert_eq!(
            c(&["--sync", "interval=250ms"]).unwrap().sync,
            SyncMode::Interval(Duration::from_millis(250))
        );
        assert!(c(&["--sync", "sometimes"])
            .unwrap_err()
            .contains("not a sync mode"));
        assert!(c(&["--sync", "interval=0s"]).is_err());
        assert!(c(&["--in-memory"]).unwrap().data_dir.is_none());
        assert!(c(&["--in-memory", "--data-dir", "x"]).is_err());
        assert!(c(&["--recovery", "maybe"]).is_err());
        assert!(c(&["--segment-size", "1000"])
            .unwrap_err()
            .contains("segment-size"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["ringmq", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["ringmq", "--sys-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["ringmq", "--log-level", "verbose"]).is_err());
        assert!(Cli::try_parse_from(["ringmq", "--log-level", "ringmq=debug,warn"]).is_ok());
        assert!(Cli::try_parse_from(["ringmq", "--log-level", "DEBUG"]).is_ok());
        let cli = Cli::try_parse_from(["ringmq", "--cores", "0"]).expect("parses");
        assert!(cli.into_config().is_err());
        let cli = Cli::try_parse_from(["ringmq", "--listen", "0.0.0.0:1", "--listen", "[::1]:2"])
            .expect("parses");
        assert_eq!(cli.into_config().expect("valid").listen.len(), 2);
    }
}
