//! The differential conformance suite: for every file of the corpus, the model homebase
//! loads is compared with `docker compose config --format json` field by field where both
//! have the field: which services are active, image, environment, ports, depends_on with
//! conditions, restart, profiles, memory limit and reservation, healthcheck test. Every
//! difference is reported by file, service and field; the test fails on any that is not
//! explained in `EXPLAINED`. Runs where Compose is installed (CI installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{COMPANIONS, compose_available, corpus_dir, corpus_files, stage};
use homebase_stack::{ComposeProject, LoadOptions, StackError};
use indexmap::IndexMap;
use serde_json::Value;

/// Multi-file sets as projects document them: an override file over a base, with Compose's
/// merge tags and merge keys nested through anchors.
const SETS: &[(&str, &[(&str, &str)])] = &[(
    "base + override with !reset, !override and nested merge keys",
    &[
        (
            "compose.yml",
            "x-a: &a {image: busybox}\nx-b: &b {restart: always}\nx-c: &c\n  <<: [*a, *b]\n  environment: {L: '1'}\nservices:\n  web:\n    image: nginx\n    environment: {A: '1', B: '2'}\n    ports: ['80:80']\n    depends_on: [worker]\n  worker:\n    image: busybox\n  nested:\n    <<: *c\n    command: ['true']\n",
        ),
        (
            "compose.override.yml",
            "x-e: &e {X: '1'}\nservices:\n  web:\n    environment:\n      A: !reset null\n    ports: !override ['81:80']\n    depends_on: !reset []\n  worker: !reset {}\n  nested:\n    environment: !override\n      <<: *e\n      C: '3'\n",
        ),
    ],
)];

/// Differences that are deliberate, with why (file prefix, `service.field`).
const EXPLAINED: &[(&str, &str, &str)] = &[];

/// Bytes from Compose's JSON (a number or a string of digits).
fn bytes(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn load(path: &Path, env: &mut IndexMap<String, String>) -> Result<ComposeProject, String> {
    loop {
        let opts = LoadOptions {
            files: vec![path.to_path_buf()],
            env: env.clone(),
            ..Default::default()
        };
        match ComposeProject::load(&opts) {
            Ok(p) => return Ok(p),
            Err(StackError::Interpolate { source, .. }) => {
                let homebase_stack::interpolate::InterpolateError::Required { name, .. } = &source
                else {
                    return Err(source.to_string());
                };
                if env.contains_key(name) {
                    return Err(source.to_string());
                }
                env.insert(name.clone(), "x".into());
            }
            Err(e) => return Err(format!("{e:#?}")),
        }
    }
}

/// A value for each variable `text` names (`$VAR`, `${VAR…}`, not `$$`) that fits where
/// such names go: ports, images, versions, paths, else a word.
fn guess_vars(text: &str, env: &mut IndexMap<String, String>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'$') {
                i += 2;
                continue;
            }
            let start = if b.get(i + 1) == Some(&b'{') {
                i + 2
            } else {
                i + 1
            };
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            if end > start && !b[start].is_ascii_digit() {
                let name = &text[start..end];
                let upper = name.to_ascii_uppercase();
                let has = |words: &[&str]| words.iter().any(|w| upper.contains(w));
                let value = if has(&["PORT", "BIND"]) {
                    (18080 + env.len()).to_string()
                } else if upper == "PWD" {
                    ".".to_string()
                } else if has(&["SOFT", "HARD"]) {
                    "1".to_string()
                } else if has(&["MEM", "LIMIT"]) {
                    "1g".to_string()
                } else if has(&["IMAGE"]) {
                    "busybox".to_string()
                } else if has(&["VERSION"]) || upper.ends_with("TAG") {
                    "1".to_string()
                } else if has(&[
                    "DATA", "VOLUME", "LOCATION", "PATH", "DIR", "SOCKET", "FILE", "CONF", "MOUNT",
                    "CERT",
                ]) {
                    "./x".to_string()
                } else if has(&[
                    "SOFT", "HARD", "COUNT", "NUM", "SIZE", "WORKERS", "REPLICAS", "TIMEOUT",
                    "RETRIES",
                ]) {
                    "1".to_string()
                } else {
                    "x".to_string()
                };
                env.entry(name.to_string()).or_insert(value);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
}

/// Compose's JSON writes a `$` of a value as `$$` (so that it loads again).
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

/// The env files a project names, created empty (Compose refuses a missing required one).
fn touch_env_files(project: &ComposeProject, dir: &Path) {
    for svc in project.services.values() {
        for (f, _) in &svc.env_files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if !p.exists() {
                fs::write(&p, "").unwrap();
            }
        }
    }
}

#[test]
fn homebase_reads_every_corpus_file_as_compose_does() {
    if !compose_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the compose plugin"
        );
        eprintln!("docker compose not installed: the differential suite is skipped");
        return;
    }
    let corpus = corpus_dir();
    let files = corpus_files(&corpus);
    let mut diffs: Vec<String> = Vec::new();
    let mut compared = 0;
    let mut refused_by_compose = Vec::new();
    for file in &files {
        let dir = tempfile::tempdir().unwrap();
        let path = stage(dir.path(), &corpus, file);
        // the same variables for both: PATH, and a plausible value for every variable the
        // file names (the project's .env is not in the corpus)
        let mut env = IndexMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        );
        guess_vars(&fs::read_to_string(&path).unwrap(), &mut env);
        for (src, _) in COMPANIONS {
            guess_vars(&fs::read_to_string(corpus.join(src)).unwrap(), &mut env);
        }
        let ours = match load(&path, &mut env) {
            Ok(p) => p,
            Err(e) => {
                diffs.push(format!("{file}: homebase refuses the file: {e}"));
                continue;
            }
        };
        touch_env_files(&ours, dir.path());
        let out = Command::new("docker")
            .args(["compose", "-f"])
            .arg(&path)
            .args(["config", "--format", "json"])
            .env_clear()
            .envs(env.iter())
            .current_dir(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            refused_by_compose.push(format!(
                "{file}: {}",
                err.lines()
                    .rfind(|l| !l.contains("level=warning"))
                    .unwrap_or("")
            ));
            continue;
        }
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        compared += 1;
        diffs.extend(compare(file, &ours, &theirs));
    }
    // documented multi-file sets: an override file over a base
    for (label, set) in SETS {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, text) in *set {
            let p = dir.path().join(name);
            fs::write(&p, text).unwrap();
            paths.push(p);
        }
        let ours = ComposeProject::load(&LoadOptions {
            files: paths.clone(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{label}: {e:#?}"));
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        for p in &paths {
            cmd.arg("-f").arg(p);
        }
        let out = cmd
            .args(["config", "--format", "json"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        diffs.extend(compare(label, &ours, &theirs));
    }
    for r in &refused_by_compose {
        // explained: a fragment of services without an image, meant to be extended (the
        // plan refuses it too); any other refusal means the suite fed Compose badly
        if r.contains("has neither an image nor a build context") {
            eprintln!("compose refuses a fragment (not compared): {r}");
        } else {
            diffs.push(format!("compose refuses: {r}"));
        }
    }
    eprintln!(
        "compared {compared} of {} files with docker compose config",
        files.len()
    );
    assert!(
        diffs.is_empty(),
        "{} differences from Compose:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(
        compared * 10 >= files.len() * 9,
        "only {compared} of {} files could be compared",
        files.len()
    );
}

/// The differences between homebase's model and Compose's `config --format json` of `file`.
fn compare(file: &str, ours: &ComposeProject, theirs: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let their_services = theirs["services"].as_object().unwrap_or(&empty);
    let mut diffs = Vec::new();
    let mut d = |service: &str, field: &str, ours: String, theirs: String| {
        if ours != theirs
            && !EXPLAINED
                .iter()
                .any(|(f, at, _)| file.starts_with(f) && *at == format!("{service}.{field}"))
        {
            diffs.push(format!(
                "{file}: {service}.{field}: homebase {ours}, compose {theirs}"
            ));
        }
    };
    let mut a: Vec<&str> = ours.services.keys().map(String::as_str).collect();
    let mut b: Vec<&str> = their_services.keys().map(String::as_str).collect();
    a.sort();
    b.sort();
    d(
        "(all)",
        "active services",
        format!("{a:?}"),
        format!("{b:?}"),
    );
    for (name, svc) in &ours.services {
        let Some(t) = their_services.get(name) else {
            continue;
        };
        d(
            name,
            "image",
            format!("{:?}", svc.image),
            format!("{:?}", t["image"].as_str().map(str::to_string)),
        );
        let our_env: BTreeMap<String, Option<String>> = svc
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let their_env: BTreeMap<String, Option<String>> = t["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(unescape)))
                    .collect()
            })
            .unwrap_or_default();
        d(
            name,
            "environment",
            format!("{our_env:?}"),
            format!("{their_env:?}"),
        );
        // ports: (host ip, published, target, protocol); ranges as Compose expands them
        let mut our_ports: Vec<String> = Vec::new();
        for p in &svc.ports {
            let expand = |r: &str| -> Vec<String> {
                match r.split_once('-') {
                    Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) if a <= b => (a..=b).map(|x| x.to_string()).collect(),
                        _ => vec![r.to_string()],
                    },
                    None => vec![r.to_string()],
                }
            };
            let targets = expand(&p.target);
            let published = p
                .published
                .as_deref()
                .map(expand)
                .unwrap_or_else(|| vec![String::new(); targets.len()]);
            for (i, target) in targets.iter().enumerate() {
                let publ = if published.len() == targets.len() {
                    published[i].clone()
                } else {
                    published.join(",")
                };
                our_ports.push(format!(
                    "{}|{}|{}|{}",
                    p.host_ip.clone().unwrap_or_default(),
                    publ,
                    target,
                    p.protocol
                ));
            }
        }
        let mut their_ports: Vec<String> = t["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        format!(
                            "{}|{}|{}|{}",
                            p["host_ip"].as_str().unwrap_or(""),
                            p["published"].as_str().unwrap_or(""),
                            p["target"],
                            p["protocol"].as_str().unwrap_or("tcp")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        our_ports.sort();
        their_ports.sort();
        d(
            name,
            "ports",
            format!("{our_ports:?}"),
            format!("{their_ports:?}"),
        );
        let our_deps: BTreeMap<String, String> = svc
            .depends_on
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let their_deps: BTreeMap<String, String> = t["depends_on"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v["condition"].as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        d(
            name,
            "depends_on",
            format!("{our_deps:?}"),
            format!("{their_deps:?}"),
        );
        d(
            name,
            "restart",
            format!(
                "{:?}",
                svc.raw
                    .get("restart")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            ),
            format!("{:?}", t["restart"].as_str().map(str::to_string)),
        );
        let mut our_profiles = svc.profiles.clone();
        our_profiles.sort();
        let mut their_profiles: Vec<String> = t["profiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        their_profiles.sort();
        d(
            name,
            "profiles",
            format!("{our_profiles:?}"),
            format!("{their_profiles:?}"),
        );
        let their_limit =
            bytes(&t["deploy"]["resources"]["limits"]["memory"]).or_else(|| bytes(&t["mem_limit"]));
        d(
            name,
            "memory limit",
            format!("{:?}", svc.limit.map(|b| b.0)),
            format!("{their_limit:?}"),
        );
        let their_res = bytes(&t["deploy"]["resources"]["reservations"]["memory"])
            .or_else(|| bytes(&t["mem_reservation"]));
        d(
            name,
            "memory reservation",
            format!("{:?}", svc.reservation.map(|b| b.0)),
            format!("{their_res:?}"),
        );
        if let Some(h) = &svc.healthcheck {
            let their_test = t["healthcheck"]["test"].clone();
            let ours_test: Vec<String> = h.test.clone();
            let theirs_test: Vec<String> = their_test
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(unescape)).collect())
                .unwrap_or_default();
            d(
                name,
                "healthcheck.test",
                format!("{ours_test:?}"),
                format!("{theirs_test:?}"),
            );
        }
    }
    diffs
}
