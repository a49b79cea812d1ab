//! Agent loops: the daemon runs each `[loops.NAME]` of a deployed project as a sequence of
//! iterations, each a fresh container with its memory limit and timeout, and records every
//! outcome. A run ends when the output carries the completion marker, when the completion
//! file says every task passes, at the maximum, or by hand. A circuit breaker stops a loop
//! that makes no progress or repeats one error; a usage limit reported by the agent holds it
//! until the reset time; an hourly cap and the memory governor hold it too. Each wait is
//! recorded with its reason.
//!
//! Invariants: at most one iteration of a loop exists at any time: its row is written
//! (outcome `running`) before its container is created, and after a restart the daemon
//! adopts that container (or records the iteration as interrupted when it is gone) before
//! it starts another. A daemon shutdown leaves a running iteration running, to be adopted.
//! Breaker state belongs to a run; `start` begins a new run with a closed breaker.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use homebase_engine::Engine;
use homebase_engine::run::{ITERATION_LABEL, LOOP_LABEL, RunSpec, Source, Walls};
use homebase_proto::clock::rfc3339;
use homebase_proto::{IterationRecord, LoopStatus, RunningIteration};
use homebase_stack::loops::{LoopSection, RunMode, Workspace};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::loop_store::{Finished, LoopRow};
use crate::workspace::{count_changes, fingerprint, fingerprint_of, snapshot_files};
use crate::{Shared, now};

/// Bytes of output kept in an iteration's record.
const TAIL_BYTES: usize = 4096;
/// Bytes of output scanned for the usage-limit pattern.
const SCAN_BYTES: usize = 64 * 1024;
/// The output log of a loop is rotated above this size.
const LOG_MAX: u64 = 8 << 20;

/// A loop as the current release configures it.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub project: String,
    pub name: String,
    pub section: LoopSection,
    pub release_dir: PathBuf,
    /// `~/.homebase`.
    pub home: PathBuf,
    /// The project's budget and high watermark (bytes).
    pub budget: u64,
    pub high_watermark: f64,
}

impl LoopConfig {
    fn label(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }

    /// The daemon's files for this loop: `~/.homebase/<project>/loops/<name>/`.
    pub fn dir(&self) -> PathBuf {
        self.home.join(&self.project).join("loops").join(&self.name)
    }

    fn workspace(&self) -> Workspace {
        match self.section.workspace(&self.project, &self.name) {
            Workspace::Path(p) => Workspace::Path(expand_home(&p)),
            v => v,
        }
    }
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest).to_string_lossy().to_string(),
        _ => p.to_string(),
    }
}

/// A command from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop,
    Pause,
    Resume,
}

impl Control {
    pub fn parse(s: &str) -> Option<Control> {
        Some(match s {
            "start" => Control::Start,
            "stop" => Control::Stop,
            "pause" => Control::Pause,
            "resume" => Control::Resume,
            _ => return None,
        })
    }
}

pub type Reply = oneshot::Sender<Result<LoopStatus, String>>;

/// The supervisors of every configured loop, keyed by `(project, loop)`.
#[derive(Default)]
pub struct Registry {
    handles: HashMap<(String, String), Handle>,
}

struct Handle {
    control: mpsc::Sender<(Control, Reply)>,
    config: watch::Sender<LoopConfig>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Why a loop command was not carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlError {
    /// There is no such loop (the API's 404).
    Unknown(String),
    /// The loop's state does not allow it, or its supervisor is gone (409).
    Refused(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Unknown(m) | ControlError::Refused(m) => f.write_str(m),
        }
    }
}

impl Registry {
    /// Sends a command to a loop's supervisor and waits for its answer.
    pub async fn control(
        shared: &Arc<Shared>,
        project: &str,
        name: &str,
        c: Control,
    ) -> Result<LoopStatus, ControlError> {
        let tx = {
            let reg = shared.loops.lock().await;
            match reg.handles.get(&(project.to_string(), name.to_string())) {
                Some(h) => h.control.clone(),
                None => {
                    let known: Vec<String> = reg
                        .handles
                        .keys()
                        .filter(|(p, _)| p == project)
                        .map(|(_, n)| n.clone())
                        .collect();
                    return Err(ControlError::Unknown(if known.is_empty() {
                        format!(
                            "project `{project}` has no loop `{name}` deployed on this host; add [loops.{name}] to homebase.toml and deploy"
                        )
                    } else {
                        format!(
                            "project `{project}` has no loop `{name}`; its loops are: {}",
                            known.join(", ")
                        )
                    }));
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        tx.send((c, reply)).await.map_err(|_| {
            ControlError::Refused(format!("the supervisor of loop `{name}` has ended"))
        })?;
        rx.await
            .map_err(|_| {
                ControlError::Refused(format!("the supervisor of loop `{name}` did not answer"))
            })?
            .map_err(ControlError::Refused)
    }
}

/// Keeps one supervisor per configured loop, following deploys: new loops start, changed
/// ones get their new configuration at the next iteration, removed ones stop.
pub async fn run(engine: Engine, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let mem_total = shared.snapshot.read().await.mem_total;
        let (projects, _) = shared.projects(mem_total);
        let mut wanted: HashMap<(String, String), LoopConfig> = HashMap::new();
        for p in &projects {
            for (name, section) in &p.loops {
                wanted.insert(
                    (p.name.clone(), name.clone()),
                    LoopConfig {
                        project: p.name.clone(),
                        name: name.clone(),
                        section: section.clone(),
                        release_dir: p.release_dir.clone(),
                        home: shared.home.clone(),
                        budget: p.budget,
                        high_watermark: p.daemon.high_watermark,
                    },
                );
            }
        }
        {
            let mut reg = shared.loops.lock().await;
            let gone: Vec<(String, String)> = reg
                .handles
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                if let Some(h) = reg.handles.remove(&key) {
                    h.cancel.cancel();
                    let _ = h.task.await;
                    shared.loop_status.write().await.remove(&key);
                }
            }
            for (key, cfg) in wanted {
                match reg.handles.get(&key) {
                    Some(h) if !h.task.is_finished() => {
                        h.config.send_if_modified(|old| {
                            let changed = format!("{:?}{:?}", old.section, old.release_dir)
                                != format!("{:?}{:?}", cfg.section, cfg.release_dir)
                                || old.budget != cfg.budget
                                || old.high_watermark != cfg.high_watermark;
                            if changed {
                                *old = cfg.clone();
                            }
                            changed
                        });
                    }
                    _ => {
                        let (ctl_tx, ctl_rx) = mpsc::channel(8);
                        let (cfg_tx, cfg_rx) = watch::channel(cfg);
                        let token = CancellationToken::new();
                        let sup = Supervisor {
                            engine: engine.clone(),
                            shared: Arc::clone(&shared),
                            config: cfg_rx,
                            control: ctl_rx,
                            removed: token.clone(),
                            shutdown: cancel.clone(),
                            running: None,
                        };
                        let task = tokio::spawn(sup.run());
                        reg.handles.insert(
                            key,
                            Handle {
                                control: ctl_tx,
                                config: cfg_tx,
                                cancel: token,
                                task,
                            },
                        );
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
    let handles: Vec<Handle> = shared
        .loops
        .lock()
        .await
        .handles
        .drain()
        .map(|(_, h)| h)
        .collect();
    for h in handles {
        let _ = h.task.await;
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Iterate,
    /// Wait; `kind` names the reason in one word.
    Wait {
        kind: &'static str,
        reason: String,
        until: Option<i64>,
    },
    /// Not active: nothing to do until a command.
    Idle,
}

struct Supervisor {
    engine: Engine,
    shared: Arc<Shared>,
    config: watch::Receiver<LoopConfig>,
    control: mpsc::Receiver<(Control, Reply)>,
    /// The loop was removed from the configuration.
    removed: CancellationToken,
    /// The daemon is shutting down.
    shutdown: CancellationToken,
    running: Option<RunningIteration>,
}

/// The result of watching an iteration's container to its end.
struct Watched {
    exit_code: Option<i64>,
    oom: bool,
    timed_out: bool,
    stopped: bool,
    marker: bool,
    tail: Vec<u8>,
    error: String,
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
                    "active".into()
                } else {
                    "idle".into()
                },
                reason: if cfg.section.autostart {
                    "started on deploy".into()
                } else {
                    "autostart = false: waiting for `homebase loop start`".into()
                },
                run: 1,
                breaker: "closed".into(),
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!("cannot read loop {}: {e:#}", cfg.label());
                LoopRow {
                    project: cfg.project.clone(),
                    name: cfg.name.clone(),
                    state: "idle".into(),
                    reason: format!("cannot read its state: {e:#}"),
                    run: 1,
                    breaker: "closed".into(),
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
            state: row.state.clone(),
            reason: row.reason.clone(),
            run: row.run,
            iterations: row.iterations,
            max_iterations: cfg.section.max_iterations,
            breaker: row.breaker.clone(),
            breaker_until: row.breaker_until.filter(|_| row.breaker == "open"),
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

    async fn run(mut self) {
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
                Next::Idle => last_wait = None,
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
                if self.running.is_some() && row.state == "active" {
                    return Err(format!(
                        "loop `{}` is running iteration {}; stop it first (`homebase loop stop {}`) or let it run",
                        cfg.name,
                        row.iterations + 1,
                        cfg.name
                    ));
                }
                row.run += 1;
                row.iterations = 0;
                row.state = "active".into();
                row.reason = "started by hand".into();
                row.breaker = "closed".into();
                row.breaker_until = None;
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
                row.state = "stopped".into();
                row.reason = "stopped by hand".into();
                if let Some(t) = stop_iteration {
                    t.cancel();
                }
                self.event("loop_stop", "stopped by hand").await;
            }
            Control::Pause => {
                if row.state != "active" {
                    return Err(format!(
                        "loop `{}` is {}, not active; nothing to pause",
                        cfg.name, row.state
                    ));
                }
                row.state = "paused".into();
                row.reason = if self.running.is_some() {
                    "paused by hand; the running iteration finishes first".into()
                } else {
                    "paused by hand".into()
                };
                self.event("loop_pause", &row.reason).await;
            }
            Control::Resume => {
                if !matches!(row.state.as_str(), "paused" | "stopped") {
                    return Err(format!(
                        "loop `{}` is {}; resume continues a paused or stopped loop, `homebase loop start {}` begins a new run",
                        cfg.name, row.state, cfg.name
                    ));
                }
                row.state = "active".into();
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

    /// The gates, in order: state, maximum, breaker, usage limit, hourly cap, pause or
    /// schedule, workspace changes, memory.
    async fn decide(&self, row: &LoopRow) -> Next {
        let cfg = self.cfg();
        let l = &cfg.section;
        let t = now();
        if row.state != "active" {
            return Next::Idle;
        }
        if row.breaker == "open"
            && let Some(until) = row.breaker_until.filter(|u| *u > t)
        {
            return Next::Wait {
                kind: "breaker",
                reason: format!(
                    "circuit breaker open ({}); one trial iteration at the end of the cool-down",
                    row.reason
                ),
                until: Some(until),
            };
        }
        if row.wait_kind.as_deref() == Some("usage_limit")
            && let Some(until) = row.wait_until.filter(|u| *u > t)
        {
            return Next::Wait {
                kind: "usage limit",
                reason: "the agent reported a usage limit; waiting for its reset".into(),
                until: Some(until),
            };
        }
        if let Some(max) = l.max_per_hour {
            let started = self
                .shared
                .store
                .started_since(&cfg.project, &cfg.name, t - 3600)
                .unwrap_or_default();
            if started.len() as u32 >= max {
                return Next::Wait {
                    kind: "rate limit",
                    reason: format!(
                        "{} iterations in the last hour (max_per_hour = {max})",
                        started.len()
                    ),
                    until: started.first().map(|s| s + 3600),
                };
            }
        }
        let first_of_run = row.iterations == 0;
        match l.run {
            RunMode::Schedule => {
                if let (Some(every), Some(last)) = (l.every, row.last_started)
                    && !first_of_run
                {
                    let next = last + every.as_secs() as i64;
                    if next > t {
                        return Next::Wait {
                            kind: "schedule",
                            reason: format!("one iteration every {}", humanize(every.as_secs())),
                            until: Some(next),
                        };
                    }
                }
            }
            RunMode::Continuous | RunMode::OnChange => {
                if let Some(ended) = row.last_ended.filter(|_| !first_of_run) {
                    let next = ended + l.pause.as_secs() as i64;
                    if next > t {
                        return Next::Wait {
                            kind: "pause",
                            reason: format!("{} between iterations", humanize(l.pause.as_secs())),
                            until: Some(next),
                        };
                    }
                }
            }
        }
        if l.run == RunMode::OnChange && !first_of_run {
            let ws = cfg.workspace();
            let engine = self.engine.clone();
            let fp = fingerprint(&engine, &ws).await;
            if fp.is_some() && fp == row.fingerprint {
                return Next::Wait {
                    kind: "changes",
                    reason: "no file in the workspace changed since the last iteration".into(),
                    until: None,
                };
            }
        }
        // Memory: the governor's view of the project (after its first reading).
        let snap = self.shared.snapshot.read().await;
        let reading = snap.projects.iter().find(|p| p.name == cfg.project);
        if cfg.budget > 0 && reading.is_none() {
            return Next::Wait {
                kind: "first reading",
                reason: "the stack's memory has not been read yet".into(),
                until: None,
            };
        }
        if cfg.budget > 0
            && let Some(p) = reading
        {
            let high = (cfg.budget as f64 * cfg.high_watermark) as u64;
            if p.memory_bytes > high {
                return Next::Wait {
                    kind: "memory",
                    reason: format!(
                        "the stack uses {:.0}% of its budget, above the {:.0}% high watermark",
                        100.0 * p.memory_bytes as f64 / cfg.budget as f64,
                        cfg.high_watermark * 100.0
                    ),
                    until: None,
                };
            }
            if p.memory_bytes + l.memory.0 > cfg.budget {
                return Next::Wait {
                    kind: "memory",
                    reason: format!(
                        "an iteration may use {} and the budget has {} left",
                        l.memory,
                        homebase_stack::Bytes(cfg.budget.saturating_sub(p.memory_bytes))
                    ),
                    until: None,
                };
            }
        }
        Next::Iterate
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
        let l = cfg.section.clone();
        let n = row.iterations + 1;
        let run = row.run;
        let started = now();
        if row.breaker == "open" {
            row.breaker = "half_open".into();
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
        let log = cfg.dir().join("output.log");
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
        let _ = l;
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
            let path = cfg.release_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read env file `{}`: {e}", path.display()))?;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let line = line.strip_prefix("export ").unwrap_or(line);
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                        .unwrap_or(v);
                    env.push(format!("{}={v}", k.trim()));
                }
            }
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

    /// Classifies the iteration, records it, updates the breaker and the run, and removes
    /// the container.
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
        let prd = match (&l.completion_file, container.is_empty()) {
            (Some(f), false) => {
                let path = format!("{}/{}", l.workdir.trim_end_matches('/'), f);
                match self.engine.read_file(container, &path, 4 << 20).await {
                    Ok(Some(data)) => all_pass(&data),
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
            .filter(|re| re.is_match(&text));
        let outcome = if w.stopped {
            "stopped"
        } else if w.oom {
            "oom"
        } else if w.timed_out {
            "timeout"
        } else if w.marker || prd == Some(true) {
            "completed"
        } else if usage.is_some() {
            "usage_limit"
        } else if w.exit_code.is_none() {
            "failed_to_start"
        } else if w.exit_code == Some(0) {
            "ok"
        } else {
            "error"
        };
        let mut notes = Vec::new();
        if !note.is_empty() {
            notes.push(note.to_string());
        }
        if w.oom {
            notes.push(format!("killed by the kernel at its {} limit", l.memory));
        }
        if w.timed_out {
            notes.push(format!(
                "killed after its {} timeout",
                humanize(l.timeout.as_secs())
            ));
        }
        if !w.error.is_empty() && w.exit_code.is_none() {
            notes.push(w.error.clone());
        }
        let tail = tail_str(&w.tail, TAIL_BYTES);
        let f = Finished {
            ended,
            outcome: outcome.into(),
            exit_code: w.exit_code,
            duration_ms: (ended - started) * 1000,
            files_changed,
            diffstat: diffstat.clone(),
            tail: tail.clone(),
            note: notes.join("; "),
        };
        if let Err(e) = self.shared.store.finish_iteration(id, &f) {
            tracing::warn!("cannot record iteration {n} of {}: {e:#}", cfg.label());
        }
        self.running = None;
        let log = cfg.dir().join("output.log");
        append_log(
            &log,
            format!(
                "=== iteration {n}: {outcome}{}{}, {} ===\n",
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
        row.iterations = row.iterations.max(n);
        row.last_ended = Some(ended);
        row.fingerprint = match &after_files {
            Some(files) => Some(fingerprint_of(files)),
            None => fingerprint(&self.engine, &ws).await,
        };
        let subject = format!("loop:{}", cfg.name);
        self.event(
            "loop_iteration_end",
            &format!(
                "iteration {n}: {outcome}{}",
                w.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default()
            ),
        )
        .await;
        if outcome == "oom" {
            self.event(
                "loop_oom",
                &format!(
                    "iteration {n} ran out of memory ({} limit) and was killed; the loop goes on",
                    l.memory
                ),
            )
            .await;
        }
        match outcome {
            "completed" => {
                row.state = "completed".into();
                row.reason = if w.marker {
                    format!("completion marker in the output of iteration {n}")
                } else {
                    format!(
                        "every task in {} passes (iteration {n})",
                        l.completion_file.as_deref().unwrap_or("")
                    )
                };
                row.breaker = "closed".into();
                self.event("loop_completed", &row.reason).await;
                self.shared
                    .alert(&cfg.project, &subject, "loop_completed", &row.reason)
                    .await;
                self.shared
                    .resolve(&cfg.project, &subject, "loop_completed", "done")
                    .await;
                self.shared
                    .resolve(&cfg.project, &subject, "loop_breaker", "the run completed")
                    .await;
            }
            "stopped" => {}
            "usage_limit" => {
                let reset =
                    reset_time(&text, ended).filter(|r| *r > ended && *r - ended <= 7 * 86400);
                let until = reset.unwrap_or(ended + l.usage_limit_backoff.as_secs() as i64);
                row.wait_kind = Some("usage_limit".into());
                row.wait_until = Some(until);
                let msg = format!(
                    "the agent hit its usage limit; next iteration at {} ({})",
                    rfc3339(until),
                    if reset.is_some() {
                        "the reset time it named"
                    } else {
                        "no reset time named: the default back-off"
                    }
                );
                self.event("loop_usage_limit", &msg).await;
            }
            _ => {
                row.wait_kind = None;
                row.wait_until = None;
                let error = matches!(outcome, "error" | "timeout" | "oom" | "failed_to_start");
                if error {
                    let sig = error_signature(outcome, w.exit_code, &text);
                    row.same_error = if row.last_error.as_deref() == Some(sig.as_str()) {
                        row.same_error + 1
                    } else {
                        1
                    };
                    row.last_error = Some(sig);
                } else {
                    row.same_error = 0;
                    row.last_error = None;
                }
                // Unknown changes (a workspace the daemon cannot see) count as progress.
                let progress = files_changed.is_none_or(|c| c > 0);
                row.no_progress = if progress { 0 } else { row.no_progress + 1 };
                let trip = if row.no_progress >= i64::from(l.breaker_no_progress) {
                    Some(format!(
                        "{} iterations in a row changed no file",
                        row.no_progress
                    ))
                } else if row.same_error >= i64::from(l.breaker_same_error) {
                    Some(format!(
                        "{} identical errors in a row: {}",
                        row.same_error,
                        row.last_error.as_deref().unwrap_or("")
                    ))
                } else {
                    None
                };
                if row.breaker == "half_open" {
                    if progress && !error {
                        row.breaker = "closed".into();
                        row.no_progress = 0;
                        row.same_error = 0;
                        self.event(
                            "loop_breaker_closed",
                            &format!("trial iteration {n} made progress; the breaker is closed"),
                        )
                        .await;
                        self.shared
                            .resolve(
                                &cfg.project,
                                &subject,
                                "loop_breaker",
                                "the trial iteration made progress",
                            )
                            .await;
                    } else {
                        let why = if error { "failed" } else { "changed no file" };
                        self.open_breaker(row, &format!("trial iteration {n} {why}"))
                            .await;
                    }
                } else if let Some(why) = trip {
                    self.open_breaker(row, &why).await;
                }
            }
        }
        if row.state == "active"
            && let Some(max) = l.max_iterations
            && row.iterations >= i64::from(max)
        {
            row.state = "exhausted".into();
            row.reason = format!("reached max_iterations = {max} without completing");
            self.event("loop_exhausted", &row.reason).await;
            self.shared
                .notify(&cfg.project, &subject, "loop_exhausted", &row.reason)
                .await;
        }
        self.save(row);
    }

    async fn open_breaker(&self, row: &mut LoopRow, why: &str) {
        let cfg = self.cfg();
        let until = now() + cfg.section.breaker_cooldown.as_secs() as i64;
        row.breaker = "open".into();
        row.breaker_until = Some(until);
        row.reason = why.to_string();
        let msg = format!(
            "circuit breaker open: {why}; one trial iteration after a {} cool-down ({})",
            humanize(cfg.section.breaker_cooldown.as_secs()),
            rfc3339(until)
        );
        self.event("loop_breaker_open", &msg).await;
        self.shared
            .alert(
                &cfg.project,
                &format!("loop:{}", cfg.name),
                "loop_breaker",
                &msg,
            )
            .await;
    }
}

/// Follows a container's output to the log and a tail buffer until it ends, its timeout
/// passes (killed), `stop` fires (killed), the loop is removed (killed) or the daemon shuts
/// down (left running: `None`).
#[allow(clippy::too_many_arguments)]
async fn watch_container(
    engine: Engine,
    cfg: LoopConfig,
    id: String,
    started: i64,
    adopted: bool,
    stop: CancellationToken,
    shutdown: CancellationToken,
    removed: CancellationToken,
) -> Option<Watched> {
    let l = &cfg.section;
    let log = cfg.dir().join("output.log");
    let deadline = started + l.timeout.as_secs() as i64;
    let remaining = Duration::from_secs((deadline - now()).max(0) as u64);
    let marker = l.completion_marker.as_bytes().to_vec();
    let mut tail: Vec<u8> = Vec::new();
    let mut seen_marker = false;
    let mut timed_out = false;
    let mut stopped = false;
    let mut error = String::new();
    if adopted {
        append_log(
            &log,
            b"homebase: the daemon restarted; output before this point may be missing here\n",
        );
    }
    {
        let stream = engine.output(&id);
        tokio::pin!(stream);
        let sleep = tokio::time::sleep(remaining);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(bytes)) => {
                        append_log(&log, &bytes);
                        // scan across chunk borders
                        let from = tail.len().saturating_sub(marker.len());
                        tail.extend_from_slice(&bytes);
                        if !seen_marker && contains(&tail[from..], &marker) {
                            seen_marker = true;
                        }
                        if tail.len() > SCAN_BYTES * 2 {
                            tail.drain(..tail.len() - SCAN_BYTES);
                        }
                    }
                    Some(Err(e)) => { error = format!("{e:#}"); break; }
                    None => break,
                },
                _ = &mut sleep => { timed_out = true; break; }
                _ = stop.cancelled() => { stopped = true; break; }
                _ = removed.cancelled() => { stopped = true; break; }
                _ = shutdown.cancelled() => return None,
            }
        }
    }
    if timed_out || stopped {
        let _ = engine.kill(&id).await;
    }
    // The log stream ends when the container does; its state follows within moments.
    let mut exit = None;
    for _ in 0..50 {
        match engine.exit(&id).await {
            Ok(e) if !e.running => {
                exit = Some(e);
                break;
            }
            Ok(_) => {
                if !timed_out && !stopped && (deadline - now()) <= 0 {
                    timed_out = true;
                    let _ = engine.kill(&id).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                error = format!("{e:#}");
                break;
            }
        }
    }
    if adopted && tail.is_empty() {
        tail = engine.output_tail(&id, 200).await.unwrap_or_default();
        seen_marker = contains(&tail, &marker);
    }
    let (exit_code, oom) = match &exit {
        Some(e) => (Some(e.exit_code), e.oom_killed),
        None => (None, false),
    };
    if exit.is_none() && error.is_empty() {
        error = "the container did not stop after it was killed".into();
    }
    Some(Watched {
        exit_code,
        oom,
        timed_out,
        stopped,
        marker: seen_marker,
        tail,
        error,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The last `max` bytes as text, starting at a line when one starts within.
fn tail_str(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let mut slice = &bytes[start..];
    if start > 0
        && let Some(nl) = slice.iter().position(|b| *b == b'\n')
    {
        slice = &slice[nl + 1..];
    }
    String::from_utf8_lossy(slice).to_string()
}

/// Appends to a loop's output log, rotating it (one old file kept) above `LOG_MAX`.
fn append_log(path: &Path, data: &[u8]) {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!("cannot create `{}`: {e}", dir.display());
        return;
    }
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > LOG_MAX {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    // an agent's output may carry what it read: the owner's only
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(data) {
                tracing::warn!("cannot write `{}`: {e}", path.display());
            }
        }
        Err(e) => tracing::warn!("cannot open `{}`: {e}", path.display()),
    }
}

/// `Some(true)` when every object in the JSON that has a `passes` field has
/// `"passes": true` (and there is at least one); `None` when it is not JSON.
pub fn all_pass(data: &[u8]) -> Option<bool> {
    fn walk(v: &serde_json::Value, seen: &mut usize, failing: &mut usize) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(p) = m.get("passes") {
                    *seen += 1;
                    if p != &serde_json::Value::Bool(true) {
                        *failing += 1;
                    }
                }
                m.values().for_each(|v| walk(v, seen, failing));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, seen, failing)),
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let (mut seen, mut failing) = (0, 0);
    walk(&v, &mut seen, &mut failing);
    Some(seen > 0 && failing == 0)
}

/// The reset time a usage-limit message names: a Unix time after `|` (Claude Code's
/// `usage limit reached|1732406400`), `in N minutes/hours`, or `resets at 3pm` / `15:30`
/// (read as UTC unless the output says otherwise; the next such time).
pub fn reset_time(text: &str, now: i64) -> Option<i64> {
    let epoch = regex::Regex::new(r"\|(\d{10})\b").ok()?;
    if let Some(c) = epoch.captures_iter(text).last() {
        return c[1].parse().ok();
    }
    let rel = regex::Regex::new(
        r"(?i)\bin\s+(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    )
    .ok()?;
    if let Some(c) = rel.captures_iter(text).last() {
        let n: i64 = c[1].parse().ok()?;
        let unit = c[2].to_ascii_lowercase();
        let secs = if unit.starts_with('h') {
            n * 3600
        } else if unit.starts_with('m') {
            n * 60
        } else {
            n
        };
        return Some(now + secs);
    }
    let at =
        regex::Regex::new(r"(?i)\bresets?\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?").ok()?;
    if let Some(c) = at.captures_iter(text).last() {
        let mut hour: i64 = c[1].parse().ok()?;
        let minute: i64 = c.get(2).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
        match c.get(3).map(|m| m.as_str().to_ascii_lowercase()) {
            Some(ap) if ap == "pm" && hour < 12 => hour += 12,
            Some(ap) if ap == "am" && hour == 12 => hour = 0,
            None if c.get(2).is_none() => return None, // a bare number is not a time
            _ => {}
        }
        if hour > 23 || minute > 59 {
            return None;
        }
        let day = now - now.rem_euclid(86400);
        let mut t = day + hour * 3600 + minute * 60;
        if t <= now {
            t += 86400;
        }
        return Some(t);
    }
    None
}

/// What makes two errors "the same": the outcome, the exit code and the last line of
/// output that reads as an error (else the last line), with numbers left out (timestamps,
/// counters and ids differ between runs). stdout and stderr arrive through separate pipes,
/// so which of them ends the output is not reliable; the error line is.
fn error_signature(outcome: &str, code: Option<i64>, text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let erring = |l: &&&str| {
        let l = l.to_ascii_lowercase();
        ["error", "fail", "exception", "panic", "fatal"]
            .iter()
            .any(|w| l.contains(w))
    };
    let last = lines
        .iter()
        .rev()
        .find(erring)
        .or(lines.last())
        .copied()
        .unwrap_or("");
    let digits = regex::Regex::new(r"\d+").map(|re| re.replace_all(last, "N").to_string());
    let line: String = digits
        .unwrap_or_else(|_| last.to_string())
        .chars()
        .take(200)
        .collect();
    format!(
        "{outcome}{}: {line}",
        code.map(|c| format!(" (exit {c})")).unwrap_or_default()
    )
}

fn humanize(secs: u64) -> String {
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// The loops' state for the API, newest data first, for one project or all.
pub async fn statuses(shared: &Shared, project: Option<&str>) -> Vec<LoopStatus> {
    shared
        .loop_status
        .read()
        .await
        .values()
        .filter(|s| project.is_none_or(|p| s.project == p))
        .cloned()
        .collect()
}

/// A loop's recorded iterations, newest first.
pub fn history(
    shared: &Shared,
    project: &str,
    name: &str,
    limit: i64,
) -> anyhow::Result<Vec<IterationRecord>> {
    shared.store.iterations(project, name, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prd_completion() {
        let prd = br#"{"project":"x","userStories":[{"id":"US-1","passes":true},{"id":"US-2","passes":false}]}"#;
        assert_eq!(all_pass(prd), Some(false));
        let done = br#"{"userStories":[{"id":"US-1","passes":true},{"id":"US-2","passes":true}]}"#;
        assert_eq!(all_pass(done), Some(true));
        assert_eq!(all_pass(br#"{"stories":[]}"#), Some(false));
        assert_eq!(all_pass(b"not json"), None);
    }

    #[test]
    fn reset_times() {
        let now = 1_795_465_867; // 2026-11-23T20:31:07Z
        assert_eq!(
            reset_time("Claude AI usage limit reached|1795470000", now),
            Some(1_795_470_000)
        );
        assert_eq!(
            reset_time("usage limit reached, try again in 2 hours", now),
            Some(now + 7200)
        );
        assert_eq!(reset_time("limit; retry in 15 min", now), Some(now + 900));
        // 23:00 UTC the same day
        assert_eq!(
            reset_time("You've hit your limit · resets 11pm (UTC)", now),
            Some(1_795_474_800)
        );
        // 3am: tomorrow
        assert_eq!(reset_time("resets at 3am", now), Some(1_795_489_200));
        assert_eq!(reset_time("resets at 21:30", now), Some(1_795_469_400));
        assert_eq!(reset_time("usage limit reached", now), None);
    }

    #[test]
    fn error_signatures_ignore_numbers() {
        let a = error_signature("error", Some(1), "x\nError: request 1234 failed at 12:01\n");
        let b = error_signature("error", Some(1), "y\nError: request 98 failed at 13:44\n\n");
        assert_eq!(a, b);
        assert_ne!(
            a,
            error_signature("error", Some(2), "Error: request 1 failed at 1:1")
        );
        assert_ne!(a, error_signature("error", Some(1), "Error: disk full"));
        // the error line counts, wherever stdout's last line landed
        assert_eq!(
            error_signature("error", Some(3), "Error: build failed at 4\nstarting\n"),
            error_signature("error", Some(3), "starting\nError: build failed at 5\n")
        );
    }

    #[test]
    fn tails_start_at_a_line() {
        assert_eq!(tail_str(b"one\ntwo\nthree\n", 8), "three\n");
        assert_eq!(tail_str(b"short", 100), "short");
        assert_eq!(rfc3339(1_795_465_867), "2026-11-23T20:31:07Z");
    }
}
