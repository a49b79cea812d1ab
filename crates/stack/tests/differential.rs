//! The differential conformance suite: for every file of the corpus (the shared one, the
//! fixtures `scripts/corpus` brings, documented multi-file sets), the model homebase loads is
//! compared with `docker compose config --format json` field by field: which services are
//! active, image, command, entrypoint, environment (env files merged), ports, volumes,
//! networks, secrets, configs, labels, depends_on with conditions, restart, profiles, memory
//! limit and reservation, cpus, healthcheck. A file both refuse is agreement; one that only
//! one side refuses is a difference unless `REFUSALS` says why. Compose must also accept
//! homebase's render of every file both load. Every difference is reported by file, service
//! and field; the test fails on any that `EXPLAINED` does not explain. Runs where Compose is
//! installed (CI installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Case, HOME, Outcome, cases, compose_available, load, touch_env_files};
use homebase_stack::config::Config;
use homebase_stack::{Bytes, ComposeProject, Plan};
use indexmap::IndexMap;
use serde_json::Value;

/// Differences that are deliberate, with why (file prefix, `service.field`).
const EXPLAINED: &[(&str, &str, &str)] = &[];

/// Files one side refuses and the other loads, deliberately, with why (file prefix, which
/// side refuses).
const REFUSALS: &[(&str, &str, &str)] = &[
    (
        "PostHog__posthog__docker-compose.base.yml",
        "compose",
        "a base of services without an image, meant to be extended; the plan refuses it too",
    ),
    (
        "immich-app__immich__docker__hwaccel.ml.yml",
        "compose",
        "a base of services without an image, meant to be extended; the plan refuses it too",
    ),
    (
        "compose/pkg/e2e/fixtures/build-test/platforms/compose-service-platform-not-in-build-platforms.yaml",
        "compose",
        "`build` options are Compose's to check when it builds on the host; homebase does not build",
    ),
    (
        "compose/pkg/e2e/fixtures/build-test/ssh/compose.yaml",
        "compose",
        "Compose 2.26 cannot print `build.ssh` as JSON (its MarshalJSON fails); `config -q` accepts the file",
    ),
];

/// Bytes from Compose's JSON (a number or a string of digits).
fn bytes(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Compose's JSON writes a `$` of a value as `$$` (so that it loads again).
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

/// Plans `project` (every service given 256 MiB) and renders it; Compose must accept the
/// render. `Ok(false)`: the plan refuses the project (a service without an image).
fn render_accepted(case: &Case, project: &ComposeProject) -> Result<bool, String> {
    let mut toml = String::from("[project]\nname = \"corpus\"\n");
    for name in project.services.keys() {
        toml.push_str(&format!("[services.\"{name}\"]\nmemory = \"256MiB\"\n"));
    }
    let config = Config::parse(Path::new("homebase.toml"), &toml, &IndexMap::new())
        .map_err(|e| format!("homebase.toml: {e}"))?;
    let plan = Plan::new(&config, project, Bytes::gib(1024.0)).map_err(|e| format!("plan: {e}"))?;
    if plan
        .problems
        .iter()
        .any(|p| matches!(p, homebase_stack::plan::Problem::NoImage { .. }))
    {
        return Ok(false);
    }
    let out = homebase_stack::render::render(&plan, project, &config.render)
        .map_err(|e| format!("render: {e}"))?;
    let file = case.dir.join(format!(
        ".rendered-{}.yml",
        case.files[0].file_stem().unwrap().to_string_lossy()
    ));
    fs::write(&file, &out.yaml).unwrap();
    let o = Command::new("timeout")
        .args(["30", "docker", "compose", "-f"])
        .arg(&file)
        .args(["config", "-q"])
        .env_clear()
        .envs(case.env.iter())
        .current_dir(&case.dir)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "compose refuses homebase's render: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn compose_config(case: &Case) -> Outcome<Value> {
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "docker", "compose"]);
    for f in &case.files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd
        .args(["config", "--format", "json"])
        .env_clear()
        .envs(case.env.iter())
        .current_dir(&case.dir)
        .output()
        .unwrap();
    if out.status.success() {
        Outcome::Loaded(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Outcome::Refused(
            err.lines()
                .rfind(|l| !l.contains("level=warning"))
                .unwrap_or("")
                .to_string(),
        )
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
    let work = tempfile::tempdir().unwrap();
    let mut diffs: Vec<String> = Vec::new();
    let (mut compared, mut both_refuse, mut explained, mut rendered) = (0, 0, 0, 0);
    let cases = cases(work.path());
    for case in &cases {
        let mut env = case.env.clone();
        let ours = match load(&case.files, &mut env, case.fill_required) {
            Ok(p) => {
                touch_env_files(&p, &case.dir);
                Outcome::Loaded(p)
            }
            Err(e) => Outcome::Refused(e),
        };
        let case = Case {
            env,
            ..case.clone()
        };
        let theirs = compose_config(&case);
        let why = |kind: &str| {
            REFUSALS
                .iter()
                .find(|(f, k, _)| case.label.starts_with(f) && *k == kind)
                .map(|(_, _, why)| *why)
        };
        match (ours, theirs) {
            (Outcome::Loaded(ours), Outcome::Loaded(theirs)) => {
                compared += 1;
                diffs.extend(compare(&case.label, &ours, &theirs));
                match render_accepted(&case, &ours) {
                    Ok(true) => rendered += 1,
                    Ok(false) => {}
                    Err(e) => diffs.push(format!("{}: {e}", case.label)),
                }
            }
            (Outcome::Refused(_), Outcome::Refused(_)) => both_refuse += 1,
            (Outcome::Refused(e), Outcome::Loaded(_)) => match why("homebase") {
                Some(why) => {
                    explained += 1;
                    eprintln!(
                        "{}: homebase refuses, deliberately ({why}): {e}",
                        case.label
                    );
                }
                None => diffs.push(format!("{}: homebase refuses the file: {e}", case.label)),
            },
            (Outcome::Loaded(_), Outcome::Refused(e)) => match why("compose") {
                Some(why) => {
                    explained += 1;
                    eprintln!(
                        "{}: compose refuses, homebase does not ({why}): {e}",
                        case.label
                    );
                }
                None => diffs.push(format!(
                    "{}: compose refuses a file homebase accepts: {e}",
                    case.label
                )),
            },
        }
    }
    eprintln!(
        "{} cases: {compared} compared field by field ({rendered} rendered and the render \
         accepted by compose), {both_refuse} refused by both, {explained} refused by one side \
         deliberately",
        cases.len()
    );
    assert!(
        diffs.is_empty(),
        "{} differences from Compose:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(
        compared * 10 >= cases.len() * 8,
        "only {compared} of {} cases could be compared",
        cases.len()
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
        let our_env: BTreeMap<String, Option<String>> =
            match homebase_stack::dotenv::service_environment(svc, &ours.project_dir, &ours.vars) {
                Ok(env) => env.into_iter().collect(),
                Err(e) => {
                    d(name, "environment", format!("{e}"), String::new());
                    continue;
                }
            };
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
            // a range published for one target stays a range, as Compose keeps it
            let published = p
                .published
                .as_deref()
                .map(|r| {
                    if targets.len() == 1 {
                        vec![r.to_string()]
                    } else {
                        expand(r)
                    }
                })
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
        // command and entrypoint: Compose splits a string as a shell would
        for key in ["command", "entrypoint"] {
            let ours = match svc.raw.get(key) {
                Some(serde_norway::Value::String(s)) => shell_words::split(s).ok(),
                Some(serde_norway::Value::Sequence(items)) => {
                    Some(items.iter().map(scalar).collect())
                }
                _ => None,
            };
            let theirs: Option<Vec<String>> = t[key].as_array().map(|a| {
                a.iter()
                    .map(|x| unescape(x.as_str().unwrap_or("")))
                    .collect()
            });
            d(name, key, format!("{ours:?}"), format!("{theirs:?}"));
        }
        d(
            name,
            "volumes",
            format!("{:?}", our_volumes(svc, &ours.project_dir)),
            format!("{:?}", their_volumes(&t["volumes"])),
        );
        // networks: Compose puts a service without any on `default`
        let mut our_networks: Vec<String> = match svc.raw.get("networks") {
            Some(serde_norway::Value::Sequence(items)) => items.iter().map(scalar).collect(),
            Some(serde_norway::Value::Mapping(m)) => m.keys().map(scalar).collect(),
            _ if svc.raw.contains_key("network_mode") => Vec::new(),
            _ => vec!["default".to_string()],
        };
        our_networks.sort();
        let mut their_networks: Vec<String> = t["networks"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        their_networks.sort();
        d(
            name,
            "networks",
            format!("{our_networks:?}"),
            format!("{their_networks:?}"),
        );
        for key in ["secrets", "configs"] {
            let ours: Vec<String> = match svc.raw.get(key) {
                Some(serde_norway::Value::Sequence(items)) => items
                    .iter()
                    .map(|i| match i {
                        serde_norway::Value::Mapping(m) => {
                            m.get("source").map(scalar).unwrap_or_default()
                        }
                        other => scalar(other),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let theirs: Vec<String> = t[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x["source"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            d(name, key, format!("{ours:?}"), format!("{theirs:?}"));
        }
        let our_labels: BTreeMap<String, String> = match svc.raw.get("labels") {
            Some(serde_norway::Value::Mapping(m)) => {
                m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect()
            }
            _ => BTreeMap::new(),
        };
        let their_labels: BTreeMap<String, String> = t["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), unescape(v.as_str().unwrap_or(""))))
                    .collect()
            })
            .unwrap_or_default();
        d(
            name,
            "labels",
            format!("{our_labels:?}"),
            format!("{their_labels:?}"),
        );
        let our_cpus = svc
            .raw
            .get("cpus")
            .map(scalar)
            .or_else(|| {
                svc.raw
                    .get("deploy")
                    .and_then(|d| d.get("resources"))
                    .and_then(|r| r.get("limits"))
                    .and_then(|l| l.get("cpus"))
                    .map(scalar)
            })
            .and_then(|s| s.parse::<f64>().ok());
        let their_cpus = t["cpus"]
            .as_f64()
            .or_else(|| t["deploy"]["resources"]["limits"]["cpus"].as_f64());
        d(
            name,
            "cpus",
            format!("{our_cpus:?}"),
            format!("{their_cpus:?}"),
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
            let raw = svc.raw.get("healthcheck");
            for key in ["interval", "timeout", "start_period", "start_interval"] {
                let ours = raw
                    .and_then(|h| h.get(key))
                    .map(scalar)
                    .and_then(|s| duration(&s));
                let theirs = t["healthcheck"][key].as_str().and_then(duration);
                d(
                    name,
                    &format!("healthcheck.{key}"),
                    format!("{ours:?}"),
                    format!("{theirs:?}"),
                );
            }
            let ours = raw.and_then(|h| h.get("retries")).map(scalar);
            let theirs = t["healthcheck"]["retries"].as_u64().map(|n| n.to_string());
            d(
                name,
                "healthcheck.retries",
                format!("{ours:?}"),
                format!("{theirs:?}"),
            );
        }
    }
    diffs
}

fn scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        serde_norway::Value::Null => String::new(),
        other => format!("{other:?}"),
    }
}

/// A Go duration (`1m30s`) or a Compose one (`90s`, `1m30s`, `500ms`) in milliseconds.
fn duration(s: &str) -> Option<u128> {
    humantime::parse_duration(s).ok().map(|d| d.as_millis())
}

/// `path` with `.` parts dropped and `..` folded.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A mount's target as Compose cleans it (no trailing `/`, no `./`).
fn clean_target(t: &str) -> String {
    let c = clean(Path::new(t)).display().to_string();
    if c.is_empty() { "/".into() } else { c }
}

/// A mount as (type, source, target, read only); bind sources absolute, as Compose writes them.
type Mount = (String, String, String, bool);

fn our_volumes(svc: &homebase_stack::model::Service, project_dir: &Path) -> Vec<Mount> {
    let Some(serde_norway::Value::Sequence(vols)) = svc.raw.get("volumes") else {
        return Vec::new();
    };
    let bind = |src: &str| {
        if let Some(rest) = src.strip_prefix('~') {
            format!("{HOME}{rest}")
        } else if src.as_bytes().get(1..3) == Some(b":\\") {
            src.to_string() // a Windows path: absolute
        } else {
            clean(&project_dir.join(src)).display().to_string()
        }
    };
    let mut out: Vec<Mount> = vols
        .iter()
        .map(|v| match v {
            serde_norway::Value::Mapping(m) => {
                let kind = m.get("type").map(scalar).unwrap_or_else(|| "volume".into());
                let source = m.get("source").map(scalar).unwrap_or_default();
                let source = if kind == "bind" {
                    bind(&source)
                } else {
                    source
                };
                let ro = m.get("read_only").map(scalar).as_deref() == Some("true");
                let target = clean_target(&m.get("target").map(scalar).unwrap_or_default());
                (kind, source, target, ro)
            }
            other => {
                let s = scalar(other);
                let parts: Vec<&str> = s.splitn(3, ':').collect();
                match parts.as_slice() {
                    [target] => ("volume".into(), String::new(), clean_target(target), false),
                    [src, target, rest @ ..] => {
                        let ro = rest
                            .first()
                            .is_some_and(|m| m.split(',').any(|o| o == "ro"));
                        let target = clean_target(target);
                        if src.starts_with(['.', '/', '~']) {
                            ("bind".into(), bind(src), target, ro)
                        } else {
                            ("volume".into(), src.to_string(), target, ro)
                        }
                    }
                    [] => Default::default(),
                }
            }
        })
        .collect();
    out.sort();
    out
}

fn their_volumes(v: &Value) -> Vec<Mount> {
    let mut out: Vec<Mount> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["type"].as_str().unwrap_or("").to_string(),
                        m["source"].as_str().unwrap_or("").to_string(),
                        m["target"].as_str().unwrap_or("").to_string(),
                        m["read_only"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
