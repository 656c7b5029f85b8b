//! `--config FILE`: a TOML file whose keys are the flags' own names.
//!
//! The file is turned into flags placed before the command line's, so one
//! parser (clap's) checks both and a flag given on the command line wins.
//! Every key is checked on its own first, so an error names the line.

use clap::{ArgAction, Command};
use toml_edit::{Item, Value};

/// Keys that are not flags a file may set.
const NOT_IN_FILE: [&str; 4] = ["config", "print-config", "help", "version"];

/// `[listeners]` in a file: one key per protocol.
const LISTENERS: [(&str, &str); 4] = [
    ("tcp", "listen"),
    ("tls", "listen-tls"),
    ("ws", "listen-ws"),
    ("wss", "listen-wss"),
];

/// The flags `text` (the file `name`) stands for, leaving out those `given`
/// on the command line.
///
/// # Errors
/// `NAME:LINE: why` for a syntax error, an unknown key or a bad value.
pub fn args_from_toml(
    name: &str,
    text: &str,
    cmd: &Command,
    given: &[String],
) -> Result<Vec<String>, String> {
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        format!("{name}:{line}: {}", e.message())
    })?;
    let at = |span: Option<std::ops::Range<usize>>| span.map_or(0, |s| line_of(text, s.start));
    let mut out = Vec::new();
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let line = at(root.key(key).and_then(toml_edit::Key::span));
        if key == "listeners" {
            let Some(table) = item.as_table_like() else {
                return Err(format!(
                    "{name}:{line}: listeners must be a table (tcp, tls, ws, wss)"
                ));
            };
            for (proto, item) in table.iter() {
                let line = at(item.span()).max(line);
                let flag = LISTENERS
                    .iter()
                    .find(|(p, _)| *p == proto)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        format!("{name}:{line}: unknown listener '{proto}' (tcp, tls, ws or wss)")
                    })?;
                one_key(name, line, flag, item, cmd, given, &mut out)?;
            }
            continue;
        }
        one_key(
            name,
            line,
            &key.replace('_', "-"),
            item,
            cmd,
            given,
            &mut out,
        )?;
    }
    Ok(out)
}

fn one_key(
    name: &str,
    line: usize,
    flag: &str,
    item: &Item,
    cmd: &Command,
    given: &[String],
    out: &mut Vec<String>,
) -> Result<(), String> {
    let err = |why: String| format!("{name}:{line}: {flag}: {why}");
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(flag) && !NOT_IN_FILE.contains(&flag))
        .ok_or_else(|| format!("{name}:{line}: unknown key '{flag}'"))?;
    let long = format!("--{flag}");
    if given
        .iter()
        .any(|g| *g == long || g.starts_with(&format!("{long}=")))
    {
        return Ok(()); // the command line wins
    }
    let value = item
        .as_value()
        .ok_or_else(|| err("must be a value, not a table".into()))?;
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        match value.as_bool() {
            Some(true) => out.push(long),
            Some(false) => {}
            None => return Err(err("must be true or false".into())),
        }
        return Ok(());
    }
    let values: Vec<String> = match value {
        Value::Array(a) if matches!(arg.get_action(), ArgAction::Append) => a
            .iter()
            .map(|v| scalar(v).ok_or_else(|| err("array elements must be plain values".into())))
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(err("takes one value, not an array".into())),
        v => vec![scalar(v).ok_or_else(|| err("must be a plain value".into()))?],
    };
    for v in values {
        // Checked alone, so that the error is about this line.
        if let Err(e) = cmd
            .clone()
            .try_get_matches_from(["ringmq", long.as_str(), v.as_str()])
        {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            return Err(err(first.trim_start_matches("error: ").to_string()));
        }
        out.push(long.clone());
        out.push(v);
    }
    Ok(())
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => s.value().clone(),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(f) => f.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        _ => return None,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The effective configuration as a file `--config` reads back: every
/// flag with its help line, unset ones commented out.
pub fn render(cmd: &Command, m: &clap::ArgMatches) -> String {
    let mut s = String::from("# ringmq configuration (ringmq --print-config)\n");
    let in_memory = m.get_flag("in_memory");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        if let Some(help) = arg.get_help() {
            s.push('\n');
            wrap_comment(&mut s, &help.to_string());
        }
        let id = arg.get_id().as_str();
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            s.push_str(&format!("{long} = {}\n", m.get_flag(id)));
            continue;
        }
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let conflicted = long == "data-dir" && in_memory;
        let line = match (raw.as_slice(), arg.get_action()) {
            ([], _) => format!("# {long} =\n"),
            (vs, ArgAction::Append) => format!(
                "{long} = [{}]\n",
                vs.iter()
                    .map(|v| toml_value(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ([v, ..], _) => format!("{long} = {}\n", toml_value(v)),
        };
        if conflicted {
            s.push_str("# ");
        }
        s.push_str(&line);
    }
    s
}

fn wrap_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 78 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

fn toml_value(v: &str) -> String {
    // Numbers as typed stay numbers, but not `+1` or `007` (TOML refuses them).
    let number = v.parse::<i64>().is_ok() && (v == "0" || !v.starts_with(['+', '0']));
    if v == "true" || v == "false" || number {
        return v.to_string();
    }
    Value::from(v).to_string().trim().to_string()
}
