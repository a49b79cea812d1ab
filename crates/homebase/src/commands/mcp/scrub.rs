//! What leaves the server: bounded, printable, and with the project's secrets redacted.

use super::MAX_CHARS;
use super::MIN_SECRET;
use crate::cli::Global;
use crate::project;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Replaces secret values, escapes control characters and cuts long strings.
pub(super) struct Scrubber {
    /// Replaced wherever they occur (at least [`MIN_SECRET`] long).
    pub(super) secrets: Vec<String>,
    /// Shorter values (`pw`, `1234`): replaced only as a whole word, so that a password
    /// of two letters does not garble every word containing them.
    pub(super) short: Vec<String>,
    pub(super) redacted: std::cell::Cell<usize>,
}

impl Scrubber {
    pub(super) fn new(values: Vec<String>) -> Scrubber {
        let mut secrets = Vec::new();
        let mut short = Vec::new();
        for v in values {
            // as `render` writes it too: Compose reads `$$` as `$`
            let forms = if v.contains('$') {
                vec![v.replace('$', "$$"), v]
            } else {
                vec![v]
            };
            for f in forms {
                if f.len() >= MIN_SECRET {
                    secrets.push(f);
                } else if !f.trim().is_empty() {
                    short.push(f);
                }
            }
        }
        // longest first, so a secret containing another is replaced whole
        for list in [&mut secrets, &mut short] {
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
            list.dedup();
        }
        Scrubber {
            secrets,
            short,
            redacted: std::cell::Cell::new(0),
        }
    }

    /// `text` with each of [`Scrubber::short`] replaced where it stands as a word of its own.
    fn short_words(&self, text: String) -> String {
        let mut out = text;
        for s in &self.short {
            let mut result = String::with_capacity(out.len());
            let mut rest = out.as_str();
            let mut prev: Option<char> = None;
            while let Some(i) = rest.find(s.as_str()) {
                let before = rest[..i].chars().next_back().or(prev);
                let after = rest[i + s.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                result.push_str(&rest[..i]);
                if word(before) || word(after) {
                    result.push_str(s);
                } else {
                    result.push_str("<redacted>");
                    self.redacted.set(self.redacted.get() + 1);
                }
                prev = s.chars().next_back();
                rest = &rest[i + s.len()..];
            }
            result.push_str(rest);
            out = result;
        }
        out
    }

    pub(super) fn text(&self, s: &str) -> String {
        printable_cut(&self.redact(s))
    }

    /// `s` with every secret value replaced (the long ones anywhere, the short ones as
    /// words), not yet escaped or cut.
    pub(super) fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
                self.redacted.set(self.redacted.get() + 1);
            }
        }
        self.short_words(out)
    }

    pub(super) fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.value(x)),
            _ => {}
        }
    }
}

/// The last JSON document of a child's stdout: the whole of it for most commands, the
/// report after the event lines for the others (a document starts at the start of a line).
pub(super) fn last_document(out: &str) -> Option<Value> {
    let starts: Vec<usize> = std::iter::once(0)
        .chain(out.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| out[i..].starts_with(['{', '[']))
        .collect();
    starts
        .into_iter()
        .rev()
        .find_map(|i| serde_json::from_str::<Value>(&out[i..]).ok())
}

/// Control characters escaped (as `homebase` shows host bytes), then cut to `MAX_CHARS`.
pub(super) fn printable_cut(s: &str) -> String {
    let p = crate::ui::printable(s);
    if p.chars().count() <= MAX_CHARS {
        return p;
    }
    let kept: String = p.chars().take(MAX_CHARS).collect();
    format!(
        "{kept}… [{} more characters cut]",
        p.chars().count() - MAX_CHARS
    )
}

/// The password of a URL's userinfo (`scheme://user:PASSWORD@host`), if `v` holds one.
fn url_password(v: &str) -> Option<String> {
    let (_, rest) = v.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, pass) = userinfo.split_once(':')?;
    (!pass.is_empty()).then(|| pass.to_string())
}

/// Environment keys whose values are secrets wherever they are set.
pub(super) fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "AUTH",
        "PRIVATE",
        "DSN",
        "COOKIE",
        "SESSION",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// The values this server never shows: everything in the project's env files (those of
/// interpolation, of services and of loops), the secret-looking environment values of the
/// compose file and the loops, and the alert URLs. Read at each call: the files change.
pub(super) fn project_secrets(config_path: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let env = project::process_env();
    let Ok(text) = std::fs::read_to_string(config_path) else {
        return out;
    };
    let Ok(config) = homebase_stack::Config::parse(config_path, &text, &env) else {
        return out;
    };
    let root = config_path.parent().unwrap_or(std::path::Path::new("."));
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    files.insert(root.join(".env"));
    files.extend(config.project.env_files.iter().map(|f| root.join(f)));
    for l in config.loops.values() {
        files.extend(l.env_files.iter().map(|f| root.join(f)));
        out.extend(
            l.env
                .iter()
                .filter(|(k, _)| secret_key(k))
                .map(|(_, v)| v.clone()),
        );
    }
    let global = Global {
        directory: None,
        config: Some(config_path.to_path_buf()),
        env_files: Vec::new(),
        profiles: Vec::new(),
        daemon_dir: None,
        color: crate::cli::ColorChoice::Never,
    };
    // names the answers are made of (a project, service or image called like a value of the
    // env file, `postgres` say) are not secrets: redacting them would garble every answer
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(config.project.name.clone());
    names.extend(config.loops.keys().cloned());
    if let Ok(p) = project::load(&global) {
        for svc in p.compose.services.values() {
            names.insert(svc.name.clone());
            names.extend(svc.image.iter().cloned());
            names.extend(svc.image_repo());
        }
        for svc in p.compose.services.values() {
            for (f, _) in &svc.env_files {
                files.insert(p.compose.project_dir.join(f));
            }
            for (k, v) in &svc.environment {
                if let Some(v) = v
                    && secret_key(k)
                {
                    out.push(v.clone());
                }
            }
        }
    }
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f)
            && let Ok(vars) = homebase_stack::dotenv::parse(&text, &Default::default())
        {
            out.extend(vars.into_iter().map(|(_, v)| v));
        }
    }
    // every value the compose files interpolate, from an env file or the process
    // environment (a version or a port of under six digits aside)
    if let Ok(p) = project::load(&global) {
        for file in &config.project.compose {
            let Ok(text) = std::fs::read_to_string(root.join(file)) else {
                continue;
            };
            for name in homebase_stack::interpolate::referenced(&text) {
                if let Some(v) = p.compose.vars.get(&name)
                    && !(v.len() < MIN_SECRET && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                {
                    out.push(v.clone());
                }
            }
        }
        // a password in a URL's userinfo, whatever the variable is called
        for svc in p.compose.services.values() {
            out.extend(
                svc.environment
                    .values()
                    .flatten()
                    .filter_map(|v| url_password(v)),
            );
        }
    }
    for l in config.loops.values() {
        out.extend(l.env.values().filter_map(|v| url_password(v)));
    }
    let found: Vec<String> = out.iter().filter_map(|v| url_password(v)).collect();
    out.extend(found);
    let a = &config.alerts;
    out.extend(
        [&a.webhook, &a.ntfy, &a.slack, &a.discord]
            .into_iter()
            .flatten()
            .cloned(),
    );
    out.retain(|v| !names.contains(v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn scrubber_redacts_escapes_and_cuts() {
        let s = Scrubber::new(vec![
            "tok-123".into(),
            "tok-123456".into(),
            "abc".into(), // short: only as a word
        ]);
        assert_eq!(
            s.text("a tok-123456 and tok-123 abc abcd"),
            "a <redacted> and <redacted> <redacted> abcd"
        );
        assert_eq!(s.text("bell\u{7}\u{1b}[2J"), "bell\\u{7}\\u{1b}[2J");
        // short values only as words; `$` as render writes it
        let short = Scrubber::new(vec!["pw".into(), "pa$word-1".into()]);
        assert_eq!(
            short.text("POSTGRES_PASSWORD: pw; upwards pw2 x=pw, pa$$word-1 pa$word-1"),
            "POSTGRES_PASSWORD: <redacted>; upwards pw2 x=<redacted>, <redacted> <redacted>"
        );
        assert_eq!(
            url_password("postgres://app:s3@db:5432/app?x=1").as_deref(),
            Some("s3")
        );
        assert_eq!(url_password("https://example.com/a@b"), None);
        assert_eq!(url_password("plain"), None);
        let long = "x".repeat(MAX_CHARS + 10);
        assert!(s.text(&long).ends_with("… [10 more characters cut]"));
        let mut v = serde_json::json!({"a": ["tok-123456"], "b": {"c": "tok-123"}});
        s.value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["<redacted>"], "b": {"c": "<redacted>"}})
        );
    }

    #[test]
    pub(super) fn the_last_document_after_event_lines() {
        let out = "{\"event\":\"step\",\"step\":\"lock\"}\n{\n  \"error\": \"no\",\n  \"exit_code\": 3\n}\n";
        let v = last_document(out).unwrap();
        assert_eq!(v["exit_code"], 3);
        assert!(last_document("not json").is_none());
        assert_eq!(
            last_document("[1, 2]\n").unwrap(),
            serde_json::json!([1, 2])
        );
    }
}
