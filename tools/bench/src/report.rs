//! The result: a table for people, JSON for scripts, an .hgrm file and an
//! SVG percentile plot.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::args::{name, Plan, Scenario};
use crate::track::Integrity;

/// Everything measured in one run.
#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub publish_time: Duration,
    pub total_time: Duration,
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub integrity: Integrity,
    pub latency: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub connected: usize,
    pub failures: usize,
    pub first_error: Option<String>,
    pub drain_time: Option<Duration>,
    /// When the broker was killed (SIGKILL), into publishing.
    pub killed_after: Option<Duration>,
    /// From the kill to the restarted broker listening.
    pub restart_time: Option<Duration>,
    /// Messages each publisher sent, by publisher index.
    pub sent_by_publisher: Vec<u64>,
    /// `--shared`: messages each member of the group received.
    pub received_by_member: Vec<u64>,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("null".to_string(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("max", 100.0),
];

impl Report {
    /// Messages per second sent, acknowledged and received.
    pub fn rates(&self) -> (f64, f64, f64) {
        (
            rate(self.sent, self.publish_time),
            rate(self.acked, self.publish_time),
            rate(self.received, self.total_time),
        )
    }

    fn pct(h: &Histogram<u64>, p: f64) -> u64 {
        if h.is_empty() {
            0
        } else if p >= 100.0 {
            h.max()
        } else {
            h.value_at_percentile(p)
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let p = &self.plan;
        let mut s = String::new();
        let (sr, ar, rr) = self.rates();
        let _ = writeln!(
            s,
            "ringmq-bench {} against {}: {}",
            name(p.scenario),
            p.broker,
            describe(p)
        );
        if p.scenario == Scenario::Connections {
            let _ = writeln!(
                s,
                "connected {} of {} in {:.2} s ({:.0} conn/s), failures {}",
                self.connected,
                p.subscribers,
                self.publish_time.as_secs_f64(),
                rate(self.connected as u64, self.publish_time),
                self.failures
            );
            let _ = writeln!(s, "connect latency (µs): {}", self.pcts(&self.connect));
            return s;
        }
        let _ = writeln!(
            s,
            "{:>12} {:>12} {:>12} {:>8} {:>8} {:>10}",
            "sent", "acked", "received", "lost", "dups", "reordered"
        );
        let _ = writeln!(
            s,
            "{:>12} {:>12} {:>12} {:>8} {:>8} {:>10}",
            self.sent,
            self.acked,
            self.received,
            self.integrity.lost,
            self.integrity.duplicates,
            self.integrity.reordered
        );
        if self.integrity.overlap > 0 {
            let _ = writeln!(
                s,
                "overlap copies: {} (a copy per further matching filter, as MQTT allows; in received, not in dups)",
                self.integrity.overlap
            );
        }
        let _ = writeln!(
            s,
            "throughput (msg/s): sent {sr:.0}  acked {ar:.0}  received {rr:.0}   (publishing {:.2} s)",
            self.publish_time.as_secs_f64()
        );
        let _ = writeln!(s, "latency (µs): {}", self.pcts(&self.latency));
        if self.sent_by_publisher.len() > 1 {
            let (min, max) = self.sent_range();
            let _ = writeln!(
                s,
                "per publisher sent: min {min}  max {max}   (fairness: how evenly the broker reads its publishers)"
            );
        }
        if !self.received_by_member.is_empty() {
            let (min, max) = self.member_range();
            let _ = writeln!(
                s,
                "per member received: min {min}  max {max}   (shared subscription: how evenly the broker spreads the group's messages)"
            );
        }
        if let (Some(k), Some(r)) = (self.killed_after, self.restart_time) {
            let _ = writeln!(
                s,
                "broker killed (SIGKILL) {:.3} s into publishing, listening again {:.3} s later; acknowledged but lost: {}",
                k.as_secs_f64(),
                r.as_secs_f64(),
                self.integrity.lost
            );
        }
        if let Some(d) = self.drain_time {
            let _ = writeln!(
                s,
                "backlog drained in {:.3} s ({:.0} msg/s)",
                d.as_secs_f64(),
                rate(self.integrity.expected, d)
            );
        }
        if self.failures > 0 {
            let _ = writeln!(
                s,
                "FAILURES: {} ({})",
                self.failures,
                self.first_error.as_deref().unwrap_or("")
            );
        }
        s
    }

    /// Fewest and most messages any one publisher sent.
    fn sent_range(&self) -> (u64, u64) {
        let min = self.sent_by_publisher.iter().copied().min().unwrap_or(0);
        let max = self.sent_by_publisher.iter().copied().max().unwrap_or(0);
        (min, max)
    }

    /// Fewest and most messages any one member of a shared group received
    /// (zeros without `--shared`).
    fn member_range(&self) -> (u64, u64) {
        let min = self.received_by_member.iter().copied().min().unwrap_or(0);
        let max = self.received_by_member.iter().copied().max().unwrap_or(0);
        (min, max)
    }

    /// Every percentile of `h`, each formatted by `item`, joined by `sep`.
    fn pcts_with(h: &Histogram<u64>, item: impl Fn(&str, u64) -> String, sep: &str) -> String {
        PERCENTILES
            .iter()
            .map(|(n, p)| item(n, Self::pct(h, *p)))
            .collect::<Vec<_>>()
            .join(sep)
    }

    fn pcts(&self, h: &Histogram<u64>) -> String {
        Self::pcts_with(h, |n, v| format!("{n} {v}"), "  ")
    }

    /// One JSON object (hand-written: the shape is small and fixed).
    pub fn json(&self) -> String {
        let p = &self.plan;
        let (sr, ar, rr) = self.rates();
        let lat = |h: &Histogram<u64>| Self::pcts_with(h, |n, v| format!("\"{n}\":{v}"), ",");
        let err = self
            .first_error
            .as_deref()
            .map(|e| format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\"")))
            .unwrap_or_else(|| "null".into());
        format!(
            concat!(
                "{{\"scenario\":\"{}\",\"broker\":\"{}\",\"mqtt\":\"{}\",\"qos\":{},\"payload\":{},",
                "\"publishers\":{},\"subscribers\":{},\"publish_seconds\":{:.3},",
                "\"sent\":{},\"acked\":{},\"received\":{},\"expected\":{},\"lost\":{},",
                "\"duplicates\":{},\"overlap_copies\":{},\"reordered\":{},\"sent_per_sec\":{:.1},",
                "\"acked_per_sec\":{:.1},\"received_per_sec\":{:.1},\"latency_us\":{{{}}},",
                "\"connected\":{},\"connect_us\":{{{}}},\"drain_seconds\":{},",
                "\"failures\":{},\"error\":{},\"sent_min_per_publisher\":{},",
                "\"sent_max_per_publisher\":{},\"killed_after_seconds\":{},",
                "\"restart_seconds\":{},\"received_min_per_member\":{},",
                "\"received_max_per_member\":{}}}"
            ),
            name(p.scenario),
            p.broker,
            version_name(p.version),
            p.qos as u8,
            p.payload,
            p.publishers,
            p.subscribers,
            self.publish_time.as_secs_f64(),
            self.sent,
            self.acked,
            self.received,
            self.integrity.expected,
            self.integrity.lost,
            self.integrity.duplicates,
            self.integrity.overlap,
            self.integrity.reordered,
            sr,
            ar,
            rr,
            lat(&self.latency),
            self.connected,
            lat(&self.connect),
            self.drain_time
                .map_or("null".to_string(), |d| format!("{:.3}", d.as_secs_f64())),
            self.failures,
            err,
            self.sent_range().0,
            self.sent_range().1,
            secs(self.killed_after),
            secs(self.restart_time),
            self.member_range().0,
            self.member_range().1
        )
    }
}

/// The percentile distribution in HdrHistogram's `.hgrm` text format
/// (values in microseconds).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        let _ = writeln!(
            s,
            "{:12.3} {:14.12} {:10} {:14.2}",
            v.value_iterated_to() as f64,
            q,
            v.count_since_last_iteration(),
            inv
        );
    }
    let _ = writeln!(
        s,
        "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {}, Total count = {}]",
        h.mean(),
        h.stdev(),
        h.max(),
        h.len()
    );
    s
}

/// Latency by percentile as an SVG line chart, with the x axis in
/// "nines" (log of 1/(1-p)) as HdrHistogram plots do. `series` lets
/// `perf/compare.sh` draw several brokers on one plot.
pub fn svg(title: &str, series: &[(String, Histogram<u64>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const B: f64 = 50.0;
    // x is log10(1/(1-p)): 50 % at log10(2), 90 % at 1, 99 % at 2, ... 99.999 % at 5.
    let x0 = 2f64.log10();
    let x1 = 5.0;
    let ymax = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.value_at_percentile(99.999) as f64)
        .fold(1.0, f64::max);
    let x = |v: f64| L + (W - L - 20.0) * ((v - x0) / (x1 - x0)).clamp(0.0, 1.0);
    let y = |v: f64| H - B - (H - B - 20.0) * (v / ymax);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<title>{t}</title><text x=\"{L}\" y=\"14\" font-weight=\"bold\">{t}</text>\n",
        t = xml_escape(title)
    );
    for (pos, label) in [
        (x0, "50%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let xi = x(pos);
        let _ = writeln!(
            s,
            "<line x1=\"{xi:.1}\" y1=\"20\" x2=\"{xi:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{xi:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            H - B,
            H - B + 16.0
        );
    }
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>",
            L - 6.0,
            y(v) + 4.0,
            v
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">latency (µs)</text>",
        H / 2.0,
        H / 2.0
    );
    for (i, (label, h)) in series.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let color = colors[i % colors.len()];
        let mut pts = String::new();
        let mut v = x0;
        while v <= x1 + 1e-9 {
            let p = 100.0 * (1.0 - 10f64.powf(-v));
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                x(v),
                y(h.value_at_percentile(p) as f64)
            );
            v += 0.05;
        }
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{pts}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{label}</text>",
            L + 10.0,
            36.0 + 16.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The MQTT version as the report spells it.
fn version_name(v: ringmq::protocol::ProtocolVersion) -> &'static str {
    if v.is_v5() {
        "5.0"
    } else {
        "3.1.1"
    }
}

/// What a run was, in words: the first line of the table and the plot's
/// title. A connections run has no publishers or payload to speak of.
pub fn describe(p: &crate::args::Plan) -> String {
    let transport = match (p.tls.is_some(), p.ws) {
        (false, false) => "",
        (true, false) => ", over TLS",
        (false, true) => ", over WebSocket",
        (true, true) => ", over WebSocket and TLS",
    };
    if p.scenario == Scenario::Connections {
        return format!(
            "MQTT {}, {} client(s){transport}",
            version_name(p.version),
            p.subscribers
        );
    }
    format!(
        "MQTT {}, QoS {}, {} B payload, {} publisher(s), {} subscriber(s){transport}",
        version_name(p.version),
        p.qos as u8,
        p.payload,
        p.publishers,
        p.subscribers
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
