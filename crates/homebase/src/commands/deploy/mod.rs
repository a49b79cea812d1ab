//! `homebase deploy`: plan → lock → upload → compose up → health gate → current + log, and
//! back to the previous release by itself when anything fails after containers changed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::ReleaseEntry;

use homebase_remote::Session;

use crate::cli::{DeployArgs, Global};
use crate::exit::{Exit, coded};
use crate::host::HostProject;
use crate::progress::Progress;
use crate::project::{self, Link, Project};
use crate::release;
use crate::source::Source;

mod parts;

use crate::release::entry;
use parts::{all_healthy, bundle_hash, changed_databases, env_files, outside_home, release_id};

/// What a deploy takes to the host, decided on the laptop before it connects.
struct Deploy<'a> {
    project: &'a Project,
    /// The connections of this deploy.
    link: &'a Link,
    args: &'a DeployArgs,
    started: Instant,
    plan: homebase_stack::Plan,
    /// The rendered compose file.
    yaml: String,
    config_text: Vec<u8>,
    env_files: Vec<(String, Vec<u8>)>,
    /// The project's own files the stack references, and the images the host builds.
    source: Source,
    /// The release's manifest of those files and its builds (`host::tree`).
    manifest: String,
    builds: String,
    /// The release's `restart-with`: the services whose replacement takes their dependents
    /// along (a name a line); the job replaces any other changed service alone.
    restart_with: String,
    /// The compose file that builds the loops' images on the host, if any loop is built.
    loops_yml: Option<String>,
    /// The loops whose workspace is a checkout of the project's repository (the release's
    /// `git-loops`: a name a line), and the repository's commit they get.
    git_loops: String,
    repo_head: Option<String>,
    /// The bundle's hash: what tells a change from a no-op.
    hash: String,
}

pub fn run(global: &Global, args: &DeployArgs) -> Result<Exit> {
    let started = Instant::now();
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    let mut progress = Progress::new(args.json);
    crate::catch_interrupts();
    if args.attach {
        return attach(&project, &link, args, &mut progress);
    }
    // 1. Plan: an over-budget stack is refused before the host is touched.
    let deploy = Deploy::plan(&project, &link, args, started, &mut progress)?;
    release::check_interrupt()?;

    progress.step(&format!("connect to {}", link.target()));
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    progress.done();

    // 2. Lock (Compose mode: a no-op is decided on the host in the same round trip).
    let Some((mut lock, prepared, slow_link)) = deploy.lock(&host, &mut progress)? else {
        return Ok(Exit::Ok);
    };
    // 3-5. On the laptop: the no-op of a stack, the backup of a changed database, the
    // upload. Until the job starts, an interrupt leaves the host as it was.
    let (id, bundle) = match deploy.stage(&host, &mut lock, &prepared, &mut progress) {
        Ok(Some(staged)) => staged,
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
    let job = release::Job {
        project: project.config.project.name.clone(),
        new: id.clone(),
        prev: prepared.current.as_ref().map(|c| c.0.clone()),
        services: deploy
            .plan
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        wait: Duration::from_secs(args.timeout),
        ok_entry: deploy.entry(&id, "deployed"),
        fail_entry: deploy.entry(&id, "rolled-back"),
        pre: started.elapsed(),
    };
    let followed = lock.run(
        &job,
        bundle,
        &mut progress,
        "start services and wait until healthy".into(),
    )?;
    if let Some(err) = release::outcome_error(&followed, &session.host(), "deploy") {
        if let Some(e) = &followed.entry {
            result(args.json, e);
        }
        return Err(err);
    }
    // the manifest this release runs with, for the next deploy's delta
    session.set_note(
        &manifest_note(&project.config.project.name),
        &format!("{id}\n{}", deploy.manifest),
    );
    let e = followed.entry.unwrap_or(job.ok_entry);
    result(args.json, &e);
    if !args.json {
        crate::esay!(
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

impl<'a> Deploy<'a> {
    /// The plan that fits, the rendered compose file and the bundle's hash.
    fn plan(
        project: &'a Project,
        link: &'a Link,
        args: &'a DeployArgs,
        started: Instant,
        progress: &mut Progress,
    ) -> Result<Deploy<'a>> {
        progress.step("plan");
        let plan = match project.plan_that_fits(
            link,
            args.host_memory.as_deref(),
            "deploy refused, the host was not touched",
        ) {
            Ok(plan) => plan,
            Err(e) => {
                progress.fail("does not fit");
                return Err(e);
            }
        };
        let source = match project.source() {
            Ok(s) => s,
            Err(e) => {
                progress.fail("the project's files");
                return Err(e);
            }
        };
        for w in &source.warnings {
            progress.info(w);
        }
        let yaml = project.render_with(&plan, &source)?.yaml;
        let (manifest, builds) = (source.manifest(), source.builds_file());
        // (derived from the compose file: the hash of `yaml` covers it)
        let restart_with: String = homebase_stack::validate::restarts_dependents(&project.compose)
            .iter()
            .map(|n| format!("{n}\n"))
            .collect();
        let loops_yml = source.loops_compose(&project.config.project.name)?;
        let git_loops: Vec<&String> = project
            .config
            .loops
            .iter()
            .filter(|(_, l)| l.git_workspace())
            .map(|(n, _)| n)
            .collect();
        let repo_head = match git_loops.first() {
            Some(name) => Some(crate::source::repo_head(&project.root, name, progress)?),
            None => None,
        };
        let git_loops: String = git_loops.iter().map(|n| format!("{n}\n")).collect();
        let config_text = std::fs::read(&project.config_path)
            .with_context(|| format!("cannot read `{}`", project.config_path.display()))?;
        let env_files = env_files(project)?;
        let mut hashed: Vec<&[u8]> = vec![
            yaml.as_bytes(),
            &config_text,
            manifest.as_bytes(),
            builds.as_bytes(),
            loops_yml.as_deref().unwrap_or("").as_bytes(),
            git_loops.as_bytes(),
            repo_head.as_deref().unwrap_or("").as_bytes(),
        ];
        hashed.extend(env_files.iter().map(|(_, d)| d.as_slice()));
        let hash = bundle_hash(&hashed);
        progress.done();
        Ok(Deploy {
            project,
            link,
            args,
            started,
            plan,
            yaml,
            config_text,
            env_files,
            source,
            manifest,
            builds,
            restart_with,
            loops_yml,
            git_loops,
            repo_head,
            hash,
        })
    }

    /// A release-log line for release `id` as of now.
    fn entry(&self, id: &str, outcome: &str) -> ReleaseEntry {
        entry(
            self.project,
            id,
            &self.hash,
            outcome,
            self.started,
            None,
            None,
        )
    }

    /// Takes the lock; `None` when the host already runs this bundle, healthy (reported).
    #[allow(clippy::type_complexity)]
    fn lock<'h>(
        &self,
        host: &'h HostProject<'h>,
        progress: &mut Progress,
    ) -> Result<Option<(release::Lock<'h>, crate::host::Prepared, Option<String>)>> {
        progress.step("lock");
        if self.args.force_unlock {
            host.force_unlock()?;
        }
        let up_to_date = (!self.args.force && !host.is_stack()).then(|| release::UpToDate {
            project: self.project.config.project.name.clone(),
            hash: self.hash.clone(),
            services: self.plan.services.iter().map(|s| s.name.clone()).collect(),
            entry: self.entry("", "up-to-date"),
        });
        let (lock, prepared) = release::Lock::take(
            host,
            self.link.target(),
            &self.project.config.project.name,
            progress,
            up_to_date.as_ref(),
            false,
        )?;
        let slow_link = release::rtt_note(prepared.rtt, &host.session.host());
        match &slow_link {
            Some(note) => progress.done_with(note),
            None => progress.done(),
        }
        if let (Some(id), Some(u)) = (&prepared.up_to_date, &up_to_date) {
            // decided and logged on the host in the one round trip
            let mut e = u.entry.clone();
            e.id = id.clone();
            report_up_to_date(self.args, progress, &e);
            return Ok(None);
        }
        Ok(Some((lock, prepared, slow_link)))
    }

    /// Steps 3 to 5, before any container changes: the release id and, in Compose mode, the
    /// bundle to send with the job's start; `None` for a stack that is up to date.
    fn stage(
        &self,
        host: &HostProject,
        lock: &mut release::Lock,
        prepared: &crate::host::Prepared,
        progress: &mut Progress,
    ) -> Result<Option<(String, Option<release::Bundle>)>> {
        // 3. No-op? (Compose mode: decided by the prepare script already.)
        let containers = if host.is_stack() {
            host.ps()?
        } else {
            prepared.containers.clone()
        };
        if host.is_stack()
            && let Some((cur_id, cur_hash)) = &prepared.current
            && *cur_hash == self.hash
            && !self.args.force
            && all_healthy(&self.plan, &containers)
        {
            let entry = self.entry(cur_id, "up-to-date");
            lock.finish(&entry)?;
            report_up_to_date(self.args, progress, &entry);
            return Ok(None);
        }
        release::check_interrupt()?;
        self.check_edits(host, prepared, progress)?;
        // 4. A deploy that changes a database backs it up first.
        if let Some(old_yaml) = &prepared.current_compose {
            self.back_up_changed(host, old_yaml, &containers, progress)?;
        }
        release::check_interrupt()?;
        // 5. Upload the bundle.
        let id = release_id(&self.hash);
        let bundle = self.upload(host, &id, prepared, progress)?;
        release::check_interrupt()?;
        Ok(Some((id, bundle)))
    }

    /// Backs up the running PostgreSQL services whose definition this deploy changes.
    fn back_up_changed(
        &self,
        host: &HostProject,
        old_yaml: &str,
        containers: &[crate::host::PsEntry],
        progress: &mut Progress,
    ) -> Result<()> {
        let running: Vec<String> = changed_databases(old_yaml, &self.yaml)?
            .into_iter()
            .filter(|s| {
                containers
                    .iter()
                    .any(|c| c.service == *s && c.state == "running")
            })
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        progress.step(&format!(
            "back up {} before changing it",
            running.join(", ")
        ));
        let (m, _) = crate::host::backup::take(self.project, self.link, host, &running)
            .context("the backup before this deploy failed, so nothing was changed; fix it or take one with `homebase backup now`")?;
        progress.info(&format!("backup {} taken before the change", m.id));
        progress.done();
        Ok(())
    }

    /// Compose mode: the bundle, to go with the command that starts the job. Swarm mode:
    /// uploaded to the manager and to every worker (a node's daemon reads its own copy).
    fn upload(
        &self,
        host: &HostProject,
        id: &str,
        prepared: &crate::host::Prepared,
        progress: &mut Progress,
    ) -> Result<Option<release::Bundle>> {
        let project = self.project;
        if !host.is_stack() {
            // before the step: in Compose mode the upload ends with the job's start
            check_loop_images(project, host.session, progress)?;
        }
        let missing = if host.is_stack() {
            Vec::new()
        } else {
            self.source.missing(&prepared.tree.objects)
        };
        let sent: u64 = missing.iter().map(|e| e.size).sum();
        progress.step(&format!(
            "upload release {id}{}",
            if self.source.entries.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} of {} project files, {})",
                    missing.len(),
                    self.source.entries.len(),
                    homebase_stack::units::Bytes(sent)
                )
            }
        ));
        let objects = crate::source::read_objects(&missing)?;
        let delta = prepared.current.as_ref().and_then(|(cur, _)| {
            let note = host
                .session
                .note(&manifest_note(&project.config.project.name))?;
            let (id, base) = note.split_once('\n')?;
            (id == cur).then(|| {
                (
                    cur.clone(),
                    crate::source::manifest_delta(base, &self.manifest),
                )
            })
        });
        let mut files: Vec<(&str, &[u8])> = vec![
            ("compose.yml", self.yaml.as_bytes()),
            ("homebase.toml", &self.config_text),
            ("hash", self.hash.as_bytes()),
        ];
        if !host.is_stack() {
            // the manifest as a change to the running release's when this laptop sent that
            // one (a few lines instead of one per file)
            match delta.as_ref() {
                Some((base, d)) => {
                    files.push(("files.base", base.as_bytes()));
                    files.push(("files.delta", d.as_bytes()));
                }
                None => files.push(("files", self.manifest.as_bytes())),
            }
            files.push(("builds", self.builds.as_bytes()));
            files.push(("restart-with", self.restart_with.as_bytes()));
            if let Some(l) = &self.loops_yml {
                files.push(("loops.yml", l.as_bytes()));
            }
        }
        let repo_bundle = match &self.repo_head {
            Some(head) if !host.is_stack() && prepared.tree.deployed.as_ref() != Some(head) => {
                Some(crate::source::repo_bundle(
                    &self.project.root,
                    prepared.tree.deployed.as_deref(),
                )?)
            }
            _ => None,
        };
        if !self.git_loops.is_empty() && !host.is_stack() {
            files.push(("git-loops", self.git_loops.as_bytes()));
        }
        if let Some(b) = &repo_bundle {
            files.push(("repo.bundle", b.as_slice()));
        }
        files.extend(
            self.env_files
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice())),
        );
        if !host.is_stack() {
            return Ok(Some(host.bundle(id, &files, &objects)?));
        }
        let (source, build_yml) = self.source.for_swarm(&project.config.project.name)?;
        let builds = source.builds_file();
        if !source.builds.is_empty() {
            files.push(("files", self.manifest.as_bytes()));
            files.push(("builds", builds.as_bytes()));
        }
        if let Some(y) = &build_yml {
            files.push(("build.yml", y.as_bytes()));
        }
        // every node builds the release's images from the files it lacks, in parallel:
        // only source crosses the laptop's link, never an image (there is no registry)
        crate::release::upload_to_workers(project, self.link, id, &files, &source)?;
        // each node's daemon knows which node it is (for its own part of scheduled backups)
        let manager = project.config.manager().map(|(n, _)| n.clone());
        if let Some(name) = manager.as_deref() {
            files.push(("node", name.as_bytes()));
        }
        host.upload_and_build(id, &files, &source)?;
        progress.done();
        check_loop_images(project, host.session, progress)?;
        Ok(None)
    }
}

impl Deploy<'_> {
    /// Synced files edited on the host since a release laid them out: the deploy stops
    /// before the host changes, unless `--set-aside` lets the job move them aside.
    fn check_edits(
        &self,
        host: &HostProject,
        prepared: &crate::host::Prepared,
        progress: &mut Progress,
    ) -> Result<()> {
        if prepared.tree.edited.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = prepared
            .tree
            .edited
            .iter()
            .take(20)
            .map(|f| format!("  {}", crate::ui::printable(f)))
            .collect();
        let more = prepared.tree.edited.len().saturating_sub(20);
        let more = if more > 0 {
            format!("\n  … and {more} more")
        } else {
            String::new()
        };
        let tree = format!(
            "~/{}/{}/tree",
            homebase_proto::layout::ROOT,
            self.project.config.project.name
        );
        if self.args.set_aside {
            progress.info(&format!(
                "{} file(s) of the project were edited on {} since the last deploy; this deploy moves the host's versions to ~/{}/{}/set-aside/<release>/:\n{}{more}",
                prepared.tree.edited.len(),
                host.session.host(),
                homebase_proto::layout::ROOT,
                self.project.config.project.name,
                list.join("\n")
            ));
            return Ok(());
        }
        progress.fail("edited on the host");
        Err(coded(
            Exit::Refused,
            format!(
                "{} file(s) of the project were edited on {} (in {tree}) since the last deploy, and this deploy would replace them:\n{}{more}\nnothing was changed. Copy the edits you want into the project here, then deploy with `--set-aside` (the host's versions are kept under ~/{}/{}/set-aside/<release>/). Agents that write code belong in a loop's workspace, not in the deployed tree.",
                prepared.tree.edited.len(),
                host.session.host(),
                list.join("\n"),
                homebase_proto::layout::ROOT,
                self.project.config.project.name,
            ),
        ))
    }
}

/// The note beside the warm connection that keeps the manifest of the release this laptop
/// deployed last.
fn manifest_note(project: &str) -> String {
    format!("manifest-{project}")
}

/// `homebase deploy --attach`: follows the release job on the host (after a detach or a
/// lost link) until it ends, with the same report and exit code as the deploy itself.
fn attach(
    project: &Project,
    link: &Link,
    args: &DeployArgs,
    progress: &mut Progress,
) -> Result<Exit> {
    let session = link.open_session()?;
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
                crate::esay!("release {} is deployed on {}", e.id, session.host());
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
        .filter(|l| l.build.is_none())
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
            "loop image `{}` is not on {}: the daemon will try to pull it; if it is not in a registry, or have the host build it from the project: `build = \"./dir\"` in place of `image` (see examples/agent-loop)",
            crate::ui::printable(image),
            session.host()
        ));
    }
    Ok(())
}

fn report_up_to_date(args: &DeployArgs, progress: &Progress, e: &ReleaseEntry) {
    progress.info(&format!(
        "up to date: release {} is running and healthy; no container touched",
        e.id
    ));
    result(args.json, e);
}

fn result(json: bool, e: &ReleaseEntry) {
    if json && let Ok(line) = serde_json::to_string(&homebase_proto::ReleaseResult::new(e.clone()))
    {
        crate::say!("{line}");
    }
}
