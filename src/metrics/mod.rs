//! Per-shard counters: plain integers owned by the shard, summed across
//! shards for `$SYS` and `/metrics` by messages, never shared.

pub mod histogram;
pub mod prometheus;

pub use histogram::Histogram;

/// Packet type names by control packet type (1 CONNECT .. 15 AUTH).
pub const PACKET_TYPES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// One shard's counters (or the sum of several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Metrics {
    pub clients_connected: u64,
    pub clients_total: u64,
    pub clients_maximum: u64,
    pub sessions: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub publishes_received: u64,
    pub publishes_sent: u64,
    pub publishes_dropped: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub malformed_packets: u64,
    pub protocol_errors: u64,
    pub connect_timeouts: u64,
    pub keepalive_timeouts: u64,
    pub refused_connections: u64,
    pub sys_publishes_refused: u64,
    pub accept_errors: u64,
    pub slow_consumers: u64,
    /// Writer tasks ended after a quiet sweep (started again at the next
    /// byte): what an idle client does not cost.
    pub writers_retired: u64,
    /// Readers ended after a quiet sweep, their sockets parked (served by
    /// a new task at the next byte or wake).
    pub readers_parked: u64,
    pub slow_consumer_drops: u64,
    /// Times an online client's full-ish queue held its shard's publishers.
    pub queue_holds: u64,
    /// Clients disconnected for more unanswered QoS 1/2 PUBLISHes than the
    /// Receive Maximum (or, 3.1.1, QoS 2 ids awaiting PUBREL).
    pub receive_maximum_exceeded: u64,
    /// CONNECTs refused for their credentials (or for having none).
    pub auth_refused: u64,
    /// Publishes, subscriptions and wills the ACL refused, and deliveries
    /// it held back.
    pub acl_denied: u64,
    pub acl_deliveries_denied: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
    /// WebSocket upgrades refused or not finished in time.
    pub ws_handshake_failures: u64,
    /// Messages resent on a live 3.1.1 connection, and dropped after the
    /// last resend (`--resend-interval`, `--max-resends`).
    pub resends: u64,
    pub resend_drops: u64,
    /// Messages dropped unresolved after `--inflight-ttl`.
    pub ttl_drops: u64,
    pub log_append_errors: u64,
    pub log_refused: u64,
    /// QoS 1/2 messages written to the log (once per shard that queued them).
    pub log_messages: u64,
    /// Group commits (msync batches) run: `log_messages / log_syncs` is
    /// what one msync covers under `--sync always`.
    pub log_syncs: u64,
    /// Packets and their bytes by control packet type ([`PACKET_TYPES`]).
    pub packets_in: [u64; 16],
    pub packets_out: [u64; 16],
    pub packet_bytes_in: [u64; 16],
    pub packet_bytes_out: [u64; 16],
    /// CONNECTs refused for what they said (version, client id, a bad
    /// field), with a CONNACK or without.
    pub connects_refused_protocol: u64,
    /// Sessions ended by their expiry, and taken over by a new connection.
    pub sessions_expired: u64,
    pub takeovers: u64,
    /// Messages dropped because a session's queue was full, because their
    /// Message Expiry Interval ran out, because the subscriber's Maximum
    /// Packet Size could not take them; publishes nobody subscribed to.
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_too_large: u64,
    pub no_subscribers: u64,
    /// QoS 1/2 acknowledgements that waited for another shard's log (a
    /// logged subscriber there); others wait for this shard's log only.
    pub acks_waited_remote_log: u64,
    /// Mesh batches (and the messages in them) sent to other shards.
    pub mesh_batches: u64,
    pub mesh_messages: u64,
    /// Gauges filled when a snapshot is taken (`Shard::snapshot`):
    /// persistent sessions, messages in flight, queued behind the window,
    /// and the bytes those queued hold.
    pub sessions_persistent: u64,
    pub inflight: u64,
    /// Connections parked now (gauge).
    pub parked: u64,
    pub queued_messages: u64,
    pub queued_bytes: u64,
    /// From reading a PUBLISH to handing the message to a subscriber's
    /// session ([`histogram::DELIVER_BOUNDS_NS`]).
    pub deliver_latency: Histogram,
    /// How late a 10 ms timer fires on the shard: the loop turns it waited
    /// behind ([`histogram::TURN_BOUNDS_NS`]; recorded only with
    /// `--metrics-listen`).
    pub loop_turn: Histogram,
}

impl Metrics {
    /// Adds `other` into `self` (counters and gauges alike; retained is a
    /// replicated gauge, so the maximum is kept rather than the sum).
    pub fn merge(&mut self, o: &Metrics) {
        self.clients_connected += o.clients_connected;
        self.clients_total += o.clients_total;
        // A peak is not a sum; shard 0 reports the broker-wide one.
        self.clients_maximum = self.clients_maximum.max(o.clients_maximum);
        self.sessions += o.sessions;
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.publishes_received += o.publishes_received;
        self.publishes_sent += o.publishes_sent;
        self.publishes_dropped += o.publishes_dropped;
        self.subscriptions += o.subscriptions;
        self.retained = self.retained.max(o.retained);
        self.malformed_packets += o.malformed_packets;
        self.protocol_errors += o.protocol_errors;
        self.connect_timeouts += o.connect_timeouts;
        self.keepalive_timeouts += o.keepalive_timeouts;
        self.refused_connections += o.refused_connections;
        self.sys_publishes_refused += o.sys_publishes_refused;
        self.accept_errors += o.accept_errors;
        self.slow_consumers += o.slow_consumers;
        self.writers_retired += o.writers_retired;
        self.readers_parked += o.readers_parked;
        self.parked += o.parked;
        self.slow_consumer_drops += o.slow_consumer_drops;
        self.queue_holds += o.queue_holds;
        self.receive_maximum_exceeded += o.receive_maximum_exceeded;
        self.auth_refused += o.auth_refused;
        self.acl_denied += o.acl_denied;
        self.acl_deliveries_denied += o.acl_deliveries_denied;
        self.tls_handshake_failures += o.tls_handshake_failures;
        self.ws_handshake_failures += o.ws_handshake_failures;
        self.resends += o.resends;
        self.resend_drops += o.resend_drops;
        self.ttl_drops += o.ttl_drops;
        self.log_append_errors += o.log_append_errors;
        self.log_refused += o.log_refused;
        self.log_messages += o.log_messages;
        self.log_syncs += o.log_syncs;
        for i in 0..16 {
            self.packets_in[i] += o.packets_in[i];
            self.packets_out[i] += o.packets_out[i];
            self.packet_bytes_in[i] += o.packet_bytes_in[i];
            self.packet_bytes_out[i] += o.packet_bytes_out[i];
        }
        self.connects_refused_protocol += o.connects_refused_protocol;
        self.sessions_expired += o.sessions_expired;
        self.takeovers += o.takeovers;
        self.dropped_queue_full += o.dropped_queue_full;
        self.dropped_expired += o.dropped_expired;
        self.dropped_too_large += o.dropped_too_large;
        self.no_subscribers += o.no_subscribers;
        self.acks_waited_remote_log += o.acks_waited_remote_log;
        self.mesh_batches += o.mesh_batches;
        self.mesh_messages += o.mesh_messages;
        self.sessions_persistent += o.sessions_persistent;
        self.inflight += o.inflight;
        self.queued_messages += o.queued_messages;
        self.queued_bytes += o.queued_bytes;
        self.deliver_latency.merge(&o.deliver_latency);
        self.loop_turn.merge(&o.loop_turn);
    }

    /// Counts a packet of `kind` and `bytes` read from a client.
    #[inline]
    pub fn packet_in(&mut self, kind: crate::protocol::PacketType, bytes: usize) {
        self.messages_received += 1;
        self.packets_in[kind as usize] += 1;
        self.packet_bytes_in[kind as usize] += bytes as u64;
    }

    /// Counts a packet of `kind` and `bytes` sent to a client.
    #[inline]
    pub fn packet_out(&mut self, kind: crate::protocol::PacketType, bytes: usize) {
        self.messages_sent += 1;
        self.bytes_sent += bytes as u64;
        self.packets_out[kind as usize] += 1;
        self.packet_bytes_out[kind as usize] += bytes as u64;
    }

    /// `$SYS` topic suffixes and values, in the names Mosquitto uses.
    pub fn sys_topics(&self) -> [(&'static str, u64); 34] {
        [
            ("clients/connected", self.clients_connected),
            ("clients/total", self.sessions),
            ("clients/maximum", self.clients_maximum),
            ("messages/received", self.messages_received),
            ("messages/sent", self.messages_sent),
            ("bytes/received", self.bytes_received),
            ("bytes/sent", self.bytes_sent),
            ("publish/messages/received", self.publishes_received),
            ("publish/messages/sent", self.publishes_sent),
            ("publish/messages/dropped", self.publishes_dropped),
            ("subscriptions/count", self.subscriptions),
            ("retained messages/count", self.retained),
            ("load/connections/total", self.clients_total),
            ("errors/malformed", self.malformed_packets),
            ("errors/protocol", self.protocol_errors),
            ("errors/keepalive", self.keepalive_timeouts),
            ("errors/accept", self.accept_errors),
            ("errors/sys_publish_refused", self.sys_publishes_refused),
            ("clients/slow_consumers", self.slow_consumers),
            (
                "publish/messages/dropped_slow_consumer",
                self.slow_consumer_drops,
            ),
            ("clients/queue_holds", self.queue_holds),
            ("errors/receive_maximum", self.receive_maximum_exceeded),
            ("clients/auth_refused", self.auth_refused),
            ("clients/acl_denied", self.acl_denied),
            ("publish/messages/acl_denied", self.acl_deliveries_denied),
            ("errors/tls_handshake", self.tls_handshake_failures),
            ("errors/ws_handshake", self.ws_handshake_failures),
            ("publish/messages/resent", self.resends),
            ("publish/messages/dropped_after_resends", self.resend_drops),
            ("publish/messages/dropped_inflight_ttl", self.ttl_drops),
            ("log/append_errors", self.log_append_errors),
            ("log/publishes_refused", self.log_refused),
            ("log/messages", self.log_messages),
            ("log/syncs", self.log_syncs),
        ]
    }
}
