//! The pending queue behind a session's inflight window, with O(1) overflow.
//!
//! A full queue drops QoS 0 first, then the oldest message. Finding the
//! oldest QoS 0 by scanning made every publish into a full 100k queue scan
//! it (a shard then spent seconds per burst); here an index of the QoS 0
//! entries' sequence numbers names the victim at once, and a removal from
//! the middle leaves a hole that [`Pending::compact`] squeezes out once holes
//! outnumber live entries, so every operation is O(1) amortized.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::QoS;

use super::chunked::Chunked;
use super::Delivery;

/// What the pending queue holds: a QoS and the bytes it accounts for.
pub(crate) trait Queued {
    fn qos(&self) -> QoS;
    fn held_bytes(&self) -> usize;
}

impl Queued for Delivery {
    fn qos(&self) -> QoS {
        self.qos
    }
    fn held_bytes(&self) -> usize {
        Delivery::held_bytes(self)
    }
}

/// Holes allowed before a compaction, beyond one per live entry.
const SLACK_SLOTS: usize = 1024;

/// FIFO of deliveries; see the module docs.
#[derive(Debug)]
pub(crate) struct Pending<E = Delivery> {
    /// Entries in arrival order; `None` is a dropped entry's hole. Never
    /// starts with a hole.
    slots: Chunked<Option<E>>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sequence numbers of the live QoS 0 entries, oldest first.
    qos0: VecDeque<u64>,
    live: usize,
    bytes: usize,
    /// Arrival times for the inflight TTL, oldest first: `(seq, t)` says
    /// entry `seq` arrived at `t`, and those after it (to the next mark)
    /// within one spacing of it (see [`Pending::note_arrival`]). One per
    /// TTL/16 at most, so a few dozen per queue.
    marks: VecDeque<(u64, Instant)>,
}

impl<E> Default for Pending<E> {
    fn default() -> Self {
        Pending {
            slots: Chunked::default(),
            head: 0,
            qos0: VecDeque::new(),
            live: 0,
            bytes: 0,
            marks: VecDeque::new(),
        }
    }
}

impl<E: Queued> Pending<E> {
    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Slots, holes included: what [`Pending::find`] indexes.
    pub(crate) fn slots_len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held by the live entries ([`Delivery::held_bytes`]).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn push_back(&mut self, d: E) {
        let seq = self.head + self.slots.len() as u64;
        if d.qos() == QoS::AtMostOnce {
            self.qos0.push_back(seq);
        }
        self.live += 1;
        self.bytes += d.held_bytes();
        self.slots.push_back(Some(d));
    }

    /// The entry just pushed arrived at `now`. Marked once per `every`: the
    /// entries from one mark to the next then all arrived within `every` of
    /// the first mark's time.
    pub(crate) fn note_arrival(&mut self, now: Instant, every: Duration) {
        let seq = self.head + self.slots.len() as u64 - 1;
        if self
            .marks
            .back()
            .is_none_or(|&(_, t)| now.saturating_duration_since(t) >= every)
        {
            self.marks.push_back((seq, now));
        }
    }

    /// Entries queued before any mark (read back from the log after a
    /// restart) count as arriving at `now`: later than they did, so none
    /// goes early.
    pub(crate) fn mark_unmarked(&mut self, now: Instant) {
        if !self.is_empty() && self.marks.front().is_none_or(|&(s, _)| s > self.head) {
            self.marks.push_front((self.head, now));
        }
    }

    /// Removes the front entry if it surely arrived `ttl` or more before
    /// `now`: by the last mark at or before it, plus `every` (the marks'
    /// spacing). Entries before the first mark arrived before it, so that
    /// mark bounds them too.
    pub(crate) fn pop_older_than(
        &mut self,
        now: Instant,
        ttl: Duration,
        every: Duration,
    ) -> Option<E> {
        if self.is_empty() {
            return None;
        }
        while self.marks.len() >= 2 && self.marks[1].0 <= self.head {
            self.marks.pop_front();
        }
        let &(_, t) = self.marks.front()?;
        if now.saturating_duration_since(t + every) < ttl {
            return None;
        }
        self.pop_front()
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&E)) {
        self.slots.iter().flatten().for_each(&mut f);
    }

    /// Every live entry, to change in place (not its QoS or size).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut E)) {
        self.slots.iter_mut().flatten().for_each(&mut f);
    }

    pub(crate) fn front(&self) -> Option<&E> {
        self.slots.front().and_then(Option::as_ref)
    }

    /// The index of the live entry whose key is `key`, keys rising with
    /// the index (a binary search that steps over holes).
    pub(crate) fn find(
        &self,
        key: u64,
        key_of: impl Fn(&E) -> Option<u64>,
    ) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.slots.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first live entry at or after `mid`, before `hi`.
            let Some((at, k)) = (mid..hi).find_map(|i| {
                let e = self.slots.get(i)?.as_ref()?;
                Some((i, key_of(e)?))
            }) else {
                hi = mid;
                continue;
            };
            match k.cmp(&key) {
                std::cmp::Ordering::Equal => return Ok(at),
                std::cmp::Ordering::Less => lo = at + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Err(lo)
    }

    /// Puts `d` before index `at`, which must keep the queue's order: for a
    /// record replayed out of order; copies the queue.
    pub(crate) fn insert(&mut self, at: usize, d: E) {
        self.live += 1;
        self.bytes += d.held_bytes();
        self.slots.insert(at, Some(d));
        // Every entry after `at` moved up a place.
        self.index_qos0();
    }

    /// Puts `d` in place of the live entry at `at`, of the same QoS.
    pub(crate) fn replace(&mut self, at: usize, d: E) {
        if let Some(Some(old)) = self.slots.get_mut(at) {
            debug_assert_eq!(old.qos(), d.qos());
            self.bytes = self.bytes - old.held_bytes() + d.held_bytes();
            *old = d;
        }
    }

    /// Removes the live entry at index `at`, leaving a hole.
    pub(crate) fn remove(&mut self, at: usize) -> Option<E> {
        if at == 0 {
            return self.pop_front();
        }
        let d = self.slots.get_mut(at)?.take()?;
        let seq = self.head + at as u64;
        if d.qos() == QoS::AtMostOnce {
            if let Ok(i) = self.qos0.binary_search(&seq) {
                self.qos0.remove(i);
            }
        }
        self.taken(&d);
        self.maybe_compact();
        Some(d)
    }

    pub(crate) fn pop_front(&mut self) -> Option<E> {
        let d = self.slots.pop_front()??;
        if self.qos0.front() == Some(&self.head) {
            self.qos0.pop_front();
        }
        self.head += 1;
        self.taken(&d);
        self.skip_holes();
        Some(d)
    }

    /// Removes the overflow victim: the oldest QoS 0 entry, else the oldest.
    pub(crate) fn drop_one(&mut self) -> Option<E> {
        let Some(seq) = self.qos0.front().copied() else {
            return self.pop_front();
        };
        if seq == self.head {
            return self.pop_front();
        }
        self.qos0.pop_front();
        let d = self
            .slots
            .get_mut((seq - self.head) as usize)
            .and_then(Option::take)
            .expect("invariant: the QoS 0 index names live entries");
        self.taken(&d);
        self.maybe_compact();
        Some(d)
    }

    fn maybe_compact(&mut self) {
        if self.slots.len() > 2 * self.live + SLACK_SLOTS {
            self.compact();
        }
    }

    fn taken(&mut self, d: &E) {
        self.live -= 1;
        self.bytes -= d.held_bytes();
    }

    fn skip_holes(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.head += 1;
        }
    }

    /// Squeezes the holes out and renumbers from `head`; each arrival bound
    /// moves with the entries it counts.
    fn compact(&mut self) {
        if !self.marks.is_empty() {
            let mut live = 0u64;
            let mut m = 0;
            for (i, slot) in self.slots.iter().enumerate() {
                let seq = self.head + i as u64;
                while m < self.marks.len() && self.marks[m].0 == seq {
                    self.marks[m].0 = self.head + live;
                    m += 1;
                }
                live += u64::from(slot.is_some());
            }
            for mark in self.marks.iter_mut().skip(m) {
                mark.0 = self.head + live;
            }
        }
        self.slots.retain(Option::is_some);
        self.index_qos0();
    }

    /// Rebuilds the QoS 0 index from the slots.
    fn index_qos0(&mut self) {
        self.qos0.clear();
        for (i, d) in self.slots.iter().enumerate() {
            if d.as_ref().is_some_and(|d| d.qos() == QoS::AtMostOnce) {
                self.qos0.push_back(self.head + i as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue entry: its QoS and when it arrived (seconds after t0).
    #[derive(Debug, PartialEq)]
    struct E(QoS, u64);

    impl Queued for E {
        fn qos(&self) -> QoS {
            self.0
        }
        fn held_bytes(&self) -> usize {
            1
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // The inflight TTL's arrival marks: an entry goes once it surely arrived
    // a TTL ago (its mark's time plus the spacing), never before, also after
    // a compaction renumbered the queue under the marks.
    #[test]
    fn entries_go_a_ttl_after_they_arrived_and_never_before() {
        let t0 = Instant::now();
        let (ttl, every) = (secs(16), secs(1));
        let mut p = Pending::default();
        // Old QoS 1 entries, then many QoS 0 ones that are dropped from the
        // middle (compacting the queue), then later QoS 1 entries.
        for i in 0..3 {
            p.push_back(E(QoS::AtLeastOnce, i));
            p.note_arrival(t0 + secs(i), every);
        }
        for _ in 0..3000 {
            p.push_back(E(QoS::AtMostOnce, 5));
            p.note_arrival(t0 + secs(5), every);
        }
        for i in 10..13 {
            p.push_back(E(QoS::AtLeastOnce, i));
            p.note_arrival(t0 + secs(i), every);
        }
        // Drop every QoS 0 entry: they sit behind the old ones, so each
        // leaves a hole, and the holes force compactions.
        for _ in 0..3000 {
            assert_eq!(p.drop_one().map(|e| e.0), Some(QoS::AtMostOnce));
        }
        assert_eq!(p.len(), 6);
        let mut gone = Vec::new();
        for now in 0..40 {
            while let Some(e) = p.pop_older_than(t0 + secs(now), ttl, every) {
                assert!(now >= e.1 + 16, "entry of {}s dropped at {now}s", e.1);
                assert!(now <= e.1 + 17, "entry of {}s kept until {now}s", e.1);
                gone.push(e.1);
            }
        }
        assert_eq!(gone, vec![0, 1, 2, 10, 11, 12]);
    }

    // Entries read back from the log after a restart have no mark: they
    // count from the restart (or from the first mark after them).
    #[test]
    fn unmarked_entries_count_from_the_first_mark() {
        let t0 = Instant::now();
        let (ttl, every) = (secs(16), secs(1));
        let mut p = Pending::default();
        p.push_back(E(QoS::AtLeastOnce, 0));
        assert_eq!(p.pop_older_than(t0 + secs(100), ttl, every), None);
        p.mark_unmarked(t0 + secs(50));
        p.push_back(E(QoS::AtLeastOnce, 60));
        p.note_arrival(t0 + secs(60), every);
        assert_eq!(p.pop_older_than(t0 + secs(66), ttl, every), None);
        assert_eq!(
            p.pop_older_than(t0 + secs(67), ttl, every),
            Some(E(QoS::AtLeastOnce, 0))
        );
        assert_eq!(p.pop_older_than(t0 + secs(76), ttl, every), None);
        assert_eq!(
            p.pop_older_than(t0 + secs(77), ttl, every),
            Some(E(QoS::AtLeastOnce, 60))
        );
    }
}
