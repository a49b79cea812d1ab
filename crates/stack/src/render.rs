//! Rendering the compose file that deploy uses: every service limited and reserved,
//! restarted, log-rotated, OOM-ordered by priority, and memory-tuned for known images.
//!
//! Deterministic: the same input gives byte-identical output.

use serde_norway::{Mapping, Value};

use crate::compose::ComposeProject;
use crate::config::RenderSection;
use crate::interpolate::escape;
use crate::kinds::{Kind, PgFamily};
use crate::plan::{Plan, PlannedService};
use crate::units::Bytes;

/// What rendering derived for a service, for people to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub service: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    pub yaml: String,
    pub notes: Vec<Note>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render the compose file: {0}")]
pub struct RenderError(String);

impl RenderError {
    pub fn new(message: String) -> RenderError {
        RenderError(message)
    }
}

pub fn render(
    plan: &Plan,
    compose: &ComposeProject,
    opts: &RenderSection,
) -> Result<Rendered, RenderError> {
    let mut notes = Vec::new();
    let mut services = Mapping::new();
    for ps in &plan.services {
        let svc = compose.services.get(&ps.name).ok_or_else(|| {
            RenderError(format!(
                "service `{}` is in the plan but not in the compose files",
                ps.name
            ))
        })?;
        let mut raw = svc.raw.clone();
        // an optional dependency on a service the render leaves out (an inactive profile)
        // goes: Compose refuses a `depends_on` naming a service the file does not define
        if let Some(Value::Mapping(deps)) = raw.get_mut("depends_on") {
            deps.retain(|k, _| {
                k.as_str()
                    .is_some_and(|k| plan.services.iter().any(|p| p.name == k))
            });
            if deps.is_empty() {
                raw.remove("depends_on");
            }
        }
        render_service(&mut raw, ps, opts, &mut notes);
        let mut raw = Value::Mapping(raw);
        escape_value_strings(&mut raw);
        services.insert(Value::String(ps.name.clone()), raw);
    }
    let mut doc = Mapping::new();
    doc.insert("name".into(), Value::String(plan.project.clone()));
    doc.insert("services".into(), Value::Mapping(services));
    for (k, v) in &compose.top {
        if k.as_str().is_some_and(|k| k.starts_with("x-")) {
            continue;
        }
        let mut v = v.clone();
        escape_value_strings(&mut v);
        doc.insert(k.clone(), v);
    }
    let yaml =
        serde_norway::to_string(&Value::Mapping(doc)).map_err(|e| RenderError(e.to_string()))?;
    Ok(Rendered {
        yaml: format!(
            "# Rendered by homebase for project `{}`. Do not edit: change homebase.toml or the compose files.\n{yaml}",
            plan.project
        ),
        notes,
    })
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

fn render_service(
    raw: &mut Mapping,
    ps: &PlannedService,
    opts: &RenderSection,
    notes: &mut Vec<Note>,
) {
    for key in ["profiles", "mem_limit", "mem_reservation", "extends"] {
        raw.remove(key);
    }
    // `cpus:` beside `deploy.resources.limits`: Compose refuses the two when they differ
    // ("can't set distinct values on 'cpus' and 'deploy.resources.limits.cpus'"), and a
    // limits mapping without cpus differs; so the service-level value moves into it.
    let cpus = raw.remove("cpus");
    {
        let resources = mapping_at(mapping_at(raw, "deploy"), "resources");
        if let Some(cpus) = cpus {
            mapping_at(resources, "limits")
                .entry("cpus".into())
                .or_insert(cpus);
        }
        if let Some(limit) = ps.limit {
            mapping_at(resources, "limits")
                .insert("memory".into(), Value::String(limit.to_compose()));
        }
        if let Some(res) = ps.reservation {
            mapping_at(resources, "reservations")
                .insert("memory".into(), Value::String(res.to_compose()));
        }
    }
    let has_restart_policy =
        matches!(raw.get("deploy"), Some(Value::Mapping(d)) if d.contains_key("restart_policy"));
    if !raw.contains_key("restart") && !has_restart_policy {
        raw.insert("restart".into(), Value::String(opts.restart.clone()));
    }
    let logging = mapping_at(raw, "logging");
    let driver = logging
        .get("driver")
        .and_then(Value::as_str)
        .map(str::to_string);
    if driver.is_none() || driver.as_deref() == Some("json-file") {
        logging.insert("driver".into(), "json-file".into());
        let options = mapping_at(logging, "options");
        options
            .entry("max-size".into())
            .or_insert_with(|| Value::String(opts.log_max_size.clone()));
        options
            .entry("max-file".into())
            .or_insert_with(|| Value::String(opts.log_max_file.to_string()));
    }
    // an init process as PID 1 (Docker's tini): a process that would ignore SIGTERM only
    // because it is PID 1 (a shell loop, `sleep`) stops at once instead of after the 10 s
    // grace, and zombies are reaped. `init: false` in the compose file keeps the image's own.
    if !raw.contains_key("init") {
        raw.insert("init".into(), Value::Bool(true));
    }
    if !raw.contains_key("oom_score_adj") {
        raw.insert(
            "oom_score_adj".into(),
            Value::from(ps.priority.oom_score_adj()),
        );
    }
    if !opts.tune {
        return;
    }
    if let Some(limit) = ps.limit {
        tune(raw, ps, limit, notes);
    }
}

/// Settings derived from the memory limit, by the kind of service (PostgreSQL, Neo4j,
/// Node.js, the JVM), unless the compose file sets them already.
fn tune(raw: &mut Mapping, ps: &PlannedService, limit: Bytes, notes: &mut Vec<Note>) {
    let repo = ps
        .image
        .as_deref()
        .map(crate::model::image_repo)
        .unwrap_or_default();
    match ps.kind {
        Kind::Postgres => match PgFamily::of(&repo) {
            PgFamily::Official => tune_postgres(raw, limit, notes, &ps.name),
            PgFamily::Bitnami => tune_bitnami_postgres(raw, limit, notes, &ps.name),
            PgFamily::Unknown => notes.push(Note {
                service: ps.name.clone(),
                message: format!(
                    "PostgreSQL settings not derived: `{repo}` is not an image family homebase knows how to configure (the official image and those built on it, Bitnami's); set shared_buffers and the like as its documentation says"
                ),
            }),
        },
        Kind::Neo4j if !crate::kinds::neo4j_official(&repo) => notes.push(Note {
            service: ps.name.clone(),
            message: format!(
                "Neo4j memory not derived: `{repo}` is not the official neo4j image, whose NEO4J_server_memory_* variables homebase sets"
            ),
        }),
        Kind::Neo4j => tune_neo4j(raw, ps, limit, notes),
        Kind::Node => tune_node(raw, ps, limit, notes),
        Kind::Jvm => tune_jvm(raw, ps, notes),
        _ => {}
    }
}

/// Neo4j's heap (40%) and page cache (30%) of the limit.
fn tune_neo4j(raw: &mut Mapping, ps: &PlannedService, limit: Bytes, notes: &mut Vec<Note>) {
    let note = |notes: &mut Vec<Note>, message: String| {
        notes.push(Note {
            service: ps.name.clone(),
            message,
        })
    };
    let v4 = ps
        .image
        .as_deref()
        .is_some_and(|i| i.contains(":4.") || i.contains(":3."));
    let prefix = if v4 {
        "NEO4J_dbms_memory"
    } else {
        "NEO4J_server_memory"
    };
    let env = mapping_at(raw, "environment");
    let user_set = env
        .keys()
        .filter_map(Value::as_str)
        .any(|k| k.contains("_memory_heap") || k.contains("_memory_pagecache"));
    if user_set {
        note(
            notes,
            "Neo4j memory set in the compose file; left as is".into(),
        );
    } else {
        let heap = Bytes(limit.0 * 2 / 5);
        let cache = Bytes(limit.0 * 3 / 10);
        let m = |b: Bytes| format!("{}m", b.as_mib());
        env.insert(
            format!("{prefix}_heap_initial__size").into(),
            m(heap).into(),
        );
        env.insert(format!("{prefix}_heap_max__size").into(), m(heap).into());
        env.insert(format!("{prefix}_pagecache_size").into(), m(cache).into());
        note(
            notes,
            format!(
                "Neo4j heap {} and page cache {} from the {limit} limit",
                m(heap),
                m(cache)
            ),
        );
    }
}

/// Node.js's old-space heap at 75% of the limit.
fn tune_node(raw: &mut Mapping, ps: &PlannedService, limit: Bytes, notes: &mut Vec<Note>) {
    let note = |notes: &mut Vec<Note>, message: String| {
        notes.push(Note {
            service: ps.name.clone(),
            message,
        })
    };
    let mib = limit.as_mib() * 3 / 4;
    let flag = format!("--max-old-space-size={mib}");
    let env = mapping_at(raw, "environment");
    match env
        .get("NODE_OPTIONS")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        Some(existing) if existing.contains("max-old-space-size") => {
            note(
                notes,
                "NODE_OPTIONS already sets the heap; left as is".into(),
            );
        }
        Some(existing) => {
            env.insert("NODE_OPTIONS".into(), format!("{existing} {flag}").into());
            note(notes, format!("Node.js heap {mib} MiB (75% of the limit)"));
        }
        None => {
            env.insert("NODE_OPTIONS".into(), flag.into());
            note(notes, format!("Node.js heap {mib} MiB (75% of the limit)"));
        }
    }
}

/// The JVM's heap at most 75% of the limit.
fn tune_jvm(raw: &mut Mapping, ps: &PlannedService, notes: &mut Vec<Note>) {
    let note = |notes: &mut Vec<Note>, message: String| {
        notes.push(Note {
            service: ps.name.clone(),
            message,
        })
    };
    let env = mapping_at(raw, "environment");
    let existing = env
        .get("JAVA_TOOL_OPTIONS")
        .and_then(Value::as_str)
        .map(str::to_string);
    match existing {
        Some(e) if e.contains("MaxRAMPercentage") || e.contains("-Xmx") => {
            note(
                notes,
                "JAVA_TOOL_OPTIONS already sizes the heap; left as is".into(),
            );
        }
        other => {
            let v = match other {
                Some(e) => format!("{e} -XX:MaxRAMPercentage=75.0"),
                None => "-XX:MaxRAMPercentage=75.0".into(),
            };
            env.insert("JAVA_TOOL_OPTIONS".into(), v.into());
            note(
                notes,
                "JVM heap at most 75% of the limit (-XX:MaxRAMPercentage)".into(),
            );
        }
    }
}

fn pg_size(b: Bytes) -> String {
    format!("{}MB", b.as_mib().max(1))
}

/// The settings derived from a PostgreSQL service's limit.
fn pg_settings(limit: Bytes) -> [(&'static str, String); 4] {
    let clamp = |v: u64, lo: u64, hi: u64| Bytes(v.clamp(lo, hi));
    [
        ("shared_buffers", pg_size(Bytes(limit.0 / 4))),
        ("effective_cache_size", pg_size(Bytes(limit.0 / 4 * 3))),
        ("work_mem", pg_size(clamp(limit.0 / 64, 4 << 20, 64 << 20))),
        (
            "maintenance_work_mem",
            pg_size(clamp(limit.0 / 16, 64 << 20, 1 << 30)),
        ),
    ]
}

/// Bitnami's image: the settings as `-c` flags in `POSTGRESQL_EXTRA_FLAGS` (its command and
/// entrypoint untouched), after any the file sets there.
fn tune_bitnami_postgres(raw: &mut Mapping, limit: Bytes, notes: &mut Vec<Note>, service: &str) {
    let env = mapping_at(raw, "environment");
    let existing = env
        .get("POSTGRESQL_EXTRA_FLAGS")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let applied: Vec<String> = pg_settings(limit)
        .iter()
        .filter(|(n, _)| !existing.contains(&format!("{n}=")))
        .map(|(n, v)| format!("-c {n}={v}"))
        .collect();
    if applied.is_empty() {
        notes.push(Note {
            service: service.into(),
            message: "POSTGRESQL_EXTRA_FLAGS already sets the memory settings; left as is".into(),
        });
        return;
    }
    let flags = if existing.trim().is_empty() {
        applied.join(" ")
    } else {
        format!("{} {}", existing.trim(), applied.join(" "))
    };
    env.insert("POSTGRESQL_EXTRA_FLAGS".into(), flags.into());
    notes.push(Note {
        service: service.into(),
        message: format!(
            "Bitnami PostgreSQL: {} in POSTGRESQL_EXTRA_FLAGS, from the {limit} limit",
            applied.join(" ")
        ),
    });
}

fn tune_postgres(raw: &mut Mapping, limit: Bytes, notes: &mut Vec<Note>, service: &str) {
    let settings = pg_settings(limit);
    if raw.contains_key("entrypoint") {
        notes.push(Note {
            service: service.into(),
            message: "custom entrypoint: PostgreSQL settings not derived".into(),
        });
        return;
    }
    let existing = raw.get("command").cloned();
    let mentions = |name: &str| match &existing {
        Some(Value::String(s)) => s.contains(&format!("{name}=")),
        Some(Value::Sequence(seq)) => seq
            .iter()
            .filter_map(Value::as_str)
            .any(|a| a.contains(&format!("{name}="))),
        _ => false,
    };
    let todo: Vec<&(&str, String)> = settings.iter().filter(|(n, _)| !mentions(n)).collect();
    let applied: Vec<String> = todo.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let new = match existing {
        None | Some(Value::Null) => {
            let mut args = vec![Value::from("postgres")];
            for a in &applied {
                args.push("-c".into());
                args.push(a.clone().into());
            }
            Some(Value::Sequence(args))
        }
        Some(Value::Sequence(mut seq))
            if seq.first().and_then(Value::as_str) == Some("postgres") =>
        {
            for a in &applied {
                seq.push("-c".into());
                seq.push(a.clone().into());
            }
            Some(Value::Sequence(seq))
        }
        Some(Value::String(s)) if s.trim_start().starts_with("postgres") => {
            let mut s = s.trim_end().to_string();
            for a in &applied {
                s.push_str(&format!(" -c {a}"));
            }
            Some(Value::String(s))
        }
        _ => {
            notes.push(Note {
                service: service.into(),
                message: "custom command: PostgreSQL settings not derived".into(),
            });
            None
        }
    };
    if let Some(cmd) = new {
        raw.insert("command".into(), cmd);
        if applied.len() < settings.len() {
            notes.push(Note {
                service: service.into(),
                message: "PostgreSQL settings in the command kept; the others derived".into(),
            });
        }
        if !applied.is_empty() {
            notes.push(Note {
                service: service.into(),
                message: format!("PostgreSQL {} from the {limit} limit", applied.join(" ")),
            });
        }
    }
}

/// Escapes `$` in every string value (keys are never interpolated by Compose).
fn escape_value_strings(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = escape(s),
        Value::Sequence(seq) => seq.iter_mut().for_each(escape_value_strings),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| escape_value_strings(v)),
        Value::Tagged(t) => escape_value_strings(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;
    use crate::config::Config;
    use indexmap::IndexMap;
    use std::path::Path;

    /// The rendered document of `compose` under `toml`, on a 16 GiB host.
    fn rendered(compose: &str, toml: &str) -> (Mapping, Vec<Note>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(&file, compose).unwrap();
        let project = ComposeProject::load(&LoadOptions {
            files: vec![file],
            ..Default::default()
        })
        .unwrap();
        let config = Config::parse(
            Path::new("homebase.toml"),
            &format!("[project]\nname = \"p\"\n{toml}"),
            &IndexMap::new(),
        )
        .unwrap();
        let plan = Plan::new(&config, &project, Bytes(16 << 30)).unwrap();
        let r = render(&plan, &project, &config.render).unwrap();
        assert!(r.yaml.starts_with("# Rendered by homebase for project `p`"));
        let doc: Value = serde_norway::from_str(&r.yaml).unwrap();
        (doc.as_mapping().unwrap().clone(), r.notes)
    }

    fn service<'a>(doc: &'a Mapping, name: &str) -> &'a Mapping {
        doc["services"][name].as_mapping().unwrap()
    }

    #[test]
    fn every_service_gets_limits_restart_logs_init_and_its_oom_order() {
        let (doc, _) = rendered(
            "services:\n  api:\n    image: brain-api:1\n    mem_limit: 1g\n    mem_reservation: 512m\n    cpus: 1.5\n  db:\n    image: pgvector/pgvector:pg17\n",
            "[services.db]\nmemory = \"2GiB\"\n[render]\ntune = false\n",
        );
        assert_eq!(doc["name"], "p");
        let api = service(&doc, "api");
        for gone in ["mem_limit", "mem_reservation", "cpus"] {
            assert!(!api.contains_key(gone), "{gone}: {api:?}");
        }
        let res = &api["deploy"]["resources"];
        assert_eq!(res["limits"]["memory"], "1g");
        assert_eq!(res["limits"]["cpus"], 1.5);
        assert_eq!(res["reservations"]["memory"], "512m");
        assert_eq!(api["restart"], "unless-stopped");
        assert_eq!(api["logging"]["driver"], "json-file");
        assert_eq!(api["logging"]["options"]["max-size"], "10m");
        assert_eq!(api["logging"]["options"]["max-file"], "3");
        assert_eq!(api["init"], true);
        let db = service(&doc, "db");
        // a database is killed last, the rest before it
        assert!(
            db["oom_score_adj"].as_i64().unwrap() < api["oom_score_adj"].as_i64().unwrap(),
            "{db:?} {api:?}"
        );
        assert_eq!(db["deploy"]["resources"]["limits"]["memory"], "2g");
        // tune = false: nothing derived
        assert!(!db.contains_key("command"), "{db:?}");
    }

    #[test]
    fn what_the_compose_file_sets_is_kept() {
        let (doc, _) = rendered(
            "services:\n  api:\n    image: a:1\n    mem_limit: 64m\n    restart: on-failure\n    init: false\n    oom_score_adj: 7\n    logging: {driver: syslog}\n  job:\n    image: a:1\n    mem_limit: 64m\n    deploy: {restart_policy: {condition: none}}\n",
            "[render]\nrestart = \"always\"\nlog_max_size = \"1m\"\n",
        );
        let api = service(&doc, "api");
        assert_eq!(api["restart"], "on-failure");
        assert_eq!(api["init"], false);
        assert_eq!(api["oom_score_adj"], 7);
        assert_eq!(api["logging"]["driver"], "syslog");
        assert!(!api["logging"].as_mapping().unwrap().contains_key("options"));
        // a deploy restart policy: no `restart:` beside it
        assert!(!service(&doc, "job").contains_key("restart"));
    }

    #[test]
    fn known_images_get_settings_from_their_limit_and_others_a_note() {
        let (doc, notes) = rendered(
            "services:\n  db:\n    image: postgres:17\n  graph:\n    image: neo4j:5\n  web:\n    image: node:22\n  odd:\n    image: example/postgres-fork:1\n",
            "[services.db]\nmemory = \"2GiB\"\n[services.graph]\nmemory = \"2GiB\"\n[services.web]\nmemory = \"1GiB\"\n[services.odd]\nmemory = \"1GiB\"\n",
        );
        let cmd = serde_norway::to_string(&service(&doc, "db")["command"]).unwrap();
        assert!(cmd.contains("shared_buffers="), "{cmd}");
        let graph = &service(&doc, "graph")["environment"];
        assert!(
            graph
                .as_mapping()
                .unwrap()
                .keys()
                .any(|k| k.as_str().unwrap().contains("heap_max__size")),
            "{graph:?}"
        );
        let node = serde_norway::to_string(&service(&doc, "web")["environment"]).unwrap();
        assert!(node.contains("--max-old-space-size="), "{node}");
        assert!(
            notes.iter().any(|n| n.service == "odd"),
            "no note for an unknown family: {notes:?}"
        );
    }

    #[test]
    fn a_dependency_on_a_service_left_out_goes_and_x_keys_stay_out() {
        let (doc, _) = rendered(
            "x-common: &c {image: a:1}\nservices:\n  api:\n    image: a:1\n    mem_limit: 64m\n    depends_on:\n      debug: {condition: service_started, required: false}\n  debug:\n    image: a:1\n    profiles: [debug]\n",
            "",
        );
        assert!(!doc.contains_key("x-common"));
        assert!(!service(&doc, "api").contains_key("depends_on"));
        assert!(!doc["services"].as_mapping().unwrap().contains_key("debug"));
    }
}
