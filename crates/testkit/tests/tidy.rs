//! Tidy checks on the source tree itself (as rust-analyzer's `tidy.rs` does): rules of
//! ARCHITECTURE.md that a reviewer would otherwise have to check by hand.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Every file under `dir`, relative to the repository root, skipping build output and VCS.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "node_modules" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            files(&path, out);
        } else {
            out.push(path.strip_prefix(root()).unwrap().to_path_buf());
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut all = Vec::new();
    files(&root().join("crates"), &mut all);
    all.into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p)).unwrap();
            (p, text)
        })
        .collect()
}

/// The part of a source file before its test module.
fn outside_tests(text: &str) -> &str {
    text.split("\n#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn no_module_takes_its_parent_whole_outside_tests() {
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|(_, text)| outside_tests(text).lines().any(|l| l == "use super::*;"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "`use super::*;` outside tests hides what a module depends on; import by name in: {offenders:#?}"
    );
}

/// Files ARCHITECTURE.md names that live on the host, not in this repository.
const ON_THE_HOST: &[&str] = &["build.yml", "loops.yml"];

#[test]
fn every_file_and_directory_architecture_names_exists() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut tracked = Vec::new();
    files(&root(), &mut tracked);
    let tracked: Vec<String> = tracked
        .iter()
        .map(|p| format!("/{}", p.display()))
        .collect();
    let named = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
                && ([".rs", ".sh", ".toml", ".md", ".yml", ".js"]
                    .iter()
                    .any(|ext| t.ends_with(ext))
                    || ["crates/", "scripts/", "bench/", "examples/", "docs/"]
                        .iter()
                        .any(|dir| t.starts_with(dir)))
        })
        .filter(|t| !ON_THE_HOST.contains(t));
    let mut missing = Vec::new();
    let mut checked = 0;
    for name in named {
        checked += 1;
        let name = name.trim_end_matches('/');
        let file = format!("/{name}");
        let dir = format!("/{name}/");
        if !tracked
            .iter()
            .any(|p| p.ends_with(&file) || p.contains(&dir))
        {
            missing.push(name.to_string());
        }
    }
    assert!(
        checked > 50,
        "only {checked} names read from ARCHITECTURE.md"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what does not exist (rename it there, or add it to ON_THE_HOST when it lives on the host): {missing:#?}"
    );
}

/// The longest a function may be outside tests, in lines.
const MAX_FUNCTION_LINES: usize = 120;

#[test]
fn no_function_outside_tests_is_longer_than_a_screenful_or_two() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = outside_tests(&text).lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            let is_fn = ["fn ", "pub fn ", "async fn ", "pub async fn ", "const fn "]
                .iter()
                .chain(
                    [
                        "pub(crate) fn ",
                        "pub(super) fn ",
                        "pub(crate) async fn ",
                        "pub(super) async fn ",
                    ]
                    .iter(),
                )
                .any(|p| body.starts_with(p));
            if !is_fn || body.ends_with(';') {
                continue;
            }
            let end = format!("{indent}}}");
            if let Some(len) = lines[i + 1..].iter().position(|l| *l == end)
                && len + 2 > MAX_FUNCTION_LINES
            {
                long.push(format!("{}:{} ({} lines)", path.display(), i + 1, len + 2));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: split them into named steps: {long:#?}"
    );
}

/// The longest a source file may be outside its tests, in lines.
const MAX_FILE_LINES: usize = 700;

#[test]
fn no_source_file_is_longer_than_a_module_should_be() {
    let long: Vec<String> = sources()
        .iter()
        .map(|(p, text)| (p, outside_tests(text).lines().count()))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(p, n)| format!("{} ({n} lines)", p.display()))
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_FILE_LINES} lines outside tests: split them into modules: {long:#?}"
    );
}

/// A document homebase prints or sends is a type of `homebase-proto`, typed on both ends;
/// `json!` is left to what is not homebase's: the payloads of Slack and Discord, and the
/// user's own JSON files setup edits (the docker CLI's config, the engine's daemon.json).
#[test]
fn every_document_homebase_prints_or_sends_is_a_proto_type() {
    let allowed = [
        "crates/daemon/src/alerts.rs",
        "crates/host/src/setup/checks.rs",
        "crates/host/src/setup/live_restore.rs",
    ];
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|(p, _)| !allowed.iter().any(|a| Path::new(a) == p))
        .filter(|(_, text)| outside_tests(text).contains("json!("))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "`json!` builds a document outside tests: make it a type in crates/proto (and parse it as that type where it is read) in: {offenders:#?}"
    );
}

/// Commands call the host protocol (`homebase-host`), not each other: what two commands
/// share lives below them.
#[test]
fn no_command_reaches_into_another() {
    let mut found = std::collections::BTreeSet::new();
    for (path, text) in sources() {
        let Ok(rest) = path.strip_prefix("crates/homebase/src/commands") else {
            continue;
        };
        let Some(own) = rest.components().next() else {
            continue;
        };
        let own = own
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let code = outside_tests(&text);
        for (i, _) in code.match_indices("commands::") {
            let other: String = code[i + "commands::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if other != own {
                found.insert((own.clone(), other, path.display().to_string()));
            }
        }
        // `super::super::other` from a command's own submodule
        if code.contains("super::super::") {
            found.insert((
                own.clone(),
                "super::super".into(),
                path.display().to_string(),
            ));
        }
    }
    assert!(
        found.is_empty(),
        "a command reaches into another: move what both need into crates/host or crates/proto: {found:#?}"
    );
}

/// Reads ARCHITECTURE.md's layering: `- crate: dep, dep` lines after "The layering".
fn stated_layering() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("The layering")
        .expect("ARCHITECTURE.md states the layering");
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with("- "))
        .take_while(|l| l.starts_with("- "))
        .map(|l| {
            let (name, deps) = l[2..].split_once(':').expect("`- crate: deps`");
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect();
            (name.trim().to_string(), deps)
        })
        .collect()
}

/// The homebase crates a Cargo.toml's `[dependencies]` names (not its dev-dependencies).
fn internal_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_deps = line.trim() == "[dependencies]";
            continue;
        }
        if in_deps && let Some(rest) = line.trim().strip_prefix("homebase-") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out.sort();
    out
}

/// Every crate depends on exactly the crates ARCHITECTURE.md's layering lists for it, and
/// every crate is listed.
#[test]
fn the_crates_depend_on_each_other_as_architecture_states() {
    let stated = stated_layering();
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let actual = internal_dependencies(&manifest);
        match stated.iter().find(|(n, _)| *n == name) {
            None => wrong.push(format!("{name}: not in ARCHITECTURE.md's layering")),
            Some((_, deps)) => {
                let mut deps = deps.clone();
                deps.sort();
                if deps != actual {
                    wrong.push(format!(
                        "{name}: ARCHITECTURE.md says {deps:?}, Cargo.toml has {actual:?}"
                    ));
                }
            }
        }
    }
    assert!(
        stated.len() >= 8,
        "only {} crates in the layering",
        stated.len()
    );
    assert!(
        wrong.is_empty(),
        "the crates' dependencies break the layering ARCHITECTURE.md states (fix the dependency, or the layering with a reason): {wrong:#?}"
    );
}

/// Where homebase keeps its state on the host is spelled once, in `proto::layout`: a script
/// builds it with `layout::sh_*`, a message names it with `layout::shown`.
#[test]
fn host_paths_come_from_the_layout() {
    let spelled = ["~/.homebase", "$HOME/.homebase", "/.homebase/"];
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|(p, _)| p != Path::new("crates/proto/src/layout.rs"))
        .flat_map(|(p, text)| {
            outside_tests(text)
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .filter(|l| spelled.iter().any(|s| l.contains(s)))
                .map(move |l| format!("{}: {}", p.display(), l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "a host path spelled outside proto::layout (use layout::sh_* in scripts, layout::shown in messages): {offenders:#?}"
    );
}

/// The files of a project's directory that `proto::layout`'s table lists (`current`,
/// `releases`, `tree.stamp`, …).
fn layout_table() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("crates/proto/src/layout.rs")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("//!     "))
        .filter(|l| !l.starts_with(' '))
        .flat_map(|l| {
            let names = l.split("  ").next().unwrap_or("");
            names
                .split(", ")
                .map(|n| n.split(['/', '<', '[']).next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A script names a file of the project's directory (`$d/NAME`) only as the layout's table
/// lists it, or a temporary beside it (`current.tmp`, `lock.new.$$`).
#[test]
fn scripts_name_only_the_files_the_layout_lists() {
    let table = layout_table();
    assert!(table.len() >= 15, "the layout's table read as {table:?}");
    let mut unknown = Vec::new();
    for (p, text) in sources() {
        for (i, _) in outside_tests(&text).match_indices("$d/") {
            let name: String = text[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
                .collect();
            // `$d/{loops}`: a format argument, a constant of the layout itself
            let from_layout = name.is_empty() && text[i + 3..].starts_with('{');
            let listed = from_layout
                || table.iter().any(|t| {
                    // a temporary beside it: `current.tmp`, `lock.new.$$`
                    name == *t
                        || name == format!("{t}.tmp")
                        || (name.starts_with(&format!("{t}.")) && name.ends_with('.'))
                });
            if !listed {
                unknown.push(format!("{}: $d/{name}", p.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "a script names a file of the project's directory that proto::layout's table does not list (add it there, with what it holds): {unknown:#?}"
    );
}

/// The daemon's API is reached through `daemon_client` alone: no other source of the CLI
/// or the host protocol speaks HTTP (`ureq`) or runs `curl` on the host.
#[test]
fn the_daemons_api_is_reached_through_daemon_client_alone() {
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|(p, _)| p.starts_with("crates/homebase/src") || p.starts_with("crates/host/src"))
        .filter(|(p, _)| p != Path::new("crates/host/src/daemon_client.rs"))
        .filter(|(_, text)| {
            outside_tests(text)
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains("ureq::") || l.contains("curl "))
        })
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "the daemon's API reached outside daemon_client: {offenders:#?}"
    );
}

#[test]
fn the_project_holds_no_connection() {
    // `Project` is the loaded configuration; the command's connections are `Link`'s,
    // handed to what needs a host (ARCHITECTURE.md, `crates/host`).
    let text = std::fs::read_to_string(root().join("crates/host/src/project.rs")).unwrap();
    let start = text.find("pub struct Project {").unwrap();
    let body = &text[start..start + text[start..].find("\n}").unwrap()];
    for word in ["Link", "Session", "Mutex", "OnceLock", "Cell"] {
        assert!(
            !body.contains(word),
            "`Project` holds a `{word}`: keep connections and what they read in `Link`"
        );
    }
}
