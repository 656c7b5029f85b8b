//! Authentication with a Mosquitto password file, and who is anonymous.

mod common;

use common::*;
use ringmq::protocol::{
    ProtocolVersion::{V311, V5},
    ReasonCode,
};

/// Lines written by Debian's mosquitto_passwd 2.0: `-b pw alice secret`
/// ($7$, the default) and `-H sha512 -b pw bob hunter2` ($6$).
const PASSWORDS: &str = "alice:$7$101$iU7LTOMYVQA+0yjg$NKSj92gqIqNjK5hbYWpwlDCZp73pjSncBsk6wNdrmUF2jWGsfuhJwJzKul8uQey8femFSy285cvMIJtOTNa4Yw==\n\
bob:$6$gb2J1dRg3c7aDLB5$k03TCcBkaRS4aLhLtscill8s0G8ywvfNQI8sc/uAfPcbe7u730OR47l8gDXN2aCed4bq1iUyusnJyLSTQN+f5g==\n";

fn password_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), text).expect("write");
    f
}

fn with_credentials(
    v: ringmq::protocol::ProtocolVersion,
    id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> ringmq::protocol::Connect {
    let mut c = connect_packet(v, id, true);
    c.username = user.map(s);
    c.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    c
}

// A password file as mosquitto_passwd writes it: its users get in with their
// passwords ($7$ and $6$ lines), a wrong password is "bad user name or
// password" (v5 0x86, 3.1.1 return code 4), and with anonymous clients
// refused, no user name is "not authorized" (0x87, code 5).
#[test]
fn users_of_a_mosquitto_password_file_get_in_and_others_do_not() {
    let file = password_file(PASSWORDS);
    let mut cfg = config(2);
    cfg.password_file = Some(file.path().to_path_buf());
    cfg.allow_anonymous = Some(false);
    let b = start_with(cfg);
    for v in [V311, V5] {
        for (user, password, want) in [
            (Some("alice"), Some("secret"), ReasonCode::SUCCESS),
            (Some("bob"), Some("hunter2"), ReasonCode::SUCCESS),
            // Again: answered from the verified cache, same result.
            (Some("alice"), Some("secret"), ReasonCode::SUCCESS),
            (
                Some("alice"),
                Some("hunter2"),
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ),
            (Some("alice"), None, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            (
                Some("carol"),
                Some("secret"),
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ),
            (None, None, ReasonCode::NOT_AUTHORIZED),
        ] {
            let c = with_credentials(v, &format!("au-{v:?}"), user, password);
            let (mut raw, ack) = Raw::connect_with(b.addr, c);
            assert_eq!(ack.reason, want, "{v:?} {user:?} {password:?}");
            if want != ReasonCode::SUCCESS {
                assert!(!ack.session_present);
                raw.expect_closed();
            }
        }
    }
}

// The same through an independent client: rumqttc with and without the
// right credentials.
#[test]
fn rumqttc_with_credentials() {
    let file = password_file(PASSWORDS);
    let mut cfg = config(2);
    cfg.password_file = Some(file.path().to_path_buf());
    cfg.allow_anonymous = Some(false);
    let b = start_with(cfg);
    rt().block_on(async {
        use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet as P};
        for (password, want) in [
            ("secret", ConnectReturnCode::Success),
            ("nope", ConnectReturnCode::BadUserNamePassword),
        ] {
            let mut opts = MqttOptions::new("au-rumqttc", "127.0.0.1", b.addr.port());
            opts.set_credentials("alice", password);
            let (_c, mut el) = AsyncClient::new(opts, 10);
            let got = loop {
                match tokio::time::timeout(TIMEOUT, el.poll())
                    .await
                    .expect("in time")
                {
                    Ok(Event::Incoming(P::ConnAck(a))) => break a.code,
                    Ok(_) => continue,
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => break code,
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(got, want, "{password}");
        }
    });
}

// Anonymous clients are let in by default only while every listener is
// loopback (as in Mosquitto 2.0); on any other address they are refused
// unless --allow-anonymous says otherwise.
#[test]
fn anonymous_clients_need_loopback_listeners_or_allow_anonymous() {
    let (_c, ack) = Raw::connect(start(1).addr, V5, "anon-lo", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let mut cfg = config(1);
    cfg.listen = vec!["0.0.0.0:0".parse().expect("addr")];
    let b = start_with(cfg.clone());
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], b.addr.port()));
    let (_c, ack) = Raw::connect(local, V5, "anon-any", true);
    assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    drop(b);
    cfg.allow_anonymous = Some(true);
    let b = start_with(cfg);
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], b.addr.port()));
    let (_c, ack) = Raw::connect(local, V311, "anon-allowed", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
}

// A password file that cannot be read is an error at start, naming the line.
#[test]
fn a_bad_password_file_stops_the_start_and_names_the_line() {
    let file = password_file("alice:$7$101$iU7LTOMYVQA+0yjg$NKSj\ncarol:plaintext\n");
    let mut cfg = config(1);
    cfg.password_file = Some(file.path().to_path_buf());
    let err = ringmq::broker::start(cfg).map(|_| ()).expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("line 2"), "{msg}");
}

// `ringmq passwd` writes $7$ lines an independent implementation checks:
// Python's hashlib derives the same PBKDF2-HMAC-SHA512 hash from the line's
// iterations and salt (Mosquitto 2.0 reads the same format).
#[test]
fn ringmq_passwd_writes_lines_mosquitto_can_read() {
    let dir = tempfile::tempdir().expect("dir");
    let f = dir.path().join("pw");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "passwd",
            "-c",
            "-b",
            f.to_str().expect("utf-8"),
            "dave",
            "s3cret",
        ])
        .status()
        .expect("ringmq passwd runs");
    assert!(st.success());
    let text = std::fs::read_to_string(&f).expect("written");
    let check = r#"
import base64, hashlib, sys
user, h = open(sys.argv[1]).read().strip().split(":", 1)
_, seven, it, salt, hsh = h.split("$")
ok = seven == "7" and hashlib.pbkdf2_hmac("sha512", b"s3cret", base64.b64decode(salt), int(it), 64) == base64.b64decode(hsh)
print(user, len(base64.b64decode(salt)), ok)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check, f.to_str().expect("utf-8")])
        .output()
        .expect("python3 runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "dave 12 True",
        "{text}"
    );
    let file = ringmq::auth::PasswordFile::parse(&text).expect("parses");
    assert!(file.verify("dave", b"s3cret"));
}

// SIGHUP reads the password file again: connected clients stay, the next
// CONNECTs are checked against the new file (a password verified before is
// not taken from the cache); a file that no longer parses leaves the old one
// in place and says why.
#[test]
fn sighup_reloads_the_password_file_without_dropping_clients() {
    let file = password_file(PASSWORDS);
    let path = file.path().to_str().expect("utf-8").to_string();
    let b = BinBroker::spawn(&["--password-file", &path, "--allow-anonymous", "false"]);
    let connect = |id: &str, password: &str| {
        Raw::connect_with(
            b.addr,
            with_credentials(V5, id, Some("alice"), Some(password)),
        )
        .1
        .reason
    };
    let (mut kept, ack) = Raw::connect_with(
        b.addr,
        with_credentials(V5, "hup-kept", Some("bob"), Some("hunter2")),
    );
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(connect("hup-1", "secret"), ReasonCode::SUCCESS);
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", "-b", &path, "alice", "changed"])
        .status()
        .expect("ringmq passwd runs");
    assert!(st.success());
    b.signal(libc::SIGHUP);
    b.wait_log("password file read again");
    assert_eq!(connect("hup-2", "changed"), ReasonCode::SUCCESS);
    assert_eq!(
        connect("hup-3", "secret"),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    std::fs::write(&path, "alice:not-a-hash\n").expect("write");
    b.signal(libc::SIGHUP);
    b.wait_log("keeping the old password file");
    assert_eq!(connect("hup-4", "changed"), ReasonCode::SUCCESS);
    kept.send(&ringmq::protocol::Packet::PingReq);
    assert_eq!(kept.recv(), ringmq::protocol::Packet::PingResp);
}

// A password the shard has not verified before costs PBKDF2 (here a file
// line with 100,000 iterations, a tenth of what a line may ask for): it runs
// off the shard, so another client of the same shard is answered while a
// wrong password is being checked, not after.
#[test]
fn password_checks_do_not_stall_the_shard() {
    let salt = "AAAAAAAAAAAAAAAA"; // 12 bytes
    let hash = "A".repeat(86) + "=="; // 64 bytes
    let file = password_file(&format!("slow:$7$100000${salt}${hash}\n"));
    let mut cfg = config(1);
    cfg.password_file = Some(file.path().to_path_buf());
    cfg.allow_anonymous = Some(true);
    let b = start_with(cfg);
    let (mut other, _) = Raw::connect(b.addr, V5, "stall-other", true);
    let addr = b.addr;
    let started = std::time::Instant::now();
    let slow = std::thread::spawn(move || {
        let c = with_credentials(V5, "stall-slow", Some("slow"), Some("wrong"));
        let (_, ack) = Raw::connect_with(addr, c);
        (ack.reason, started.elapsed())
    });
    let mut worst = std::time::Duration::ZERO;
    while !slow.is_finished() {
        let t = std::time::Instant::now();
        other.send(&ringmq::protocol::Packet::PingReq);
        assert_eq!(other.recv(), ringmq::protocol::Packet::PingResp);
        worst = worst.max(t.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (reason, took) = slow.join().expect("thread");
    assert_eq!(reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(
        worst * 4 < took,
        "a PINGREQ waited {worst:?} while the check took {took:?}"
    );
}
