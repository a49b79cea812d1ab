//! The projects the daemon watches: every `~/.homebase/<project>` with a current release,
//! read from that release's homebase.toml and rendered compose file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use homebase_proto::layout;
use homebase_stack::Bytes;
use homebase_stack::config::{AlertsSection, Config, DaemonSection, Priority};
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
    /// What the loops may spend together, and the calendar of the caps.
    pub spend: homebase_stack::spend::SpendSection,
    /// A swarm stack (Swarm restarts its tasks; each node backs up the tasks it runs).
    pub swarm: bool,
    /// Swarm mode: this node's name in [nodes] (the release's `node` file).
    pub node: Option<String>,
}

/// The one reader of the projects on this host, that every task of the daemon asks (the
/// monitor's rounds, the loops' manager, the backup schedule, the API): a project's
/// homebase.toml and compose file are read again only when its current release changed, or
/// the engine's memory did (a budget of `host_memory = "detect"` follows it).
#[derive(Default)]
pub struct Watcher {
    read: std::sync::Mutex<HashMap<PathBuf, Read>>,
}

/// A project directory as last read: its current release, the engine's memory then, and
/// the project (or why it could not be read).
type Read = (String, u64, Result<Project, String>);

impl Watcher {
    /// Every project with a current release; a project that cannot be read is reported in
    /// the second list and skipped, never fatal.
    pub fn load(&self, home: &Path, mem_total: u64) -> (Vec<Project>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(home) else {
            return (out, errors);
        };
        let mut dirs: Vec<(PathBuf, String)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let current = std::fs::read_to_string(p.join(layout::CURRENT)).ok()?;
                Some((p, current.trim().to_string()))
            })
            .collect();
        dirs.sort();
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.retain(|dir, _| dirs.iter().any(|(d, _)| d == dir));
        for (dir, current) in dirs {
            let fresh =
                matches!(read.get(&dir), Some((r, m, _)) if *r == current && *m == mem_total);
            if !fresh {
                let project =
                    load_one(&dir, mem_total).map_err(|e| format!("{}: {e:#}", dir.display()));
                read.insert(dir.clone(), (current, mem_total, project));
            }
            match read.get(&dir).map(|(_, _, p)| p) {
                Some(Ok(p)) => out.push(p.clone()),
                Some(Err(e)) => errors.push(e.clone()),
                None => {}
            }
        }
        (out, errors)
    }
}

fn load_one(dir: &Path, mem_total: u64) -> anyhow::Result<Project> {
    use anyhow::Context;
    let release = std::fs::read_to_string(dir.join(layout::CURRENT))
        .context("cannot read `current`")?
        .trim()
        .to_string();
    let rel = dir.join(layout::RELEASES).join(&release);
    let mut config = Config::load(&rel.join("homebase.toml"), &IndexMap::new())?;
    // a loop the host built runs the image the release names (`FILE SERVICE IMAGE` lines)
    if let Ok(builds) = std::fs::read_to_string(rel.join("builds")) {
        for line in builds.lines() {
            let mut parts = line.split(' ');
            if let (Some("loops.yml"), Some(svc), Some(image)) =
                (parts.next(), parts.next(), parts.next())
                && let Some(l) = svc
                    .strip_prefix("loop-")
                    .and_then(|name| config.loops.get_mut(name))
            {
                l.image = image.to_string();
            }
        }
    }
    let compose = ComposeProject::load(&LoadOptions {
        files: vec![rel.join("compose.yml")],
        ..Default::default()
    })?;
    let host = config.budget.host(Bytes(mem_total)).0;
    let budget = config.budget.of(Bytes(host)).0;
    let priorities = compose
        .services
        .iter()
        .map(|(name, svc)| (name.clone(), config.priority_of(name, svc).0))
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
        spend: config.spend.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn release(dir: &Path, id: &str, memory: &str) {
        let rel = dir.join(layout::RELEASES).join(id);
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(
            rel.join("homebase.toml"),
            format!(
                "[project]\nname = \"p\"\n[host]\nssh = \"local\"\n[budget]\nhost_memory = \"{memory}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            rel.join("compose.yml"),
            "services:\n  app:\n    image: busybox\n",
        )
        .unwrap();
        std::fs::write(dir.join(layout::CURRENT), id).unwrap();
    }

    #[test]
    fn a_project_is_read_again_only_when_its_release_changes() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("p");
        release(&dir, "r1", "4GiB");
        let w = Watcher::default();
        let (first, errors) = w.load(home.path(), 1 << 30);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(first[0].release, "r1");
        let budget = first[0].budget;
        // the same release, its file changed behind the watcher's back: not read again
        let toml = dir.join(layout::RELEASES).join("r1").join("homebase.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, text.replace("4GiB", "8GiB")).unwrap();
        assert_eq!(w.load(home.path(), 1 << 30).0[0].budget, budget);
        // a new release is read
        release(&dir, "r2", "8GiB");
        let (now, _) = w.load(home.path(), 1 << 30);
        assert_eq!(now[0].release, "r2");
        assert!(
            now[0].budget > budget * 3 / 2,
            "{} after {budget}",
            now[0].budget
        );
        // a project whose directory is gone is forgotten
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(w.load(home.path(), 1 << 30).0.is_empty());
    }
}
