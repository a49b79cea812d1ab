//! The projects the daemon watches: every `~/.homebase/<project>` with a current release,
//! read from that release's homebase.toml and rendered compose file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use homebase_proto::layout;
use homebase_stack::config::{AlertsSection, Config, DaemonSection, HostMemory, Priority};
use homebase_stack::kinds::Kind;
use homebase_stack::loops::LoopSection;
use homebase_stack::{ComposeProject, LoadOptions};
use indexmap::IndexMap;

#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub release: String,
    /// Git commit recorded when the release was deployed.
    pub commit: Option<String>,
    /// Host memory × target.
    pub budget: u64,
    pub daemon: DaemonSection,
    pub alerts: AlertsSection,
    pub backup: homebase_stack::config::BackupSection,
    /// The release's directory (homebase.toml and compose.yml).
    pub release_dir: PathBuf,
    /// Service → priority, for every service of the release.
    pub priorities: HashMap<String, Priority>,
    /// The release's agent loops.
    pub loops: IndexMap<String, LoopSection>,
    /// A swarm stack (Swarm restarts its tasks; each node backs up the tasks it runs).
    pub swarm: bool,
    /// Swarm mode: this node's name in [nodes] (the release's `node` file).
    pub node: Option<String>,
}

/// Loads every project with a current release; a project that cannot be read is reported
/// in the second list and skipped, never fatal.
pub fn load(home: &Path, mem_total: u64) -> (Vec<Project>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(home) else {
        return (out, errors);
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(layout::CURRENT).is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        match load_one(&dir, mem_total) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(format!("{}: {e:#}", dir.display())),
        }
    }
    (out, errors)
}

fn load_one(dir: &Path, mem_total: u64) -> anyhow::Result<Project> {
    use anyhow::Context;
    let release = std::fs::read_to_string(dir.join(layout::CURRENT))
        .context("cannot read `current`")?
        .trim()
        .to_string();
    let rel = dir.join(layout::RELEASES).join(&release);
    let config = Config::load(&rel.join("homebase.toml"), &IndexMap::new())?;
    let compose = ComposeProject::load(&LoadOptions {
        files: vec![rel.join("compose.yml")],
        ..Default::default()
    })?;
    let host = match config.budget.host_memory {
        HostMemory::Size(b) => b.0,
        HostMemory::Detect => mem_total,
    };
    let budget = (host as f64 * config.budget.target) as u64;
    let priorities = compose
        .services
        .iter()
        .map(|(name, svc)| {
            let p = config
                .services
                .get(name)
                .and_then(|s| s.priority)
                .unwrap_or_else(|| Kind::of(svc.image_repo().as_deref()).default_priority());
            (name.clone(), p)
        })
        .collect();
    let commit = std::fs::read_to_string(dir.join(layout::RELEASE_LOG))
        .ok()
        .and_then(|log| {
            log.lines()
                .filter_map(|l| serde_json::from_str::<homebase_proto::ReleaseEntry>(l).ok())
                .rfind(|e| e.id == release && e.outcome == "deployed")
                .and_then(|e| e.git_commit)
        });
    Ok(Project {
        name: config.project.name.clone(),
        release,
        commit,
        budget,
        daemon: config.daemon,
        backup: config.backup.clone(),
        release_dir: rel.clone(),
        alerts: config.alerts,
        // A swarm worker has the release for its budget and alerts; loops run on the manager.
        swarm: config.project.mode == homebase_stack::config::Mode::Swarm,
        node: std::fs::read_to_string(rel.join("node"))
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        loops: if std::fs::read_to_string(rel.join("role")).is_ok_and(|r| r.trim() == "worker") {
            IndexMap::new()
        } else {
            config.loops
        },
        priorities,
    })
}
