//! Fixed-bucket histograms, as Prometheus wants them: a shard records into
//! its own (a compare per bucket, no allocation), a scrape sums none of
//! them (each shard is its own series).

use std::time::Duration;

/// Upper bounds of the publish-to-deliver buckets, in nanoseconds: 10 µs
/// to 10 s (a message held by an offline or slow subscriber shows in the
/// top ones).
pub const DELIVER_BOUNDS_NS: [u64; 14] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the loop-turn buckets, in nanoseconds: 50 µs to 1 s.
pub const TURN_BOUNDS_NS: [u64; 13] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Counts per bucket (not cumulative; the last is past every bound), and
/// the sum of what was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]`: samples at most `bounds[i]` and above `bounds[i - 1]`;
    /// `counts[bounds.len()]`: the rest.
    pub counts: [u64; 16],
    /// Sum of the samples, in nanoseconds.
    pub sum_ns: u64,
}

impl Histogram {
    /// Records `d` against `bounds` (one of the `*_BOUNDS_NS`, at most 15).
    #[inline]
    pub fn record(&mut self, bounds: &[u64], d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = bounds.iter().position(|&b| ns <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `o`'s samples.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative<'a>(&'a self, bounds: &'a [u64]) -> impl Iterator<Item = (String, u64)> + 'a {
        let mut total = 0;
        bounds
            .iter()
            .map(|&b| format_seconds(b))
            .chain(std::iter::once("+Inf".to_string()))
            .zip(self.counts)
            .map(move |(le, c)| {
                total += c;
                (le, total)
            })
    }
}

/// Nanoseconds as Prometheus writes seconds (`0.00001`, `2.5`, `10`).
pub fn format_seconds(ns: u64) -> String {
    let s = format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_what_is_at_most_their_bound() {
        let mut h = Histogram::default();
        h.record(&DELIVER_BOUNDS_NS, Duration::from_micros(10));
        h.record(&DELIVER_BOUNDS_NS, Duration::from_nanos(10_001));
        h.record(&DELIVER_BOUNDS_NS, Duration::from_secs(60));
        let c: Vec<_> = h.cumulative(&DELIVER_BOUNDS_NS).collect();
        assert_eq!(c[0], ("0.00001".to_string(), 1));
        assert_eq!(c[1], ("0.000025".to_string(), 2));
        assert_eq!(c[13], ("10".to_string(), 2));
        assert_eq!(c[14], ("+Inf".to_string(), 3));
        assert_eq!(c.len(), 15);
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_ns, 60_000_000_000 + 20_001);
        assert_eq!(format_seconds(2_500_000_000), "2.5");
    }
}
