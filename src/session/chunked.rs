//! A deque stored as fixed-size chunks, for queues of millions.
//!
//! A `VecDeque` doubles: a queue of 10 M entries holds 16 M slots, and
//! while it grows the old and the new buffer live together (2.4× the
//! entries). An offline session may hold millions of queued references, so
//! its queue grows a chunk at a time: at most one chunk is partly empty at
//! each end, and nothing is ever copied to grow.

use std::collections::VecDeque;

/// Entries per chunk: a power of two, so the first chunk's own doubling
/// stops exactly here.
const CHUNK: usize = 1024;

/// A FIFO with indexed access; only the front and back change.
///
/// Invariant: every chunk but the first and the last holds exactly
/// [`CHUNK`] entries, and no chunk is empty.
#[derive(Debug)]
pub(crate) struct Chunked<T> {
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push_back(&mut self, v: T) {
        match self.chunks.back_mut() {
            Some(c) if c.len() < CHUNK => c.push_back(v),
            last => {
                // The first chunk grows as a VecDeque does (a short queue
                // stays small); later ones are allocated whole, once.
                let mut c = if last.is_none() {
                    VecDeque::new()
                } else {
                    VecDeque::with_capacity(CHUNK)
                };
                c.push_back(v);
                self.chunks.push_back(c);
            }
        }
        self.len += 1;
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let c = self.chunks.front_mut()?;
        let v = c.pop_front()?;
        if c.is_empty() {
            self.chunks.pop_front();
        }
        self.len -= 1;
        Some(v)
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        let first = self.chunks.front()?.len();
        if i < first {
            return Some((0, i));
        }
        let j = i - first;
        Some((1 + j / CHUNK, j % CHUNK))
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (c, k) = self.locate(i)?;
        self.chunks.get(c)?.get(k)
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (c, k) = self.locate(i)?;
        self.chunks.get_mut(c)?.get_mut(k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flatten()
    }

    /// Keeps the entries `keep` accepts, in order, chunk by chunk: the
    /// memory in use never exceeds what it was by more than one chunk.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut out = Chunked::default();
        while let Some(v) = self.pop_front() {
            if keep(&v) {
                out.push_back(v);
            }
        }
        *self = out;
    }

    /// Puts `v` before index `i` (`len` appends). Copies every entry after
    /// it: for the rare record that arrives out of order.
    pub(crate) fn insert(&mut self, i: usize, v: T) {
        let mut out = Chunked::default();
        let mut v = Some(v);
        let mut at = 0;
        while let Some(x) = self.pop_front() {
            if at == i {
                out.push_back(v.take().expect("once"));
            }
            out.push_back(x);
            at += 1;
        }
        if let Some(v) = v {
            out.push_back(v);
        }
        *self = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_order_survive_pops_across_chunks() {
        let mut c = Chunked::default();
        for i in 0..5000u32 {
            c.push_back(i);
        }
        for i in 0..1500u32 {
            assert_eq!(c.pop_front(), Some(i));
        }
        assert_eq!(c.len(), 3500);
        for i in 0..3500usize {
            assert_eq!(c.get(i), Some(&(1500 + i as u32)));
        }
        assert_eq!(c.get(3500), None);
        c.insert(10, 7);
        assert_eq!(c.get(10), Some(&7));
        assert_eq!(c.get(11), Some(&1510));
        c.retain(|&v| v % 2 == 0);
        assert!(c.iter().all(|v| v % 2 == 0));
        assert_eq!(c.front(), Some(&1500));
        while c.pop_front().is_some() {}
        assert_eq!(c.len(), 0);
        assert!(c.chunks.is_empty());
    }

    #[test]
    fn a_long_queue_holds_about_one_slot_per_entry() {
        let mut c = Chunked::default();
        for i in 0..100_000u64 {
            c.push_back(i);
        }
        let slots: usize = c.chunks.iter().map(VecDeque::capacity).sum();
        assert!(slots < 100_000 + 2 * CHUNK, "{slots} slots");
    }
}
