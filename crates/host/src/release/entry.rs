//! A release's record in the release log (`releases.jsonl`): what was deployed, from which
//! commit, by whom, how it ended. Written by deploy and rollback alike.

use std::time::Instant;

use homebase_proto::ReleaseEntry;
use homebase_proto::clock::now_secs;

use super::whoami;
use crate::project::Project;

/// Git commit and dirty flag of the directory holding homebase.toml.
fn git_state(project: &Project) -> (Option<String>, bool) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&project.root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit.is_some()
        && git(&["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

/// The record of release `id` (`outcome`: deployed, rolled back, failed …).
pub fn entry(
    project: &Project,
    id: &str,
    hash: &str,
    outcome: &str,
    started: Instant,
    target: Option<String>,
    error: Option<String>,
) -> ReleaseEntry {
    let (git_commit, git_dirty) = git_state(project);
    ReleaseEntry {
        id: id.into(),
        time: now_secs(),
        user: whoami(),
        git_commit,
        git_dirty,
        config_hash: hash.into(),
        outcome: outcome.into(),
        duration_ms: started.elapsed().as_millis() as u64,
        target,
        error,
    }
}
