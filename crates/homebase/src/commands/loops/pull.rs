//! `homebase loop pull NAME`: the loop's branch (`workspace = "git"`) from the host into the
//! laptop's repository as `homebase/NAME`, and what came.
//!
//! The branch leaves the host as a git bundle written by git in a sealed throwaway
//! container (no network, no capability, the workspace read-only, the loop's own image):
//! git on the host never reads the workspace, whose `.git` the agent controls. The bundle
//! holds the commits since the deployed one (which the laptop has); the laptop's git
//! fetches it as it would fetch from any untrusted remote.

use anyhow::{Context, Result};
use homebase_proto::{LoopPullReport, PulledCommit};
use homebase_remote::Session;

use crate::exit::{Exit, coded};
use crate::project::Project;
use crate::source::git;
use crate::ui;

pub fn run(project: &Project, session: &Session, name: &str, json: bool) -> Result<Exit> {
    let Some(l) = project.config.loops.get(name) else {
        return Err(coded(
            Exit::BadInput,
            format!("homebase.toml has no loop `{name}`"),
        ));
    };
    if !l.git_workspace() {
        return Err(coded(
            Exit::BadInput,
            format!(
                "loop `{name}` does not work in the project's repository (its workspace is not `git`), so there is no branch to pull; set `workspace = \"git\"` in [loops.{name}] and deploy"
            ),
        ));
    }
    let root = &project.root;
    let branch = format!("homebase/{name}");
    if git(root, &["symbolic-ref", "-q", "HEAD"])
        .is_some_and(|h| h == format!("refs/heads/{branch}"))
    {
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{branch}` is checked out here; switch to another branch, then pull the loop's work into it"
            ),
        ));
    }
    let bundle = crate::host::loops::fetch_bundle(session, project, name)?;
    let Some(bundle) = bundle else {
        if !json {
            ui::out(&format!(
                "loop `{name}` has made no commits since the deployed one\n"
            ))?;
        }
        return Ok(Exit::Ok);
    };
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let file = dir.path().join("loop.bundle");
    std::fs::write(&file, &bundle).with_context(|| format!("cannot write `{}`", file.display()))?;
    let before = git(
        root,
        &[
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/heads/{branch}"),
        ],
    );
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "-c",
            "transfer.fsckObjects=true",
            "fetch",
            "-q",
            "--no-tags",
        ])
        .arg(&file)
        .arg(format!("+refs/heads/{branch}:refs/heads/{branch}"))
        .output()
        .with_context(|| format!("cannot run git in `{}`", root.display()))?;
    if !out.status.success() {
        return Err(anyhow::anyhow!(
            "git could not take the loop's branch into `{}`: {}",
            root.display(),
            ui::printable(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    let report = what_came(root, name, &branch, before)?;
    if json {
        ui::out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        ui::out(&human(&report, &session.host()))?;
    }
    Ok(Exit::Ok)
}

/// What the fetched branch brought: its commits since `before` (else since it left HEAD),
/// and the change they make.
fn what_came(
    root: &std::path::Path,
    name: &str,
    branch: &str,
    before: Option<String>,
) -> Result<LoopPullReport> {
    let head = git(root, &["rev-parse", &format!("refs/heads/{branch}")]).ok_or_else(|| {
        anyhow::anyhow!(
            "git fetched the loop's branch into `{}` but cannot read `{branch}` back; `git -C {} show-ref {branch}` shows what is there",
            root.display(),
            root.display()
        )
    })?;
    // an empty log or diff is git's answer, not a failure: nothing came, nothing differs
    let base = before
        .clone()
        .or_else(|| git(root, &["merge-base", "HEAD", &head]))
        .unwrap_or_default();
    let range = if base.is_empty() {
        head.clone()
    } else {
        format!("{base}..{head}")
    };
    let commits: Vec<PulledCommit> = git(root, &["log", "--reverse", "--format=%H%x00%s", &range])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\0'))
        .map(|(id, subject)| PulledCommit {
            id: id.to_string(),
            subject: subject.to_string(),
        })
        .collect();
    let diff_base = if base.is_empty() {
        "HEAD".to_string()
    } else {
        base
    };
    let shortstat = git(root, &["diff", "--shortstat", &diff_base, &head]).unwrap_or_default();
    let files: Vec<String> = git(root, &["diff", "--name-only", &diff_base, &head])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let report = LoopPullReport {
        name: name.to_string(),
        branch: branch.to_string(),
        head,
        before,
        commits,
        shortstat: shortstat.trim().to_string(),
        files,
    };
    Ok(report)
}

fn human(r: &LoopPullReport, host: &str) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "{} ← loop `{}` on {host}: {} new commit{}\n",
        r.branch,
        r.name,
        r.commits.len(),
        if r.commits.len() == 1 { "" } else { "s" }
    );
    for c in &r.commits {
        let _ = writeln!(
            s,
            "  {} {}",
            &c.id[..c.id.len().min(12)],
            ui::printable(&c.subject)
        );
    }
    if !r.shortstat.is_empty() {
        let _ = writeln!(s, " {}", r.shortstat);
    }
    for f in r.files.iter().take(30) {
        let _ = writeln!(s, "  {}", ui::printable(f));
    }
    if r.files.len() > 30 {
        let _ = writeln!(s, "  … and {} more", r.files.len() - 30);
    }
    let _ = writeln!(
        s,
        "review it with `git log -p HEAD..{b}`, take it with `git merge {b}`",
        b = r.branch
    );
    s
}
