//! ringmq: a thread-per-core MQTT 3.1, 3.1.1 and 5.0 broker on io_uring.
//!
//! # Architecture
//!
//! ```text
//!          SO_REUSEPORT listener on every shard
//!               |            |            |
//!           shard 0       shard 1  ...  shard N-1    one glommio executor each
//!           conns         conns         conns        (pinned with --pin)
//!           sessions      sessions      sessions
//!           trie          trie          trie
//!             \___________ mesh: a bounded pipe per ordered pair __________/
//! ```
//!
//! * **Ownership.** A shard ([`shard::Shard`]) owns its connections,
//!   sessions, subscription trie, timers and counters outright. Shards share
//!   nothing but channels (and two atomics touched at connect and shutdown).
//! * **Session affinity.** The session of client id `C` lives on shard
//!   `owner_of(C)` (a stable hash). Any shard accepts; after CONNECT the
//!   socket, the bytes already read and the parsed CONNECT move to the owner,
//!   so takeover, resume, QoS state and wills are all handled on one thread.
//! * **A publish's way.** Decoded zero-copy on the publisher's shard, stored
//!   if retained (replicated to every shard), then routed by the *interest
//!   table* (filter → shards with subscribers, replicated by broadcast): local
//!   sessions get it directly; every other interested shard gets one
//!   `Arc<`[`session::Message`]`>` in that loop turn's batch, and matches its
//!   own trie. A SUBACK waits until every shard has applied the new interest,
//!   so "subscribed" means "routed to from everywhere"; likewise the PUBACK
//!   of a retained publish waits until every shard stores it.
//! * **Backpressure for the slow, drops for the stuck.** A subscriber whose
//!   unsent bytes pass 1 MiB makes its shard stop reading publishers and
//!   mesh batches while it drains (readers park on a waker). One whose writer
//!   makes no progress for [`shard::STUCK_AFTER`] stops holding anyone and
//!   loses its own QoS 0 messages (counted); its QoS 1/2 wait in its bounded
//!   queue.
//! * **Memory follows the limits.** Small packets that may be kept
//!   (PUBLISH, SUBSCRIBE, CONNECT) are copied out of the read buffer, so a
//!   queued or retained message never pins a buffer; queue bounds count
//!   [`session::Delivery::held_bytes`].
//! * **Idle is cheap.** A connection starts with a 2 KiB read buffer that
//!   grows only while reads fill it and empty write buffers (about 7 KB of
//!   broker memory per idle client); rings are deep enough (4096) that the
//!   polls of many idle connections do not slow every park.
//! * **Durable before acknowledged.** With a data directory, each shard
//!   appends to its own log ([`storage`]: CRC-framed records in
//!   preallocated memory-mapped segments) every QoS 1/2 message it queues
//!   for a persistent session, and the session's state changes. A PUBACK or
//!   PUBREC waits at a gate until every shard the message went to reported
//!   it logged (and, under `--sync always`, msynced by the shard's log
//!   thread: one msync per batch). On start the logs are replayed in
//!   parallel (`shard::persist`).
//! * **Sans-IO cores.** [`protocol`] (the codec), [`topic`], [`session`] and
//!   [`timer`] never touch a socket, a file or a clock; [`shard`] drives them.
//!
//! Start one with [`broker::start`] (embedded) or [`broker::run`] (the binary).
#![warn(missing_docs, missing_debug_implementations)]

pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod shard;
pub mod storage;
pub mod timer;
pub mod topic;
pub mod transport;
