//! Bad input gets a clear message naming the file, the place and the fix. Each fixture under
//! `fixtures/invalid` (compose) and `fixtures/config` (homebase.toml) is loaded and its full
//! error chain snapshotted. Update with `cargo insta review` (or INSTA_UPDATE=always).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::fmt::Write as _;
use std::path::Path;

use homebase_stack::config::Config;
use homebase_stack::{Bytes, ComposeProject, LoadOptions, Plan};
use indexmap::IndexMap;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        write!(s, ": {c}").unwrap();
        cur = c.source();
    }
    s
}

fn fixtures(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(Path::new("tests/fixtures").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn compose_errors() {
    let mut out = String::new();
    for f in fixtures("invalid") {
        let r = ComposeProject::load(&LoadOptions {
            files: vec![f.clone().into()],
            ..Default::default()
        });
        let e = r.expect_err(&f);
        writeln!(out, "{f}\n  {}\n", chain(&e)).unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn config_errors() {
    let mut out = String::new();
    for f in fixtures("config") {
        let e = Config::load(Path::new(&f), &IndexMap::new()).expect_err(&f);
        writeln!(out, "{f}\n  {}\n", chain(&e).replace('\n', "\n  ")).unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_service_in_config_suggests_the_closest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        "services:\n  postgres:\n    image: postgres\n  neo4j:\n    image: neo4j\n",
    )
    .unwrap();
    let project = ComposeProject::load(&LoadOptions {
        files: vec![dir.path().join("compose.yml")],
        ..Default::default()
    })
    .unwrap();
    let config = Config::parse(
        Path::new("homebase.toml"),
        "[project]\nname = \"x\"\n[services.postgress]\nmemory = \"1GiB\"\n",
        &IndexMap::new(),
    )
    .unwrap();
    let e = Plan::new(&config, &project, Bytes::gib(16.0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "homebase.toml names service `postgress`, which the compose files do not define; did you mean `postgres`?"
    );
    let config = Config::parse(
        Path::new("homebase.toml"),
        "[project]\nname = \"x\"\n[services.redis]\nmemory = \"1GiB\"\n",
        &IndexMap::new(),
    )
    .unwrap();
    let e = Plan::new(&config, &project, Bytes::gib(16.0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "homebase.toml names service `redis`, which the compose files do not define; the services are: postgres, neo4j"
    );
}

fn plan_of(compose: &str, toml: &str, host: Bytes) -> Result<Plan, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
    let project = ComposeProject::load(&LoadOptions {
        files: vec![dir.path().join("compose.yml")],
        ..Default::default()
    })
    .map_err(|e| chain(&e))?;
    let config = Config::parse(
        Path::new("homebase.toml"),
        &format!("[project]\nname = \"x\"\n{toml}"),
        &IndexMap::new(),
    )
    .map_err(|e| chain(&e))?;
    Plan::new(&config, &project, host).map_err(|e| chain(&e))
}

#[test]
fn budget_sums_never_wrap_and_limits_must_be_real() {
    let three = "services:\n  a:\n    image: x\n  b:\n    image: x\n  c:\n    image: x\n";
    // 3 × 6148914691236517206 wraps a u64 to 2 (it planned as "fits" before); each is
    // also far above the host, which is the error
    let big = "[services.a]\nmemory = \"6148914691236517206\"\n[services.b]\nmemory = \"6148914691236517206\"\n[services.c]\nmemory = \"6148914691236517206\"\n";
    let e = plan_of(three, big, Bytes::gib(16.0)).unwrap_err();
    assert!(
        e.contains("service `a`: its memory limit")
            && e.contains("larger than the host's memory (16 GiB)"),
        "{e}"
    );
    // on a host that big, the sum saturates: over budget, never "fits"
    let plan = plan_of(three, big, Bytes(u64::MAX)).unwrap();
    assert!(!plan.fits(), "{:?}", plan.problems);
    assert_eq!(plan.peak, Bytes(u64::MAX));
    // 0 means "no limit" to Docker
    let e = plan_of(three, "[services.a]\nmemory = \"0\"\n", Bytes::gib(16.0)).unwrap_err();
    assert!(
        e.contains("service `a`: a memory limit of 0 means \"no limit\""),
        "{e}"
    );
    assert!(e.contains("homebase.toml `services.a.memory`"), "{e}");
    // in a compose file `mem_limit: 0` is "unset", as Compose reads it: no limit, refused
    let plan = plan_of(
        "services:\n  a:\n    image: x\n    mem_limit: 0\n",
        "",
        Bytes::gib(16.0),
    )
    .unwrap();
    assert!(!plan.fits());
    // 1EiB and its value in bytes get the same answer
    let eib = plan_of(three, "[services.a]\nmemory = \"1EiB\"\n", Bytes::gib(16.0)).unwrap_err();
    let bytes = plan_of(
        three,
        "[services.a]\nmemory = \"1152921504606846976\"\n",
        Bytes::gib(16.0),
    )
    .unwrap_err();
    assert_eq!(eib, bytes);
    // a loop bigger than the host
    let e = plan_of(
        "services:\n  a:\n    image: x\n    mem_limit: 1g\n",
        "[loops.l]\nimage = \"x\"\ncommand = \"x\"\nmemory = \"64GiB\"\n",
        Bytes::gib(16.0),
    )
    .unwrap_err();
    assert!(e.contains("loop `l`: its memory limit (64 GiB)"), "{e}");
}

#[test]
fn service_names_compose_refuses_are_refused() {
    for bad in ["\"a;rm -rf ~\"", "\"$(id)\"", "\"a b\"", "\"-x\"", "\"_x\""] {
        let e = plan_of(
            &format!("services:\n  {bad}:\n    image: x\n    mem_limit: 1g\n"),
            "",
            Bytes::gib(16.0),
        )
        .unwrap_err();
        assert!(
            e.contains("a service name may use letters, digits"),
            "{bad}: {e}"
        );
    }
    plan_of(
        "services:\n  web.v2_a-1:\n    image: x\n    mem_limit: 1g\n",
        "",
        Bytes::gib(16.0),
    )
    .unwrap();
}

#[test]
fn deep_nesting_is_refused_at_once() {
    let deep = format!(
        "services:\n  a:\n    image: x\n    labels: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let t = std::time::Instant::now();
    let e = plan_of(&deep, "", Bytes::gib(16.0)).unwrap_err();
    assert!(e.contains("nest more than 128 levels"), "{e}");
    // (no timing assertion: the error comes from a linear scan before any parsing)
    let _ = t;
    let block: String = (0..300)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect();
    let e = plan_of(&format!("x:\n{block}"), "", Bytes::gib(16.0)).unwrap_err();
    assert!(e.contains("nest more than 128 levels"), "{e}");
    // brackets in strings and comments do not count
    let fine = format!(
        "services:\n  a:\n    image: x\n    mem_limit: 1g\n    command: \"{}\" # {}\n",
        "[".repeat(500),
        "{".repeat(500)
    );
    plan_of(&fine, "", Bytes::gib(16.0)).unwrap();
}

#[test]
fn profiles_and_optional_dependencies_as_compose_reads_them() {
    let compose = "services:\n  a:\n    image: x\n    mem_limit: 1g\n    profiles: [\"\", \"extra\"]\n    depends_on:\n      b:\n        condition: service_started\n        required: false\n  b:\n    image: x\n    mem_limit: 1g\n    profiles: [\"debug\"]\n";
    let plan = plan_of(compose, "", Bytes::gib(16.0)).unwrap();
    assert_eq!(
        plan.services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(plan.inactive, ["b"]);
    // a required dependency on an inactive service is still an error, as in Compose
    let e = plan_of(
        &compose.replace("required: false", "required: true"),
        "",
        Bytes::gib(16.0),
    )
    .unwrap_err();
    assert!(e.contains("only in an inactive profile"), "{e}");
}
