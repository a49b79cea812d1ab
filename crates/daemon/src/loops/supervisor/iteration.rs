//! One iteration: recovering what a restart cut off, launching the container, watching it
//! (answering commands meanwhile), and concluding what it left.

use super::Supervisor;
use crate::loops::LoopConfig;
use crate::loops::expand_home;
use crate::loops::gates::Next;
use crate::loops::outcome;
use crate::loops::outcome::Effect;
use crate::loops::outcome::Ended;
use crate::loops::outcome::{Judged, judge};
use crate::loops::output::TAIL_BYTES;
use crate::loops::output::Watched;
use crate::loops::output::append_log;
use crate::loops::output::tail_str;
use crate::loops::output::watch_container;
use crate::loops::state::RunState;
use crate::loops::store::Finished;
use crate::loops::store::LoopRow;
use crate::workspace::count_changes;
use crate::workspace::fingerprint;
use crate::workspace::fingerprint_of;
use crate::workspace::snapshot_files;
use homebase_engine::run::ITERATION_LABEL;
use homebase_engine::run::LOOP_LABEL;
use homebase_engine::run::RunSpec;
use homebase_engine::run::Source;
use homebase_engine::run::Walls;
use homebase_proto::RunningIteration;
use homebase_proto::clock::now;
use homebase_proto::clock::rfc3339;
use homebase_proto::clock::setting_duration;
use homebase_proto::layout;
use homebase_stack::loops::Workspace;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Supervisor {
    /// After a (re)start: an iteration still recorded as running is adopted when its
    /// container exists, or recorded as interrupted; stray containers of this loop go.
    /// Until both the record and the engine answer, nothing is decided (an engine still
    /// starting, as Colima after a boot, is not a container gone); `false` when the
    /// daemon stops or the loop is removed meanwhile.
    pub(super) async fn recover(&mut self, row: &mut LoopRow) -> bool {
        let Some((running, containers)) = self.recovery_reads().await else {
            return false;
        };
        let cfg = self.cfg();
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
                    let Some(watched) = watched else { return false };
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
        true
    }

    /// The iterations recorded as running and the engine's loop containers, read again
    /// every 2 s until both answer (the first failure is an event); `None` when the daemon
    /// stops or the loop is removed meanwhile.
    async fn recovery_reads(
        &self,
    ) -> Option<(
        Vec<(homebase_proto::IterationRecord, String)>,
        Vec<homebase_engine::run::Labelled>,
    )> {
        let cfg = self.cfg();
        let mut told = false;
        loop {
            let running = self
                .shared
                .store
                .running_iterations(&cfg.project, &cfg.name)
                .map_err(|e| format!("its record of running iterations does not read: {e:#}"));
            let containers = self
                .engine
                .labelled(LOOP_LABEL)
                .await
                .map_err(|e| format!("{e:#}"));
            let why = match (running, containers) {
                (Ok(r), Ok(c)) => return Some((r, c)),
                (Err(why), _) | (_, Err(why)) => why,
            };
            if !told {
                told = true;
                tracing::warn!("loop {}: {why}", cfg.name);
                self.event(
                    "loop_wait",
                    &format!(
                        "waiting to tell whether an iteration was running when the daemon restarted: {why}; trying again every 2 s"
                    ),
                )
                .await;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = self.removed.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Runs one iteration to its end and records it. Returns false when the supervisor
    /// must end (daemon shutdown or loop removed, with the container left or removed).
    /// `workspace = "git"`: merges a newly deployed commit into the loop's branch before the
    /// next iteration; false when a conflict paused the loop (with an alert naming files).
    pub(super) async fn merge_deployed(&mut self, row: &mut LoopRow) -> bool {
        let cfg = self.cfg();
        if !cfg.section.git_workspace() {
            return true;
        }
        let repo = layout::project_dir(&cfg.home, &cfg.project).join("repo.git");
        let Some(deployed) = crate::workspace::deployed(&repo) else {
            return true;
        };
        if self.merged.as_deref() == Some(deployed.as_str()) {
            return true;
        }
        let ws = cfg.workspace();
        let label = cfg.label();
        let user = self
            .user(&cfg)
            .await
            .ok()
            .and_then(|u| crate::workspace::helper_user(&u, &ws));
        let helper = crate::workspace::Helper {
            engine: &self.engine,
            ws: &ws,
            user: user.as_deref(),
            label: &label,
        };
        match helper.merge_deployed(&repo).await {
            Some(crate::workspace::Merged::UpToDate) => self.merged = Some(deployed),
            Some(crate::workspace::Merged::Merged(head)) => {
                self.event(
                    "loop_merge",
                    &format!(
                        "merged the deployed commit {} into homebase/{} (now {})",
                        &deployed[..12],
                        cfg.name,
                        &head[..12]
                    ),
                )
                .await;
                self.merged = Some(deployed);
            }
            Some(crate::workspace::Merged::Conflict(files)) => {
                let files = files
                    .iter()
                    .map(|f| format!("`{}`", f.escape_debug()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let msg = format!(
                    "the deployed commit {} conflicts with the loop's branch homebase/{} in {files}; the loop is paused. Bring its work to the laptop (`homebase loop pull {}`), merge it there, deploy, then `homebase loop resume {}`",
                    &deployed[..12],
                    cfg.name,
                    cfg.name,
                    cfg.name
                );
                row.state = RunState::Paused;
                row.reason = msg.clone();
                self.save(row);
                self.shared
                    .alert(
                        &cfg.project,
                        &format!("loop:{}", cfg.name),
                        "loop_conflict",
                        &msg,
                    )
                    .await;
                return false;
            }
            None => {
                // the image has no git, or the helper could not run: say so once per commit
                self.event(
                    "loop_merge_failed",
                    &format!(
                        "could not merge the deployed commit {} into the workspace (does the loop's image have git?)",
                        &deployed[..12]
                    ),
                )
                .await;
                self.merged = Some(deployed);
            }
        }
        true
    }

    pub(super) async fn iterate(&mut self, row: &mut LoopRow) -> bool {
        if !self.merge_deployed(row).await {
            return true;
        }
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
                let watched = Watched::failed(msg);
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
    pub(super) async fn watch_with_control(
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

    pub(super) async fn watch(
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
    pub(super) async fn launch(
        &mut self,
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
        let user = self
            .user(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("loops.{}: {e}", cfg.name))?;
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
            user: Some(user),
            labels,
            entrypoint: None,
            workspace_read_only: false,
            walls: Walls {
                capabilities: l.sandbox.capabilities(),
                no_new_privileges: l.sandbox.no_new_privileges,
                pids_limit: l.sandbox.pids_limit,
                network: l.sandbox.network.clone(),
                read_only_mounts: self.checked_mounts(cfg).await?,
            },
        };
        let cid = self.engine.create(&spec).await?;
        if let Err(e) = self.engine.start_one(&cid).await {
            let _ = self.engine.remove(&cid).await;
            return Err(e.into());
        }
        Ok((cid, name))
    }

    /// The loop's extra read-only mounts, each resolved on this host (links followed) and
    /// checked again with the real home, engine data root and socket: a link from an
    /// innocent name to `~/.ssh` is refused here even though the laptop let the name pass.
    async fn checked_mounts(&self, cfg: &LoopConfig) -> anyhow::Result<Vec<(String, String)>> {
        let mut private: Vec<String> = Vec::new();
        if let Ok((_, Some(root))) = self.engine.info().await {
            private.push(root.to_string_lossy().into_owned());
        }
        let sock = self
            .engine
            .endpoint
            .trim_start_matches("unix://")
            .to_string();
        private.push(sock.clone());
        if let Ok(real) = std::fs::canonicalize(&sock) {
            private.push(real.to_string_lossy().into_owned());
        }
        let home = std::env::var("HOME").ok();
        let real_home = home
            .as_deref()
            .and_then(|h| std::fs::canonicalize(h).ok())
            .map(|h| h.to_string_lossy().into_owned());
        let private: Vec<&str> = private.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for (src, dst) in cfg.section.sandbox.mount_pairs() {
            let path = expand_home(&src);
            let real = std::fs::canonicalize(&path).map_err(|e| {
                anyhow::anyhow!(
                    "loops.{}.sandbox.mounts: `{src}` cannot be mounted: {path}: {e}",
                    cfg.name
                )
            })?;
            let real = real.to_string_lossy().into_owned();
            for h in [home.as_deref(), real_home.as_deref()] {
                if let Some(why) = homebase_stack::loops::refused_mount(&real, h, &private) {
                    anyhow::bail!(
                        "loops.{}.sandbox.mounts: `{src}` is `{real}` on this host, which {why}; mount only the files the agent needs",
                        cfg.name
                    );
                }
            }
            out.push((real, dst));
        }
        Ok(out)
    }

    /// Records the iteration's end: reads the completion file from its container and the
    /// workspace's changes, removes the container, then lets [`outcome`] classify it and
    /// keep the run's books, and raises what that says.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn conclude(
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
        let all_pass = self.completion_file(&cfg, container).await;
        if !container.is_empty()
            && let Err(e) = self.engine.remove(container).await
        {
            tracing::warn!("cannot remove iteration container: {e:#}");
        }
        let ws = cfg.workspace();
        self.clear_setuid(&cfg, n).await;
        let after_files = snapshot_files(&self.engine, &ws).await;
        let files_changed = match (&before_files, &after_files) {
            (Some(a), Some(b)) => Some(count_changes(a, b)),
            _ => None,
        };
        let (diffstat, commit) = self
            .git_after(&cfg, before_head.as_deref(), container, n, run)
            .await;
        let Judged {
            outcome,
            text,
            note: extra,
            agent,
        } = judge(l, &w, container.is_empty(), all_pass, note);
        let f = Finished {
            ended,
            outcome: outcome.as_str().into(),
            exit_code: w.exit_code,
            duration_ms: (ended - started) * 1000,
            files_changed,
            diffstat,
            tail: tail_str(&w.tail, TAIL_BYTES),
            note: outcome::note(&w, l, &extra),
            commit,
            result: agent.clone(),
        };
        if let Err(e) = self.shared.store.finish_iteration(id, &f) {
            tracing::warn!("cannot record iteration {n} of {}: {e:#}", cfg.label());
        }
        self.running = None;
        append_log(
            &cfg.dir().join(layout::LOOP_OUTPUT),
            format!(
                "=== iteration {n}: {}{}{}{}, {} ===\n",
                outcome.as_str(),
                w.exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default(),
                files_changed
                    .map(|c| format!(", {c} files changed"))
                    .unwrap_or_default(),
                agent.as_ref().map(spent_words).unwrap_or_default(),
                setting_duration((ended - started).max(0) as u64)
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

/// `, $0.42, 12 turns, 330,124 tokens`: what the agent reported, for the output log.
fn spent_words(r: &homebase_proto::AgentResult) -> String {
    let mut s = String::new();
    if let Some(c) = r.cost_usd {
        s.push_str(&format!(", ${c:.2}"));
    }
    if let Some(t) = r.turns {
        s.push_str(&format!(", {t} turns"));
    }
    s.push_str(&format!(", {} tokens", r.tokens()));
    s
}
