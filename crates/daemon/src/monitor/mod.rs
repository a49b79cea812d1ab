//! The watch loop: every interval, read every container of every project (stats bounded in
//! concurrency), store the samples, heal what Docker will not (containers that stay
//! unhealthy or down), stop at crash loops, and govern memory by priority. Docker events
//! are handled as they happen. Every action is an event with its reason.
//!
//! A failure of one container, one call or one project is recorded and retried on the next
//! round; the loop itself never ends on an error.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use homebase_engine::run::Labelled;
use homebase_engine::{Container, Engine, Reading};
use homebase_proto::layout;
use homebase_stack::config::Priority;
use tokio_util::sync::CancellationToken;

use crate::projects::Project;
use crate::shared::Shared;
use homebase_proto::clock::now;
pub use homebase_proto::{Disk, ProjectSnap, ServiceSnap, Snapshot};
mod cluster;
mod events;
mod govern;
mod heal;

use cluster::cluster;
use events::watch_events;
use govern::govern;
use heal::heal;

/// `df -Pk PATH`: the portable way on Linux and macOS alike.
fn disk_of(path: &std::path::Path) -> Option<Disk> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
    let total: u64 = fields.get(1)?.parse().ok()?;
    let free: u64 = fields.get(3)?.parse().ok()?;
    Some(Disk {
        total_bytes: total * 1024,
        free_bytes: free * 1024,
    })
}

/// Whether a deploy or rollback of `project` holds its lock now.
fn release_job_running(home: &std::path::Path, project: &str) -> bool {
    homebase_proto::is_safe_name(project)
        && std::fs::symlink_metadata(layout::project_dir(home, project).join("lock")).is_ok()
}

/// What the daemon remembers about one container between rounds.
#[derive(Default)]
struct Track {
    last: Option<Reading>,
    /// The last event seen for the container.
    last_action: String,
    /// Its last `stop` was asked for (its `kill` sent) while a deploy or rollback of its
    /// project held the lock: homebase's own, never a stop by hand, even when the engine
    /// finishes it after the job (a SIGTERM ignored for 10 s).
    stopped_by_homebase: bool,
    /// Its last `kill` came while a deploy or rollback held the lock.
    killed_by_homebase: bool,
    /// When its last `die` event arrived: a container list read before it says nothing of
    /// whether it runs again.
    died_at: Option<std::time::Instant>,
    /// When its last `kill` event arrived: a `die` after one may be a stop (`docker stop`
    /// sends its signal as a kill), a `die` without one is a crash.
    killed_at: Option<std::time::Instant>,
    unhealthy_since: Option<i64>,
    down_since: Option<i64>,
    next_heal: i64,
    backoff: i64,
    /// Times the container died or was restarted, for crash-loop detection.
    deaths: VecDeque<i64>,
    gave_up: bool,
}

impl Track {
    /// A heal starts now (`t`): the next one waits twice as long as the last, between
    /// `floor` and five minutes.
    fn heal_started(&mut self, t: i64, floor: i64) {
        self.backoff = (self.backoff * 2).clamp(floor, 300);
        self.next_heal = t + self.backoff;
    }
}

#[derive(Default)]
struct State {
    tracks: HashMap<String, Track>,
    /// project → services the governor paused or stopped, in order.
    governed: HashMap<String, Vec<(String, String, &'static str)>>,
}

pub async fn run(engine: Engine, shared: Arc<Shared>, cancel: CancellationToken) {
    // what an earlier run of the governor held is still held: resume it in time
    let mut initial = State::default();
    match shared.store.governed() {
        Ok(rows) => {
            for (project, service, container, how) in rows {
                let how = if how == "stopped" {
                    "stopped"
                } else {
                    "paused"
                };
                initial
                    .governed
                    .entry(project)
                    .or_default()
                    .push((service, container, how));
            }
        }
        Err(e) => tracing::warn!("cannot read what the governor held: {e:#}"),
    }
    let state = Arc::new(tokio::sync::Mutex::new(initial));
    let events = tokio::spawn(watch_events(
        engine.clone(),
        Arc::clone(&shared),
        Arc::clone(&state),
        cancel.clone(),
    ));
    // the engine gone is noticed within half a second, whatever the collection interval
    let pinger = {
        let (engine, shared, cancel) = (engine.clone(), Arc::clone(&shared), cancel.clone());
        tokio::spawn(async move {
            let mut was_up = true;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let up = engine.ping().await;
                if up != was_up {
                    shared.wake.notify_one();
                }
                was_up = up;
            }
        })
    };
    let mut last_compact = 0;
    let mut outage = Outage::default();
    loop {
        let (projects, interval) = {
            let mem_total = shared.snapshot.read().await.mem_total;
            let (projects, errors) = shared.projects(mem_total);
            for e in errors {
                tracing::warn!("{e}");
            }
            let interval = projects
                .iter()
                .map(|p| p.daemon.interval_ms)
                .min()
                .unwrap_or(2000);
            (projects, Duration::from_millis(interval))
        };
        let answered = match round(&engine, &shared, &state, &projects).await {
            Ok(()) => true,
            Err(e) => {
                // the engine gone is an alert and a restart; another failure a warning
                let gone = engine.info().await.is_err();
                if !gone || outage.since.is_none() {
                    tracing::warn!("collection round failed: {e:#}");
                }
                shared.snapshot.write().await.errors = vec![format!("{e:#}")];
                !gone
            }
        };
        outage.step(answered, &engine, &shared, &projects).await;
        let t = now();
        if t - last_compact >= 60 {
            if let Err(e) = shared.store.compact(t) {
                tracing::warn!("history compaction failed: {e:#}");
            }
            last_compact = t;
        }
        // while the engine is gone, look again every half second
        let interval = if outage.since.is_some() {
            interval.min(Duration::from_millis(500))
        } else {
            interval
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
            _ = shared.wake.notified() => {}
        }
    }
    events.abort();
    pinger.abort();
}

/// The engine's outage: when it began, and when the daemon last tried to start it.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
    tried: Option<std::time::Instant>,
}

impl Outage {
    /// After a round: alerts when the engine stops answering, runs the start command (at
    /// most every 30 s) while it does not, and resolves when it answers again.
    async fn step(
        &mut self,
        answered: bool,
        engine: &Engine,
        shared: &Arc<Shared>,
        projects: &[Project],
    ) {
        if answered {
            if let Some(since) = self.since.take() {
                let msg = format!(
                    "the Docker engine answers again after {:.1} s",
                    since.elapsed().as_secs_f64()
                );
                tracing::info!("{msg}");
                for p in projects {
                    shared.resolve(&p.name, "", "engine_down", &msg).await;
                }
            }
            self.tried = None;
            return;
        }
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            let msg = format!(
                "the Docker engine at {} does not answer: no service is watched, healed or started until it is back",
                engine.endpoint
            );
            for p in projects {
                shared.alert(&p.name, "", "engine_down", &msg).await;
            }
        }
        if self
            .tried
            .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
        {
            return;
        }
        let Some(cmd) = projects
            .iter()
            .find_map(|p| p.daemon.engine_start.clone())
            .or_else(default_engine_start)
        else {
            return;
        };
        self.tried = Some(std::time::Instant::now());
        let run = tokio::process::Command::new("sh")
            .args(["-c", &cmd])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        let said = match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(Ok(o)) if o.status.success() => format!("ran `{cmd}` to start the Docker engine"),
            Ok(Ok(o)) => format!(
                "ran `{cmd}` to start the Docker engine; it failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
            Ok(Err(e)) => format!("cannot run `{cmd}` to start the Docker engine: {e}"),
            Err(_) => format!("`{cmd}` did not finish within 120 s"),
        };
        tracing::warn!("{said}");
        for p in projects {
            shared.event(&p.name, "", "engine_start", &said).await;
        }
    }
}

/// `colima start` where Colima is installed (the Mac's engine); nothing elsewhere.
fn default_engine_start() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/opt/homebrew/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("colima"))
        .find(|c| c.is_file())
        .map(|c| format!("{} start", c.display()))
}

async fn round(
    engine: &Engine,
    shared: &Arc<Shared>,
    state: &tokio::sync::Mutex<State>,
    projects: &[Project],
) -> anyhow::Result<()> {
    let (mem_total, root) = engine.info().await?;
    let disk = check_disk(root, shared, projects).await;
    let listed_at = std::time::Instant::now();
    let containers = engine.containers().await?;
    let watched: Vec<&Container> = containers
        .iter()
        .filter(|c| projects.iter().any(|p| p.name == c.project))
        .collect();
    // Agent-loop iterations count towards their project's memory.
    let iterations: Vec<Labelled> = engine
        .labelled(homebase_engine::run::LOOP_LABEL)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.state == "running")
        .collect();
    let running: Vec<String> = watched
        .iter()
        .filter(|c| c.state == "running")
        .map(|c| c.id.clone())
        .chain(iterations.iter().map(|c| c.id.clone()))
        .collect();
    let read = Read {
        readings: readings(engine, running).await,
        // start time and restarts of every watched container, so that `homebase status`
        // can answer from this snapshot alone
        lifetimes: lifetimes(engine, watched.iter().map(|c| c.id.clone()).collect()).await,
    };
    let t = now();
    let mut st = state.lock().await;
    let mut snaps = Vec::new();
    let mut rows = Vec::new();
    for p in projects {
        let mut services = Vec::new();
        for c in watched.iter().filter(|c| c.project == p.name) {
            services.push(service_snap(&mut st, p, c, &read));
        }
        for c in &iterations {
            if let Some(snap) = iteration_snap(&mut st, p, c, &read) {
                services.push(snap);
            }
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(services.iter().map(|s| {
            (
                p.name.clone(),
                s.name.clone(),
                s.memory_bytes,
                s.cpu_percent,
            )
        }));
        let total = services.iter().map(|s| s.memory_bytes).sum();
        heal(engine, shared, &mut st, p, &watched, t, listed_at).await;
        govern(engine, shared, &mut st, p, &watched, total, t).await;
        snaps.push(ProjectSnap {
            name: p.name.clone(),
            release: p.release.clone(),
            budget_bytes: p.budget,
            memory_bytes: total,
            commit: p.commit.clone(),
            services,
        });
    }
    // forget containers that are gone
    st.tracks.retain(|id, _| {
        containers.iter().any(|c| &c.id == id) || iterations.iter().any(|c| &c.id == id)
    });
    drop(st);
    // a failed write (a full disk) loses this round's history, never the live status
    if let Err(e) = shared.store.add_samples(t, &rows) {
        tracing::warn!("cannot record this round's samples: {e:#}");
    }
    let alerts = shared.alerts.lock().await.active();
    let snapshot = Snapshot {
        ts: t,
        host: shared.host.clone(),
        mem_total,
        disk,
        projects: snaps,
        alerts,
        loops: crate::loops::statuses(shared, None).await,
        nodes: cluster(engine, shared, projects).await,
        errors: Vec::new(),
    };
    shared.publish(snapshot).await;
    Ok(())
}

/// Docker's data root's free space, alerting (or resolving) `disk_low` for each project.
async fn check_disk(
    root: Option<std::path::PathBuf>,
    shared: &Arc<Shared>,
    projects: &[Project],
) -> Option<Disk> {
    let root = root?;
    let d = tokio::task::spawn_blocking(move || disk_of(&root))
        .await
        .ok()
        .flatten()?;
    let free = 100.0 * d.free_bytes as f64 / d.total_bytes.max(1) as f64;
    for p in projects {
        if free < p.daemon.disk_low_percent {
            let msg = format!(
                "{free:.0}% free on Docker's data root ({} free); prune images with `docker image prune`",
                homebase_stack::units::Bytes(d.free_bytes)
            );
            shared.alert(&p.name, "", "disk_low", &msg).await;
        } else {
            shared
                .resolve(&p.name, "", "disk_low", &format!("{free:.0}% free again"))
                .await;
        }
    }
    Some(d)
}

/// What one round read of the containers.
struct Read {
    readings: HashMap<String, Reading>,
    lifetimes: HashMap<String, homebase_engine::Lifetime>,
}

/// Stats of these containers, at most 8 calls at once; a failed call is logged and left out.
async fn readings(engine: &Engine, ids: Vec<String>) -> HashMap<String, Reading> {
    stream::iter(ids)
        .map(|id| {
            let engine = engine.clone();
            async move {
                let r = engine.stats(&id).await;
                (id, r)
            }
        })
        .buffer_unordered(8)
        .filter_map(|(id, r)| async move {
            r.map_err(|e| tracing::warn!("{e:#}")).ok().map(|r| (id, r))
        })
        .collect()
        .await
}

/// Start time and restarts of these containers, at most 8 calls at once.
async fn lifetimes(
    engine: &Engine,
    ids: Vec<String>,
) -> HashMap<String, homebase_engine::Lifetime> {
    stream::iter(ids)
        .map(|id| {
            let engine = engine.clone();
            async move {
                let l = engine.lifetime(&id).await;
                (id, l)
            }
        })
        .buffer_unordered(8)
        .filter_map(|(id, l)| async move { l.ok().map(|l| (id, l)) })
        .collect()
        .await
}

/// This reading of a container, and its CPU share since the last one.
fn track(st: &mut State, id: &str, read: &Read, running: bool) -> (Reading, f64) {
    let reading = read.readings.get(id).copied().unwrap_or_default();
    let track = st.tracks.entry(id.to_string()).or_default();
    let cpu = track
        .last
        .map(|prev| reading.cpu_percent_since(&prev))
        .unwrap_or(0.0);
    if running {
        track.last = Some(reading);
    }
    (reading, cpu)
}

/// A service's container as the snapshot shows it.
fn service_snap(st: &mut State, p: &Project, c: &Container, read: &Read) -> ServiceSnap {
    let (reading, cpu) = track(st, &c.id, read, c.state == "running");
    let priority = p
        .priorities
        .get(&c.service)
        .copied()
        .unwrap_or(Priority::Normal);
    let governed = st
        .governed
        .get(&p.name)
        .and_then(|g| g.iter().find(|(s, _, _)| *s == c.service))
        .map(|(_, _, how)| how.to_string());
    let lifetime = read.lifetimes.get(&c.id);
    ServiceSnap {
        name: c.service.clone(),
        container: c.name.clone(),
        state: c.state.clone(),
        health: if c.health.is_empty() {
            "none".into()
        } else {
            c.health.clone()
        },
        priority: priority.as_str().into(),
        memory_bytes: reading.memory,
        limit_bytes: reading.limit,
        cpu_percent: cpu,
        status_text: c.status.clone(),
        governed,
        gave_up: st.tracks.get(&c.id).is_some_and(|t| t.gave_up),
        started_at: lifetime.map(|l| l.started_at.clone()).unwrap_or_default(),
        restarts: lifetime.map(|l| l.restarts).unwrap_or(0),
    }
}

/// A running agent-loop iteration of project `p`, as a service `loop:NAME`.
fn iteration_snap(st: &mut State, p: &Project, c: &Labelled, read: &Read) -> Option<ServiceSnap> {
    let (project, name) = c
        .labels
        .get(homebase_engine::run::LOOP_LABEL)
        .and_then(|l| l.split_once('/'))?;
    if project != p.name {
        return None;
    }
    let (reading, cpu) = track(st, &c.id, read, true);
    Some(ServiceSnap {
        name: format!("loop:{name}"),
        container: c.name.clone(),
        state: c.state.clone(),
        health: "none".into(),
        priority: p
            .loops
            .get(name)
            .map(|l| l.priority.as_str())
            .unwrap_or("batch")
            .into(),
        memory_bytes: reading.memory,
        limit_bytes: reading.limit,
        cpu_percent: cpu,
        status_text: "agent-loop iteration".into(),
        governed: None,
        gave_up: false,
        started_at: String::new(),
        restarts: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_disk_space() {
        let d = disk_of(std::path::Path::new("/")).unwrap();
        assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes);
    }
}
