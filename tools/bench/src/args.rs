//! Flags, scenarios, and the checks that refuse nonsense before connecting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringmq::protocol::{ProtocolVersion, QoS};

/// What kind of load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Many publishers (each on its own topic), one wildcard subscriber.
    FanIn,
    /// One publisher, many subscribers to its topic.
    FanOut,
    /// N publisher -> subscriber pairs, a topic each.
    Pairs,
    /// One publisher at a fixed rate (default 5000 msg/s, QoS 1), one subscriber.
    Latency,
    /// Connect many clients at a ramp rate and hold them idle.
    Connections,
    /// A persistent subscriber goes offline, messages pile up, it comes back:
    /// drain time and loss.
    Backlog,
    /// Fan-out with `--stuck` (default 1) more subscribers that never read:
    /// compare with `fan-out` under the same flags to see what a stuck
    /// consumer costs the healthy ones (the report covers those only).
    SlowConsumer,
}

/// ringmq-bench: drives any MQTT broker and reports throughput, loss,
/// duplicates, reordering and latency percentiles.
///
/// Every payload carries publisher id, sequence number and send time, so
/// loss, duplicates and reordering are counted per publisher and latency is
/// measured from publish to receive (one clock: both ends are this process).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: SocketAddr,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long = "mqtt", default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub mqtt: u8,
    /// Publishers (fan-in, pairs: default 8; fan-out, latency, backlog: 1).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers (fan-out: default 16; pairs: = publishers; others: 1), or
    /// idle clients for `connections` (default 1000).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// QoS of publishes and subscriptions (latency, backlog default 1; others 0).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Payload bytes (at least 20: publisher id, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per second per publisher; 0 = as fast as the window allows.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// How long publishers publish (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = ringmq::config::parse_duration)]
    pub duration: Duration,
    /// Messages per publisher instead of a duration (backlog default 100000).
    #[arg(long)]
    pub count: Option<u64>,
    /// Topic pattern; `{i}` is the publisher index (default per scenario).
    #[arg(long)]
    pub topic: Option<String>,
    /// The subscribers' filter, instead of the scenario's (`{i}` is the
    /// subscriber index); repeat for several per subscriber. Overlapping
    /// ones may bring a message once per matching filter (MQTT allows it):
    /// those copies are reported as overlap copies, not duplicates.
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Persistent sessions (clean session/start 0) instead of clean ones.
    #[arg(long)]
    pub persistent: bool,
    /// backlog: leave the messages queued (the subscriber does not come
    /// back), e.g. to measure the broker's memory and recovery with them.
    #[arg(long)]
    pub leave_backlog: bool,
    /// backlog: run the broker with this shell command (it must listen on
    /// --broker and keep its data across runs), SIGKILL it, start it again
    /// and report what was acknowledged but lost. Killed after publishing
    /// unless --kill-after says when.
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,
    /// backlog with --restart-cmd: SIGKILL the broker this long into
    /// publishing, while messages are in flight.
    #[arg(long, value_parser = ringmq::config::parse_duration)]
    pub kill_after: Option<Duration>,
    /// Client id prefix.
    #[arg(long, default_value = "rb")]
    pub client_prefix: String,
    /// User name.
    #[arg(long)]
    pub username: Option<String>,
    /// Password.
    #[arg(long)]
    pub password: Option<String>,
    /// Speak TLS to --broker, trusting the CA certificates in --cafile.
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificates that sign the broker's certificate (--tls).
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// The name the broker's certificate must carry (--tls).
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// Speak MQTT over WebSocket (path /mqtt; with --tls, over TLS).
    #[arg(long)]
    pub ws: bool,
    /// New connections per second; 0 = as fast as the broker answers.
    #[arg(long, default_value_t = 0)]
    pub ramp: u64,
    /// connections: CONNECTs in flight at once per worker thread. 1 times
    /// one CONNACK round trip after another; more is a reconnect storm
    /// (every client of a restarted broker at once), which measures what a
    /// connection costs the broker rather than its latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connect_window: u64,
    /// Worker threads (each a glommio executor); default: every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// How long to wait for in-flight messages after publishing stops.
    #[arg(long, default_value = "5s", value_parser = ringmq::config::parse_duration)]
    pub drain: Duration,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the latency percentile distribution (HdrHistogram .hgrm text).
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Write a latency percentile plot (SVG).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// fan-out and fan-in: the subscribers are the members of one shared
    /// subscription, `$share/GROUP/<filter>`: each message is expected once
    /// for the group, and the report says how evenly the members shared.
    #[arg(long, value_name = "GROUP")]
    pub shared: Option<String>,
    /// Subscribers to the same filter that never read after their SUBACK
    /// (slow-consumer: default 1; others: 0). Not counted in the report.
    #[arg(long)]
    pub stuck: Option<usize>,
}

/// The run, with every per-scenario default resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub broker: SocketAddr,
    pub version: ProtocolVersion,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: QoS,
    pub payload: usize,
    pub rate: u64,
    pub inflight: usize,
    pub duration: Duration,
    pub count: Option<u64>,
    /// Topic of publisher `i`: the pattern with `{i}` replaced.
    pub pub_topic: String,
    /// Filters of subscriber `j` (`{i}` replaced by `j`).
    pub sub_filters: Vec<String>,
    pub persistent: bool,
    pub client_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS client config and server name, with --tls.
    pub tls: Option<(std::sync::Arc<ringmq::transport::tls::ClientConfig>, String)>,
    /// MQTT over WebSocket.
    pub ws: bool,
    pub ramp: u64,
    /// connections: CONNECTs in flight at once per worker.
    pub connect_window: usize,
    pub threads: usize,
    pub drain: Duration,
    /// Subscribers that never read.
    pub stuck: usize,
    /// backlog: do not reconnect the subscriber.
    pub leave_backlog: bool,
    /// backlog: the broker's command, to kill and restart it.
    pub restart_cmd: Option<String>,
    /// backlog: when to kill it, into publishing.
    pub kill_after: Option<Duration>,
    /// The share group the subscribers form, if any.
    pub shared: Option<String>,
}

/// Stamp bytes: publisher id (4), sequence (8), send time in ns (8).
pub const STAMP_BYTES: usize = 20;

impl Args {
    /// Resolves defaults and refuses what cannot run.
    ///
    /// # Errors
    /// A message naming the flag.
    pub fn plan(self) -> Result<Plan, String> {
        use Scenario::*;
        let s = self.scenario;
        let publishers = self.publishers.unwrap_or(match s {
            FanIn | Pairs => 8,
            Connections => 0,
            _ => 1,
        });
        let subscribers = self.subscribers.unwrap_or(match s {
            FanOut => 16,
            SlowConsumer => 8,
            Pairs => publishers,
            Connections => 1000,
            _ => 1,
        });
        let qos = self.qos.unwrap_or(match s {
            Latency | Backlog => 1,
            _ => 0,
        });
        let qos = QoS::from_u8(qos).ok_or("--qos must be 0, 1 or 2")?;
        let rate = self.rate.unwrap_or(if s == Latency { 5000 } else { 0 });
        let count = self
            .count
            .or(if s == Backlog { Some(100_000) } else { None });
        if self.payload < STAMP_BYTES {
            return Err(format!(
                "--payload must be at least {STAMP_BYTES} bytes (publisher id, sequence, timestamp)"
            ));
        }
        if self.payload > 256 << 20 {
            return Err("--payload cannot exceed MQTT's 256 MiB".into());
        }
        if self.inflight == 0 || self.inflight > 65_535 {
            return Err("--inflight must be between 1 and 65535".into());
        }
        if s != Connections && (publishers == 0 || subscribers == 0) {
            return Err("--publishers and --subscribers must be at least 1".into());
        }
        if s == Pairs && publishers != subscribers {
            return Err("pairs needs as many --subscribers as --publishers".into());
        }
        if matches!(s, FanOut | SlowConsumer | Latency | Backlog) && publishers != 1 {
            return Err(format!("{s:?} uses exactly one publisher"));
        }
        if s == Backlog && qos == QoS::AtMostOnce {
            return Err(
                "backlog needs --qos 1 or 2 (QoS 0 is not queued for offline sessions)".into(),
            );
        }
        if self.restart_cmd.is_some() && (s != Backlog || self.leave_backlog) {
            return Err("--restart-cmd goes with backlog (without --leave-backlog)".into());
        }
        if self.kill_after.is_some() && self.restart_cmd.is_none() {
            return Err("--kill-after needs --restart-cmd".into());
        }
        if let Some(g) = &self.shared {
            if !matches!(s, FanOut | FanIn) {
                return Err("--shared goes with fan-out or fan-in".into());
            }
            if g.is_empty() || g.contains(['/', '+', '#']) {
                return Err("--shared GROUP must be non-empty, without '/', '+' or '#'".into());
            }
        }
        if self.shared.is_some() && self.filters.len() > 1 {
            return Err("--shared takes one --filter (each would be a group of its own)".into());
        }
        for f in &self.filters {
            let probe = f.replace("{i}", "0");
            let ok = ringmq::protocol::MqttStr::try_from(probe.as_str())
                .ok()
                .and_then(|m| ringmq::topic::TopicFilter::new(m).ok())
                .is_some();
            if !ok {
                return Err(format!("--filter '{f}' is not a valid topic filter"));
            }
        }
        if count == Some(0) || self.duration.is_zero() {
            return Err("--count and --duration must be positive".into());
        }
        let (pub_topic, sub_filter) = match (&self.topic, s) {
            (Some(t), FanIn) => (t.clone(), t.replace("{i}", "+")),
            (Some(t), _) => (t.clone(), t.clone()),
            (None, FanIn) => ("bench/fan-in/{i}".to_string(), "bench/fan-in/+".to_string()),
            (None, Pairs) => ("bench/pairs/{i}".into(), "bench/pairs/{i}".into()),
            (None, _) => (format!("bench/{}", name(s)), format!("bench/{}", name(s))),
        };
        let sub_filters = if self.filters.is_empty() {
            vec![sub_filter]
        } else {
            self.filters
        };
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let tls = match (self.tls, &self.cafile) {
            (false, _) => None,
            (true, None) => return Err("--tls needs --cafile".into()),
            (true, Some(ca)) => Some((
                ringmq::transport::tls::client_config(ca)?,
                self.tls_name.clone(),
            )),
        };
        let version = match self.mqtt {
            3 | 4 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        Ok(Plan {
            scenario: s,
            broker: self.broker,
            version,
            publishers,
            subscribers,
            qos,
            payload: self.payload,
            rate,
            inflight: self.inflight,
            duration: self.duration,
            count,
            pub_topic,
            sub_filters,
            persistent: self.persistent || s == Backlog,
            client_prefix: self.client_prefix,
            username: self.username,
            password: self.password,
            tls,
            ws: self.ws,
            ramp: self.ramp,
            connect_window: self.connect_window as usize,
            threads,
            drain: self.drain,
            stuck: self.stuck.unwrap_or(if s == SlowConsumer { 1 } else { 0 }),
            leave_backlog: self.leave_backlog,
            restart_cmd: self.restart_cmd,
            kill_after: self.kill_after,
            shared: self.shared,
        })
    }
}

/// The scenario's name as typed on the command line.
pub fn name(s: Scenario) -> &'static str {
    match s {
        Scenario::FanIn => "fan-in",
        Scenario::FanOut => "fan-out",
        Scenario::Pairs => "pairs",
        Scenario::Latency => "latency",
        Scenario::Connections => "connections",
        Scenario::Backlog => "backlog",
        Scenario::SlowConsumer => "slow-consumer",
    }
}
