//! `ringmq passwd`: writes Mosquitto-format password files, `$7$` lines
//! (PBKDF2-HMAC-SHA512, 101 iterations, a 12-byte random salt) that
//! Mosquitto 2.0 reads too. Through a temporary file and a rename, so a
//! broker reading the file never sees half of it.

use std::io::{self, BufRead};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::Sha512;

/// What Mosquitto 2.0's mosquitto_passwd uses.
pub const ITERATIONS: u32 = 101;

const USAGE: &str = "usage: ringmq passwd [-c | -D] [-b] FILE USER [PASSWORD]
  -c  create FILE (replacing it)      -D  delete USER
  -b  take PASSWORD from the command line (else one line from stdin)";

/// A `$7$` hash of `password` with a fresh random salt.
///
/// # Errors
/// The system's random source failed.
pub fn hash(password: &[u8]) -> io::Result<String> {
    let mut salt = [0u8; 12];
    getrandom::getrandom(&mut salt).map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, ITERATIONS, &mut out);
    Ok(format!(
        "$7${ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(out)
    ))
}

/// `file`'s text with `user` set to `line` (or removed, for `None`),
/// keeping every other line as it was.
fn edited(text: &str, user: &str, line: Option<&str>) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.lines() {
        if l.rsplit_once(':').is_some_and(|(u, _)| u == user) {
            if let (Some(new), false) = (line, done) {
                out.push_str(new);
                out.push('\n');
                done = true;
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if let (Some(new), false) = (line, done) {
        out.push_str(new);
        out.push('\n');
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Runs `ringmq passwd ARGS`; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ringmq passwd: {e}\n{USAGE}");
            2
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (mut create, mut delete, mut batch) = (false, false, false);
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-c" => create = true,
            "-D" => delete = true,
            "-b" => batch = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => rest.push(s),
        }
    }
    if create && delete {
        return Err("-c and -D do not go together".into());
    }
    let (file, user) = match rest.as_slice() {
        [f, u] | [f, u, _] => (Path::new(f), *u),
        _ => return Err("FILE and USER are needed".into()),
    };
    if user.is_empty() || user.contains(':') {
        return Err("USER must be non-empty and without ':'".into());
    }
    let text = if create {
        String::new()
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    if delete {
        return write_atomically(file, &edited(&text, user, None))
            .map_err(|e| format!("{}: {e}", file.display()));
    }
    let password = match (batch, rest.get(2)) {
        (true, Some(p)) => p.to_string(),
        (true, None) => return Err("-b needs PASSWORD".into()),
        (false, Some(_)) => return Err("PASSWORD on the command line needs -b".into()),
        (false, None) => {
            let mut line = String::new();
            io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let line = format!(
        "{user}:{}",
        hash(password.as_bytes()).map_err(|e| e.to_string())?
    );
    write_atomically(file, &edited(&text, user, Some(&line)))
        .map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordFile;

    #[test]
    fn written_lines_verify_and_edits_keep_the_others() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("pw");
        let p = f.to_str().expect("utf-8").to_string();
        let run = |a: &[&str]| main(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(run(&["-c", "-b", &p, "alice", "secret"]), 0);
        assert_eq!(run(&["-b", &p, "bob", "hunter2"]), 0);
        assert_eq!(run(&["-b", &p, "alice", "changed"]), 0);
        let pw = PasswordFile::parse(&std::fs::read_to_string(&f).expect("read")).expect("parses");
        assert_eq!(pw.len(), 2);
        assert!(pw.verify("alice", b"changed"));
        assert!(!pw.verify("alice", b"secret"));
        assert!(pw.verify("bob", b"hunter2"));
        assert_eq!(run(&["-D", &p, "alice"]), 0);
        let pw = PasswordFile::parse(&std::fs::read_to_string(&f).expect("read")).expect("parses");
        assert_eq!(pw.len(), 1);
        assert!(pw.verify("bob", b"hunter2"));
        for bad in [
            vec!["-c", "-D", &p, "x"],
            vec!["-b", &p, "x"],
            vec![&p, "x", "pw"],
            vec!["-b", &p, "a:b", "pw"],
            vec!["-q", &p, "x"],
        ] {
            assert_eq!(run(&bad), 2, "{bad:?}");
        }
    }
}
