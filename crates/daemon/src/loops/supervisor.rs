//! The supervisor of one loop: the I/O around the pure parts. It reads what the gates
//! need, starts and watches each iteration's container, gathers what the iteration left
//! (output, completion file, workspace changes) and records it, then carries out what
//! [`outcome::account`] decides. Commands from the API are answered between and during
//! iterations.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homebase_engine::Engine;
use homebase_engine::run::{ITERATION_LABEL, LOOP_LABEL, RunSpec, Source, Walls};
use homebase_proto::clock::rfc3339;
use homebase_proto::layout;
use homebase_proto::{LoopStatus, RunningIteration};
use homebase_stack::loops::Workspace;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::gates::{self, Next, Readings};
use super::outcome::{self, Effect, Ended};
use super::output::{TAIL_BYTES, Watched, append_log, tail_str, watch_container};
use super::state::{Breaker, RunState};
use super::text::{self, humanize};
use super::{Control, LoopConfig, Reply, expand_home};
use crate::loop_store::{Finished, LoopRow};
use crate::workspace::{count_changes, fingerprint, fingerprint_of, snapshot_files};
use crate::{Shared, now};

pub(super) struct Supervisor {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub config: watch::Receiver<LoopConfig>,
    pub control: mpsc::Receiver<(Control, Reply)>,
    /// The loop was removed from the configuration.
    pub removed: CancellationToken,
    /// The daemon is shutting down.
    pub shutdown: CancellationToken,
    pub running: Option<RunningIteration>,
}

impl Supervisor {
    fn cfg(&self) -> LoopConfig {
        self.config.borrow().clone()
    }

    fn load(&self) -> LoopRow {
        let cfg = self.cfg();
        match self.shared.store.loop_row(&cfg.project, &cfg.name) {
            Ok(Some(row)) => row,
            Ok(None) => LoopRow {
                project: cfg.project.clone(),
                name: cfg.name.clone(),
                state: if cfg.section.autostart {
                    RunState::Active
                } else {
                    RunState::Idle
                },
                reason: if cfg.section.autostart {
                    "started on deploy".into()
                } else {
                    "autostart = false: waiting for `homebase loop start`".into()
                },
                run: 1,
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!("cannot read loop {}: {e:#}", cfg.label());
                LoopRow {
                    project: cfg.project.clone(),
                    name: cfg.name.clone(),
                    state: RunState::Idle,
                    reason: format!("cannot read its state: {e:#}"),
                    run: 1,
                    ..Default::default()
                }
            }
        }
    }

    fn save(&self, row: &LoopRow) {
        if let Err(e) = self.shared.store.save_loop(row) {
            tracing::warn!("cannot save loop {}/{}: {e:#}", row.project, row.name);
        }
    }

    async fn event(&self, kind: &str, message: &str) {
        let cfg = self.cfg();
        self.shared
            .event(&cfg.project, &format!("loop:{}", cfg.name), kind, message)
            .await;
    }

    async fn publish(&self, row: &LoopRow, next: &Next) {
        let cfg = self.cfg();
        let last = self
            .shared
            .store
            .iterations(&cfg.project, &cfg.name, 1)
            .ok()
            .and_then(|mut v| v.pop());
        let (waiting, wait_until) = match next {
            Next::Wait {
                kind,
                reason,
                until,
            } => (Some(format!("{kind}: {reason}")), *until),
            _ => (None, None),
        };
        let status = LoopStatus {
            project: cfg.project.clone(),
            name: cfg.name.clone(),
            state: row.state.as_str().into(),
            reason: row.reason.clone(),
            run: row.run,
            iterations: row.iterations,
            max_iterations: cfg.section.max_iterations,
            breaker: row.breaker.as_str().into(),
            breaker_until: row.breaker.until(),
            running: self.running.clone(),
            waiting: if self.running.is_some() {
                None
            } else {
                waiting
            },
            wait_until: if self.running.is_some() {
                None
            } else {
                wait_until
            },
            image: cfg.section.image.clone(),
            memory_limit_bytes: cfg.section.memory.0,
            priority: cfg.section.priority.as_str().into(),
            mode: cfg.section.run.as_str().into(),
            last,
        };
        self.shared
            .loop_status
            .write()
            .await
            .insert((cfg.project.clone(), cfg.name.clone()), status);
        self.shared.wake.notify_one();
    }

    pub async fn run(mut self) {
        let mut row = self.load();
        self.save(&row);
        self.recover(&mut row).await;
        let mut last_wait: Option<(&'static str, String)> = None;
        loop {
            let next = self.decide(&row).await;
            self.publish(&row, &next).await;
            match &next {
                Next::Iterate => {
                    last_wait = None;
                    if !self.iterate(&mut row).await {
                        return;
                    }
                    continue;
                }
                Next::Wait { kind, reason, .. } => {
                    // Record a wait once, when its reason changes.
                    if last_wait.as_ref().map(|(k, _)| *k) != Some(*kind) {
                        self.event("loop_wait", &format!("waiting ({kind}): {reason}"))
                            .await;
                        last_wait = Some((kind, reason.clone()));
                    }
                }
                // (`decide` reads the workspace itself: never returned)
                Next::Idle | Next::ReadWorkspace => last_wait = None,
            }
            let sleep = match &next {
                Next::Wait {
                    until: Some(until), ..
                } => (*until - now()).clamp(0, 2) as u64 * 1000 + 100,
                _ => 2000,
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.removed.cancelled() => {
                    self.event("loop_removed", "the loop is no longer in the deployed configuration").await;
                    return;
                }
                msg = self.control.recv() => {
                    let Some((c, reply)) = msg else { return };
                    let r = self.apply(&mut row, c, None).await;
                    let _ = reply.send(r);
                }
                _ = self.config.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
            }
        }
    }

    /// Applies a command; `stop_iteration` cancels a running iteration.
    async fn apply(
        &self,
        row: &mut LoopRow,
        c: Control,
        stop_iteration: Option<&CancellationToken>,
    ) -> Result<LoopStatus, String> {
        let cfg = self.cfg();
        match c {
            Control::Start => {
                if self.running.is_some() && row.state == RunState::Active {
                    return Err(format!(
                        "loop `{}` is running iteration {}; stop it first (`homebase loop stop {}`) or let it run",
                        cfg.name,
                        row.iterations + 1,
                        cfg.name
                    ));
                }
                row.run += 1;
                row.iterations = 0;
                row.state = RunState::Active;
                row.reason = "started by hand".into();
                row.breaker = Breaker::Closed;
                row.no_progress = 0;
                row.same_error = 0;
                row.last_error = None;
                row.wait_kind = None;
                row.wait_until = None;
                self.shared
                    .resolve(
                        &cfg.project,
                        &format!("loop:{}", cfg.name),
                        "loop_breaker",
                        "a new run started",
                    )
                    .await;
                self.event("loop_start", &format!("run {} started", row.run))
                    .await;
            }
            Control::Stop => {
                row.state = RunState::Stopped;
                row.reason = "stopped by hand".into();
                if let Some(t) = stop_iteration {
                    t.cancel();
                }
                self.event("loop_stop", "stopped by hand").await;
            }
            Control::Pause => {
                if row.state != RunState::Active {
                    return Err(format!(
                        "loop `{}` is {}, not active; nothing to pause",
                        cfg.name, row.state
                    ));
                }
                row.state = RunState::Paused;
                row.reason = if self.running.is_some() {
                    "paused by hand; the running iteration finishes first".into()
                } else {
                    "paused by hand".into()
                };
                self.event("loop_pause", &row.reason).await;
            }
            Control::Resume => {
                if !matches!(row.state, RunState::Paused | RunState::Stopped) {
                    return Err(format!(
                        "loop `{}` is {}; resume continues a paused or stopped loop, `homebase loop start {}` begins a new run",
                        cfg.name, row.state, cfg.name
                    ));
                }
                row.state = RunState::Active;
                row.reason = "resumed by hand".into();
                self.event("loop_resume", &format!("run {} resumed", row.run))
                    .await;
            }
        }
        self.save(row);
        let next = self.decide(row).await;
        self.publish(row, &next).await;
        Ok(self
            .shared
            .loop_status
            .read()
            .await
            .get(&(cfg.project.clone(), cfg.name.clone()))
            .cloned()
            .unwrap_or_default())
    }

    /// Reads what the gates need and asks them ([`gates::decide`]).
    async fn decide(&self, row: &LoopRow) -> Next {
        let cfg = self.cfg();
        let now = now();
        let started_last_hour = match cfg.section.max_per_hour {
            Some(_) => self
                .shared
                .store
                .started_since(&cfg.project, &cfg.name, now - 3600)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let stack_memory = self
            .shared
            .snapshot
            .read()
            .await
            .projects
            .iter()
            .find(|p| p.name == cfg.project)
            .map(|p| p.memory_bytes);
        let mut readings = Readings {
            now,
            started_last_hour,
            stack_memory,
            workspace: None,
        };
        match gates::decide(row, &cfg, &readings) {
            Next::ReadWorkspace => {
                readings.workspace = Some(fingerprint(&self.engine, &cfg.workspace()).await);
                gates::decide(row, &cfg, &readings)
            }
            next => next,
        }
    }

    /// After a (re)start: an iteration still recorded as running is adopted when its
    /// container exists, or recorded as interrupted; stray containers of this loop go.
    async fn recover(&mut self, row: &mut LoopRow) {
        let cfg = self.cfg();
        let running = self
            .shared
            .store
            .running_iterations(&cfg.project, &cfg.name)
            .unwrap_or_default();
        let containers = self.engine.labelled(LOOP_LABEL).await.unwrap_or_default();
        let mine: Vec<_> = containers
            .iter()
            .filter(|c| c.labels.get(LOOP_LABEL) == Some(&cfg.label()))
            .collect();
        let last_running = running.last().map(|(r, _)| r.id);
        for c in &mine {
            let iteration: Option<i64> = c.labels.get(ITERATION_LABEL).and_then(|v| v.parse().ok());
            if iteration.is_none() || iteration != last_running {
                tracing::info!("removing stray iteration container {}", c.name);
                let _ = self.engine.remove(&c.id).await;
            }
        }
        for (rec, container) in running {
            let found = mine.iter().find(|c| {
                c.labels
                    .get(ITERATION_LABEL)
                    .and_then(|v| v.parse::<i64>().ok())
                    == Some(rec.id)
            });
            match found {
                Some(c) if Some(rec.id) == last_running => {
                    self.event(
                        "loop_adopt",
                        &format!("iteration {} was running when the daemon restarted; watching it to its end", rec.n),
                    )
                    .await;
                    let id = c.id.clone();
                    self.running = Some(RunningIteration {
                        n: rec.n,
                        started: rec.started,
                        container: c.name.clone(),
                    });
                    let stop = CancellationToken::new();
                    let watched = self.watch(&id, rec.started, true, &stop).await;
                    let Some(watched) = watched else { return };
                    self.conclude(
                        row,
                        rec.id,
                        rec.run,
                        rec.n,
                        rec.started,
                        &id,
                        watched,
                        None,
                        None,
                        "adopted after a daemon restart",
                    )
                    .await;
                }
                _ => {
                    let f = Finished {
                        ended: now(),
                        outcome: "interrupted".into(),
                        duration_ms: (now() - rec.started) * 1000,
                        note: format!(
                            "the daemon or the host restarted during the iteration and its container {} is gone; it was not run again",
                            if container.is_empty() {
                                "(not yet created)"
                            } else {
                                &container
                            }
                        ),
                        ..Default::default()
                    };
                    let _ = self.shared.store.finish_iteration(rec.id, &f);
                    if rec.run == row.run {
                        row.iterations = row.iterations.max(rec.n);
                        row.last_ended = Some(f.ended);
                    }
                    self.save(row);
                    self.event(
                        "loop_interrupted",
                        &format!("iteration {}: {}", rec.n, f.note),
                    )
                    .await;
                }
            }
        }
    }

    /// Runs one iteration to its end and records it. Returns false when the supervisor
    /// must end (daemon shutdown or loop removed, with the container left or removed).
    async fn iterate(&mut self, row: &mut LoopRow) -> bool {
        let cfg = self.cfg();
        let n = row.iterations + 1;
        let run = row.run;
        let started = now();
        if row.breaker.begin_trial() {
            self.event(
                "loop_breaker_half_open",
                "cool-down over: one trial iteration",
            )
            .await;
        }
        let id = match self
            .shared
            .store
            .begin_iteration(&cfg.project, &cfg.name, run, n, started)
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("cannot record an iteration of {}: {e:#}", cfg.label());
                tokio::time::sleep(Duration::from_secs(5)).await;
                return true;
            }
        };
        row.last_started = Some(started);
        self.save(row);
        let ws = cfg.workspace();
        let before_files = snapshot_files(&self.engine, &ws).await;
        let before_head = match &ws {
            Workspace::Path(p) => crate::workspace::head(Path::new(p)),
            Workspace::Volume(_) => None,
        };
        let log = cfg.dir().join(layout::LOOP_OUTPUT);
        append_log(
            &log,
            format!(
                "\n=== {} iteration {n} (run {run}) started {} ===\n",
                cfg.name,
                rfc3339(started)
            )
            .as_bytes(),
        );
        let container = match self.launch(&cfg, id, run, n).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                append_log(&log, format!("homebase: {msg}\n").as_bytes());
                let watched = Watched {
                    exit_code: None,
                    oom: false,
                    timed_out: false,
                    stopped: false,
                    marker: false,
                    tail: msg.clone().into_bytes(),
                    error: msg,
                };
                self.conclude(
                    row,
                    id,
                    run,
                    n,
                    started,
                    "",
                    watched,
                    before_files,
                    before_head,
                    "",
                )
                .await;
                return true;
            }
        };
        let _ = self.shared.store.set_iteration_container(id, &container.1);
        self.running = Some(RunningIteration {
            n,
            started,
            container: container.1.clone(),
        });
        self.publish(row, &Next::Iterate).await;
        self.event(
            "loop_iteration",
            &format!("iteration {n} started ({})", container.1),
        )
        .await;
        let stop = CancellationToken::new();
        let watched = {
            let watch = self.watch_with_control(row, &container.0, started, &stop);
            watch.await
        };
        let Some(watched) = watched else {
            return false;
        };
        self.conclude(
            row,
            id,
            run,
            n,
            started,
            &container.0,
            watched,
            before_files,
            before_head,
            "",
        )
        .await;
        true
    }

    /// Watches the iteration while answering commands (stop cancels it).
    async fn watch_with_control(
        &mut self,
        row: &mut LoopRow,
        id: &str,
        started: i64,
        stop: &CancellationToken,
    ) -> Option<Watched> {
        let engine = self.engine.clone();
        let cfg = self.cfg();
        let shutdown = self.shutdown.clone();
        let removed = self.removed.clone();
        let fut = watch_container(
            engine,
            cfg,
            id.to_string(),
            started,
            false,
            stop.clone(),
            shutdown,
            removed,
        );
        tokio::pin!(fut);
        loop {
            tokio::select! {
                w = &mut fut => return w,
                msg = self.control.recv() => {
                    let Some((c, reply)) = msg else { continue };
                    let r = self.apply(row, c, Some(stop)).await;
                    let _ = reply.send(r);
                }
            }
        }
    }

    async fn watch(
        &mut self,
        id: &str,
        started: i64,
        adopted: bool,
        stop: &CancellationToken,
    ) -> Option<Watched> {
        watch_container(
            self.engine.clone(),
            self.cfg(),
            id.to_string(),
            started,
            adopted,
            stop.clone(),
            self.shutdown.clone(),
            self.removed.clone(),
        )
        .await
    }

    /// Creates and starts the iteration's container; returns (id, name).
    async fn launch(
        &self,
        cfg: &LoopConfig,
        id: i64,
        run: i64,
        n: i64,
    ) -> anyhow::Result<(String, String)> {
        let l = &cfg.section;
        let workspace = match cfg.workspace() {
            Workspace::Path(p) => {
                std::fs::create_dir_all(&p)
                    .map_err(|e| anyhow::anyhow!("cannot create the workspace `{p}`: {e}"))?;
                Source::Bind(p)
            }
            Workspace::Volume(v) => Source::Volume(v),
        };
        if !self.engine.has_image(&l.image).await {
            self.engine.pull(&l.image).await.map_err(|e| {
                anyhow::anyhow!(
                    "image `{}` is not on the host and cannot be pulled ({e}); build it on the host (see examples/agent-loop) or fix loops.{}.image",
                    l.image,
                    cfg.name
                )
            })?;
        }
        let mut env: Vec<String> = Vec::new();
        for f in &l.env_files {
            // read as Compose reads an env_file
            let path = cfg.release_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read env file `{}`: {e}", path.display()))?;
            let vars = homebase_stack::dotenv::parse(&text, &Default::default())
                .map_err(|e| anyhow::anyhow!("env file `{}`, {e}", path.display()))?;
            env.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        }
        env.extend(l.env.iter().map(|(k, v)| format!("{k}={v}")));
        env.push(format!("HOMEBASE_LOOP={}", cfg.name));
        env.push(format!("HOMEBASE_RUN={run}"));
        env.push(format!("HOMEBASE_ITERATION={n}"));
        let name = format!("hb-loop-{}-{}-{id}", cfg.project, cfg.name);
        let labels = HashMap::from([
            (LOOP_LABEL.to_string(), cfg.label()),
            (ITERATION_LABEL.to_string(), id.to_string()),
        ]);
        let spec = RunSpec {
            name: name.clone(),
            image: l.image.clone(),
            cmd: l.command.argv(),
            env,
            workdir: l.workdir.clone(),
            workspace,
            memory: l.memory.0,
            oom_score_adj: l.priority.oom_score_adj(),
            user: l.user.clone(),
            labels,
            entrypoint: None,
            workspace_read_only: false,
            walls: Walls {
                capabilities: l.sandbox.capabilities(),
                no_new_privileges: l.sandbox.no_new_privileges,
                pids_limit: l.sandbox.pids_limit,
                network: l.sandbox.network.clone(),
                read_only_mounts: l
                    .sandbox
                    .mount_pairs()
                    .into_iter()
                    .map(|(src, dst)| (expand_home(&src), dst))
                    .collect(),
            },
        };
        let cid = self.engine.create(&spec).await?;
        if let Err(e) = self.engine.start_one(&cid).await {
            let _ = self.engine.remove(&cid).await;
            return Err(e.into());
        }
        Ok((cid, name))
    }

    /// Records the iteration's end: reads the completion file from its container and the
    /// workspace's changes, removes the container, then lets [`outcome`] classify it and
    /// keep the run's books, and raises what that says.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &mut self,
        row: &mut LoopRow,
        id: i64,
        run: i64,
        n: i64,
        started: i64,
        container: &str,
        w: Watched,
        before_files: Option<BTreeMap<String, (u64, i64)>>,
        before_head: Option<String>,
        note: &str,
    ) {
        let cfg = self.cfg();
        let l = &cfg.section;
        let ended = now();
        // The completion file, read from the finished container (its workspace mount).
        let all_pass = match (&l.completion_file, container.is_empty()) {
            (Some(f), false) => {
                let path = format!("{}/{}", l.workdir.trim_end_matches('/'), f);
                match self.engine.read_file(container, &path, 4 << 20).await {
                    Ok(Some(data)) => text::all_pass(&data),
                    _ => None,
                }
            }
            _ => None,
        };
        if !container.is_empty()
            && let Err(e) = self.engine.remove(container).await
        {
            tracing::warn!("cannot remove iteration container: {e:#}");
        }
        let ws = cfg.workspace();
        let after_files = snapshot_files(&self.engine, &ws).await;
        let files_changed = match (&before_files, &after_files) {
            (Some(a), Some(b)) => Some(count_changes(a, b)),
            _ => None,
        };
        let diffstat = match &before_head {
            Some(head) => {
                crate::workspace::diffstat(
                    &self.engine,
                    &ws,
                    &l.image,
                    l.user.as_deref(),
                    &cfg.label(),
                    head,
                )
                .await
            }
            None => None,
        };
        let text = String::from_utf8_lossy(&w.tail).to_string();
        let usage = regex::Regex::new(&l.usage_limit_pattern)
            .ok()
            .is_some_and(|re| re.is_match(&text));
        let outcome = outcome::classify(&w, all_pass, usage);
        let f = Finished {
            ended,
            outcome: outcome.as_str().into(),
            exit_code: w.exit_code,
            duration_ms: (ended - started) * 1000,
            files_changed,
            diffstat,
            tail: tail_str(&w.tail, TAIL_BYTES),
            note: outcome::note(&w, l, note),
        };
        if let Err(e) = self.shared.store.finish_iteration(id, &f) {
            tracing::warn!("cannot record iteration {n} of {}: {e:#}", cfg.label());
        }
        self.running = None;
        append_log(
            &cfg.dir().join(layout::LOOP_OUTPUT),
            format!(
                "=== iteration {n}: {}{}{}, {} ===\n",
                outcome.as_str(),
                w.exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default(),
                files_changed
                    .map(|c| format!(", {c} files changed"))
                    .unwrap_or_default(),
                humanize((ended - started).max(0) as u64)
            )
            .as_bytes(),
        );
        // A command may have started a new run meanwhile: the old iteration is recorded
        // but leaves the new run's counters alone.
        let fresh = self.load();
        if fresh.run != run {
            *row = fresh;
            return;
        }
        row.fingerprint = match &after_files {
            Some(files) => Some(fingerprint_of(files)),
            None => fingerprint(&self.engine, &ws).await,
        };
        let effects = outcome::account(
            row,
            l,
            &Ended {
                n,
                ended,
                outcome,
                exit_code: w.exit_code,
                files_changed,
                marker: w.marker,
                text: &text,
            },
        );
        let subject = format!("loop:{}", cfg.name);
        for effect in effects {
            match effect {
                Effect::Event(kind, m) => self.event(kind, &m).await,
                Effect::Alert(kind, m) => self.shared.alert(&cfg.project, &subject, kind, &m).await,
                Effect::Resolve(kind, m) => {
                    self.shared.resolve(&cfg.project, &subject, kind, &m).await
                }
                Effect::Notify(kind, m) => {
                    self.shared.notify(&cfg.project, &subject, kind, &m).await
                }
            }
        }
        self.save(row);
    }
}
