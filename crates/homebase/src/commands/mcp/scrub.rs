//! What leaves the server: bounded, printable, and with the project's secrets redacted.

use super::*;

/// Replaces secret values, escapes control characters and cuts long strings.
pub(super) struct Scrubber {
    pub(super) secrets: Vec<String>,
    pub(super) redacted: std::cell::Cell<usize>,
}

impl Scrubber {
    pub(super) fn new(mut secrets: Vec<String>) -> Scrubber {
        secrets.retain(|s| s.len() >= MIN_SECRET);
        // longest first, so a secret containing another is replaced whole
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber {
            secrets,
            redacted: std::cell::Cell::new(0),
        }
    }

    pub(super) fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
                self.redacted.set(self.redacted.get() + 1);
            }
        }
        printable_cut(&out)
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
            "abc".into(), // too short to be treated as a secret
        ]);
        assert_eq!(
            s.text("a tok-123456 and tok-123 abc"),
            "a <redacted> and <redacted> abc"
        );
        assert_eq!(s.text("bell\u{7}\u{1b}[2J"), "bell\\u{7}\\u{1b}[2J");
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
