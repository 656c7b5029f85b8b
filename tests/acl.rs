//! Authorisation with a Mosquitto ACL file: what a client may publish,
//! subscribe to and receive, its will, patterns, reloads and restarts.

mod common;

use std::process::{Command, Stdio};

use common::*;
use ringmq::protocol::{
    Packet, ProtocolVersion,
    ProtocolVersion::{V311, V5},
    QoS, ReasonCode,
};

/// mosquitto_passwd 2.0 lines: alice/secret ($7$), bob/hunter2 ($6$).
const PASSWORDS: &str = "alice:$7$101$iU7LTOMYVQA+0yjg$NKSj92gqIqNjK5hbYWpwlDCZp73pjSncBsk6wNdrmUF2jWGsfuhJwJzKul8uQey8femFSy285cvMIJtOTNa4Yw==\n\
bob:$6$gb2J1dRg3c7aDLB5$k03TCcBkaRS4aLhLtscill8s0G8ywvfNQI8sc/uAfPcbe7u730OR47l8gDXN2aCed4bq1iUyusnJyLSTQN+f5g==\n";

const ACL: &str = "\
# anonymous clients may read the news
topic read news/#

user alice
topic read alice/#
topic deny alice/secret/#
topic write bob/inbox

user bob
topic readwrite bob/#
topic write alice/#
topic write news/#

pattern write devices/%c/status
";

fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), text).expect("write");
    f
}

struct Setup {
    b: Broker,
    _files: (tempfile::NamedTempFile, tempfile::NamedTempFile),
}

fn broker() -> Setup {
    let (pw, acl) = (file(PASSWORDS), file(ACL));
    let mut cfg = config(2);
    cfg.password_file = Some(pw.path().to_path_buf());
    cfg.acl_file = Some(acl.path().to_path_buf());
    cfg.allow_anonymous = Some(true);
    Setup {
        b: start_with(cfg),
        _files: (pw, acl),
    }
}

fn login(b: &Broker, v: ProtocolVersion, id: &str, user: &str) -> Raw {
    let mut c = connect_packet(v, id, true);
    let password = if user == "alice" { "secret" } else { "hunter2" };
    c.username = Some(s(user));
    c.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
    let (raw, ack) = Raw::connect_with(b.addr, c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "{user} connects");
    raw
}

fn denied(v: ProtocolVersion) -> ReasonCode {
    if v.is_v5() {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::UNSPECIFIED_ERROR
    }
}

// A filter the ACL does not grant READ on is refused at SUBSCRIBE: v5 0x87,
// 3.1.1 0x80; one the rules grant is granted, in the same SUBSCRIBE.
#[test]
fn subscribe_to_what_the_acl_does_not_grant_is_refused() {
    let st = broker();
    for v in [V311, V5] {
        let mut alice = login(&st.b, v, &format!("acl-sub-{v:?}"), "alice");
        let ack = alice.subscribe(
            1,
            &[
                ("alice/#", QoS::AtLeastOnce),
                ("#", QoS::AtLeastOnce),
                ("bob/#", QoS::AtLeastOnce),
                ("alice/secret/x", QoS::AtLeastOnce),
                // Write-only is no grant to subscribe.
                ("bob/inbox", QoS::AtLeastOnce),
                ("$share/g/alice/+", QoS::AtLeastOnce),
                ("$share/g/bob/+", QoS::AtLeastOnce),
            ],
        );
        let d = denied(v);
        // [v5:MQTT-3.9.3-1] [v3:MQTT-3.9.3-1] one return code per filter, in order.
        assert_eq!(
            ack.reasons,
            vec![ReasonCode(1), d, d, d, d, ReasonCode(1), d],
            "{v:?}"
        );
    }
}

// A PUBLISH to a topic the client may not write is dropped: v5 PUBACK and
// PUBREC carry 0x87, 3.1.1 is acknowledged (it has no negative ack) and
// nobody receives it; what it may write goes through, across shards.
#[test]
fn publish_where_the_acl_does_not_grant_write_is_dropped() {
    let st = broker();
    let bob_id = id_on_shard("acl-bob", 1, 2);
    let mut bob = login(&st.b, V5, &bob_id, "bob");
    assert_eq!(
        bob.subscribe(1, &[("bob/#", QoS::AtLeastOnce)]).reasons,
        vec![ReasonCode(1)]
    );
    for v in [V311, V5] {
        let mut alice = login(
            &st.b,
            v,
            &id_on_shard(&format!("acl-pa{v:?}"), 0, 2),
            "alice",
        );
        for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
            let id = 10 + i as u16;
            alice.publish("bob/notes", b"forbidden", qos, id, false);
            let ack = match alice.recv() {
                Packet::PubAck(a) if qos == QoS::AtLeastOnce => a,
                Packet::PubRec(a) if qos == QoS::ExactlyOnce => a,
                other => panic!("{v:?} {qos:?}: {other:?}"),
            };
            assert_eq!(ack.packet_id, pid(id));
            let want = if v.is_v5() {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            assert_eq!(ack.reason, want, "{v:?} {qos:?}");
            if qos == QoS::ExactlyOnce && !v.is_v5() {
                alice.send(&Packet::PubRel(ringmq::protocol::Ack::new(pid(id))));
                assert!(matches!(alice.recv(), Packet::PubComp(_)));
            }
        }
        alice.publish("bob/inbox", b"allowed", QoS::AtLeastOnce, 20, false);
        match alice.recv() {
            Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::SUCCESS),
            other => panic!("{other:?}"),
        }
        // Only the allowed one arrives.
        let p = bob.recv_publish();
        assert_eq!(p.topic.as_str(), "bob/inbox", "{v:?}");
        assert_eq!(&p.payload[..], b"allowed");
        if let Some(id) = p.packet_id {
            bob.send(&Packet::PubAck(ringmq::protocol::Ack::new(id)));
        }
    }
    bob.expect_silence(std::time::Duration::from_millis(200));
}

// A subscription the ACL grants may still cover topics a deny rule takes
// out: those are not delivered, live or retained, and the rest are.
#[test]
fn deliveries_and_retained_messages_honour_deny_rules() {
    let st = broker();
    let mut bob = login(&st.b, V5, &id_on_shard("acl-dbob", 1, 2), "bob");
    for (t, m) in [("alice/secret/r", "hidden"), ("alice/open/r", "shown")] {
        let mut p = ringmq::protocol::Publish::new(s(t), bytes::Bytes::from(m));
        p.qos = QoS::AtLeastOnce;
        p.retain = true;
        p.packet_id = Some(pid(1));
        bob.send(&Packet::Publish(p));
        assert!(matches!(bob.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
    }
    let mut alice = login(&st.b, V5, &id_on_shard("acl-dalice", 0, 2), "alice");
    assert_eq!(
        alice.subscribe(1, &[("alice/#", QoS::AtLeastOnce)]).reasons,
        vec![ReasonCode(1)]
    );
    let p = alice.recv_publish();
    assert_eq!((p.topic.as_str(), p.retain), ("alice/open/r", true));
    alice.send(&Packet::PubAck(ringmq::protocol::Ack::new(
        p.packet_id.expect("qos 1"),
    )));
    for (i, t) in ["alice/secret/live", "alice/news"].iter().enumerate() {
        bob.publish(t, b"x", QoS::AtLeastOnce, 2 + i as u16, false);
        assert!(matches!(bob.recv(), Packet::PubAck(_)));
    }
    assert_eq!(alice.recv_publish().topic.as_str(), "alice/news");
    alice.expect_silence(std::time::Duration::from_millis(200));
}

// A will the client could not publish itself is refused at CONNECT (v5
// 0x87, 3.1.1 code 5), rather than dropped in silence when it fires; a
// pattern's %c lets each device write its own status and no other's.
#[test]
fn wills_and_patterns() {
    let st = broker();
    for v in [V311, V5] {
        let mut c = connect_packet(v, "dev1", true);
        c.will = Some(ringmq::protocol::LastWill {
            topic: s("devices/dev2/status"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        let (mut raw, ack) = Raw::connect_with(st.b.addr, c.clone());
        assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED, "{v:?}");
        raw.expect_closed();
        c.will.as_mut().expect("will").topic = s("devices/dev1/status");
        let (mut dev, ack) = Raw::connect_with(st.b.addr, c);
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{v:?}");
        dev.publish("devices/dev1/status", b"up", QoS::AtLeastOnce, 1, false);
        dev.publish("devices/dev2/status", b"up", QoS::AtLeastOnce, 2, false);
        let reasons: Vec<ReasonCode> = (0..2)
            .map(|_| match dev.recv() {
                Packet::PubAck(a) => a.reason,
                other => panic!("{other:?}"),
            })
            .collect();
        if v.is_v5() {
            assert_eq!(
                reasons,
                vec![ReasonCode::SUCCESS, ReasonCode::NOT_AUTHORIZED]
            );
        }
    }
}

fn mosquitto(tool: &str) -> Command {
    need(tool);
    Command::new(tool)
}

// Mosquitto's own clients with -u/-P against a password file made by
// Debian's mosquitto_passwd and an ACL file in Mosquitto's syntax: bob's
// message reaches alice's mosquitto_sub; alice's publish to bob's topic is
// refused (mosquitto_pub says "Not authorized"), and her subscription to
// bob's topics is refused.
#[test]
fn mosquitto_clients_under_an_acl() {
    let pw = tempfile::NamedTempFile::new().expect("temp");
    let path = pw.path().to_str().expect("utf-8");
    for (user, password) in [("alice", "secret"), ("bob", "hunter2")] {
        let st = mosquitto("mosquitto_passwd")
            .args(["-b", path, user, password])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(st.success());
    }
    let acl = file(ACL);
    let mut cfg = config(2);
    cfg.password_file = Some(pw.path().to_path_buf());
    cfg.acl_file = Some(acl.path().to_path_buf());
    let b = start_with(cfg);
    let port = b.addr.port().to_string();
    let sub = mosquitto("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5"])
        .args([
            "-u", "alice", "-P", "secret", "-t", "alice/#", "-C", "1", "-W", "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    b.wait_connections(1);
    // The subscriber's SUBACK is not visible from here: publish until its
    // one message arrives (retained, so a publish before the SUBACK counts).
    let st = mosquitto("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-r",
        ])
        .args([
            "-u",
            "bob",
            "-P",
            "hunter2",
            "-t",
            "alice/hello",
            "-m",
            "from bob",
        ])
        .status()
        .expect("mosquitto_pub runs");
    assert!(st.success());
    let out = sub.wait_with_output().expect("mosquitto_sub ends");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from bob");

    let refused = mosquitto("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args(["-u", "alice", "-P", "secret", "-t", "bob/x", "-m", "no"])
        .output()
        .expect("mosquitto_pub runs");
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        said.contains("not authorized"),
        "mosquitto_pub said {said:?}"
    );

    let sub = mosquitto("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-W", "5"])
        .args(["-u", "alice", "-P", "secret", "-t", "bob/#"])
        .output()
        .expect("mosquitto_sub runs");
    let said = String::from_utf8_lossy(&sub.stderr).to_lowercase();
    assert!(said.contains("denied"), "mosquitto_sub said {said:?}");
}

// SIGHUP reads the ACL file again: a subscriber already connected stops
// receiving what the new file denies; a file that does not parse keeps the
// old rules. One shard, so the CONNECT that follows the reload makes the
// shard take the new file before anything else happens there.
#[test]
fn sighup_reloads_the_acl_for_connected_clients() {
    let acl = file("topic readwrite a/#\n");
    let path = acl.path().to_str().expect("utf-8").to_string();
    let b = BinBroker::spawn(&["--acl-file", &path, "--cores", "1"]);
    let (mut sub, _) = Raw::connect(b.addr, V5, "hup-sub", true);
    assert_eq!(
        sub.subscribe(1, &[("a/#", QoS::AtMostOnce)]).reasons,
        vec![ReasonCode(0)]
    );
    let (mut publisher, _) = Raw::connect(b.addr, V5, "hup-pub", true);
    publisher.publish("a/x", b"1", QoS::AtLeastOnce, 1, false);
    assert!(matches!(publisher.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
    assert_eq!(&sub.recv_publish().payload[..], b"1");

    std::fs::write(&path, "topic readwrite a/#\ntopic deny a/x\n").expect("write");
    b.signal(libc::SIGHUP);
    b.wait_log("ACL file read again");
    let (_probe, ack) = Raw::connect(b.addr, V5, "hup-probe", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    publisher.publish("a/x", b"2", QoS::AtLeastOnce, 2, false);
    assert!(
        matches!(publisher.recv(), Packet::PubAck(a) if a.reason == ReasonCode::NOT_AUTHORIZED)
    );
    publisher.publish("a/y", b"3", QoS::AtLeastOnce, 3, false);
    assert!(matches!(publisher.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
    assert_eq!(&sub.recv_publish().payload[..], b"3");

    std::fs::write(&path, "topic nonsense here\nbogus\n").expect("write");
    b.signal(libc::SIGHUP);
    b.wait_log("keeping the old ACL file");
    publisher.publish("a/y", b"4", QoS::AtLeastOnce, 4, false);
    assert!(matches!(publisher.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
    assert_eq!(&sub.recv_publish().payload[..], b"4");
}

// A persistent session keeps its user name through a restart, so an offline
// session's queue still gets only what its user may read: after kill -9 and
// recovery, alice's session receives alice/ok and not alice/secret/x.
#[test]
fn grants_of_an_offline_session_survive_a_restart() {
    let (pw, acl) = (file(PASSWORDS), file(ACL));
    let dir = TempDir::new("acl-restart");
    let args = [
        "--password-file",
        pw.path().to_str().expect("utf-8"),
        "--acl-file",
        acl.path().to_str().expect("utf-8"),
    ];
    let mut b = BinBroker::spawn_in(&dir.0, &args);
    let mut c = connect_packet(V5, "acl-persist", false);
    c.username = Some(s("alice"));
    c.password = Some(bytes::Bytes::from_static(b"secret"));
    c.properties.session_expiry_interval = Some(3600);
    let (mut alice, ack) = Raw::connect_with(b.addr, c.clone());
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        alice.subscribe(1, &[("alice/#", QoS::AtLeastOnce)]).reasons,
        vec![ReasonCode(1)]
    );
    alice.send(&Packet::Disconnect(ringmq::protocol::Disconnect::new(
        ReasonCode::SUCCESS,
    )));
    alice.expect_closed();
    b.kill9();
    let b = BinBroker::spawn_in(&dir.0, &args);
    let mut bob = {
        let mut c = connect_packet(V5, "acl-persist-bob", true);
        c.username = Some(s("bob"));
        c.password = Some(bytes::Bytes::from_static(b"hunter2"));
        let (raw, ack) = Raw::connect_with(b.addr, c);
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        raw
    };
    for (i, t) in ["alice/secret/x", "alice/ok"].iter().enumerate() {
        bob.publish(t, b"m", QoS::AtLeastOnce, 1 + i as u16, false);
        assert!(matches!(bob.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
    }
    let (mut alice, ack) = Raw::connect_with(b.addr, c);
    assert!(ack.session_present);
    assert_eq!(alice.recv_publish().topic.as_str(), "alice/ok");
    alice.expect_silence(std::time::Duration::from_millis(200));
}

// A subscription whose filter the user may read whole skips the check per
// message; when the session is resumed under another user name, whose
// rules deny part of it, every delivery is checked again.
#[test]
fn a_session_resumed_by_another_user_gets_that_users_rules() {
    let pw = file(PASSWORDS);
    let acl = file(
        "user alice\ntopic read shared/#\ntopic write shared/#\n\
         user bob\ntopic read shared/#\ntopic deny shared/secret\n",
    );
    let mut cfg = config(2);
    cfg.password_file = Some(pw.path().to_path_buf());
    cfg.acl_file = Some(acl.path().to_path_buf());
    cfg.allow_anonymous = Some(false);
    let b = start_with(cfg);
    let id = id_on_shard("acl-switch", 1, 2);
    let session = |user: &str, password: &str| {
        let mut c = connect_packet(V5, &id, false);
        c.username = Some(s(user));
        c.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
        c.properties.session_expiry_interval = Some(600);
        Raw::connect_with(b.addr, c)
    };
    let (mut sub, _) = session("alice", "secret");
    assert_eq!(
        sub.subscribe(1, &[("shared/#", QoS::AtMostOnce)]).reasons,
        vec![ReasonCode(0)]
    );
    let mut publisher = login(&b, V5, &id_on_shard("acl-switch-pub", 0, 2), "alice");
    publisher.publish("shared/secret", b"for alice", QoS::AtLeastOnce, 1, false);
    assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    assert_eq!(sub.recv_publish().topic.as_str(), "shared/secret");
    drop(sub);
    b.wait_connections(1);
    let (mut sub, ack) = session("bob", "hunter2");
    assert!(ack.session_present);
    for (i, t) in ["shared/secret", "shared/open"].iter().enumerate() {
        publisher.publish(t, b"m", QoS::AtLeastOnce, 2 + i as u16, false);
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
    }
    assert_eq!(sub.recv_publish().topic.as_str(), "shared/open");
    sub.expect_silence(std::time::Duration::from_millis(200));
}
