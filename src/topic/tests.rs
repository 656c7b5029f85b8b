//! Topic validation and matching, with the spec's own examples, and the trie
//! checked against the reference matcher on random filters and topics.

use proptest::prelude::*;

use super::*;

fn ms(s: &str) -> MqttStr {
    MqttStr::try_from(s).expect("valid string")
}

fn name(s: &str) -> TopicName {
    TopicName::new(ms(s)).expect("valid name")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(ms(s)).expect("valid filter")
}

// [MQTT-4.7.1-1] [v5:MQTT-4.7.1-2] [v3:MQTT-4.7.1-2] [v3:MQTT-4.7.1-3]
// wildcard placement, with the spec's examples.
#[test]
fn filter_validation() {
    for ok in [
        "#",
        "+",
        "sport/#",
        "sport/tennis/+",
        "+/tennis/#",
        "sport/+/player1",
        "/+",
        "+/+",
        "a//b",
        "/",
    ] {
        assert!(TopicFilter::new(ms(ok)).is_ok(), "{ok}");
    }
    for (bad, e) in [
        ("sport/tennis#", TopicError::MisplacedMultiLevel),
        ("sport/tennis/#/ranking", TopicError::MisplacedMultiLevel),
        ("#/a", TopicError::MisplacedMultiLevel),
        ("sport+", TopicError::MisplacedSingleLevel),
        ("a/b+/c", TopicError::MisplacedSingleLevel),
        ("", TopicError::Empty),
    ] {
        assert_eq!(TopicFilter::new(ms(bad)), Err(e), "{bad}");
    }
}

// [v5:MQTT-4.7.0-1] [v3:MQTT-4.7.1-1] wildcards are not allowed in topic names;
// [MQTT-4.7.3-1] names and filters are at least one character long.
#[test]
fn name_validation() {
    assert_eq!(TopicName::new(ms("a/+")), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new(ms("#")), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new(ms("")), Err(TopicError::Empty));
    assert!(TopicName::new(ms("/")).is_ok());
    assert!(TopicName::new(ms(" ")).is_ok());
}

// [MQTT-4.7.3-2] no U+0000 (refused by the string type itself);
// [MQTT-4.7.3-3] at most 65,535 bytes.
#[test]
fn null_and_length_are_refused_by_the_string() {
    assert!(MqttStr::try_from("a\0b").is_err());
    assert!(MqttStr::try_from("x".repeat(65_536)).is_err());
    assert!(TopicName::new(ms(&"x".repeat(65_535))).is_ok());
}

/// (filter, topic, matches) from MQTT 4.7.1 and 4.7.2.
const CASES: &[(&str, &str, bool)] = &[
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/#", "sport", true),
    ("#", "sport/tennis", true),
    ("#", "/", true),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player2", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+", "/finance", false),
    ("+", "finance", true),
    ("a//b", "a//b", true),
    ("a/+/b", "a//b", true),
    ("Sport", "sport", false),
    // [MQTT-4.7.2-1] $-topics are not matched by leading wildcards.
    ("#", "$SYS/broker", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", true),
    // [MQTT-4.7.3-4] no normalisation: trailing spaces and case are significant.
    ("a ", "a", false),
    ("caf\u{e9}", "cafe\u{301}", false),
];

#[test]
fn spec_matching_examples() {
    for &(f, t, want) in CASES {
        assert_eq!(filter(f).matches(&name(t)), want, "{f} vs {t}");
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter(f), ()).expect("inserts");
        let mut n = 0;
        trie.match_topic(&name(t), |_| n += 1);
        assert_eq!(n == 1, want, "trie: {f} vs {t}");
    }
}

// [v5:MQTT-4.8.2-1] [v5:MQTT-4.8.2-2] $share/{ShareName}/{filter}.
#[test]
fn shared_subscriptions() {
    let s = SubscriptionFilter::parse(&ms("$share/g1/a/+/c")).expect("valid");
    assert_eq!(s.share_group.as_deref(), Some("g1"));
    assert_eq!(s.filter.as_str(), "a/+/c");
    let plain = SubscriptionFilter::parse(&ms("$shared/x")).expect("not a share");
    assert_eq!(plain.share_group, None);
    for bad in [
        "$share/",
        "$share//a",
        "$share/g",
        "$share/g/",
        "$share/g+/a",
        "$share/#/a",
    ] {
        assert!(SubscriptionFilter::parse(&ms(bad)).is_err(), "{bad}");
    }
    assert_eq!(
        SubscriptionFilter::parse(&ms("$share/g/a#")),
        Err(TopicError::MisplacedMultiLevel)
    );
}

#[test]
fn trie_insert_remove_prunes() {
    let mut trie = SubscriptionTrie::new();
    trie.insert(&filter("a/+/c"), 1).expect("ok");
    trie.insert(&filter("a/+/c"), 2).expect("ok");
    trie.insert(&filter("a/#"), 3).expect("ok");
    assert_eq!(trie.len(), 3);
    let mut got = Vec::new();
    trie.match_topic(&name("a/b/c"), |v| got.push(*v));
    got.sort_unstable();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(trie.remove(&filter("a/+/c"), |v| *v == 1), Some(1));
    assert_eq!(trie.remove(&filter("a/+/c"), |v| *v == 1), None);
    assert_eq!(trie.remove(&filter("a/+/x"), |_| true), None);
    trie.retain(&filter("a/+/c"), |_| false);
    assert_eq!(trie.remove(&filter("a/#"), |_| true), Some(3));
    assert!(trie.is_empty());
    // Everything was pruned back to the root, and freed nodes are reused.
    assert_eq!(trie.node_count(), 1);
    trie.insert(&filter("x/y"), 9).expect("ok");
    assert_eq!(trie.node_capacity(), 5);
    if let Some(v) = trie.get_mut(&filter("x/y")) {
        v[0] = 10;
    }
    let mut got = Vec::new();
    trie.match_topic(&name("x/y"), |v| got.push(*v));
    assert_eq!(got, vec![10]);
}

#[test]
fn trie_refuses_filters_deeper_than_the_cap() {
    let mut trie = SubscriptionTrie::new();
    let deep = vec!["a"; MAX_FILTER_LEVELS + 1].join("/");
    assert_eq!(trie.insert(&filter(&deep), ()), Err(TrieError::TooDeep));
    let ok = vec!["a"; MAX_FILTER_LEVELS].join("/");
    assert!(trie.insert(&filter(&ok), ()).is_ok());
    // A topic far deeper than any filter still matches without recursion trouble.
    let topic = vec!["a"; 20_000].join("/");
    trie.insert(&filter("#"), ()).expect("ok");
    let mut n = 0;
    trie.match_topic(&name(&topic), |_| n += 1);
    assert_eq!(n, 1);
}

fn arb_level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("".to_string()),
        Just("$x".to_string())
    ]
}

fn arb_filter() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof![arb_level(), Just("+".to_string())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".into());
            }
            levels.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}

fn arb_topic() -> impl Strategy<Value = String> {
    proptest::collection::vec(arb_level(), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

proptest! {
    #[test]
    fn trie_agrees_with_naive_matcher(
        filters in proptest::collection::vec(arb_filter(), 1..40),
        topics in proptest::collection::vec(arb_topic(), 1..20),
        removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut live: Vec<(String, usize)> = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(&filter(f), i).expect("shallow");
            live.push((f.clone(), i));
        }
        for r in removals {
            if live.is_empty() { break; }
            let (f, i) = live.remove(r.index(live.len()));
            prop_assert_eq!(trie.remove(&filter(&f), |v| *v == i), Some(i));
        }
        for t in &topics {
            let mut got = Vec::new();
            trie.match_topic(&name(t), |v| got.push(*v));
            got.sort_unstable();
            let mut want: Vec<usize> =
                live.iter().filter(|(f, _)| matches(f, t)).map(|(_, i)| *i).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want, "topic {}", t);
        }
    }
}
