//! Per-publisher sequence tracking and the report it feeds: loss,
//! duplicates and reordering, counted exactly.

use std::collections::HashMap;

/// What one subscriber saw from one publisher.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: Vec<u64>,
    /// Per sequence number, arrivals after the first (saturating): filled
    /// only once a repeat arrives, so that copies a subscriber may get for
    /// overlapping filters can be told from duplicates.
    repeats: Vec<u8>,
    max: Option<u64>,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Arrivals of a sequence number already seen.
    pub duplicates: u64,
    /// First arrivals below the highest sequence seen before them.
    pub reordered: u64,
}

impl SeqTracker {
    /// Records one arrival of `seq`; true for its first.
    pub fn record(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.seen[word] & mask != 0 {
            self.duplicates += 1;
            let i = seq as usize;
            if self.repeats.len() <= i {
                self.repeats.resize(i + 1, 0);
            }
            self.repeats[i] = self.repeats[i].saturating_add(1);
            return false;
        }
        self.seen[word] |= mask;
        self.unique += 1;
        match self.max {
            Some(m) if seq < m => self.reordered += 1,
            _ => self.max = Some(seq),
        }
        true
    }

    /// Repeat arrivals split into those `allowed` per message may explain
    /// (one copy per further matching filter) and the duplicates beyond.
    pub fn repeats_within(&self, allowed: u64) -> (u64, u64) {
        if allowed == 0 {
            return (0, self.duplicates);
        }
        let allowed = u8::try_from(allowed).unwrap_or(u8::MAX);
        let overlap: u64 = self
            .repeats
            .iter()
            .map(|&r| u64::from(r.min(allowed)))
            .sum();
        (overlap, self.duplicates - overlap)
    }

    /// Distinct sequence numbers below `n` that were received.
    pub fn unique_below(&self, n: u64) -> u64 {
        let full = (n / 64) as usize;
        let mut c: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.seen.get(full) {
            let rest = n % 64;
            if rest > 0 {
                c += u64::from((w & ((1u64 << rest) - 1)).count_ones());
            }
        }
        c
    }
}

/// One subscriber's trackers, by publisher id.
pub type SubscriberLog = HashMap<u32, SeqTracker>;

impl SeqTracker {
    /// Records every sequence number `other` saw (a copy more for each of
    /// its own duplicates); its reordering carries over as counted there,
    /// since members of a shared group each see an interleaved part.
    fn absorb(&mut self, other: &SeqTracker) {
        for (w, &word) in other.seen.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let before = self.reordered;
                self.record(w as u64 * 64 + b);
                self.reordered = before;
            }
        }
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
    }
}

/// The log of a shared subscription's group: what its members saw, as if
/// one subscriber had. A message two members got is a duplicate.
pub fn merge(members: &[SubscriberLog]) -> SubscriberLog {
    let mut group = SubscriberLog::new();
    for log in members {
        for (p, t) in log {
            group.entry(*p).or_default().absorb(t);
        }
    }
    group
}

/// Loss, duplicates and reordering over every (subscriber, publisher) pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Integrity {
    /// Messages every subscriber should have received.
    pub expected: u64,
    /// Of those, how many never arrived.
    pub lost: u64,
    /// Extra copies beyond what overlapping filters allow.
    pub duplicates: u64,
    /// Extra copies of a message for a subscriber whose filters it matched
    /// more than once (at most one per further matching filter).
    pub overlap: u64,
    /// Out-of-order first arrivals.
    pub reordered: u64,
}

/// Compares what subscribers saw with what they should have seen.
/// `expected_from(sub, pub)` is how many of that publisher's messages
/// (sequence 0..n) the subscriber must get (the acknowledged ones for QoS
/// 1/2, the sent ones for QoS 0, zero if the topic does not match), and how
/// many of its filters match them: a copy per further match is allowed.
pub fn integrity(
    logs: &[SubscriberLog],
    publishers: usize,
    expected_from: impl Fn(usize, usize) -> (u64, u64),
) -> Integrity {
    let mut r = Integrity::default();
    for (s, log) in logs.iter().enumerate() {
        for p in 0..publishers {
            let (want, copies) = expected_from(s, p);
            r.expected += want;
            if let Some(t) = log.get(&(p as u32)) {
                r.lost += want - t.unique_below(want).min(want);
                let (overlap, dups) = t.repeats_within(copies.saturating_sub(1));
                r.overlap += overlap;
                r.duplicates += dups;
                r.reordered += t.reordered;
            } else {
                r.lost += want;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 2, 2, 4, 100, 99] {
            t.record(s);
        }
        assert_eq!(t.unique, 7);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 2);
        assert_eq!(t.unique_below(5), 5);
        assert_eq!(t.unique_below(101), 7);
        assert_eq!(t.unique_below(64), 5);
    }

    // A shared group: members that split the stream lose nothing and
    // duplicate nothing together; one message to two members is a duplicate,
    // one to none is lost.
    #[test]
    fn a_shared_group_counts_as_one_subscriber() {
        let mut a = SubscriberLog::new();
        let mut b = SubscriberLog::new();
        for s in 0..100u64 {
            if s % 2 == 0 {
                a.entry(0).or_default().record(s);
            } else if s != 51 {
                b.entry(0).or_default().record(s);
            }
        }
        b.entry(0).or_default().record(10); // also went to `a`
        let group = merge(&[a, b]);
        let r = integrity(&[group], 1, |_, _| (100, 1));
        assert_eq!(
            (r.expected, r.lost, r.duplicates, r.reordered),
            (100, 1, 1, 1)
        );
    }

    #[test]
    fn loss_counts_missing_expected_messages() {
        let mut log = SubscriberLog::new();
        let t = log.entry(0).or_default();
        for s in (0..100).filter(|s| s % 10 != 0) {
            t.record(s);
        }
        let r = integrity(&[log], 2, |_, p| (if p == 0 { 100 } else { 5 }, 1));
        assert_eq!(r.expected, 105);
        assert_eq!(r.lost, 10 + 5);
    }

    // Two matching filters: a second copy of each message is allowed, a
    // third is a duplicate; a subscriber with one matching filter gets no
    // such allowance.
    #[test]
    fn overlapping_filters_allow_a_copy_per_match() {
        let mut log = SubscriberLog::new();
        let t = log.entry(0).or_default();
        for s in 0..10 {
            t.record(s);
            t.record(s);
        }
        t.record(3);
        let two = integrity(&[log.clone()], 1, |_, _| (10, 2));
        assert_eq!((two.lost, two.overlap, two.duplicates), (0, 10, 1));
        let one = integrity(&[log], 1, |_, _| (10, 1));
        assert_eq!((one.lost, one.overlap, one.duplicates), (0, 0, 11));
    }
}
