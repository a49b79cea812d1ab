//! `homebase releases` and `homebase rollback`: the release log, and a release job back to
//! an earlier release through the same lock and job as a deploy.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::{Global, ReleasesArgs, RollbackArgs};
use crate::exit::{Exit, coded};
use crate::host::HostProject;
use crate::progress::Progress;
use crate::project::{self, Link};
use crate::release::entry;
use crate::release::{self};
use crate::ui::{self, BOLD, paint};

pub fn releases(global: &Global, args: &ReleasesArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    let (log, current) = host.log_and_current()?;
    if args.json {
        ui::out(
            &(serde_json::to_string_pretty(&homebase_proto::ReleasesReport {
                current,
                releases: log,
            })? + "\n"),
        )?;
        return Ok(Exit::Ok);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            format!(
                "{:<2}{:<28}  {:<12}  {:<8}  {:<10}  {}",
                "", "RELEASE", "OUTCOME", "USER", "COMMIT", "DURATION"
            )
        )
    );
    for e in &log {
        let mark = if current.as_deref() == Some(e.id.as_str()) && e.outcome == "deployed" {
            "* "
        } else {
            "  "
        };
        let commit = e
            .git_commit
            .as_deref()
            .map(|c| {
                format!(
                    "{}{}",
                    c.chars().take(8).collect::<String>(),
                    if e.git_dirty { "+" } else { "" }
                )
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{mark}{:<28}  {:<12}  {:<8}  {:<10}  {:.1}s",
            e.id,
            e.outcome,
            e.user,
            commit,
            e.duration_ms as f64 / 1000.0
        );
    }
    ui::out(&s)?;
    Ok(Exit::Ok)
}

pub fn rollback(global: &Global, args: &RollbackArgs) -> Result<Exit> {
    let started = Instant::now();
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    crate::catch_interrupts();
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    let mut progress = Progress::new(args.json);
    progress.step("lock");
    let (lock, prepared) = release::Lock::take(
        &host,
        link.target(),
        &project.config.project.name,
        &mut progress,
        None,
        true,
    )?;
    match release::rtt_note(prepared.rtt, &session.host()) {
        Some(note) => progress.done_with(&note),
        None => progress.done(),
    }
    let current = prepared.current.map(|c| c.0);
    // the log and the releases on the host came with the lock
    let log = prepared.log.unwrap_or_default();
    let on_host = prepared.releases.unwrap_or_default();
    let target = match &args.id {
        Some(id) => id.clone(),
        None => {
            // The newest successfully deployed release before the current one.
            let deployed: Vec<&str> = log
                .iter()
                .filter(|e| e.outcome == "deployed" || e.outcome == "rollback")
                .map(|e| e.target.as_deref().unwrap_or(&e.id))
                .collect();
            let mut seen_current = current.is_none();
            let mut pick = None;
            for id in deployed.iter().rev() {
                if !seen_current {
                    if Some(*id) == current.as_deref() {
                        seen_current = true;
                    }
                    continue;
                }
                if Some(*id) != current.as_deref() {
                    pick = Some(id.to_string());
                    break;
                }
            }
            pick.ok_or_else(|| {
                coded(
                    Exit::BadInput,
                    "there is no earlier release to roll back to; `homebase releases` lists them",
                )
            })?
        }
    };
    crate::host::check_id(&target)?;
    let Some((_, hash)) = on_host.iter().find(|(id, _)| *id == target) else {
        return Err(coded(
            Exit::BadInput,
            format!(
                "release `{target}` is not on {}; `homebase releases` lists the ones that are",
                session.host()
            ),
        ));
    };
    let hash = hash.trim().to_string();
    let ok_entry = entry(
        &project,
        &target,
        &hash,
        "rollback",
        started,
        Some(target.clone()),
        None,
    );
    release::check_interrupt()?;
    let job = release::Job {
        project: project.config.project.name.clone(),
        new: target.clone(),
        prev: current,
        services: Vec::new(),
        wait: Duration::from_secs(args.timeout),
        fail_entry: entry(&project, &target, &hash, "failed", started, None, None),
        ok_entry,
        pre: started.elapsed(),
    };
    let followed = lock.run(
        &job,
        None,
        &mut progress,
        format!("roll back to release {target}"),
    )?;
    if let Some(err) = release::outcome_error(&followed, &session.host(), "rollback") {
        return Err(err);
    }
    let e = followed.entry.unwrap_or(job.ok_entry);
    rolled_back(args.json, &e, &target)?;
    Ok(Exit::Ok)
}

fn rolled_back(json: bool, e: &homebase_proto::ReleaseEntry, target: &str) -> Result<()> {
    if json {
        crate::say!(
            "{}",
            serde_json::to_string(&homebase_proto::ReleaseResult::new(e.clone()))?
        );
    } else {
        crate::esay!("rolled back to release {target}");
    }
    Ok(())
}
