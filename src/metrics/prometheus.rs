//! The Prometheus text format (0.0.4) of the shards' counters: pure, one
//! series per shard (`shard` label) so that a dashboard sums or splits.

use std::fmt::Write;

use super::histogram::{format_seconds, DELIVER_BOUNDS_NS, TURN_BOUNDS_NS};
use super::{Histogram, Metrics, PACKET_TYPES};

/// What a scrape knows besides the shards' counters.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Per shard: its counters, and whether it answered this scrape (a
    /// shard that did not is shown with the counters it last sent).
    pub shards: Vec<(Metrics, bool)>,
    /// The most connections the broker has had at once.
    pub connections_peak: u64,
    /// Seconds since the broker started.
    pub uptime_secs: u64,
}

/// A value read from one shard's counters.
type Field = fn(&Metrics) -> u64;

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                // Label values here are ours (numbers, fixed words) or the
                // version string: nothing to escape but a quote or backslash.
                let val = val.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = write!(self.text, "{k}=\"{val}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {v}");
    }

    /// One series per shard of `f`'s value.
    fn per_shard(
        &mut self,
        s: &Scrape,
        name: &str,
        kind: &str,
        help: &str,
        f: fn(&Metrics) -> u64,
    ) {
        self.family(name, kind, help);
        for (i, (m, _)) in s.shards.iter().enumerate() {
            self.sample(name, &[("shard", &i.to_string())], f(m));
        }
    }

    /// One series per shard and value of `label`.
    fn per_shard_by(
        &mut self,
        s: &Scrape,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, Field)],
    ) {
        self.family(name, "counter", help);
        for (i, (m, _)) in s.shards.iter().enumerate() {
            let shard = i.to_string();
            for (v, f) in values {
                self.sample(name, &[("shard", &shard), (label, v)], f(m));
            }
        }
    }

    fn by_packet_type(
        &mut self,
        s: &Scrape,
        name: &str,
        help: &str,
        f: fn(&Metrics) -> &[u64; 16],
    ) {
        self.family(name, "counter", help);
        for (i, (m, _)) in s.shards.iter().enumerate() {
            let shard = i.to_string();
            for (t, v) in PACKET_TYPES.iter().zip(f(m)).skip(1) {
                self.sample(name, &[("shard", &shard), ("type", t)], *v);
            }
        }
    }

    fn histogram(
        &mut self,
        s: &Scrape,
        name: &str,
        help: &str,
        bounds: &[u64],
        f: fn(&Metrics) -> &Histogram,
    ) {
        self.family(name, "histogram", help);
        for (i, (m, _)) in s.shards.iter().enumerate() {
            let shard = i.to_string();
            let h = f(m);
            for (le, c) in h.cumulative(bounds) {
                self.sample(
                    &format!("{name}_bucket"),
                    &[("shard", &shard), ("le", &le)],
                    c,
                );
            }
            let _ = writeln!(
                self.text,
                "{name}_sum{{shard=\"{shard}\"}} {}",
                format_seconds(h.sum_ns)
            );
            self.sample(&format!("{name}_count"), &[("shard", &shard)], h.count());
        }
    }
}

/// The `/metrics` body.
pub fn render(s: &Scrape) -> String {
    let mut o = Out {
        text: String::with_capacity(32 << 10),
    };
    o.family(
        "ringmq_build_info",
        "gauge",
        "The running ringmq's version and commit.",
    );
    o.sample(
        "ringmq_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("RINGMQ_COMMIT")),
        ],
        1,
    );
    o.family(
        "ringmq_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
    );
    o.sample("ringmq_uptime_seconds", &[], s.uptime_secs);
    o.family(
        "ringmq_shard_up",
        "gauge",
        "1 if the shard answered this scrape; 0 shows the counters it sent last.",
    );
    for (i, (_, up)) in s.shards.iter().enumerate() {
        o.sample(
            "ringmq_shard_up",
            &[("shard", &i.to_string())],
            u64::from(*up),
        );
    }

    o.per_shard(
        s,
        "ringmq_connections",
        "gauge",
        "Client connections open now.",
        |m| m.clients_connected,
    );
    o.family(
        "ringmq_connections_peak",
        "gauge",
        "The most client connections open at once since the start, whole broker.",
    );
    o.sample("ringmq_connections_peak", &[], s.connections_peak);
    o.per_shard(
        s,
        "ringmq_connections_total",
        "counter",
        "Client connections that completed CONNECT.",
        |m| m.clients_total,
    );
    o.per_shard_by(
        s,
        "ringmq_connections_refused_total",
        "Connections refused, by reason: limit (--max-connections or file descriptors), auth (credentials), protocol (version, client id or a bad field), connect_timeout (no CONNECT in time), tls_handshake, ws_handshake.",
        "reason",
        &[
            ("limit", |m| m.refused_connections),
            ("auth", |m| m.auth_refused),
            ("protocol", |m| m.connects_refused_protocol),
            ("connect_timeout", |m| m.connect_timeouts),
            ("tls_handshake", |m| m.tls_handshake_failures),
            ("ws_handshake", |m| m.ws_handshake_failures),
        ],
    );
    o.per_shard(
        s,
        "ringmq_sessions",
        "gauge",
        "Sessions, online and offline.",
        |m| m.sessions,
    );
    o.per_shard(
        s,
        "ringmq_sessions_persistent",
        "gauge",
        "Sessions that outlive their connection (clean session 0, or a session expiry).",
        |m| m.sessions_persistent,
    );
    o.per_shard(
        s,
        "ringmq_sessions_expired_total",
        "counter",
        "Sessions ended by their expiry.",
        |m| m.sessions_expired,
    );
    o.per_shard(
        s,
        "ringmq_sessions_taken_over_total",
        "counter",
        "Connections replaced by a new one with the same client id.",
        |m| m.takeovers,
    );

    o.by_packet_type(
        s,
        "ringmq_packets_received_total",
        "Packets read from clients, by type.",
        |m| &m.packets_in,
    );
    o.by_packet_type(
        s,
        "ringmq_packets_sent_total",
        "Packets sent to clients, by type.",
        |m| &m.packets_out,
    );
    o.by_packet_type(
        s,
        "ringmq_packet_bytes_received_total",
        "Bytes of the packets read from clients, by type.",
        |m| &m.packet_bytes_in,
    );
    o.by_packet_type(
        s,
        "ringmq_packet_bytes_sent_total",
        "Bytes of the packets sent to clients, by type.",
        |m| &m.packet_bytes_out,
    );
    o.per_shard(
        s,
        "ringmq_bytes_received_total",
        "counter",
        "Bytes read from client sockets (TLS and WebSocket framing included).",
        |m| m.bytes_received,
    );

    o.per_shard(
        s,
        "ringmq_messages_received_total",
        "counter",
        "PUBLISH packets accepted from clients.",
        |m| m.publishes_received,
    );
    o.per_shard(
        s,
        "ringmq_messages_delivered_total",
        "counter",
        "PUBLISH packets sent to subscribers (resends included).",
        |m| m.publishes_sent,
    );
    o.per_shard(
        s,
        "ringmq_messages_no_subscribers_total",
        "counter",
        "Publishes that matched no subscription.",
        |m| m.no_subscribers,
    );
    o.per_shard_by(
        s,
        "ringmq_messages_dropped_total",
        "Messages a subscriber did not get, by reason: queue_full (--max-queued-*), expired (Message Expiry Interval), too_large (the client's Maximum Packet Size), slow_consumer (QoS 0 to a client that does not read), inflight_ttl (--inflight-ttl), resends (--max-resends), acl (the subscriber may not read it).",
        "reason",
        &[
            ("queue_full", |m| m.dropped_queue_full),
            ("expired", |m| m.dropped_expired),
            ("too_large", |m| m.dropped_too_large),
            ("slow_consumer", |m| m.slow_consumer_drops),
            ("inflight_ttl", |m| m.ttl_drops),
            ("resends", |m| m.resend_drops),
            ("acl", |m| m.acl_deliveries_denied),
        ],
    );
    o.family(
        "ringmq_retained_messages",
        "gauge",
        "Retained messages, whole broker ($SYS topics not counted).",
    );
    o.sample(
        "ringmq_retained_messages",
        &[],
        s.shards.first().map_or(0, |(m, _)| m.retained),
    );
    o.per_shard(
        s,
        "ringmq_subscriptions",
        "gauge",
        "Subscriptions of the shard's sessions.",
        |m| m.subscriptions,
    );
    o.per_shard(
        s,
        "ringmq_parked_connections",
        "gauge",
        "Quiet connections waiting without a reader task.",
        |m| m.parked,
    );
    o.per_shard(
        s,
        "ringmq_inflight_messages",
        "gauge",
        "QoS 1/2 messages sent and not yet acknowledged.",
        |m| m.inflight,
    );
    o.per_shard(
        s,
        "ringmq_queued_messages",
        "gauge",
        "Messages queued behind sessions' inflight windows (offline sessions included).",
        |m| m.queued_messages,
    );
    o.per_shard(
        s,
        "ringmq_queued_bytes",
        "gauge",
        "Bytes the queued messages hold, as --max-queued-bytes counts them.",
        |m| m.queued_bytes,
    );

    for (name, help, f) in [
        (
            "ringmq_malformed_packets_total",
            "Packets that could not be decoded (the connection is closed).",
            (|m| m.malformed_packets) as Field,
        ),
        (
            "ringmq_protocol_errors_total",
            "Connections closed for a protocol violation.",
            |m| m.protocol_errors,
        ),
        (
            "ringmq_keepalive_timeouts_total",
            "Connections closed for silence past 1.5 keep-alives.",
            |m| m.keepalive_timeouts,
        ),
        (
            "ringmq_slow_consumers_total",
            "Times a connection's outbox stayed full (a client that does not read).",
            |m| m.slow_consumers,
        ),
        (
            "ringmq_writers_retired_total",
            "Writer tasks ended after a quiet sweep; an idle connection keeps only its reader.",
            |m| m.writers_retired,
        ),
        (
            "ringmq_readers_parked_total",
            "Reader tasks ended after a quiet sweep; the socket waits in the shard's epoll set.",
            |m| m.readers_parked,
        ),
        (
            "ringmq_queue_holds_total",
            "Times a full-ish online queue held the shard's publishers.",
            |m| m.queue_holds,
        ),
        (
            "ringmq_receive_maximum_exceeded_total",
            "Clients disconnected for more unanswered QoS 1/2 publishes than Receive Maximum.",
            |m| m.receive_maximum_exceeded,
        ),
        (
            "ringmq_acl_denied_total",
            "Publishes, subscriptions and wills the ACL refused.",
            |m| m.acl_denied,
        ),
        (
            "ringmq_sys_publishes_refused_total",
            "Client publishes to $SYS refused.",
            |m| m.sys_publishes_refused,
        ),
        (
            "ringmq_accept_errors_total",
            "Failed accept calls (file descriptors, memory).",
            |m| m.accept_errors,
        ),
        (
            "ringmq_resends_total",
            "Messages resent with DUP on a live connection.",
            |m| m.resends,
        ),
        (
            "ringmq_log_messages_total",
            "QoS 1/2 messages written to the shard's log.",
            |m| m.log_messages,
        ),
        (
            "ringmq_log_syncs_total",
            "Group commits (msync batches) of the shard's log.",
            |m| m.log_syncs,
        ),
        (
            "ringmq_log_append_errors_total",
            "Records the log could not write.",
            |m| m.log_append_errors,
        ),
        (
            "ringmq_log_refused_total",
            "Publishes refused because the log was full.",
            |m| m.log_refused,
        ),
        (
            "ringmq_mesh_batches_total",
            "Batches of messages sent to other shards.",
            |m| m.mesh_batches,
        ),
        (
            "ringmq_mesh_messages_total",
            "Messages sent to other shards.",
            |m| m.mesh_messages,
        ),
        (
            "ringmq_acks_waited_remote_log_total",
            "QoS 1/2 acknowledgements that waited for another shard to log the message (a persistent subscriber there).",
            |m| m.acks_waited_remote_log,
        ),
    ] {
        o.per_shard(s, name, "counter", help, f);
    }

    o.histogram(
        s,
        "ringmq_deliver_latency_seconds",
        "From reading a PUBLISH to handing it to a subscriber's session (sent at once, or queued behind its window), on the subscriber's shard.",
        &DELIVER_BOUNDS_NS,
        |m| &m.deliver_latency,
    );
    o.histogram(
        s,
        "ringmq_loop_turn_seconds",
        "How late a 10 ms timer fires on the shard: the loop turns it waited behind.",
        &TURN_BOUNDS_NS,
        |m| &m.loop_turn,
    );
    o.text
}
