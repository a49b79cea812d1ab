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
