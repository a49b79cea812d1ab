//! Every real compose file in `shared/corpus/compose` loads, plans and renders, and what is
//! rendered is accepted by `docker compose config` (when Compose is installed; CI installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{COMPANIONS, compose_available, corpus_dir, corpus_files, guess_vars, stage};
use homebase_stack::config::Config;
use homebase_stack::{Bytes, ComposeProject, LoadOptions, Plan, StackError};
use indexmap::IndexMap;

#[test]
fn every_corpus_file_loads_plans_and_renders() {
    let Some(corpus) = corpus_dir() else { return };
    let files = corpus_files(&corpus);
    assert!(files.len() >= 30, "corpus has {} files", files.len());
    let check_with_compose = compose_available();
    if !check_with_compose {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the compose plugin"
        );
        eprintln!(
            "docker compose not installed: rendered files are not checked with `docker compose config`"
        );
    }
    let mut checked = 0;
    for file in &files {
        let dir = tempfile::tempdir().unwrap();
        let path = stage(dir.path(), &corpus, file);
        // a plausible value for each variable the file names (its project's .env is not in
        // the corpus; Compose refuses a volume such as `${SOCKET}:/x` with it unset, too)
        let mut env = IndexMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        );
        guess_vars(&fs::read_to_string(&path).unwrap(), &mut env);
        for (src, _) in COMPANIONS {
            guess_vars(&fs::read_to_string(corpus.join(src)).unwrap(), &mut env);
        }
        let opts = |env: &IndexMap<String, String>| LoadOptions {
            files: vec![path.clone()],
            env: env.clone(),
            ..Default::default()
        };
        let project = match ComposeProject::load(&opts(&env)) {
            Ok(p) => p,
            Err(StackError::Interpolate { source, .. }) => {
                // A required variable (`${PG_PASS:?...}`): the error names it; set it and go on.
                let homebase_stack::interpolate::InterpolateError::Required { name, .. } = &source
                else {
                    panic!("{file}: {source}");
                };
                env.insert(name.clone(), "x".into());
                ComposeProject::load(&opts(&env)).unwrap_or_else(|e| panic!("{file}: {e:#?}"))
            }
            Err(e) => panic!("{file}: {e:#?}"),
        };
        // Budget: give every service a limit so the render covers all of them.
        let mut toml = String::from("[project]\nname = \"corpus\"\n");
        for name in project.services.keys() {
            toml.push_str(&format!("[services.\"{name}\"]\nmemory = \"256MiB\"\n"));
        }
        let config = Config::parse(Path::new("homebase.toml"), &toml, &IndexMap::new()).unwrap();
        let plan = Plan::new(&config, &project, Bytes::gib(1024.0)).unwrap();
        let rendered = homebase_stack::render::render(&plan, &project, &config.render).unwrap();

        // The rendered file loads again with the same services and limits.
        let out = dir.path().join("rendered.yml");
        fs::write(&out, &rendered.yaml).unwrap();
        let again = ComposeProject::load(&LoadOptions {
            files: vec![out.clone()],
            ..Default::default()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{file}: rendered file does not load: {e:#?}\n{}",
                rendered.yaml
            )
        });
        assert_eq!(
            again.services.keys().collect::<Vec<_>>(),
            project.services.keys().collect::<Vec<_>>(),
            "{file}"
        );
        for svc in again.services.values() {
            assert_eq!(svc.limit, Some(Bytes::mib(256)), "{file}: {}", svc.name);
        }
        // Deterministic.
        let twice = homebase_stack::render::render(&plan, &project, &config.render).unwrap();
        assert_eq!(twice.yaml, rendered.yaml, "{file}");

        if check_with_compose {
            // env files the project expects to exist on the user's machine
            for svc in again.services.values() {
                if let Some(serde_norway::Value::Sequence(files)) = svc.raw.get("env_file") {
                    for f in files {
                        let p = match f {
                            serde_norway::Value::String(s) => Some(s.clone()),
                            serde_norway::Value::Mapping(m) => {
                                m.get("path").and_then(|p| p.as_str()).map(str::to_string)
                            }
                            _ => None,
                        };
                        if let Some(p) = p {
                            let p = dir.path().join(p);
                            fs::create_dir_all(p.parent().unwrap()).unwrap();
                            if !p.exists() {
                                fs::write(&p, "").unwrap();
                            }
                        }
                    }
                }
            }
            let compose_config = |f: &Path| {
                Command::new("docker")
                    .args(["compose", "-f"])
                    .arg(f)
                    .args(["config", "-q"])
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .envs(env.iter())
                    .current_dir(dir.path())
                    .output()
                    .unwrap()
            };
            let original = compose_config(&path);
            let o = compose_config(&out);
            let no_image = plan
                .problems
                .iter()
                .any(|p| matches!(p, homebase_stack::plan::Problem::NoImage { .. }));
            if no_image {
                // A fragment meant to be extended (services without an image): the plan
                // refuses it, and so does Compose.
                assert!(
                    !o.status.success(),
                    "{file}: compose accepted what the plan refused"
                );
            } else if original.status.success() {
                assert!(
                    o.status.success(),
                    "{file}: docker compose config accepts the original but refused the rendered file: {}\n{}",
                    String::from_utf8_lossy(&o.stderr),
                    rendered.yaml
                );
            } else {
                // Compose refuses the original without the project's .env; what homebase
                // rendered from it must be refused too, not silently made valid.
                eprintln!(
                    "{file}: compose refuses the original too: {}",
                    String::from_utf8_lossy(&original.stderr).trim()
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, files.len());
}
