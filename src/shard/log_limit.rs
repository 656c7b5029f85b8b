//! Rate limits for log lines a flood would otherwise repeat: at most one
//! line per kind per interval, which says how many were held back.

use std::time::{Duration, Instant};

/// How often a limited kind of line may appear.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of limited line: at most `burst` lines per [`LOG_INTERVAL`].
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    left: u32,
    next: Option<Instant>,
    held: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(1)
    }
}

impl LogLimit {
    /// A limit of `burst` lines per interval.
    pub fn new(burst: u32) -> LogLimit {
        LogLimit {
            burst,
            left: burst,
            next: None,
            held: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be written now;
    /// `None` (counted) when it must be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_none_or(|t| now >= t) {
            self.next = Some(now + LOG_INTERVAL);
            self.left = self.burst;
        }
        if self.left == 0 {
            self.held += 1;
            return None;
        }
        self.left -= 1;
        Some(std::mem::take(&mut self.held))
    }
}

/// The limited kinds of one shard.
#[derive(Debug)]
pub struct LogLimits {
    /// `accept` failing (out of file descriptors, mostly).
    pub accept_failed: LogLimit,
    /// Sockets closed at once: the connection limit was reached.
    pub over_limit: LogLimit,
    /// Connections refused at CONNECT.
    pub refused: LogLimit,
    /// No CONNECT in time, or a malformed one.
    pub bad_connect: LogLimit,
    /// Keep-alive timeouts.
    pub keepalive: LogLimit,
    /// Session takeovers.
    pub takeover: LogLimit,
    /// Connects and disconnects (a reconnect loop must not flood the log).
    pub connects: LogLimit,
    /// Slow consumers starting to lose QoS 0 messages.
    pub slow_consumer: LogLimit,
    /// The log failing to append (full disk).
    pub log_errors: LogLimit,
    /// Messages dropped after their last resend.
    pub resend_drops: LogLimit,
    /// Messages dropped for `--inflight-ttl`.
    pub ttl_drops: LogLimit,
    /// Publishes, subscriptions and wills the ACL refused.
    pub acl_denied: LogLimit,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            accept_failed: LogLimit::default(),
            over_limit: LogLimit::default(),
            refused: LogLimit::new(5),
            log_errors: LogLimit::default(),
            bad_connect: LogLimit::new(5),
            keepalive: LogLimit::new(5),
            takeover: LogLimit::new(5),
            // Every connect and disconnect of a normal day, but not of a
            // reconnect storm.
            connects: LogLimit::new(100),
            slow_consumer: LogLimit::new(5),
            resend_drops: LogLimit::new(5),
            ttl_drops: LogLimit::new(5),
            acl_denied: LogLimit::new(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_says_how_many_were_held() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.allow(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(l.allow(t0 + LOG_INTERVAL * 2), Some(0));
        let mut l = LogLimit::new(2);
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0 + LOG_INTERVAL), Some(1));
    }
}
