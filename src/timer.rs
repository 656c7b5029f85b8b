//! The per-shard deadline queue: one ordered map of (deadline, seq) → key.
//!
//! Pure and clock-free: callers pass `now`. Insert and pop are O(log n) and
//! an entry costs a few dozen bytes, so a million armed timers stay cheap.
//! Cancellation is lazy: a key carries a generation the owner checks when it
//! fires, so nothing has to be found and removed.

use std::collections::BTreeMap;
use std::time::Instant;

/// When a connection last heard from at `last_seen` with `keep_alive` times
/// out: 1.5 × Keep Alive later ([v5:MQTT-3.1.2-22] / [v3:MQTT-3.1.2-24]);
/// never for Keep Alive 0. `Ok` if it has at `now`, else `Err` with when to
/// look again (a packet since moves that on: the check re-arms from it).
pub fn keep_alive_expired(
    last_seen: Instant,
    keep_alive: std::time::Duration,
    now: Instant,
) -> Result<(), Option<Instant>> {
    match keep_alive_deadline(last_seen, keep_alive) {
        Some(deadline) if now >= deadline => Ok(()),
        deadline => Err(deadline),
    }
}

/// When a connection last heard from at `last_seen` times out, if ever.
pub fn keep_alive_deadline(last_seen: Instant, keep_alive: std::time::Duration) -> Option<Instant> {
    (!keep_alive.is_zero()).then(|| last_seen + keep_alive * 3 / 2)
}

/// Deadlines with their keys, earliest first.
#[derive(Debug)]
pub struct DeadlineQueue<K> {
    entries: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K> Default for DeadlineQueue<K> {
    fn default() -> Self {
        DeadlineQueue {
            entries: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<K> DeadlineQueue<K> {
    /// Arms `key` to fire at `at`.
    pub fn insert(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.entries.insert((at, self.seq), key);
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(t, _)| *t)
    }

    /// Number of armed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes and returns every key due at `now`, earliest first.
    pub fn pop_expired(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::default();
        q.insert(t0 + Duration::from_secs(3), "c");
        q.insert(t0 + Duration::from_secs(1), "a");
        q.insert(t0 + Duration::from_secs(1), "b");
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(q.pop_expired(t0).is_empty());
        assert_eq!(q.pop_expired(t0 + Duration::from_secs(2)), vec!["a", "b"]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_expired(t0 + Duration::from_secs(3)), vec!["c"]);
        assert!(q.is_empty());
    }

    // [v5:MQTT-3.1.2-22] [v3:MQTT-3.1.2-24] one and a half times the Keep
    // Alive after the last packet, never for 0; a packet in between moves it.
    #[test]
    fn keep_alive_runs_out_one_and_a_half_intervals_after_the_last_packet() {
        let t0 = Instant::now();
        let ka = Duration::from_secs(10);
        assert_eq!(
            keep_alive_expired(t0, ka, t0 + Duration::from_secs(14)),
            Err(Some(t0 + Duration::from_secs(15)))
        );
        assert_eq!(
            keep_alive_expired(t0, ka, t0 + Duration::from_secs(15)),
            Ok(())
        );
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            keep_alive_expired(later, ka, t0 + Duration::from_secs(15)),
            Err(Some(later + Duration::from_secs(15)))
        );
        assert_eq!(
            keep_alive_expired(t0, Duration::ZERO, t0 + Duration::from_secs(1 << 20)),
            Err(None)
        );
    }

    #[test]
    fn a_million_timers() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::default();
        for i in 0..1_000_000u32 {
            q.insert(t0 + Duration::from_millis(u64::from(i % 10_000)), i);
        }
        assert_eq!(q.pop_expired(t0 + Duration::from_millis(4)).len(), 500);
    }
}
