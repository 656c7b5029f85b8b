//! Authorisation, pure and without IO: Mosquitto's ACL files.
//!
//! A file written for Mosquitto's `acl_file` works unchanged:
//!
//! ```text
//! # anonymous clients: the topic lines before the first user line
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # every client, with %c its client id and %u its user name
//! pattern write devices/%c/status
//! ```
//!
//! The access word is optional (`readwrite` when missing). A `deny` line
//! that matches wins over every grant; a topic nothing grants is denied.
//! Rule filters follow topic matching (MQTT 4.7), so `#` grants nothing
//! under `$SYS`. A `%c` or `%u` is replaced by the client's id or user
//! name; a client whose id or name holds `+`, `#` or `/` (which would
//! widen the rule) gets nothing from the patterns that use it, nor does a
//! client without a user name from the `%u` ones.

use std::sync::Arc;

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages (subscribe, delivery, retained delivery).
    Read,
    /// Publish (and wills).
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever else grants it.
    Deny,
}

impl Access {
    fn grants(self, want: Want) -> bool {
        matches!(
            (self, want),
            (Access::ReadWrite, _) | (Access::Read, Want::Read) | (Access::Write, Want::Write)
        )
    }
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Receive.
    Read,
    /// Publish.
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: std::collections::HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A line of an ACL file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

fn rule(rest: &str) -> Result<Rule, String> {
    let rest = rest.trim_start();
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let access = match word {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    let (access, filter) = match access {
        Some(a) if !after.trim().is_empty() => (a, after.trim_start()),
        _ => (Access::ReadWrite, rest),
    };
    let filter = filter.trim_end();
    if filter.is_empty() {
        return Err("a rule needs a topic".into());
    }
    if !valid_filter(filter) {
        return Err(format!("not a topic filter: {filter:?}"));
    }
    Ok(Rule {
        access,
        filter: filter.to_string(),
    })
}

/// `#` only as a whole last level, `+` only as a whole level.
fn valid_filter(f: &str) -> bool {
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains('#') && !l.contains('+'),
    })
}

impl AclFile {
    /// Parses a file's text. Blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// The first line that is not `topic`, `user` or `pattern`.
    pub fn parse(text: &str) -> Result<AclFile, ParseError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r').trim_start();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: String| ParseError { line: i + 1, why };
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            match keyword {
                "topic" => {
                    let r = rule(rest).map_err(err)?;
                    match &user {
                        Some(u) => acl.users.entry(u.clone()).or_default().push(r),
                        None => acl.anonymous.push(r),
                    }
                }
                "pattern" => acl.patterns.push(rule(rest).map_err(err)?),
                "user" => {
                    let name = rest.trim();
                    if name.is_empty() {
                        return Err(err("user needs a name".into()));
                    }
                    acl.users.entry(name.to_string()).or_default();
                    user = Some(name.to_string());
                }
                other => return Err(err(format!("unknown keyword {other:?}"))),
            }
        }
        Ok(acl)
    }

    /// Number of rules, patterns included.
    pub fn len(&self) -> usize {
        self.anonymous.len()
            + self.users.values().map(Vec::len).sum::<usize>()
            + self.patterns.len()
    }

    /// True for a file without rules (which denies everything).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rules that apply to one client, patterns filled in: worked out
    /// once per connection, not per message.
    pub fn grants(&self, username: Option<&str>, client_id: &str) -> Arc<Grants> {
        let own = match username {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous[..],
        };
        let mut rules: Vec<Rule> = own.to_vec();
        let widens = |s: &str| s.contains(['+', '#', '/']);
        for p in &self.patterns {
            let mut f = p.filter.clone();
            if f.contains("%c") {
                if widens(client_id) {
                    continue;
                }
                f = f.replace("%c", client_id);
            }
            if f.contains("%u") {
                match username {
                    Some(u) if !widens(u) => f = f.replace("%u", u),
                    _ => continue,
                }
            }
            rules.push(Rule {
                access: p.access,
                filter: f,
            });
        }
        // Deny rules first: one match settles it.
        rules.sort_by_key(|r| r.access != Access::Deny);
        Arc::new(Grants { rules })
    }
}

/// What one client may do (see [`AclFile::grants`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    rules: Vec<Rule>,
}

impl Grants {
    /// May the client publish to (`Write`) or receive from (`Read`) `topic`?
    pub fn allows(&self, want: Want, topic: &str) -> bool {
        for r in &self.rules {
            if crate::topic::matches(&r.filter, topic) {
                if r.access == Access::Deny {
                    return false;
                }
                if r.access.grants(want) {
                    return true;
                }
            }
        }
        false
    }

    /// May the client subscribe to `filter`? Only if a read grant covers
    /// every topic the filter can match, and no deny rule covers it whole
    /// (a deny rule covering part of it is enforced message by message).
    pub fn allows_subscribe(&self, filter: &str) -> bool {
        let mut granted = false;
        for r in &self.rules {
            if covers(&r.filter, filter) {
                if r.access == Access::Deny {
                    return false;
                }
                granted |= r.access.grants(Want::Read);
            }
        }
        granted
    }

    /// True if a deny rule could match a topic `filter` matches: its
    /// deliveries then need a look each.
    pub fn has_deny(&self) -> bool {
        self.rules.first().is_some_and(|r| r.access == Access::Deny)
    }

    /// May the client read every topic `filter` matches? A read grant
    /// covers it and no deny rule reaches into it; then deliveries through
    /// it need no check of their own.
    pub fn reads_all_of(&self, filter: &str) -> bool {
        let denied = self
            .rules
            .iter()
            .any(|r| r.access == Access::Deny && intersects(&r.filter, filter));
        !denied
            && self
                .rules
                .iter()
                .any(|r| r.access.grants(Want::Read) && covers(&r.filter, filter))
    }
}

/// Can some topic match both filters?
pub fn intersects(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    let mut first = true;
    loop {
        let (p, q) = (x.next(), y.next());
        // A wildcard first level never matches a `$` topic.
        let dollar = |l: Option<&str>| l.is_some_and(|l| l.starts_with('$'));
        if first
            && (dollar(p) && matches!(q, Some("+" | "#"))
                || dollar(q) && matches!(p, Some("+" | "#")))
        {
            return false;
        }
        first = false;
        match (p, q) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(m)) if l == m => {}
            _ => return false,
        }
    }
}

/// Does rule filter `rule` match every topic that `filter` matches?
pub fn covers(rule: &str, filter: &str) -> bool {
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    let mut first = true;
    loop {
        let (rl, fl) = (r.next(), f.next());
        // A `$` topic is matched only by a rule that names its first level.
        let dollar = first && fl.is_some_and(|l| l.starts_with('$'));
        first = false;
        match (rl, fl) {
            // "a/#" also matches "a".
            (Some("#"), _) => return !dollar,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) if !dollar => {}
            (Some("+"), Some(_)) => return false,
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic alice/#
topic deny alice/secret/#
topic write shared/in
user bob smith
topic read with space/x y

pattern write devices/%c/status
pattern read users/%u/#
";

    #[test]
    fn parses_mosquitto_syntax() {
        let acl = AclFile::parse(FILE).unwrap();
        assert_eq!(acl.len(), 7);
        assert_eq!(acl.users["bob smith"][0].filter, "with space/x y");
        assert_eq!(acl.users["alice"][0].access, Access::ReadWrite);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let e = AclFile::parse("topic read a\nsubscribe a/b\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(AclFile::parse("topic read a/#/b\n").is_err());
        assert!(AclFile::parse("topic\n").is_err());
        assert!(AclFile::parse("user\n").is_err());
    }

    #[test]
    fn user_rules_and_deny() {
        let acl = AclFile::parse(FILE).unwrap();
        let g = acl.grants(Some("alice"), "c1");
        assert!(g.allows(Want::Write, "alice/x"));
        assert!(g.allows(Want::Read, "alice/x/y"));
        assert!(!g.allows(Want::Read, "alice/secret/k"));
        assert!(!g.allows(Want::Write, "alice/secret"));
        assert!(g.allows(Want::Write, "shared/in"));
        assert!(!g.allows(Want::Read, "shared/in"));
        // Anonymous rules are not a named user's.
        assert!(!g.allows(Want::Read, "public/news"));
        let anon = acl.grants(None, "c2");
        assert!(anon.allows(Want::Read, "public/news"));
        assert!(!anon.allows(Want::Write, "public/news"));
        // A user with no block gets the patterns only.
        let carol = acl.grants(Some("carol"), "c3");
        assert!(!carol.allows(Want::Read, "public/news"));
        assert!(carol.allows(Want::Read, "users/carol/inbox"));
    }

    #[test]
    fn patterns_fill_in_and_never_widen() {
        let acl = AclFile::parse(FILE).unwrap();
        let g = acl.grants(Some("alice"), "dev7");
        assert!(g.allows(Want::Write, "devices/dev7/status"));
        assert!(!g.allows(Want::Write, "devices/dev8/status"));
        assert!(g.allows(Want::Read, "users/alice/a"));
        assert!(!g.allows(Want::Read, "users/bob/a"));
        for id in ["+", "#", "a/b"] {
            let g = acl.grants(Some("alice"), id);
            assert!(!g.allows(Want::Write, &format!("devices/{id}/status")));
        }
        // No user name: %u patterns give nothing.
        let anon = acl.grants(None, "dev7");
        assert!(!anon.allows(Want::Read, "users//a"));
        assert!(anon.allows(Want::Write, "devices/dev7/status"));
    }

    #[test]
    fn sys_needs_a_rule_that_names_it() {
        let acl = AclFile::parse("topic #\ntopic read $SYS/broker/#\n").unwrap();
        let g = acl.grants(None, "c");
        assert!(g.allows(Want::Write, "a/b"));
        assert!(!g.allows(Want::Read, "$SYS/x"));
        assert!(g.allows(Want::Read, "$SYS/broker/uptime"));
        assert!(g.allows_subscribe("$SYS/broker/#"));
        assert!(!g.allows_subscribe("$SYS/#"));
        assert!(!g.allows_subscribe("$SYSTEM/x"));
    }

    #[test]
    fn subscribe_needs_a_covering_grant() {
        let acl = AclFile::parse(FILE).unwrap();
        let g = acl.grants(Some("alice"), "c1");
        assert!(g.allows_subscribe("alice/#"));
        assert!(g.allows_subscribe("alice/+/x"));
        assert!(g.allows_subscribe("alice"));
        assert!(!g.allows_subscribe("#"));
        assert!(!g.allows_subscribe("+/x"));
        // Write-only is no grant to subscribe.
        assert!(!g.allows_subscribe("shared/in"));
        // Wholly denied.
        assert!(!g.allows_subscribe("alice/secret/#"));
        assert!(!g.allows_subscribe("alice/secret/x"));
        assert!(g.has_deny());
    }

    #[test]
    fn intersects_and_reads_all_of() {
        for (a, b, want) in [
            ("#", "a/b", true),
            ("a/+", "+/b", true),
            ("a/b", "a/c", false),
            ("a/#", "a", true),
            ("a/+", "a", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/+", true),
            ("a/b/c", "a/+", false),
        ] {
            assert_eq!(intersects(a, b), want, "{a} meets {b}");
            assert_eq!(intersects(b, a), want, "{b} meets {a}");
        }
        let acl = AclFile::parse(FILE).unwrap();
        let g = acl.grants(Some("alice"), "c1");
        assert!(g.reads_all_of("alice/news/+"));
        // A deny rule reaches into it: deliveries are checked one by one.
        assert!(!g.reads_all_of("alice/#"));
        assert!(!g.reads_all_of("bob/#"));
    }

    #[test]
    fn covers_follows_topic_matching() {
        for (rule, filter, want) in [
            ("#", "#", true),
            ("#", "a/+/b", true),
            ("a/#", "a", true),
            ("a/#", "a/b/#", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("+/b", "x/b", true),
            ("+", "$x", false),
            ("+/#", "a", true),
            ("a", "a/b", false),
        ] {
            assert_eq!(covers(rule, filter), want, "{rule} covers {filter}");
        }
    }
}
