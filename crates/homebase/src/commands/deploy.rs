//! `homebase deploy`: plan → lock → upload → compose up → health gate → current + log, and
//! back to the previous release by itself when anything fails after containers changed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::ReleaseEntry;
use homebase_proto::clock::utc_stamp;
use sha2::{Digest, Sha256};

use homebase_remote::Session;

use crate::cli::{DeployArgs, Global};
use crate::exit::{Exit, coded};
use crate::host::{HostProject, now_secs};
use crate::progress::Progress;
use crate::project::{self, Project};
use crate::release;
pub use crate::release::{human_duration, whoami};

pub fn run(global: &Global, args: &DeployArgs) -> Result<Exit> {
    let started = Instant::now();
    let project = project::load(global)?;
    let mut progress = Progress::new(args.json);
    release::catch_interrupts();
    if args.attach {
        return attach(&project, args, &mut progress);
    }

    // 1. Plan: an over-budget stack is refused before the host is touched.
    progress.step("plan");
    let plan = match project.plan_that_fits(
        args.host_memory.as_deref(),
        "deploy refused, the host was not touched",
    ) {
        Ok(plan) => plan,
        Err(e) => {
            progress.fail("does not fit");
            return Err(e);
        }
    };
    let rendered = project.render(&plan)?;
    let config_text = std::fs::read(&project.config_path)
        .with_context(|| format!("cannot read `{}`", project.config_path.display()))?;
    let env_files = env_files(&project)?;
    let mut hashed: Vec<&[u8]> = vec![rendered.yaml.as_bytes(), &config_text];
    hashed.extend(env_files.iter().map(|(_, d)| d.as_slice()));
    let hash = bundle_hash(&hashed);
    progress.done();
    release::check_interrupt()?;

    progress.step(&format!("connect to {}", project.target()));
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    progress.done();

    // 2. Lock. Until the job starts, an interrupt leaves the host as it was.
    progress.step("lock");
    if args.force_unlock {
        host.force_unlock()?;
    }
    let up_to_date = (!args.force && !host.is_stack()).then(|| release::UpToDate {
        project: project.config.project.name.clone(),
        hash: hash.clone(),
        services: plan.services.iter().map(|s| s.name.clone()).collect(),
        entry: entry(&project, "", &hash, "up-to-date", started, None, None),
    });
    let (mut lock, prepared) = release::Lock::take(
        &host,
        project.target(),
        &project.config.project.name,
        &mut progress,
        up_to_date.as_ref(),
        false,
    )?;
    let slow_link = release::rtt_note(prepared.rtt, &session.host());
    match &slow_link {
        Some(note) => progress.done_with(note),
        None => progress.done(),
    }
    if let (Some(id), Some(u)) = (&prepared.up_to_date, &up_to_date) {
        // decided and logged on the host in the one round trip
        let mut e = u.entry.clone();
        e.id = id.clone();
        report_up_to_date(args, &progress, &e);
        return Ok(Exit::Ok);
    }
    let current = prepared.current.clone();
    let laptop_part = (|| -> Result<Option<(String, Option<release::Bundle>)>> {
        // 3. No-op? (Compose mode: decided by the prepare script already.)
        let prepared_containers = if host.is_stack() {
            host.ps()?
        } else {
            prepared.containers.clone()
        };
        if host.is_stack()
            && let Some((cur_id, cur_hash)) = &current
            && *cur_hash == hash
            && !args.force
            && all_healthy(&plan, &prepared_containers)
        {
            let entry = entry(&project, cur_id, &hash, "up-to-date", started, None, None);
            lock.finish(&entry)?;
            report_up_to_date(args, &progress, &entry);
            return Ok(None);
        }
        release::check_interrupt()?;

        // 4. A deploy that changes a database backs it up first.
        if let Some(old_yaml) = &prepared.current_compose {
            let changed = changed_databases(old_yaml, &rendered.yaml)?;
            let running: Vec<String> = changed
                .into_iter()
                .filter(|s| {
                    prepared_containers
                        .iter()
                        .any(|c| c.service == *s && c.state == "running")
                })
                .collect();
            if !running.is_empty() {
                progress.step(&format!(
                    "back up {} before changing it",
                    running.join(", ")
                ));
                let (m, _) = crate::commands::backup::take(&project, &host, &running)
                    .context("the backup before this deploy failed, so nothing was changed; fix it or take one with `homebase backup now`")?;
                progress.info(&format!("backup {} taken before the change", m.id));
                progress.done();
            }
        }
        release::check_interrupt()?;

        // 5. Upload the bundle.
        let id = release_id(&hash);
        if !host.is_stack() {
            // before the step: in Compose mode the upload ends with the job's start
            check_loop_images(&project, &session, &mut progress)?;
        }
        progress.step(&format!("upload release {id}"));
        let mut files: Vec<(&str, &[u8])> = vec![
            ("compose.yml", rendered.yaml.as_bytes()),
            ("homebase.toml", &config_text),
            ("hash", hash.as_bytes()),
        ];
        files.extend(env_files.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        if host.is_stack() {
            crate::commands::swarm::upload_to_workers(&project, &id, &files)?;
        }
        // each node's daemon knows which node it is (for its own part of scheduled backups)
        let manager = project.config.manager().map(|(n, _)| n.clone());
        if let Some(name) = manager.as_deref().filter(|_| host.is_stack()) {
            files.push(("node", name.as_bytes()));
        }
        // compose mode: the bundle goes with the command that starts the job
        let bundle = if host.is_stack() {
            host.upload(&id, &files)?;
            progress.done();
            check_loop_images(&project, &session, &mut progress)?;
            None
        } else {
            Some(host.bundle(&id, &files)?)
        };
        release::check_interrupt()?;
        Ok(Some((id, bundle)))
    })();
    let (id, bundle) = match laptop_part {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Exit::Ok),
        // a Ctrl-C on the terminal also stops the step's ssh: say what happened
        Err(_) if release::take_interrupt() => {
            return Err(coded(
                Exit::Interrupted,
                "interrupted before any container changed; the host is as it was",
            ));
        }
        Err(e) => return Err(e),
    };

    // 6. Up and health gate, and back to the previous release on any failure.
    if host.is_stack() {
        return swarm_release(
            &project, &host, &plan, lock, &id, &hash, current, started, args, progress,
        );
    }
    let job = release::Job {
        project: project.config.project.name.clone(),
        new: id.clone(),
        prev: current.as_ref().map(|c| c.0.clone()),
        services: plan.services.iter().map(|s| s.name.clone()).collect(),
        wait: Duration::from_secs(args.timeout),
        ok_entry: entry(&project, &id, &hash, "deployed", started, None, None),
        fail_entry: entry(&project, &id, &hash, "rolled-back", started, None, None),
        pre: started.elapsed(),
    };
    let followed = lock.run(
        &job,
        bundle,
        &mut progress,
        "start services and wait until healthy".into(),
    )?;
    if let Some(err) = release::outcome_error(&followed, &session.host(), "deploy") {
        if args.json
            && let Some(e) = &followed.entry
        {
            result(true, e);
        }
        return Err(err);
    }
    let e = followed
        .entry
        .unwrap_or_else(|| entry(&project, &id, &hash, "deployed", started, None, None));
    result(args.json, &e);
    if !args.json {
        eprintln!(
            "deployed release {id} to {} in {:.1}s{}",
            session.host(),
            started.elapsed().as_secs_f64(),
            prepared
                .rtt
                .filter(|_| slow_link.is_some())
                .map(|r| format!(" (link round trip ~{} ms)", r.as_millis()))
                .unwrap_or_default()
        );
    }
    Ok(Exit::Ok)
}

/// `homebase deploy --attach`: follows the release job on the host (after a detach or a
/// lost link) until it ends, with the same report and exit code as the deploy itself.
fn attach(project: &Project, args: &DeployArgs, progress: &mut Progress) -> Result<Exit> {
    let session = project.open_session()?;
    let followed = release::follow(
        &session,
        &project.config.project.name,
        progress,
        &release::Labels {
            up: "start services and wait until healthy".into(),
        },
    )?;
    if let Some(e) = &followed.entry {
        result(args.json, e);
    }
    match release::outcome_error(&followed, &session.host(), "deploy") {
        Some(err) => Err(err),
        None => {
            if !args.json
                && let Some(e) = &followed.entry
            {
                eprintln!("release {} is deployed on {}", e.id, session.host());
            }
            Ok(Exit::Ok)
        }
    }
}

/// Agent loops' images: the daemon pulls a missing one, which fails without a registry.
fn check_loop_images(project: &Project, session: &Session, progress: &mut Progress) -> Result<()> {
    let images: Vec<&str> = project
        .config
        .loops
        .values()
        .map(|l| l.image.as_str())
        .collect();
    if images.is_empty() {
        return Ok(());
    }
    let checks: Vec<String> = images
        .iter()
        .map(|i| {
            format!(
                "docker image inspect {q} >/dev/null 2>&1 || echo {q}",
                q = homebase_remote::sh_quote(i)
            )
        })
        .collect();
    let answer = session.check(&format!(
        "echo \"@host $(uname -s) $HOME\"; {}",
        checks.join("; ")
    ))?;
    let (os, home) = answer
        .lines()
        .find_map(|l| l.strip_prefix("@host "))
        .and_then(|l| l.split_once(' '))
        .unwrap_or(("", ""));
    for w in outside_home(project, os, home) {
        progress.info(&w);
    }
    for image in answer
        .lines()
        .filter(|l| !l.starts_with("@host ") && !l.trim().is_empty())
    {
        progress.info(&format!(
            "loop image `{}` is not on {}: the daemon will try to pull it; if it is not in a registry, build it there (`docker -H ssh://HOST build -t {image} DIR`, see examples/agent-loop)",
            crate::ui::printable(image),
            session.host()
        ));
    }
    Ok(())
}

/// Swarm mode: `docker stack deploy` hands the update to the swarm's own orchestrator, which
/// goes on converging whatever happens to the laptop; the laptop gates on health and rolls
/// back through the same lock.
#[allow(clippy::too_many_arguments)]
fn swarm_release(
    project: &Project,
    host: &HostProject,
    plan: &homebase_stack::Plan,
    mut lock: release::Lock,
    id: &str,
    hash: &str,
    current: Option<(String, String)>,
    started: Instant,
    args: &DeployArgs,
    mut progress: Progress,
) -> Result<Exit> {
    progress.step("start services and wait until healthy");
    // From here on containers may have changed: any failure, of the gate or of a step
    // around it, ends in the rollback below, never in an early return.
    let gate = (|| -> Result<(bool, String)> {
        let (ok, output) = host.up(id, Duration::from_secs(args.timeout))?;
        let ps = host.ps()?;
        let healthy = ok && all_healthy(plan, &ps);
        if healthy {
            host.set_current(id)?;
        }
        Ok((healthy, output))
    })();
    let (healthy, output) = match gate {
        Ok(g) => g,
        Err(e) => (false, format!("homebase: {e:#}")),
    };
    if healthy {
        progress.done();
        let e = entry(project, id, hash, "deployed", started, None, None);
        lock.finish(&e)?;
        result(args.json, &e);
        if !args.json {
            eprintln!(
                "deployed release {id} to {} in {:.1}s",
                host.session.host(),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(Exit::Ok);
    }
    progress.fail("not healthy");
    let tail: Vec<&str> = output.trim().lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let report = format!("\ndocker stack said:\n{}", tail.join("\n"));
    // a release whose presence cannot be read is tried all the same
    let rolled = match &current {
        Some((prev, _)) if host.release_exists(prev).unwrap_or(true) => {
            progress.step(&format!("roll back to release {prev}"));
            match host.up(prev, Duration::from_secs(args.timeout)) {
                Ok((true, _)) => {
                    progress.done();
                    format!("rolled back to release {prev}, which is healthy again")
                }
                Ok((false, back_out)) => {
                    progress.fail("rollback not healthy");
                    format!(
                        "rollback to release {prev} did not become healthy either:\n{}",
                        back_out.trim()
                    )
                }
                Err(e) => {
                    progress.fail("rollback failed");
                    format!("the rollback to release {prev} failed: {e:#}")
                }
            }
        }
        _ => {
            progress.step("remove the failed first release (volumes kept)");
            match host.down(id) {
                Ok(()) => {
                    progress.done();
                    "there was no previous release; the failed containers were removed (volumes kept)"
                        .into()
                }
                Err(e) => {
                    progress.fail("removal failed");
                    format!(
                        "there was no previous release, and removing the failed containers failed: {e:#}"
                    )
                }
            }
        }
    };
    let e = entry(
        project,
        id,
        hash,
        "rolled-back",
        started,
        current.map(|c| c.0),
        Some(rolled.clone()),
    );
    lock.finish(&e)?;
    if args.json {
        result(true, &e);
    }
    Err(coded(
        Exit::Refused,
        format!("release {id} did not become healthy; {rolled}{report}"),
    ))
}

fn report_up_to_date(args: &DeployArgs, progress: &Progress, e: &ReleaseEntry) {
    progress.info(&format!(
        "up to date: release {} is running and healthy; no container touched",
        e.id
    ));
    result(args.json, e);
}

fn result(json: bool, e: &ReleaseEntry) {
    if json
        && let Ok(line) =
            serde_json::to_string(&serde_json::json!({ "event": "result", "release": e }))
    {
        println!("{line}");
    }
}

/// Planned services all running, and healthy where they have a healthcheck.
pub fn all_healthy(plan: &homebase_stack::Plan, ps: &[crate::host::PsEntry]) -> bool {
    plan.services.iter().all(|s| {
        ps.iter().any(|p| {
            p.service == s.name
                && p.state == "running"
                && (p.health.is_empty() || p.health == "healthy")
        })
    })
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
fn changed_databases(old_yaml: &str, new_yaml: &str) -> Result<Vec<String>> {
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

/// The `env_file`s the services name, read here to travel in the bundle (mode 0600) under the
/// same relative paths, so that Compose on the host finds them beside compose.yml.
fn env_files(project: &Project) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = &project.compose.project_dir;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for svc in project.compose.services.values() {
        for (path, required) in svc.env_files.iter().cloned() {
            let rel = std::path::Path::new(&path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
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
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
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

fn release_id(hash: &str) -> String {
    format!("{}-{}", utc_stamp(now_secs()), &hash[..8])
}

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

/// On a Mac the engine runs in a VM (Colima, Docker Desktop) that shares only the home
/// directory: a loop workspace elsewhere is an empty directory inside the iteration.
fn outside_home(project: &Project, os: &str, home: &str) -> Vec<String> {
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
