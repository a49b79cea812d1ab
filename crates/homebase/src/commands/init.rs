//! `homebase init`: a homebase.toml for an existing compose file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use homebase_stack::config::FILE_NAME;
use homebase_stack::kinds::Kind;
use homebase_stack::{Bytes, ComposeProject, LoadOptions};

use crate::cli::{Global, InitArgs};
use crate::exit::{Exit, coded};
use crate::project::{process_env, start_dir};

const CANDIDATES: [&str; 4] = [
    "compose.yml",
    "compose.yaml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

pub fn run(global: &Global, args: &InitArgs) -> Result<Exit> {
    let dir = start_dir(global)?;
    let target = dir.join(FILE_NAME);
    if target.exists() && !args.force {
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{}` already exists; pass --force to overwrite it",
                target.display()
            ),
        ));
    }
    let compose_rel = match &args.compose {
        Some(c) => c.clone(),
        None => CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|c| dir.join(c).is_file())
            .ok_or_else(|| {
                coded(
                    Exit::BadInput,
                    format!(
                        "no compose file in `{}` (looked for {}); pass --compose FILE",
                        dir.display(),
                        CANDIDATES.join(", ")
                    ),
                )
            })?,
    };
    let host_memory = Bytes::parse(&args.host_memory)
        .map_err(|e| coded(Exit::BadInput, format!("--host-memory: {e}")))?;
    let compose = ComposeProject::load(&LoadOptions {
        files: vec![dir.join(&compose_rel)],
        env: process_env(),
        profiles: global.profiles.clone(),
        ..Default::default()
    })?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => compose
            .name
            .clone()
            .unwrap_or_else(|| project_name_from(&dir)),
    };
    let text = generate(&name, &compose_rel, host_memory, &compose);
    std::fs::write(&target, &text)
        .with_context(|| format!("cannot write `{}`", target.display()))?;
    crate::esay!(
        "wrote {} for {} services; check the limits, then run `homebase plan`",
        target.display(),
        compose.services.len()
    );
    Ok(Exit::Ok)
}

fn project_name_from(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "stack".into());
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if trimmed.is_empty() {
        "stack".into()
    } else {
        trimmed
    }
}

/// The text of a homebase.toml proposing priorities and, where the compose file has none, limits.
pub fn generate(
    name: &str,
    compose: &Path,
    host_memory: Bytes,
    project: &ComposeProject,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# homebase.toml: written by `homebase init`. Check the limits, then run `homebase plan`."
    );
    let _ = writeln!(
        s,
        "\n[project]\nname = \"{name}\"\ncompose = [\"{}\"]",
        compose.display()
    );
    let _ = writeln!(
        s,
        "\n[host]\n# an ssh destination or ~/.ssh/config alias; \"local\" is this machine's engine\nssh = \"local\""
    );
    let _ = writeln!(
        s,
        "\n[budget]\nhost_memory = \"{}\"   # or \"detect\" to ask the host's engine\ntarget = 0.80             # share of host memory the stack may use at peak",
        host_memory
            .to_compose()
            .replace('g', "GiB")
            .replace('m', "MiB")
    );
    for (svc_name, svc) in &project.services {
        let kind = Kind::of(svc.image_repo().as_deref());
        let _ = writeln!(s, "\n[services.{}]", toml_key(svc_name));
        let _ = writeln!(
            s,
            "priority = \"{}\"   # {}",
            kind.default_priority(),
            match kind.default_priority() {
                homebase_stack::config::Priority::Critical =>
                    "a database: never paused, killed last",
                _ => "critical | normal | batch",
            }
        );
        match svc.limit {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "# memory = \"{}\"   # the compose file's limit ({}) applies",
                    human_size(l),
                    svc.limit_key.unwrap_or("compose")
                );
            }
            None => {
                let suggestion = kind.suggested_limit();
                let _ = writeln!(
                    s,
                    "memory = \"{}\"   # proposed: the compose file sets no limit",
                    human_size(suggestion)
                );
                let _ = writeln!(s, "sustained = \"{}\"", human_size(Bytes(suggestion.0 / 2)));
            }
        }
    }
    s
}

fn human_size(b: Bytes) -> String {
    if b.0.is_multiple_of(Bytes::GIB) {
        format!("{}GiB", b.0 / Bytes::GIB)
    } else {
        format!("{}MiB", b.as_mib())
    }
}

fn toml_key(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        format!("\"{k}\"")
    }
}
