//! What Compose refuses when it loads a project, refused the same way here, so that a file
//! homebase accepts is one Compose accepts: unknown top-level and service keys, a service
//! that is not a mapping, an empty file, a volume spec with an empty part, and dependency
//! cycles (including the dependencies `links`, `volumes_from` and `service:` namespaces
//! imply). Each error names the key and the fix.

use std::path::Path;

use indexmap::IndexMap;
use serde_norway::{Mapping, Value};

use crate::error::{StackError, did_you_mean};
use crate::model::Service;

/// Top-level keys of the Compose specification (`x-*` extensions aside).
#[rustfmt::skip]
const TOP_KEYS: &[&str] = &[
    "version", "name", "include", "services", "networks", "volumes", "secrets", "configs",
    "models",
];

/// Service keys of the Compose specification, as of Compose 2.26 and the keys later
/// releases added (a host may run a newer Compose than the one homebase was checked with).
#[rustfmt::skip]
const SERVICE_KEYS: &[&str] = &[
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "provider", "pull_policy", "read_only", "restart", "runtime",
    "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
];

fn known(key: &Value, keys: &[&str]) -> Result<(), String> {
    let Some(k) = key.as_str() else {
        return Err("keys must be strings".into());
    };
    if k.starts_with("x-") || keys.contains(&k) {
        return Ok(());
    }
    let hint = did_you_mean(k, keys.iter().copied())
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    Err(format!(
        "`{k}` is not a Compose key; {hint}(extensions are named `x-…`)"
    ))
}

/// One file as parsed, before interpolation: Compose refuses an empty file, unknown keys and
/// a service that is not a mapping (`web:` with nothing after it).
pub fn file(doc: &Value, path: &Path) -> Result<(), StackError> {
    let top = match doc {
        Value::Null => {
            return Err(StackError::invalid(
                path,
                "(top level)",
                "the file is empty; a Compose file needs at least a `services` key",
            ));
        }
        Value::Mapping(m) => m,
        _ => return Ok(()), // the caller says what a file must be
    };
    for k in top.keys() {
        known(k, TOP_KEYS).map_err(|m| StackError::invalid(path, "(top level)", m))?;
    }
    let Some(Value::Mapping(services)) = top.get("services") else {
        return Ok(());
    };
    for (name, def) in services {
        let name = name.as_str().unwrap_or("?");
        let def = match def {
            Value::Tagged(t) if t.tag == "reset" => continue,
            Value::Tagged(t) => &t.value,
            d => d,
        };
        let Value::Mapping(def) = def else {
            return Err(StackError::invalid(
                path,
                format!("services.{name}"),
                "a service must be a mapping (at least `image: …`); remove the empty entry or give it a definition",
            ));
        };
        for k in def.keys() {
            known(k, SERVICE_KEYS)
                .map_err(|m| StackError::invalid(path, format!("services.{name}"), m))?;
        }
    }
    Ok(())
}

/// The service a `service:NAME` namespace or a `volumes_from` entry names.
fn named_service(v: Option<&Value>) -> Option<&str> {
    v?.as_str()?.strip_prefix("service:")
}

/// The dependencies Compose adds for a service: `links`, `volumes_from` (other than
/// `container:…`) and `service:NAME` in `network_mode`, `ipc` and `pid`.
pub fn implied_dependencies(raw: &Mapping) -> Vec<String> {
    let mut deps = Vec::new();
    for key in ["network_mode", "ipc", "pid"] {
        deps.extend(named_service(raw.get(key)).map(str::to_string));
    }
    for (key, container_prefix) in [("volumes_from", true), ("links", false)] {
        let Some(Value::Sequence(items)) = raw.get(key) else {
            continue;
        };
        for item in items.iter().filter_map(Value::as_str) {
            if container_prefix && item.starts_with("container:") {
                continue;
            }
            let name = item.split(':').next().unwrap_or(item);
            if !name.is_empty() {
                deps.push(name.to_string());
            }
        }
    }
    deps
}

/// The services whose recreation must take their dependents along: a dependent that says
/// `depends_on: {NAME: {restart: true}}`, or shares its namespaces, volumes or links
/// ([`implied_dependencies`]). Any other service can be replaced alone (Compose's
/// `up --no-deps`), leaving the services that depend on it running.
pub fn restarts_dependents(project: &crate::ComposeProject) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for svc in project.services.values() {
        if let Some(Value::Mapping(m)) = svc.raw.get("depends_on") {
            for (k, v) in m {
                let restart = matches!(v, Value::Mapping(c)
                    if matches!(c.get("restart"), Some(Value::Bool(true)))
                        || c.get("restart").and_then(Value::as_str) == Some("true"));
                if restart && let Some(name) = k.as_str() {
                    out.push(name.to_string());
                }
            }
        }
        out.extend(implied_dependencies(&svc.raw));
    }
    out.sort();
    out.dedup();
    out
}

/// A service's `volumes`, short syntax: Compose refuses an empty part (`:/data`, left by an
/// unset variable) and an empty entry.
pub fn volumes(svc: &Service, path: &Path) -> Result<(), StackError> {
    let Some(Value::Sequence(vols)) = svc.raw.get("volumes") else {
        return Ok(());
    };
    for v in vols.iter().filter_map(Value::as_str) {
        let parts: Vec<&str> = v.split(':').collect();
        let empty = v.is_empty() || (parts.len() > 1 && parts.iter().take(2).any(|p| p.is_empty()));
        if empty {
            return Err(StackError::invalid(
                path,
                format!("services.{}.volumes", svc.name),
                format!(
                    "`{v}` has an empty part; a variable it names is probably unset (set it, \
                     or give it a default with `${{NAME:-default}}`)"
                ),
            ));
        }
    }
    Ok(())
}

/// Compose refuses a project whose dependencies go round: the error names the cycle.
pub fn no_cycles(services: &IndexMap<String, Service>, path: &Path) -> Result<(), StackError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        services: &'a IndexMap<String, Service>,
        marks: &mut IndexMap<&'a str, Mark>,
        trail: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match marks.get(name).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::Open => {
                let from = trail.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle = trail[from..].to_vec();
                cycle.push(name);
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(name, Mark::Open);
        trail.push(name);
        if let Some(svc) = services.get(name) {
            for dep in svc.depends_on.keys() {
                if let Some(c) = visit(dep, services, marks, trail) {
                    return Some(c);
                }
            }
        }
        trail.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = IndexMap::new();
    for name in services.keys() {
        if let Some(cycle) = visit(name, services, &mut marks, &mut Vec::new()) {
            return Err(StackError::invalid(
                path,
                format!("services.{}.depends_on", cycle[0]),
                format!(
                    "the dependencies go round ({}); remove one of them",
                    cycle.join(" -> ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn unknown_keys_are_named_with_the_likely_one() {
        let p = Path::new("compose.yml");
        let e = file(&doc("services:\n  web:\n    imag: x\n"), p).unwrap_err();
        assert!(e.to_string().contains("did you mean `image`"), "{e}");
        assert!(file(&doc("servics: {}\n"), p).is_err());
        assert!(
            file(
                &doc("x-any: 1\nservices:\n  web:\n    image: x\n    x-mine: 2\n"),
                p
            )
            .is_ok()
        );
        let e = file(&doc("services:\n  web:\n"), p).unwrap_err();
        assert!(e.to_string().contains("must be a mapping"), "{e}");
        assert!(file(&doc("# nothing\n"), p).is_err());
        assert!(file(&doc("services:\n  web: !reset null\n"), p).is_ok());
    }

    #[test]
    fn implied_dependencies_follow_compose() {
        let raw: Mapping = serde_norway::from_str(
            "network_mode: service:net\nipc: service:shm\npid: host\nvolumes_from: [data, 'logs:ro', 'container:c1']\nlinks: ['db:database', cache]\n",
        )
        .unwrap();
        assert_eq!(
            implied_dependencies(&raw),
            ["net", "shm", "data", "logs", "db", "cache"]
        );
    }

    #[test]
    fn only_what_a_dependent_ties_to_takes_it_along() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("compose.yml");
        std::fs::write(
            &f,
            "services:\n  db: {image: pg}\n  cache: {image: redis}\n  net: {image: x}\n  \
             api:\n    image: api\n    depends_on:\n      db: {condition: service_healthy, restart: true}\n      cache: {condition: service_started}\n  \
             side:\n    image: x\n    network_mode: service:net\n    depends_on: [cache]\n",
        )
        .unwrap();
        let p = crate::ComposeProject::load(&crate::LoadOptions {
            files: vec![f],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(restarts_dependents(&p), ["db", "net"]);
    }
}
