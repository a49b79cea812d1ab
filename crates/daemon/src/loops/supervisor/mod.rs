//! The supervisor of one loop: the I/O around the pure parts. It reads what the gates
//! need, starts and watches each iteration's container, gathers what the iteration left
//! (output, completion file, workspace changes) and records it, then carries out what
//! [`outcome::account`] decides. Commands from the API are answered between and during
//! iterations.

use std::sync::Arc;
use std::time::Duration;

use homebase_engine::Engine;
use homebase_proto::clock::rfc3339;
use homebase_proto::{LoopSpend, LoopStatus, RunningIteration};
use homebase_stack::spend::periods;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::gates::{self, Next, Readings};
use super::state::{Breaker, RunState};
use super::{Control, LoopConfig, Reply};
use crate::loops::store::LoopRow;
use crate::shared::Shared;
use crate::workspace::fingerprint;
use homebase_proto::clock::now;

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
    /// `workspace = "git"`: the deployed commit last merged into the loop's branch.
    pub merged: Option<String>,
    /// Who iterations and git helpers run as, for the workspace and `user` it was found for.
    pub owner: Option<(String, String)>,
}

impl Supervisor {
    fn cfg(&self) -> LoopConfig {
        self.config.borrow().clone()
    }

    /// Who this loop's iterations and git helpers run as (see [`crate::workspace::run_as`]),
    /// found once per workspace and `user` setting.
    async fn user(&mut self, cfg: &LoopConfig) -> Result<String, String> {
        let ws = cfg.workspace();
        let key = format!("{ws:?} {:?} {}", cfg.section.user, cfg.section.image);
        if let Some((k, u)) = &self.owner
            && *k == key
        {
            return Ok(u.clone());
        }
        let u = crate::workspace::run_as(
            &self.engine,
            &ws,
            cfg.section.user.as_deref(),
            &cfg.section.image,
            &cfg.label(),
        )
        .await?;
        self.owner = Some((key, u.clone()));
        Ok(u)
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
            output_format: cfg.section.output_format.as_str().into(),
            spend: self.spend_status(&cfg, last.as_ref()),
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
        if !self.recover(&mut row).await {
            return;
        }
        let mut last_wait: Option<(&'static str, String)> = None;
        loop {
            let next = self.decide(&row).await;
            self.publish(&row, &next).await;
            self.tell_cap(last_wait.as_ref().map(|(k, _)| *k), &next)
                .await;
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
                if row.state == RunState::Active
                    && let Next::Wait {
                        kind: gates::SPEND_CAP,
                        reason,
                        ..
                    } = self.decide(row).await
                {
                    return Err(format!(
                        "loop `{}` is active and held by a spend cap: {reason}. Raise the cap in homebase.toml and deploy (it goes on at once), or wait for the period to turn",
                        cfg.name
                    ));
                }
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
        let spend = match self.spend_reading(&cfg, now) {
            Ok(s) => s,
            // a ledger that cannot be read holds the loop: a cap is never passed blind
            Err(e) if row.state == RunState::Active => {
                return Next::Wait {
                    kind: gates::SPEND_CAP,
                    reason: format!("cannot read what the loop spent ({e:#})"),
                    until: None,
                };
            }
            Err(_) => None,
        };
        let mut readings = Readings {
            now,
            started_last_hour,
            stack_memory,
            workspace: None,
            spend,
        };
        match gates::decide(row, &cfg, &readings) {
            Ok(next) => next,
            Err(gates::NeedsWorkspace) => {
                readings.workspace = Some(fingerprint(&self.engine, &cfg.workspace()).await);
                // (with the workspace read, no gate asks for it again)
                gates::decide(row, &cfg, &readings).unwrap_or(Next::Idle)
            }
        }
    }

    /// What the caps compare: read only when the loop or its project has one.
    fn spend_reading(
        &self,
        cfg: &LoopConfig,
        now: i64,
    ) -> anyhow::Result<Option<gates::SpendReading>> {
        if cfg.section.caps().is_empty() && cfg.project_caps.is_empty() {
            return Ok(None);
        }
        let periods = periods(now, &cfg.zone)
            .ok_or_else(|| anyhow::anyhow!("the clock ({now}) is outside the calendar"))?;
        let store = &self.shared.store;
        let (p, n) = (cfg.project.as_str(), Some(cfg.name.as_str()));
        Ok(Some(gates::SpendReading {
            periods,
            loop_day: store.spent(p, n, periods.day.0)?,
            loop_month: store.spent(p, n, periods.month.0)?,
            project_day: store.spent(p, None, periods.day.0)?,
            project_month: store.spent(p, None, periods.month.0)?,
        }))
    }

    /// The loop's spend for its status (loops that read their agent's result).
    fn spend_status(
        &self,
        cfg: &LoopConfig,
        last: Option<&homebase_proto::IterationRecord>,
    ) -> Option<LoopSpend> {
        if !cfg.section.reads_result() {
            return None;
        }
        let now = now();
        let p = periods(now, &cfg.zone)?;
        let spent = |since| {
            self.shared
                .store
                .spent(&cfg.project, Some(&cfg.name), since)
                .ok()
        };
        let (day, month, hour) = (spent(p.day.0)?, spent(p.month.0)?, spent(now - 3600)?);
        let caps = cfg.section.caps();
        let result = last.and_then(|l| l.result.as_ref());
        Some(LoopSpend {
            last_cost_usd: result.and_then(|r| r.cost_usd),
            last_tokens: result.map(|r| r.tokens()),
            today_cost_usd: day.cost,
            today_tokens: day.tokens,
            month_cost_usd: month.cost,
            month_tokens: month.tokens,
            hour_cost_usd: hour.cost,
            hour_tokens: hour.tokens,
            today_results: day.results,
            max_cost_per_day: caps.cost_per_day,
            max_cost_per_month: caps.cost_per_month,
            max_tokens_per_day: caps.tokens_per_day,
            max_tokens_per_month: caps.tokens_per_month,
            day_start: p.day.0,
            month_start: p.month.0,
        })
    }

    /// A cap reached is an alert with its figures; the alert resolves when the loop may go
    /// on (the period turned, the cap was raised) or is no longer active.
    async fn tell_cap(&self, was: Option<&'static str>, next: &Next) {
        let cfg = self.cfg();
        let subject = format!("loop:{}", cfg.name);
        let capped = was == Some(gates::SPEND_CAP);
        match next {
            Next::Wait {
                kind: gates::SPEND_CAP,
                reason,
                until,
            } if !capped => {
                let when = until
                    .map(|u| format!("it resumes at {}", rfc3339(u)))
                    .unwrap_or_else(|| "it waits".into());
                let msg = format!(
                    "loop `{}` holds: {reason}; {when}, or sooner when the cap is raised in homebase.toml and deployed",
                    cfg.name
                );
                self.shared
                    .alert(&cfg.project, &subject, "loop_spend_cap", &msg)
                    .await;
            }
            Next::Wait {
                kind: gates::SPEND_CAP,
                ..
            } => {}
            _ if capped => {
                self.shared
                    .resolve(
                        &cfg.project,
                        &subject,
                        "loop_spend_cap",
                        "under its caps again (the period turned, or a cap was raised)",
                    )
                    .await;
            }
            _ => {}
        }
    }
}

mod after;
mod iteration;
