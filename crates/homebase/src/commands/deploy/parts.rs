//! A release's parts, decided on the laptop: its id and hash, the env files it carries, the
//! databases a change touches, the git state it records, its log entry; and the checks of
//! what the host reports.

use crate::exit::Exit;
use crate::exit::coded;
use crate::project::Project;
use crate::release;
use anyhow::{Context, Result};
use homebase_proto::clock::now_secs;
use homebase_proto::clock::utc_stamp;
use sha2::Digest;
use sha2::Sha256;
/// Planned services all running, and healthy where they have a healthcheck.
pub fn all_healthy(plan: &homebase_stack::Plan, ps: &[crate::host::PsEntry]) -> bool {
    plan.services
        .iter()
        .all(|s| release::service_healthy(&s.name, ps))
}

pub fn bundle_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// PostgreSQL services whose rendered definition differs from the current release's.
pub(super) fn changed_databases(old_yaml: &str, new_yaml: &str) -> Result<Vec<String>> {
    use homebase_stack::kinds::Kind;
    use homebase_stack::{ComposeProject, LoadOptions};
    if old_yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let load = |name: &str, text: &str| -> Result<ComposeProject> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(ComposeProject::load(&LoadOptions {
            files: vec![path],
            ..Default::default()
        })?)
    };
    let (old, new) = (load("old.yml", old_yaml)?, load("new.yml", new_yaml)?);
    Ok(new
        .services
        .iter()
        .filter(|(_, svc)| Kind::of(svc.image_repo().as_deref()) == Kind::Postgres)
        .filter(|(name, svc)| old.services.get(*name).is_some_and(|o| o.raw != svc.raw))
        .map(|(name, _)| name.clone())
        .collect())
}

/// Whether a relative path names a place outside the directory it is relative to (an
/// absolute path, or one that climbs with `..`): such a file cannot travel with a release.
fn leaves_its_directory(rel: &std::path::Path) -> bool {
    rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// The `env_file`s the services name, read here to travel in the bundle (mode 0600) under the
/// same relative paths, so that Compose on the host finds them beside compose.yml.
pub(super) fn env_files(project: &Project) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = &project.compose.project_dir;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for svc in project.compose.services.values() {
        for (path, required) in svc.env_files.iter().cloned() {
            let rel = std::path::Path::new(&path);
            if leaves_its_directory(rel) {
                return Err(coded(
                    Exit::BadInput,
                    format!(
                        "service `{}`: env_file `{path}` is outside the project directory; move it beside the compose file so it can travel with the release",
                        svc.name
                    ),
                ));
            }
            if out.iter().any(|(n, _)| *n == path) {
                continue;
            }
            match std::fs::read(dir.join(rel)) {
                Ok(data) => out.push((path, data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot read env_file `{}` of service `{}`",
                        dir.join(rel).display(),
                        svc.name
                    )));
                }
            }
        }
    }
    // Agent loops' env files (API keys), relative to homebase.toml's directory.
    let config_dir = project
        .config_path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for (name, l) in &project.config.loops {
        for rel in &l.env_files {
            let path = rel.to_string_lossy().to_string();
            if leaves_its_directory(rel) {
                return Err(coded(
                    Exit::BadInput,
                    format!(
                        "loops.{name}: env_file `{path}` is outside the project directory; move it beside homebase.toml so it can travel with the release"
                    ),
                ));
            }
            if out.iter().any(|(n, _)| *n == path) {
                continue;
            }
            let data = std::fs::read(config_dir.join(rel)).with_context(|| {
                format!(
                    "cannot read env_file `{}` of loop `{name}`",
                    config_dir.join(rel).display()
                )
            })?;
            out.push((path, data));
        }
    }
    Ok(out)
}

pub(super) fn release_id(hash: &str) -> String {
    format!("{}-{}", utc_stamp(now_secs()), &hash[..8])
}

/// On a Mac the engine runs in a VM (Colima, Docker Desktop) that shares only the home
/// directory: a loop workspace elsewhere is an empty directory inside the iteration.
pub(super) fn outside_home(project: &Project, os: &str, home: &str) -> Vec<String> {
    if os != "Darwin" || home.is_empty() {
        return Vec::new();
    }
    project
        .config
        .loops
        .iter()
        .filter_map(|(name, l)| match l.workspace(&project.config.project.name, name) {
            homebase_stack::loops::Workspace::Path(p)
                if p.starts_with('/') && !p.starts_with(&format!("{home}/")) =>
            {
                Some(format!(
                    "loops.{name}.workspace = `{p}` is outside the home directory ({home}): on a Mac the engine runs in a VM that shares only the home directory, so the agent would see an empty workspace; use a path under ~/"
                ))
            }
            _ => None,
        })
        .collect()
}
