//! Swarm mode: `docker stack deploy` hands the update to the swarm's own orchestrator, which
//! goes on converging whatever happens to the laptop; the laptop gates on health and goes
//! back through the same lock. There is no job on the host: the gate runs in this process,
//! and a laptop gone mid-gate leaves the stack as Swarm converges it, the lock to be taken
//! over by the next deploy.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::ReleaseEntry;

use super::follow::{Followed, Outcome};
use super::{Job, Lock};
use crate::HostProject;
use crate::project::Project;
use crate::report::Report;
use homebase_proto::clock::now_secs;

/// The stack half of [`Lock::run`]: starts `job.new` (already on the manager), waits until
/// every service converged and `job.services` are healthy, makes it current; else goes
/// back to `job.prev` (or removes a first release, volumes kept). The lock is finished with
/// the release log's line either way.
pub(super) fn run(
    mut lock: Lock<'_>,
    job: &Job,
    progress: &mut dyn Report,
    up_label: &str,
) -> Result<Followed> {
    let started = Instant::now();
    let host = lock.host;
    let wait = job.wait;
    progress.step(up_label);
    // From here on containers may have changed: any failure, of the gate or of a step
    // around it, ends in the way back below, never in an early return.
    let gate = (|| -> Result<(bool, String)> {
        let (ok, output) = host.up(&job.new, wait)?;
        let ps = host.ps()?;
        let healthy = ok && job.services.iter().all(|s| super::service_healthy(s, &ps));
        if healthy {
            host.set_current(&job.new)?;
        }
        Ok((healthy, output))
    })();
    let (healthy, output) = match gate {
        Ok(g) => g,
        Err(e) => (false, format!("homebase: {e:#}")),
    };
    let output: Vec<String> = output
        .trim()
        .lines()
        .map(homebase_proto::text::printable)
        .collect();
    if healthy {
        progress.done();
        let e = timed(&job.ok_entry, job.pre + started.elapsed());
        lock.finish(&e)?;
        return Ok(Followed::ended(
            Outcome::Ok,
            e,
            vec![("stack".into(), output)],
        ));
    }
    progress.fail("not healthy");
    let (kind, back) = go_back(host, job, wait, progress);
    let mut e = timed(&job.fail_entry, job.pre + started.elapsed());
    e.target = job.prev.clone();
    e.error = Some(back.clone());
    lock.finish(&e)?;
    let message = format!("release {} did not become healthy; {back}", job.new);
    Ok(Followed::ended(
        Outcome::Failed { kind, message },
        e,
        vec![("stack".into(), output)],
    ))
}

/// Back to the previous release (`current` still names it: the new one is made current
/// only once healthy; a release whose presence cannot be read is tried all the same), or,
/// without one, the failed first release removed: the way back's kind (as the job names
/// it) and what happened.
fn go_back(
    host: &HostProject,
    job: &Job,
    wait: Duration,
    progress: &mut dyn Report,
) -> (String, String) {
    match &job.prev {
        Some(prev) if host.release_exists(prev).unwrap_or(true) => {
            progress.step(&format!("roll back to release {prev}"));
            match host.up(prev, wait) {
                Ok((true, _)) => {
                    progress.done();
                    (
                        "back".into(),
                        format!("rolled back to release {prev}, which is healthy again"),
                    )
                }
                Ok((false, out)) => {
                    progress.fail("rollback not healthy");
                    (
                        "back-failed".into(),
                        format!(
                            "rollback to release {prev} did not become healthy either:\n{}",
                            homebase_proto::text::printable(out.trim())
                        ),
                    )
                }
                Err(e) => {
                    progress.fail("rollback failed");
                    (
                        "back-failed".into(),
                        format!("the rollback to release {prev} failed: {e:#}"),
                    )
                }
            }
        }
        _ => {
            progress.step("remove the failed first release (volumes kept)");
            match host.down(&job.new) {
                Ok(()) => {
                    progress.done();
                    (
                        "removed".into(),
                        "there was no previous release; the failed containers were removed (volumes kept)".into(),
                    )
                }
                Err(e) => {
                    progress.fail("removal failed");
                    (
                        "remove-failed".into(),
                        format!(
                            "there was no previous release, and removing the failed containers failed: {e:#}"
                        ),
                    )
                }
            }
        }
    }
}

/// A release-log line as of now, the release having taken `took`.
fn timed(entry: &ReleaseEntry, took: Duration) -> ReleaseEntry {
    ReleaseEntry {
        time: now_secs(),
        duration_ms: took.as_millis() as u64,
        ..entry.clone()
    }
}

/// The release on every worker too, so that each node's daemon knows the project (its
/// budget and alert sinks) and which node it is (`node`); loops run on the manager only.
pub fn upload_to_workers(
    project: &Project,
    link: &crate::link::Link,
    id: &str,
    files: &[(&str, &[u8])],
    source: &crate::source::Source,
) -> Result<()> {
    let manager = project.config.manager().map(|(n, _)| n.clone());
    let mut with_role: Vec<(&str, &[u8])> = files.to_vec();
    with_role.push(("role", b"worker"));
    let with_role = &with_role;
    // in parallel: one SSH connection per worker
    let worker = |name: &str| Some(name) != manager.as_deref();
    for (_, done) in project.per_node(worker, |name, _| -> Result<()> {
        let session = link
            .node_session(name)
            .with_context(|| format!("cannot reach node {name} to give it the release"))?;
        let host = HostProject::of(&session, project);
        let mut files = with_role.clone();
        files.push(("node", name.as_bytes()));
        host.upload_and_build(id, &files, source)
            .with_context(|| format!("node {name}"))?;
        host.set_current(id)
    }) {
        done?;
    }
    Ok(())
}
