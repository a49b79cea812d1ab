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

//!
//! The parts: [`gates`] decides whether to iterate now, [`state`] holds the run's state
//! and its breaker as types, [`outcome`] classifies an iteration and keeps the run's books,
//! [`output`] follows an iteration's output, [`text`] reads the agent's words, [`result`]
//! its JSON result (cost, tokens, verdict); all of them pure but `output`. [`supervisor`] is the I/O around them, one task per loop; this module
//! keeps one supervisor per configured loop and routes the API's commands to it.

pub mod gates;
pub mod outcome;
pub mod output;
pub mod result;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use homebase_engine::Engine;
use homebase_proto::{IterationRecord, LoopStatus};
use homebase_stack::loops::{LoopSection, Workspace};
use homebase_stack::spend::Caps;
use jiff::tz::TimeZone;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;
use supervisor::Supervisor;

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
    /// The project's caps over all its loops (`[spend]`), and the calendar of every cap.
    pub project_caps: Caps,
    pub zone: TimeZone,
}

impl LoopConfig {
    pub(crate) fn label(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }

    /// The daemon's files for this loop: `~/.homebase/<project>/loops/<name>/`.
    pub fn dir(&self) -> PathBuf {
        homebase_proto::layout::loop_dir(&self.home, &self.project, &self.name)
    }

    pub(crate) fn workspace(&self) -> Workspace {
        match self.section.workspace(&self.project, &self.name) {
            Workspace::Path(p) => Workspace::Path(expand_home(&p)),
            v => v,
        }
    }
}

/// `~/x` in a loop's configuration, against the daemon's `HOME`.
pub(crate) fn expand_home(p: &str) -> String {
    homebase_proto::sys::expand_home(Path::new(p))
        .to_string_lossy()
        .to_string()
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
                        project_caps: p.spend.caps(),
                        // (checked before the deploy: a zone this host does not know is UTC)
                        zone: p.spend.zone().unwrap_or_else(|e| {
                            tracing::warn!("project {}: {e}; the caps follow UTC", p.name);
                            TimeZone::UTC
                        }),
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
                            let changed = old.section != cfg.section
                                || old.release_dir != cfg.release_dir
                                || old.budget != cfg.budget
                                || old.high_watermark != cfg.high_watermark
                                || old.project_caps != cfg.project_caps
                                || old.zone != cfg.zone;
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
                            merged: None,
                            owner: None,
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

/// A loop's configuration from the lines of its `[loops.NAME]` section (an image, a
/// command and 256 MiB unless they say otherwise), budget 4 GiB at a 90% watermark.
#[cfg(test)]
pub(crate) fn test_config(lines: &str) -> LoopConfig {
    let mut text = String::from("image = \"agent\"\ncommand = [\"true\"]\n");
    if !lines.contains("memory =") {
        text.push_str("memory = \"256MiB\"\n");
    }
    text.push_str(lines);
    let section: LoopSection = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => panic!("{text}: {e}"),
    };
    LoopConfig {
        project: "p".into(),
        name: "ralph".into(),
        section,
        release_dir: PathBuf::from("/nonexistent"),
        home: PathBuf::from("/nonexistent"),
        budget: 4 << 30,
        high_watermark: 0.9,
        project_caps: Caps::default(),
        zone: TimeZone::UTC,
    }
}
