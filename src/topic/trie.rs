//! The subscription trie: filter levels as edges, subscribers at the nodes.
//!
//! Nodes live in one arena (`Vec<Node>`) and point at each other by index,
//! so the trie is one allocation per node and cheap to walk. Matching walks
//! the topic's levels once, following the exact child, the `+` child and the
//! `#` child of each node; it calls back for every value and allocates nothing.
//! Recursion depth is bounded by the deepest filter, which insert caps at
//! [`MAX_FILTER_LEVELS`] so that no client can make a match overflow a stack.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{TopicFilter, TopicName};

/// The deepest filter the trie stores.
pub const MAX_FILTER_LEVELS: usize = 256;

/// Why a filter cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrieError {
    /// More levels than [`MAX_FILTER_LEVELS`].
    #[error("topic filter has more than {MAX_FILTER_LEVELS} levels")]
    TooDeep,
}

/// FxHash: level strings are short and the map is not exposed to
/// hash-flooding as a whole (one node's children per lookup), so a fast
/// multiplicative hash beats SipHash here.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Node<V> {
    children: FxMap<Box<str>, u32>,
    plus: u32,
    hash: u32,
    values: Vec<V>,
    parent: u32,
}

impl<V> Node<V> {
    fn new(parent: u32) -> Self {
        Node {
            children: FxMap::default(),
            plus: NONE,
            hash: NONE,
            values: Vec::new(),
            parent,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.children.is_empty() && self.plus == NONE && self.hash == NONE
    }
}

/// Filters and their values (subscribers), matched against topic names.
#[derive(Debug)]
pub struct SubscriptionTrie<V> {
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    len: usize,
}

impl<V> Default for SubscriptionTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> SubscriptionTrie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        SubscriptionTrie {
            nodes: vec![Node::new(NONE)],
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nodes in use (the root included), for tests and metrics.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Node slots allocated, used or free.
    pub fn node_capacity(&self) -> usize {
        self.nodes.len()
    }

    fn alloc(&mut self, parent: u32) -> u32 {
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = Node::new(parent);
            i
        } else {
            self.nodes.push(Node::new(parent));
            (self.nodes.len() - 1) as u32
        }
    }

    fn find(&self, filter: &TopicFilter) -> Option<u32> {
        let mut node = 0u32;
        for level in filter.as_str().split('/') {
            let n = &self.nodes[node as usize];
            node = match level {
                "+" => n.plus,
                "#" => n.hash,
                _ => n.children.get(level).copied().unwrap_or(NONE),
            };
            if node == NONE {
                return None;
            }
        }
        Some(node)
    }

    /// The values stored under exactly `filter`, to change them in place.
    pub fn get_mut(&mut self, filter: &TopicFilter) -> Option<&mut Vec<V>> {
        let node = self.find(filter)?;
        Some(&mut self.nodes[node as usize].values)
    }

    /// Adds `value` under `filter`.
    ///
    /// # Errors
    /// [`TrieError::TooDeep`] for a filter of more than [`MAX_FILTER_LEVELS`] levels.
    pub fn insert(&mut self, filter: &TopicFilter, value: V) -> Result<(), TrieError> {
        if filter.as_str().split('/').nth(MAX_FILTER_LEVELS).is_some() {
            return Err(TrieError::TooDeep);
        }
        let mut node = 0u32;
        for level in filter.as_str().split('/') {
            let existing = {
                let n = &self.nodes[node as usize];
                match level {
                    "+" => n.plus,
                    "#" => n.hash,
                    _ => n.children.get(level).copied().unwrap_or(NONE),
                }
            };
            node = if existing != NONE {
                existing
            } else {
                let child = self.alloc(node);
                let n = &mut self.nodes[node as usize];
                match level {
                    "+" => n.plus = child,
                    "#" => n.hash = child,
                    _ => {
                        n.children.insert(level.into(), child);
                    }
                }
                child
            };
        }
        self.nodes[node as usize].values.push(value);
        self.len += 1;
        Ok(())
    }

    /// Removes the first value under `filter` for which `pred` holds, and
    /// prunes nodes left empty.
    pub fn remove(&mut self, filter: &TopicFilter, pred: impl FnMut(&V) -> bool) -> Option<V> {
        let node = self.find(filter)?;
        let values = &mut self.nodes[node as usize].values;
        let at = values.iter().position(pred)?;
        let v = values.swap_remove(at);
        self.len -= 1;
        self.prune(node, filter);
        Some(v)
    }

    /// Removes every value under `filter` for which `pred` holds.
    pub fn retain(&mut self, filter: &TopicFilter, mut pred: impl FnMut(&V) -> bool) {
        let Some(node) = self.find(filter) else {
            return;
        };
        let values = &mut self.nodes[node as usize].values;
        let before = values.len();
        values.retain(|v| pred(v));
        self.len -= before - values.len();
        self.prune(node, filter);
    }

    fn prune(&mut self, mut node: u32, filter: &TopicFilter) {
        let mut levels: Vec<&str> = filter.as_str().split('/').collect();
        while node != 0 && self.nodes[node as usize].is_empty() {
            let parent = self.nodes[node as usize].parent;
            let level = levels.pop().unwrap_or_default();
            let p = &mut self.nodes[parent as usize];
            match level {
                "+" => p.plus = NONE,
                "#" => p.hash = NONE,
                _ => {
                    p.children.remove(level);
                }
            }
            self.free.push(node);
            node = parent;
        }
    }

    /// Calls `f` for every value whose filter matches `topic`.
    pub fn match_topic<'a>(&'a self, topic: &TopicName, mut f: impl FnMut(&'a V)) {
        let t = topic.as_str();
        self.walk(0, Some(t), !t.starts_with('$'), &mut f);
    }

    /// `wild` is false only at the root of a `$`-topic ([MQTT-4.7.2-1]).
    fn walk<'a>(&'a self, node: u32, rest: Option<&str>, wild: bool, f: &mut impl FnMut(&'a V)) {
        let n = &self.nodes[node as usize];
        if wild && n.hash != NONE {
            self.nodes[n.hash as usize].values.iter().for_each(&mut *f);
        }
        let Some(rest) = rest else {
            n.values.iter().for_each(f);
            return;
        };
        let (level, tail) = match rest.split_once('/') {
            Some((l, t)) => (l, Some(t)),
            None => (rest, None),
        };
        if let Some(&c) = n.children.get(level) {
            self.walk(c, tail, true, f);
        }
        if wild && n.plus != NONE {
            self.walk(n.plus, tail, true, f);
        }
    }
}
