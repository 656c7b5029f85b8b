//! Listen addresses: the forms people type, and a port another process
//! holds (a forgotten ringmq) refused instead of shared.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ringmq::protocol::{ProtocolVersion::V5, ReasonCode};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs the binary with `args` and waits (bounded) for it to exit.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let dir = TempDir::new("listen");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .arg("--data-dir")
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read");
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringmq {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// A second broker on a port the first one holds does not start (shards
// bind with SO_REUSEPORT, which alone would let it start and take half of
// the clients); it says why. The first one keeps serving.
#[test]
fn a_port_another_broker_holds_is_refused() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let first = BinBroker::spawn(&["--listen", &addr]);
    let (ok, err) = run_to_exit(&["--listen", &addr]);
    assert!(!ok, "second broker started on {addr}");
    assert!(err.contains("another process"), "{err}");
    // Also for a TLS or WebSocket listener on it.
    let (ok, _) = run_to_exit(&["--listen", "127.0.0.1:0", "--listen-ws", &addr]);
    assert!(!ok);
    let (_c, ack) = Raw::connect(addr.parse().expect("addr"), V5, "still-first", true);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    drop(first);
}

// The same address twice is a configuration error, not two listeners.
#[test]
fn the_same_listen_address_twice_is_refused() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (ok, err) = run_to_exit(&["--listen", &addr, "--listen-ws", &addr]);
    assert!(!ok);
    assert!(err.contains("given twice"), "{err}");
}

// `--listen` takes a bare port (every interface) and a host name.
#[test]
fn listen_forms() {
    for form in ["bare", "localhost"] {
        let port = free_port();
        let typed = match form {
            "bare" => port.to_string(),
            _ => format!("localhost:{port}"),
        };
        let b = BinBroker::spawn(&["--listen", &typed, "--allow-anonymous", "true"]);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let (_c, ack) = Raw::connect(addr, V5, &format!("form-{form}"), true);
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "{typed}");
        drop(b);
    }
}

// A broker killed with SIGKILL leaves its listening socket bound for a few
// milliseconds after it is gone (the kernel tears its io_uring rings down
// afterwards). One started at once on the same port and data (what a
// supervisor's immediate restart does) waits that out instead of refusing
// the port as another broker's: before, 6 of 8 such restarts failed.
#[test]
fn a_restart_right_after_kill_9_takes_the_port() {
    let dir = TempDir::new("listen-kill9");
    let addr = format!("127.0.0.1:{}", free_port());
    let sock: std::net::SocketAddr = addr.parse().expect("addr");
    for round in 0..5 {
        let mut b = BinBroker::spawn_in(&dir.0, &["--listen", &addr, "--cores", "2"]);
        let (_c, ack) = Raw::connect(sock, V5, &format!("kill9-{round}"), true);
        assert_eq!(ack.reason, ReasonCode::SUCCESS, "round {round}");
        b.kill9();
    }
}
