//! ringmq: a thread-per-core MQTT 3.1, 3.1.1 and 5.0 broker.
#![warn(missing_docs, missing_debug_implementations)]

pub mod broker;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod shard;
pub mod timer;
pub mod topic;
