//! Interop with independent clients: Debian's mosquitto_pub/mosquitto_sub
//! (MQTT 3.1.1 and 5.0) and Python's paho-mqtt, against an in-process
//! broker with 2 shards. `tools/test.sh` installs both.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

// mosquitto_sub (one version) receives what mosquitto_pub (the other) sends,
// QoS 1 and 2, across shards.
#[test]
fn mosquitto_clients_exchange_messages() {
    need("mosquitto_sub");
    need("mosquitto_pub");
    let b = start(2);
    let port = b.addr.port().to_string();
    for (sub_v, pub_v) in [("mqttv311", "mqttv5"), ("mqttv5", "mqttv311")] {
        let topic = format!("interop/{sub_v}");
        // stdbuf: a piped mosquitto_sub would hold its lines in a stdio buffer.
        let mut sub = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                sub_v,
                "-q",
                "2",
                "-v",
                "-d",
            ])
            .args([
                "-t",
                &format!("{topic}/#"),
                "-C",
                "3",
                "-i",
                &format!("msub-{sub_v}"),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
        // Wait for its SUBACK before publishing.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let line = lines.next().expect("mosquitto_sub output").expect("utf-8");
            if line.contains("SUBACK") {
                break;
            }
            assert!(Instant::now() < deadline, "no SUBACK");
        }
        for (i, q) in ["1", "2", "1"].iter().enumerate() {
            let st = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", pub_v, "-q", q])
                .args(["-t", &format!("{topic}/{i}"), "-m", &format!("hello-{i}")])
                .status()
                .expect("mosquitto_pub runs");
            assert!(st.success());
        }
        let mut got: Vec<String> = lines
            .map_while(Result::ok)
            .filter(|l| l.starts_with(&topic))
            .take(3)
            .collect();
        // Three publishers (three clients, three topics): order is kept per
        // client [v3:MQTT-4.6.0-6], not across them. A publisher owned by the
        // subscriber's shard can overtake one whose message is still on the
        // mesh (seen once in CI: 0, 2, 1).
        got.sort();
        assert_eq!(
            got,
            (0..3)
                .map(|i| format!("{topic}/{i} hello-{i}"))
                .collect::<Vec<_>>()
        );
        let deadline = Instant::now() + TIMEOUT;
        while sub.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "mosquitto_sub did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs a paho-mqtt script against `b` (its port as the one argument) and
/// returns what it printed.
fn paho(script: &str, b: &Broker) -> String {
    python(script, &[&b.addr.port().to_string()])
}

const PAHO: &str = r#"
import sys, time, json, threading
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
out = {}
for name, proto in (("v311", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-sub-" + name, protocol=proto)
    sub.on_message = lambda c, u, m: got.append([m.topic, m.payload.decode(), m.qos, int(m.retain)])
    sub.on_subscribe = lambda c, u, mid, rc, props=None: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pub-" + name, protocol=proto)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pub.publish("paho/" + name + "/ret", "kept", qos=1, retain=True).wait_for_publish(10)
    sub.subscribe("paho/" + name + "/#", qos=2)
    assert subscribed.wait(10), "no SUBACK"
    for i in range(10):
        pub.publish("paho/" + name + "/t", str(i), qos=i % 3).wait_for_publish(10)
    deadline = time.time() + 10
    while len(got) < 11 and time.time() < deadline:
        time.sleep(0.02)
    out[name] = list(got[:11])
    pub.publish("paho/" + name + "/ret", "", qos=1, retain=True).wait_for_publish(10)
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
print(json.dumps(out))
"#;

// paho-mqtt (3.1.1 and 5.0): retained message on subscribe, then QoS 0/1/2 in order.
#[test]
fn paho_clients_exchange_messages() {
    let b = start(2);
    let text = paho(PAHO, &b);
    // paho hands a QoS 2 message to the application on PUBREL, so across QoS
    // levels its callbacks may run out of order: compare per QoS level.
    for name in ["v311", "v5"] {
        let retained = format!("\"{name}\": [[\"paho/{name}/ret\", \"kept\", 1, 1]");
        assert!(text.contains(&retained), "{name}: retained first: {text}");
        let section = text
            .split(&format!("\"{name}\": "))
            .nth(1)
            .expect("section");
        for q in 0..3 {
            let want: Vec<String> = (0..10)
                .filter(|i| i % 3 == q)
                .map(|i| format!("[\"paho/{name}/t\", \"{i}\", {q}, 0]"))
                .collect();
            let mut at = 0;
            for w in &want {
                let found = section[at..].find(w.as_str());
                assert!(
                    found.is_some(),
                    "{name}: {w} missing or out of order: {text}"
                );
                at += found.unwrap_or(0) + w.len();
            }
        }
    }
}

const PAHO_SHARED: &str = r#"
import sys, time, json, threading
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
members = []
for i, proto in enumerate((mqtt.MQTTv5, mqtt.MQTTv311, mqtt.MQTTv5)):
    got, subscribed = [], threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-share-%d" % i, protocol=proto)
    c.on_message = lambda cl, u, m, got=got: got.append(m.payload.decode())
    c.on_subscribe = lambda cl, u, mid, rc, props=None, ev=subscribed: ev.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe("$share/workers/paho/jobs", qos=1)
    assert subscribed.wait(10), "no SUBACK"
    members.append((c, got))
pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-share-pub", protocol=mqtt.MQTTv5)
pub.connect("127.0.0.1", port)
pub.loop_start()
for i in range(300):
    pub.publish("paho/jobs", str(i), qos=1).wait_for_publish(10)
deadline = time.time() + 10
while sum(len(g) for _, g in members) < 300 and time.time() < deadline:
    time.sleep(0.02)
time.sleep(0.3)
print(json.dumps([g for _, g in members]))
for c, _ in members:
    c.disconnect()
    c.loop_stop()
pub.disconnect()
pub.loop_stop()
"#;

// paho-mqtt members (3.1.1 and 5.0) of one shared subscription on both
// shards: each of 300 QoS 1 messages reaches exactly one of them, and each
// gets its share.
#[test]
fn paho_members_share_a_subscription() {
    let b = start(2);
    let text = paho(PAHO_SHARED, &b);
    let members: Vec<Vec<u32>> = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split("], [")
        .map(|m| {
            m.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .filter(|x| !x.is_empty())
                .map(|x| x.trim_matches('"').parse().expect("a number"))
                .collect()
        })
        .collect();
    assert_eq!(members.len(), 3, "{text}");
    let mut all: Vec<u32> = members.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..300).collect::<Vec<_>>(),
        "each exactly once: {text}"
    );
    for m in &members {
        assert!(m.len() >= 60, "every member gets a share: {text}");
    }
}
