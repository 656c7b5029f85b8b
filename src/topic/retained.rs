//! The retained-message index: topic levels as edges, one value per topic,
//! matched by a *filter* (the subscription trie's inverse).
//!
//! A SUBSCRIBE used to scan every retained message per wildcard filter: with
//! 100k retained, 1,000 wildcard filters blocked a shard for 2.5 s. Here a
//! filter walks only the branches it can match: a literal level follows one
//! child, `+` every child of one node, `#` one subtree. The walk is an
//! explicit stack (a topic may have thousands of levels), and nodes live in
//! one arena, pruned when their last topic goes.

use std::collections::HashMap;

use super::{TopicFilter, TopicName};

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, u32>,
    value: Option<V>,
    parent: u32,
    /// This node's level, for pruning it from its parent.
    level: Box<str>,
}

/// Retained values by topic name; see the module docs.
#[derive(Debug)]
pub struct RetainedIndex<V> {
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        RetainedIndex {
            nodes: vec![Node {
                children: HashMap::new(),
                value: None,
                parent: NONE,
                level: "".into(),
            }],
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<V> RetainedIndex<V> {
    /// Topics stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every stored value, in no particular order (freed nodes hold none).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.nodes.iter().filter_map(|n| n.value.as_ref())
    }

    fn node(&self, i: u32) -> &Node<V> {
        &self.nodes[i as usize]
    }

    fn find(&self, topic: &TopicName) -> Option<u32> {
        let mut at = 0u32;
        for level in topic.as_str().split('/') {
            at = *self.node(at).children.get(level)?;
        }
        Some(at)
    }

    /// The value stored for `topic`.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        self.find(topic).and_then(|i| self.node(i).value.as_ref())
    }

    /// Stores `value` for `topic`; returns the value it replaces.
    pub fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        let mut at = 0u32;
        for level in topic.as_str().split('/') {
            at = match self.node(at).children.get(level) {
                Some(&c) => c,
                None => {
                    let node = Node {
                        children: HashMap::new(),
                        value: None,
                        parent: at,
                        level: level.into(),
                    };
                    let c = match self.free.pop() {
                        Some(c) => {
                            self.nodes[c as usize] = node;
                            c
                        }
                        None => {
                            self.nodes.push(node);
                            (self.nodes.len() - 1) as u32
                        }
                    };
                    self.nodes[at as usize].children.insert(level.into(), c);
                    c
                }
            };
        }
        let old = self.nodes[at as usize].value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the value of `topic`, pruning nodes left empty.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let mut at = self.find(topic)?;
        let old = self.nodes[at as usize].value.take()?;
        self.len -= 1;
        while at != 0 {
            let n = &self.nodes[at as usize];
            if n.value.is_some() || !n.children.is_empty() {
                break;
            }
            let parent = n.parent;
            let level = std::mem::take(&mut self.nodes[at as usize].level);
            self.nodes[parent as usize].children.remove(&level);
            self.free.push(at);
            at = parent;
        }
        Some(old)
    }

    /// Calls `f` for every value whose topic `filter` matches, and stops
    /// early once `f` returns false. `$`-topics are not matched by a
    /// wildcard in the first level (MQTT 4.7.2).
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&V) -> bool) {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        // (node, index of the filter level to match at its children)
        let mut stack = vec![(0u32, 0usize)];
        while let Some((at, i)) = stack.pop() {
            let node = self.node(at);
            let skip_dollar = at == 0;
            match levels.get(i) {
                None => {
                    if let Some(v) = &node.value {
                        if !f(v) {
                            return;
                        }
                    }
                }
                Some(&"#") => {
                    // `a/#` matches `a` itself too (MQTT 4.7.1.2).
                    if at != 0 {
                        if let Some(v) = &node.value {
                            if !f(v) {
                                return;
                            }
                        }
                    }
                    let mut sub: Vec<u32> = node
                        .children
                        .iter()
                        .filter(|(l, _)| !(skip_dollar && l.starts_with('$')))
                        .map(|(_, &c)| c)
                        .collect();
                    while let Some(c) = sub.pop() {
                        let n = self.node(c);
                        if let Some(v) = &n.value {
                            if !f(v) {
                                return;
                            }
                        }
                        sub.extend(n.children.values().copied());
                    }
                }
                Some(&"+") => {
                    for (l, &c) in &node.children {
                        if !(skip_dollar && l.starts_with('$')) {
                            stack.push((c, i + 1));
                        }
                    }
                }
                Some(level) => {
                    if let Some(&c) = node.children.get(*level) {
                        stack.push((c, i + 1));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MqttStr;

    fn t(s: &str) -> TopicName {
        TopicName::new(MqttStr::try_from(s).expect("str")).expect("topic")
    }

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(MqttStr::try_from(s).expect("str")).expect("filter")
    }

    fn matched(ix: &RetainedIndex<String>, filter: &str) -> Vec<String> {
        let mut got = Vec::new();
        ix.for_each_match(&f(filter), |v| {
            got.push(v.clone());
            true
        });
        got.sort();
        got
    }

    const TOPICS: &[&str] = &[
        "a", "a/b", "a/b/c", "a//c", "/a", "b/x", "$SYS/up", "$SYS", "a/$x", "x/y", "x",
    ];

    fn index() -> RetainedIndex<String> {
        let mut ix = RetainedIndex::default();
        for topic in TOPICS {
            ix.insert(&t(topic), topic.to_string());
        }
        ix
    }

    proptest::proptest! {
        // The index answers exactly what matching every stored topic
        // against the filter answers, `$` topics included:
        // [MQTT-4.7.2-1] a filter starting with a wildcard matches no topic
        // starting with `$` (`#` and `+` against `$SYS` and `$SYS/up`).
        #[test]
        fn agrees_with_the_reference_matcher(
            filter in "(a|b|\\$SYS|\\+|#|x|c|)(/(a|b|c|\\+|#|x|\\$x|)){0,3}"
        ) {
            let Ok(filter) = TopicFilter::new(MqttStr::try_from(filter.as_str()).expect("str")) else {
                return Ok(());
            };
            let ix = index();
            let mut want: Vec<String> = TOPICS
                .iter()
                .filter(|topic| filter.matches(&t(topic)))
                .map(|s| s.to_string())
                .collect();
            want.sort();
            proptest::prop_assert_eq!(matched(&ix, filter.as_str()), want, "{}", filter.as_str());
        }
    }

    #[test]
    fn insert_replace_remove_prune() {
        let mut ix = index();
        assert_eq!(ix.len(), TOPICS.len());
        assert_eq!(ix.insert(&t("a/b"), "new".into()), Some("a/b".into()));
        assert_eq!(ix.get(&t("a/b")).map(String::as_str), Some("new"));
        let nodes = ix.nodes.len() - ix.free.len();
        assert_eq!(ix.remove(&t("a/b/c")), Some("a/b/c".into()));
        assert_eq!(ix.nodes.len() - ix.free.len(), nodes - 1, "leaf pruned");
        assert_eq!(ix.remove(&t("a/b/c")), None);
        for topic in TOPICS {
            ix.remove(&t(topic));
        }
        assert!(ix.is_empty());
        assert_eq!(ix.nodes.len() - ix.free.len(), 1, "only the root is left");
    }

    #[test]
    fn stops_when_asked() {
        let ix = index();
        let mut n = 0;
        ix.for_each_match(&f("#"), |_| {
            n += 1;
            n < 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        let mut ix = RetainedIndex::default();
        let deep = vec!["l"; 20_000].join("/");
        ix.insert(&t(&deep), 1u8);
        let mut n = 0;
        ix.for_each_match(&f("#"), |_| {
            n += 1;
            true
        });
        assert_eq!(n, 1);
        assert_eq!(ix.remove(&t(&deep)), Some(1));
    }
}
