//! The CLI as a user meets it: help, plan and render of the examples, init, exit codes and
//! error messages. Snapshots: `cargo insta review` (or INSTA_UPDATE=always) to update.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn homebase(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homebase"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOMEBASE_COLOR", "never")
        .env_remove("COMPOSE_PROFILES")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// `docker compose -f FILE config --format json`, which must accept the file.
fn compose_config(file: &Path) -> serde_json::Value {
    let o = Command::new("docker")
        .args(["compose", "-f"])
        .arg(file)
        .args(["config", "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn help_shows_commands_and_examples() {
    let out = homebase(&repo(), &["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn version_is_printed() {
    let out = homebase(&repo(), &["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("homebase {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn blackbox4_fits_and_its_variant_is_refused() {
    let dir = repo().join("examples/blackbox4");
    let out = homebase(&dir, &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["fits"], true);
    assert_eq!(plan["services"].as_array().unwrap().len(), 7);
    assert_eq!(plan["totals"]["sustained_bytes"], 10u64 << 30);
    assert_eq!(plan["budget_bytes"], (16u64 << 30) * 8 / 10);
    let ralph = plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ralph")
        .unwrap();
    assert_eq!(ralph["priority"], "batch");
    assert_eq!(ralph["limit_source"], "homebase.toml");

    // The over-budget variant: refused, exit 1, and --json still prints the whole plan.
    let out = homebase(
        &dir,
        &[
            "--config",
            dir.join("over-budget.toml").to_str().unwrap(),
            "plan",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["fits"], false);
    assert_eq!(plan["totals"]["peak_bytes"], 14u64 << 30);
    assert!(
        plan["problems"][0]
            .as_str()
            .unwrap()
            .contains("over the budget")
    );
    let human = homebase(
        &dir,
        &[
            "--config",
            dir.join("over-budget.toml").to_str().unwrap(),
            "plan",
        ],
    );
    assert_eq!(human.status.code(), Some(1));
    insta::assert_snapshot!(text(&human.stdout));
}

#[test]
fn agent_loop_example_counts_its_loop_in_the_budget() {
    let dir = repo().join("examples/agent-loop");
    let out = homebase(&dir, &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["loops"][0]["name"], "ralph");
    assert_eq!(plan["loops"][0]["limit_bytes"], 2u64 << 30);
    assert_eq!(plan["loops"][0]["priority"], "batch");
    // postgres 2 GiB + one ralph iteration 2 GiB
    assert_eq!(plan["totals"]["peak_bytes"], 4u64 << 30);
    // A loop that pushes the stack over its budget is refused like a service would be.
    let over = std::process::Command::new(env!("CARGO_BIN_EXE_homebase"))
        .current_dir(&dir)
        .args(["plan"])
        .env("HOMEBASE__LOOPS__RALPH__MEMORY", "12GiB")
        .env("HOMEBASE_COLOR", "never")
        .output()
        .unwrap();
    assert_eq!(over.status.code(), Some(1));
    assert!(
        text(&over.stdout).contains("sum of limits and loop iterations) is over the budget"),
        "{}",
        text(&over.stdout)
    );
}

/// Service-level `cpus` and `mem_limit` beside the limits homebase writes: Compose must
/// accept the render (it refuses distinct `cpus` and `deploy.resources.limits.cpus`).
#[test]
fn service_level_cpus_and_mem_limit_render_as_compose_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("compose.yml"),
        "services:\n  api:\n    image: busybox\n    cpus: 1.5\n    mem_limit: 256m\n  worker:\n    image: busybox\n    cpus: \"0.5\"\n    deploy:\n      resources:\n        reservations: {memory: 32m}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("homebase.toml"),
        "[project]\nname = \"cpus\"\n[budget]\nhost_memory = \"8GiB\"\n[services.worker]\nmemory = \"128MiB\"\n",
    )
    .unwrap();
    let out = d.join("rendered.yml");
    let r = homebase(d, &["render", "-o", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let yaml = std::fs::read_to_string(d.join("rendered.yml")).unwrap();
    assert!(
        !yaml.contains("\n    cpus:"),
        "service-level cpus left: {yaml}"
    );
    let have_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_compose {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the compose plugin"
        );
        return;
    }
    let o = Command::new("docker")
        .args(["compose", "-f"])
        .arg(d.join("rendered.yml"))
        .args(["config", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Compose refused the render: {}\n{yaml}",
        text(&o.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let limits = &cfg["services"]["api"]["deploy"]["resources"]["limits"];
    assert_eq!(limits["cpus"], 1.5, "{cfg:#}");
    assert_eq!(limits["memory"], "268435456");
    assert_eq!(
        cfg["services"]["worker"]["deploy"]["resources"]["limits"]["cpus"],
        0.5
    );
}

#[test]
fn render_is_deterministic_and_compose_accepts_it() {
    let dir = repo().join("examples/blackbox4");
    let a = homebase(&dir, &["render"]);
    let b = homebase(&dir, &["render"]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let yaml = text(&a.stdout);
    assert!(yaml.contains("shared_buffers=640MB"), "{yaml}");
    assert!(
        yaml.contains("NEO4J_server_memory_heap_max__size: 1024m"),
        "{yaml}"
    );
    assert!(yaml.contains("max-size: 10m"), "{yaml}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rendered.yml");
    std::fs::write(&file, &a.stdout).unwrap();
    let have_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_compose {
        let cfg = compose_config(&file);
        assert_eq!(
            cfg["services"]["postgres"]["deploy"]["resources"]["limits"]["memory"],
            "2684354560"
        );
        assert_eq!(cfg["services"]["ralph"]["oom_score_adj"], 600);
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the compose plugin"
        );
    }
}

#[test]
fn init_writes_a_config_that_plans() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("examples/blackbox4/compose.yml"),
        tmp.path().join("compose.yml"),
    )
    .unwrap();
    let out = homebase(tmp.path(), &["init", "--name", "mine"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(tmp.path().join("homebase.toml")).unwrap();
    assert!(
        toml.contains("[services.postgres]\npriority = \"critical\""),
        "{toml}"
    );
    assert!(toml.contains("memory = \"2GiB\"   # proposed"), "{toml}");
    let plan = homebase(tmp.path(), &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["project"], "mine");
    assert!(
        plan["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["limit_bytes"].is_u64())
    );
    // It refuses to overwrite.
    let again = homebase(tmp.path(), &["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists; pass --force"));
}

#[test]
fn bad_input_errors_name_the_problem_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut report = String::new();
    let mut case = |name: &str, compose: &str, toml: &str, args: &[&str]| {
        std::fs::write(d.join("compose.yml"), compose).unwrap();
        std::fs::write(d.join("homebase.toml"), toml).unwrap();
        let out = homebase(d, args);
        let err = format!("{}{}", text(&out.stdout), text(&out.stderr))
            .replace(&d.display().to_string(), "<dir>");
        report.push_str(&format!(
            "## {name} (exit {:?})\n{err}\n",
            out.status.code()
        ));
    };
    let ok_compose = "services:\n  postgres:\n    image: postgres:17\n    mem_limit: 1g\n";
    case(
        "unknown service",
        ok_compose,
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n[services.postgress]\nmemory = \"1GiB\"\n",
        &["plan"],
    );
    case(
        "malformed toml",
        ok_compose,
        "[project\nname = \"x\"\n",
        &["plan"],
    );
    case(
        "malformed yaml",
        "services:\n  web:\n    image: [\n",
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n",
        &["plan"],
    );
    case(
        "no limit",
        "services:\n  cache:\n    image: redis:7\n",
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n",
        &["plan"],
    );
    case(
        "detect without a host",
        ok_compose,
        "[project]\nname = \"x\"\n[host]\nssh = \"nobody@10.231.0.250\"\nconnect_timeout_secs = 1\n",
        &["plan"],
    );
    case(
        "a limit of 0",
        ok_compose,
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n[services.postgres]\nmemory = \"0\"\n",
        &["plan"],
    );
    case(
        "a limit above the host",
        ok_compose,
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n[services.postgres]\nmemory = \"1EiB\"\n",
        &["plan"],
    );
    case(
        "a service name with shell characters",
        "services:\n  \"db;reboot\":\n    image: postgres:17\n    mem_limit: 1g\n",
        "[project]\nname = \"x\"\n[budget]\nhost_memory = \"8GiB\"\n",
        &["plan"],
    );
    case(
        "bad flag value",
        ok_compose,
        "[project]\nname = \"x\"\n",
        &["plan", "--host-memory", "lots"],
    );
    insta::assert_snapshot!(report);
    let none = tempfile::tempdir().unwrap();
    let out = homebase(none.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("run `homebase init` to write one"));
}

#[test]
fn completions_are_generated() {
    let out = homebase(&repo(), &["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("deploy"));
    assert!(text(&out.stdout).contains("rollback"));
}

/// Memory settings are derived only for image families whose convention is known: the
/// official PostgreSQL image and those built on it (a `postgres -c` command), Bitnami's
/// (`POSTGRESQL_EXTRA_FLAGS`), the official Neo4j (`NEO4J_server_memory_*`); for any other
/// the render says nothing was derived and leaves the image's command alone. Compose accepts
/// the result.
#[test]
fn tuning_follows_each_image_familys_convention() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        r#"
services:
  pg: {image: "pgvector/pgvector:pg17"}
  bitnami: {image: "bitnami/postgresql:17", environment: {POSTGRESQL_EXTRA_FLAGS: "-c max_connections=50"}}
  supa: {image: "supabase/postgres:15.8.1"}
  neo: {image: "neo4j:5"}
  bneo: {image: "bitnami/neo4j:5"}
"#,
    )
    .unwrap();
    let mut toml = "[project]\nname = \"families\"\n[host]\nssh = \"local\"\n[budget]\nhost_memory = \"16GiB\"\n".to_string();
    for s in ["pg", "bitnami", "supa", "neo", "bneo"] {
        toml.push_str(&format!("[services.{s}]\nmemory = \"1GiB\"\n"));
    }
    std::fs::write(dir.path().join("homebase.toml"), toml).unwrap();
    let out = homebase(dir.path(), &["render"]);
    let notes = text(&out.stderr);
    assert!(out.status.success(), "{notes}");
    // read back as Compose reads it (which also proves Compose accepts it)
    let file = dir.path().join("rendered.yml");
    std::fs::write(&file, &out.stdout).unwrap();
    let doc = compose_config(&file);
    let svc = |s: &str| doc["services"][s].clone();
    let cmd = svc("pg")["command"].to_string();
    assert!(cmd.contains("shared_buffers=256MB"), "{cmd}");
    let flags = svc("bitnami")["environment"]["POSTGRESQL_EXTRA_FLAGS"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        flags.starts_with("-c max_connections=50 ") && flags.contains("-c shared_buffers=256MB"),
        "{flags}"
    );
    assert!(
        svc("bitnami")["command"].is_null(),
        "Bitnami's command is its own"
    );
    assert!(svc("supa")["command"].is_null(), "{:#}", svc("supa"));
    assert!(
        notes.contains("supa: PostgreSQL settings not derived: `supabase/postgres`"),
        "{notes}"
    );
    assert!(
        svc("neo")["environment"]["NEO4J_server_memory_heap_max__size"].is_string(),
        "{:#}",
        svc("neo")
    );
    assert!(svc("bneo")["environment"]["NEO4J_server_memory_heap_max__size"].is_null());
    assert!(notes.contains("bneo: Neo4j memory not derived"), "{notes}");
}
