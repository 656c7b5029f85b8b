//! Authentication, pure and without IO: Mosquitto's password files.
//!
//! A file made by Debian's `mosquitto_passwd` works unchanged: one
//! `user:hash` line per user, the hash `$7$ITERATIONS$SALT$HASH`
//! (PBKDF2-HMAC-SHA512, what Mosquitto 2.0 writes) or `$6$SALT$HASH`
//! (SHA-512 of password then salt, Mosquitto 1.6 and earlier), salt and
//! hash in standard base64. Comparisons are constant-time.

pub mod acl;
pub mod passwd;

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Most PBKDF2 iterations a line may ask for: a hostile or mistaken file
/// must not make one CONNECT cost seconds of a shard.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// How one user's password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// A parsed password file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

/// A line of a password file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

impl PasswordFile {
    /// Parses a file's text. Blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// The first line that is not `user:$6$...` or `user:$7$...`.
    pub fn parse(text: &str) -> Result<PasswordFile, ParseError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| ParseError {
                line: i + 1,
                why: why.to_string(),
            };
            let (user, hash) = line
                .rsplit_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            users.insert(user.to_string(), parse_hash(hash).map_err(|w| err(&w))?);
        }
        Ok(PasswordFile { users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when no user is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when `user` is listed and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(Hash::Sha512 { salt, hash }) => {
                let mut d = Sha512::new();
                d.update(password);
                d.update(salt);
                d.finalize().as_slice().ct_eq(hash).into()
            }
            Some(Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            }) => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
            None => false,
        }
    }
}

fn parse_hash(s: &str) -> Result<Hash, String> {
    let b64 = |p: &str, what: &str| {
        B64.decode(p)
            .map_err(|e| format!("{what} is not base64: {e}"))
            .and_then(|v| {
                if v.is_empty() {
                    Err(format!("empty {what}"))
                } else {
                    Ok(v)
                }
            })
    };
    let parts: Vec<&str> = s.split('$').collect();
    match parts.as_slice() {
        ["", "6", salt, hash] => Ok(Hash::Sha512 {
            salt: b64(salt, "salt")?,
            hash: b64(hash, "hash")?,
        }),
        ["", "7", iterations, salt, hash] => {
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| format!("iterations {iterations:?} is not a number"))?;
            if iterations == 0 || iterations > MAX_ITERATIONS {
                return Err(format!(
                    "iterations {iterations} outside 1..={MAX_ITERATIONS}"
                ));
            }
            Ok(Hash::Pbkdf2 {
                iterations,
                salt: b64(salt, "salt")?,
                hash: b64(hash, "hash")?,
            })
        }
        _ => Err("hash is neither $6$SALT$HASH nor $7$ITERATIONS$SALT$HASH (plain text? run mosquitto_passwd -U)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by Debian's mosquitto_passwd 2.0: `-b pw alice secret`
    /// (default, $7$) and `-H sha512 -b pw bob hunter2` ($6$).
    const FILE: &str = "alice:$7$101$iU7LTOMYVQA+0yjg$NKSj92gqIqNjK5hbYWpwlDCZp73pjSncBsk6wNdrmUF2jWGsfuhJwJzKul8uQey8femFSy285cvMIJtOTNa4Yw==\n\
# a comment\n\
\n\
bob:$6$gb2J1dRg3c7aDLB5$k03TCcBkaRS4aLhLtscill8s0G8ywvfNQI8sc/uAfPcbe7u730OR47l8gDXN2aCed4bq1iUyusnJyLSTQN+f5g==\n";

    #[test]
    fn mosquitto_passwd_files_verify() {
        let f = PasswordFile::parse(FILE).expect("parses");
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"secret"));
        assert!(!f.verify("alice", b"Secret"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"hunter3"));
        assert!(!f.verify("carol", b"secret"));
        assert!(!f.verify("alice", b""));
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("alice", 1),
            ("\n:$6$YWJj$YWJj", 2),
            ("alice:plaintext", 1),
            ("alice:$7$0$YWJj$YWJj", 1),
            ("alice:$7$abc$YWJj$YWJj", 1),
            ("alice:$7$99999999$YWJj$YWJj", 1),
            ("alice:$6$!!$YWJj", 1),
            ("ok:$6$YWJj$YWJj\nbad:$6$$YWJj", 2),
        ] {
            let e = PasswordFile::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }
}
