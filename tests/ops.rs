//! Operating ringmq: what `--version` says, the systemd unit in
//! `contrib/`, and the config file.

mod common;

use std::process::Command;

use common::{connect_packet, BinBroker, Raw};
use ringmq::protocol::ProtocolVersion;

// `ringmq --version` names the commit it was built from.
#[test]
fn version_names_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--version")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("ringmq {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() => {
            let commit = String::from_utf8_lossy(&h.stdout).trim().to_string();
            assert!(text.contains(&commit), "{text} does not name {commit}");
        }
        _ => common::skipped("the commit check of --version: not a git checkout"),
    }
}

// contrib/ringmq.service passes `systemd-analyze verify` without a word
// (an unknown key or a bad value is a warning there), with ExecStart
// pointed at the binary just built.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ringmq.service");
    let text = std::fs::read_to_string(&unit).expect("contrib/ringmq.service");
    let has = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        common::skipped(
            "contrib/ringmq.service not verified: systemd-analyze is not installed (Debian's systemd package has it)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("ringmq-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join("ringmq.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/ringmq", env!("CARGO_BIN_EXE_ringmq")),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    for key in [
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "Restart=on-failure",
        "StateDirectory=",
        "ExecReload=",
    ] {
        assert!(text.contains(key), "the unit lacks {key}");
    }
}

/// The Server Keep Alive a v5 client asking for 600 s is told.
fn keepalive_granted(b: &BinBroker) -> Option<u16> {
    let mut c = connect_packet(ProtocolVersion::V5, "cfg", true);
    c.keep_alive = 600;
    let (_raw, ack) = Raw::connect_with(b.addr, c);
    ack.properties.server_keep_alive
}

// The binary reads --config; what the command line sets wins over the file.
#[test]
fn the_config_file_configures_the_binary() {
    let dir = common::TempDir::new("config");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let file = dir.0.join("ringmq.toml");
    std::fs::write(
        &file,
        "# a comment\nmax-keepalive = 30\nlog-level = \"info\"\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let b = BinBroker::spawn(&["--config", &path]);
    assert_eq!(keepalive_granted(&b), Some(30));
    drop(b);
    let b = BinBroker::spawn(&["--config", &path, "--max-keepalive", "20"]);
    assert_eq!(keepalive_granted(&b), Some(20));
    drop(b);

    std::fs::write(&file, "max-keepalive = 30\nmax-keep-alive = 10\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--config", &path])
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{path}:2: unknown key 'max-keep-alive'")),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--print-config", "--max-keepalive", "9"])
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "max-keepalive = 9"), "{text}");
    assert!(
        text.lines().any(|l| l == "listen = [\"127.0.0.1:1883\"]"),
        "{text}"
    );
}

fn skip(why: &str) {
    common::skipped(why);
}

// The Dockerfile: two stages, a non-root user, the data directory a
// volume, and a config file that this binary takes. With a Docker daemon
// the image is built and run; without one that part is skipped, saying so.
#[test]
fn the_dockerfile_builds_a_non_root_image() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "a multi-stage build");
    let last_stage = text.rsplit("\nFROM ").next().expect("a last stage");
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the last stage names its USER");
    assert!(!["root", "0"].contains(&user.trim()), "runs as {user}");
    assert!(last_stage.contains("VOLUME [\"/var/lib/ringmq\"]"));
    let conf = root.join("contrib/docker/ringmq.toml");
    assert!(last_stage.contains("COPY contrib/docker/ringmq.toml /etc/ringmq/ringmq.toml"));
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("--config")
        .arg(&conf)
        .arg("--print-config")
        .output()
        .expect("binary runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("data-dir = \"/var/lib/ringmq\""),
        "{printed}"
    );
    assert!(printed.contains("listen = [\"0.0.0.0:1883\"]"), "{printed}");

    let daemon = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !daemon {
        skip("the Docker image was not built: no Docker daemon here (the Dockerfile's shape and config were checked)");
        return;
    }
    let tag = format!("ringmq-test-{}", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag, "."])
        .current_dir(root)
        .status()
        .expect("docker build runs");
    assert!(built.success(), "docker build failed");
    let run = |args: &[&str]| {
        Command::new("docker")
            .args(["run", "--rm"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let version = run(&[&tag, "--version"]);
    let uid = run(&["--entrypoint", "id", &tag, "-u"]);
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).status();
    assert!(version.expect("docker run").starts_with("ringmq "));
    assert_ne!(uid.expect("docker run"), "0");
}
