//! Rendering for `docker stack deploy`: the single-host render (limits, tuning, log
//! rotation) carried into the Compose file format 3.9 that the stack loader accepts, with
//! Swarm's own settings: `deploy.resources`, `deploy.placement.constraints`, rolling updates
//! that roll back on failure (start-first where two copies can run at once, stop-first for a
//! service that owns a volume), `deploy.restart_policy`, replicas.
//!
//! Service discovery uses DNS round robin and ports are published on the node that runs the
//! task (`mode: host`): neither needs IPVS, which some kernels (and this project's test
//! hosts) lack. What the stack loader does not take is left out, and each omission noted.

use serde_norway::{Mapping, Value};

use crate::cluster::constraints;
use crate::compose::ComposeProject;
use crate::config::Config;
use crate::plan::Plan;
use crate::render::{Note, RenderError, Rendered, render};

/// Service keys of the Compose file format 3.9 that Swarm uses.
const KEEP: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "healthcheck",
    "volumes",
    "ports",
    "networks",
    "configs",
    "secrets",
    "labels",
    "user",
    "working_dir",
    "stop_signal",
    "stop_grace_period",
    "init",
    "ulimits",
    "cap_add",
    "cap_drop",
    "hostname",
    "logging",
    "extra_hosts",
    "dns",
    "dns_search",
    "sysctls",
    "read_only",
    "tty",
    "stdin_open",
    "deploy",
];

const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
];

pub fn render_swarm(
    plan: &Plan,
    compose: &ComposeProject,
    config: &Config,
) -> Result<Rendered, RenderError> {
    let single = render(plan, compose, &config.render)?;
    let body = single
        .yaml
        .split_once('\n')
        .map(|(_, rest)| rest)
        .unwrap_or(&single.yaml);
    let doc: Value = serde_norway::from_str(body)
        .map_err(|e| RenderError::new(format!("re-reading the render: {e}")))?;
    let Value::Mapping(doc) = doc else {
        return Err(RenderError::new("the render is not a mapping".into()));
    };
    let mut notes = single.notes;
    let mut services = Mapping::new();
    let empty = Mapping::new();
    let in_services = match doc.get("services") {
        Some(Value::Mapping(m)) => m,
        _ => &empty,
    };
    for (name, svc) in in_services {
        let (Some(name), Value::Mapping(svc)) = (name.as_str(), svc) else {
            continue;
        };
        let out = service(name, svc, plan, compose, config, &mut notes)?;
        services.insert(Value::String(name.to_string()), Value::Mapping(out));
    }
    let mut top = Mapping::new();
    top.insert("version".into(), "3.9".into());
    top.insert("services".into(), Value::Mapping(services));
    for key in ["volumes", "networks", "configs", "secrets"] {
        if let Some(v) = doc.get(key) {
            top.insert(key.into(), v.clone());
        }
    }
    let yaml = serde_norway::to_string(&Value::Mapping(top))
        .map_err(|e| RenderError::new(e.to_string()))?;
    Ok(Rendered {
        yaml: format!(
            "# Rendered by homebase for the swarm stack `{}`. Do not edit: change homebase.toml or the compose files.\n{yaml}",
            plan.project
        ),
        notes,
    })
}

fn service(
    name: &str,
    svc: &Mapping,
    plan: &Plan,
    compose: &ComposeProject,
    config: &Config,
    notes: &mut Vec<Note>,
) -> Result<Mapping, RenderError> {
    let note = |notes: &mut Vec<Note>, message: String| {
        notes.push(Note {
            service: name.to_string(),
            message,
        })
    };
    if !svc.contains_key("image") {
        return Err(RenderError::new(format!(
            "service `{name}` has no `image`; a swarm cannot build: build it, push it to a registry (or load it on every node) and name it in `image`"
        )));
    }
    let mut out = Mapping::new();
    let mut dropped = Vec::new();
    for (k, v) in svc {
        let Some(key) = k.as_str() else { continue };
        if KEEP.contains(&key) {
            out.insert(k.clone(), v.clone());
        } else if !matches!(
            key,
            "restart" | "oom_score_adj" | "container_name" | "build"
        ) {
            dropped.push(key.to_string());
        }
    }
    if !dropped.is_empty() {
        dropped.sort();
        note(
            notes,
            format!(
                "left out for Swarm (not in its file format): {}",
                dropped.join(", ")
            ),
        );
    }
    if let Some(Value::Mapping(h)) = out.get_mut("healthcheck") {
        h.retain(|k, _| k.as_str().is_some_and(|k| HEALTHCHECK_KEYS.contains(&k)));
    }
    if let Some(Value::Sequence(ports)) = out.get("ports").cloned() {
        let mut long = Vec::new();
        for p in ports {
            long.push(host_port(&p).ok_or_else(|| {
                RenderError::new(format!(
                    "service `{name}`: cannot read the port `{}`",
                    serde_norway::to_string(&p).unwrap_or_default().trim()
                ))
            })?);
        }
        out.insert("ports".into(), Value::Sequence(long));
        note(
            notes,
            "ports published on the node that runs the task (mode: host)".into(),
        );
    }
    // deploy: resources are already there from the single render; add the rest.
    let svc_config = config.services.get(name);
    let stateful = compose
        .services
        .get(name)
        .is_some_and(|s| !s.named_volumes.is_empty())
        || plan
            .service(name)
            .is_some_and(|p| p.priority == crate::config::Priority::Critical);
    let restart = svc
        .get("restart")
        .and_then(Value::as_str)
        .unwrap_or("always");
    // A host-mode port cannot be bound twice on one node, so a new task of a service that
    // publishes one could never start beside the old (a pinned service waits forever).
    let publishes = out
        .get("ports")
        .and_then(Value::as_sequence)
        .is_some_and(|p| !p.is_empty());
    let deploy = mapping_at(&mut out, "deploy");
    deploy.insert(
        "replicas".into(),
        Value::from(u64::from(svc_config.and_then(|s| s.replicas).unwrap_or(1))),
    );
    deploy.insert("endpoint_mode".into(), "dnsrr".into());
    let cons: Vec<Value> = constraints(config, name)
        .into_iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    if !cons.is_empty() {
        mapping_at(deploy, "placement").insert("constraints".into(), Value::Sequence(cons));
    }
    let order = if stateful || publishes {
        "stop-first"
    } else {
        "start-first"
    };
    let update = mapping_at(deploy, "update_config");
    update.insert("parallelism".into(), Value::from(1u64));
    update.insert("order".into(), order.into());
    update.insert("failure_action".into(), "rollback".into());
    update.insert("monitor".into(), "10s".into());
    let rollback = mapping_at(deploy, "rollback_config");
    rollback.insert("parallelism".into(), Value::from(1u64));
    rollback.insert("order".into(), order.into());
    if !deploy.contains_key("restart_policy") {
        let condition = match restart {
            "no" => "none",
            "on-failure" => "on-failure",
            _ => "any",
        };
        let policy = mapping_at(deploy, "restart_policy");
        policy.insert("condition".into(), condition.into());
        policy.insert("delay".into(), "5s".into());
        policy.insert("window".into(), "30s".into());
    }
    Ok(out)
}

/// `"127.0.0.1:5432:5432"`, `"8080:80/udp"`, `"80"`, or the long form → the long form with
/// `mode: host` (the host IP cannot be kept: Swarm publishes on every address of the node).
fn host_port(p: &Value) -> Option<Value> {
    let mut m = Mapping::new();
    match p {
        Value::Mapping(long) => {
            m = long.clone();
            m.remove("host_ip");
        }
        Value::String(_) | Value::Number(_) => {
            let s = match p {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).ok()?.trim().to_string(),
            };
            let (spec, proto) = s.split_once('/').unwrap_or((&s, "tcp"));
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            let (target, published) = match parts.as_slice() {
                [t] => (*t, None),
                [t, p] => (*t, Some(*p)),
                [t, p, _ip] => (*t, Some(*p)),
                _ => return None,
            };
            m.insert("target".into(), Value::from(target.parse::<u64>().ok()?));
            if let Some(p) = published.filter(|p| !p.is_empty()) {
                m.insert("published".into(), Value::from(p.parse::<u64>().ok()?));
            }
            m.insert("protocol".into(), proto.into());
        }
        _ => return None,
    }
    m.insert("mode".into(), "host".into());
    Some(Value::Mapping(m))
}

fn mapping_at<'a>(m: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let entry = m
        .entry(Value::from(key))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    match entry {
        Value::Mapping(inner) => inner,
        _ => unreachable!("just made a mapping"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compose::LoadOptions;
    use crate::units::Bytes;

    #[test]
    fn swarm_render_is_stack_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yml"),
            "services:\n  db:\n    image: postgres:17\n    container_name: db\n    ports: [\"127.0.0.1:5432:5432\"]\n    volumes: [pg:/var/lib/postgresql/data]\n    depends_on: {api: {condition: service_started}}\n    healthcheck: {test: [\"CMD\", \"pg_isready\"], interval: 1s, start_interval: 1s}\n  api:\n    image: busybox\n    restart: on-failure\n    ports: [\"8080:80\"]\n  worker:\n    image: busybox\nvolumes:\n  pg: {}\n",
        )
        .unwrap();
        let toml = "[project]\nname = \"s\"\nmode = \"swarm\"\n[nodes.a]\nssh = \"u@h1\"\n[nodes.b]\nssh = \"u@h2\"\n[services.db]\nmemory = \"1GiB\"\nnode = \"a\"\n[services.api]\nmemory = \"64MiB\"\nreplicas = 2\nplacement = [\"node.labels.role != db\"]\n[services.worker]\nmemory = \"32MiB\"\n";
        let config = Config::parse(Path::new("homebase.toml"), toml, &Default::default()).unwrap();
        let project = ComposeProject::load(&LoadOptions {
            files: vec![dir.path().join("compose.yml")],
            ..Default::default()
        })
        .unwrap();
        let plan = Plan::new(&config, &project, Bytes::gib(8.0)).unwrap();
        let r = render_swarm(&plan, &project, &config).unwrap();
        let v: Value = serde_norway::from_str(r.yaml.split_once('\n').unwrap().1).unwrap();
        assert_eq!(v["version"], "3.9");
        let db = &v["services"]["db"];
        for gone in ["container_name", "depends_on", "oom_score_adj", "restart"] {
            assert!(db.get(gone).is_none(), "{gone} left in:\n{}", r.yaml);
        }
        assert!(db["healthcheck"].get("start_interval").is_none());
        assert_eq!(db["deploy"]["resources"]["limits"]["memory"], "1g");
        assert_eq!(
            db["deploy"]["placement"]["constraints"][0],
            "node.labels.homebase.node == a"
        );
        assert_eq!(db["deploy"]["update_config"]["order"], "stop-first");
        assert_eq!(db["deploy"]["update_config"]["failure_action"], "rollback");
        assert_eq!(db["deploy"]["endpoint_mode"], "dnsrr");
        assert_eq!(db["ports"][0]["published"], 5432);
        assert_eq!(db["ports"][0]["mode"], "host");
        assert!(db["ports"][0].get("host_ip").is_none());
        let api = &v["services"]["api"];
        assert_eq!(api["deploy"]["replicas"], 2);
        // a host-mode port cannot be held by two tasks on one node: stop-first
        assert_eq!(api["deploy"]["update_config"]["order"], "stop-first");
        assert_eq!(
            v["services"]["worker"]["deploy"]["update_config"]["order"],
            "start-first"
        );
        assert_eq!(api["deploy"]["restart_policy"]["condition"], "on-failure");
        assert_eq!(api["ports"][0]["target"], 80);
        assert!(v.get("volumes").is_some() && v.get("name").is_none());
        assert!(
            r.notes
                .iter()
                .any(|n| n.service == "db" && n.message.contains("depends_on"))
        );
        // deterministic
        assert_eq!(render_swarm(&plan, &project, &config).unwrap().yaml, r.yaml);
    }
}
