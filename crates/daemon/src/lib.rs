//! `homebase daemon`: runs on the host beside the stack. It watches every container of every
//! deployed project through the Docker Engine API, keeps history in SQLite, heals what
//! Docker will not, governs memory by priority, raises alerts, and serves an HTTP API on
//! loopback only, behind a bearer token. The laptop reaches it through SSH.
//!
//! Invariant: nothing here ends the daemon but a shutdown signal; a failing container,
//! call, project or alert sink is recorded and retried.

pub mod alerts;
pub mod api;
pub mod loops;
pub mod monitor;
pub mod projects;
pub mod relay;
pub mod serve;
pub mod shared;
pub mod store;
pub mod workspace;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use homebase_engine::Engine;
use homebase_proto::clock::now;
use homebase_proto::layout;
use tokio::sync::{Mutex, RwLock, broadcast};
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::monitor::Snapshot;
use crate::shared::Shared;
use crate::store::{Retention, Store};

#[derive(Debug, Clone)]
pub struct Options {
    /// `~/.homebase`: the projects' releases, and the daemon's own files under `daemon/`.
    pub home: PathBuf,
    /// Loopback address of the API.
    pub listen: SocketAddr,
    /// Engine endpoint; found like the docker CLI finds it when `None`.
    pub endpoint: Option<String>,
    /// The daemon's own files (token, history, endpoint); default `<home>/daemon`.
    pub state_dir: Option<PathBuf>,
    /// Watch only these projects (default: every project under `home`).
    pub projects: Vec<String>,
    /// How long history is kept at each resolution.
    pub retention: Retention,
    /// The homebase executable, run for scheduled backups (`homebase backup now`).
    pub exe: Option<PathBuf>,
}

/// The API token: generated once, stored mode 0600, never printed.
/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn load_or_create_token(path: &Path) -> Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the API token: {e}"))?;
    let token: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    write_private(path, token.as_bytes())?;
    Ok(token)
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

/// Runs the daemon until `cancel` fires.
pub async fn run(opts: Options, cancel: CancellationToken) -> Result<()> {
    anyhow::ensure!(
        opts.listen.ip().is_loopback(),
        "the API must listen on loopback only (got {}); the laptop reaches it through SSH",
        opts.listen
    );
    let dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| layout::daemon_dir(&opts.home));
    let token = load_or_create_token(&dir.join(layout::TOKEN))?;
    let store = Store::open(&dir.join("history.db"), opts.retention)?;
    let endpoint = opts.endpoint.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        homebase_engine::find_endpoint(
            std::env::var("DOCKER_HOST").ok().as_deref(),
            home.as_deref(),
        )
    });
    let engine = Engine::connect(&endpoint).await?;
    let (mem_total, _) = engine.info().await?;
    let host = homebase_proto::sys::hostname("host");
    let (tx, _) = broadcast::channel(256);
    let shared = Arc::new(Shared {
        home: opts.home.clone(),
        only: opts.projects.clone(),
        host,
        store,
        token,
        snapshot: RwLock::new(Snapshot {
            mem_total,
            ..Default::default()
        }),
        alerts: Mutex::new(Alerts::default()),
        sinks: Mutex::new(HashMap::new()),
        tx,
        wake: tokio::sync::Notify::new(),
        loops: Mutex::new(loops::Registry::default()),
        loop_status: RwLock::new(std::collections::BTreeMap::new()),
        sessions: api::Sessions::default(),
        watcher: projects::Watcher::default(),
    });
    let files = serve::raise_open_files();
    tracing::debug!("open-file limit {files:?}");
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    // A daemon that ran here before and did not stop cleanly (crash, kill -9, power cut)
    // is worth an alert; a planned stop and start (a deploy of the daemon, a reboot through
    // the service manager) is an event only.
    let clean_mark = dir.join(CLEAN_STOP);
    let ran_before = dir.join(layout::ENDPOINT).exists();
    let stopped_cleanly = clean_mark.exists();
    let _ = std::fs::remove_file(&clean_mark);
    write_private(&dir.join(layout::ENDPOINT), addr.to_string().as_bytes())?;
    // Tell every project's sinks that the daemon (re)started.
    announce_start(&shared, mem_total, addr, ran_before && !stopped_cleanly).await;
    tracing::info!("listening on {addr}, engine {endpoint}");
    let agent_loops = tokio::spawn(loops::run(
        engine.clone(),
        Arc::clone(&shared),
        cancel.clone(),
    ));
    let monitor = tokio::spawn(monitor::run(engine, Arc::clone(&shared), cancel.clone()));
    let backups = opts
        .exe
        .clone()
        .map(|exe| tokio::spawn(scheduled_backups(exe, Arc::clone(&shared), cancel.clone())));
    let sinks_refresh = tokio::spawn(refresh_sinks(Arc::clone(&shared), cancel.clone()));
    let relay = tokio::spawn(relay::run(Arc::clone(&shared), dir.clone(), cancel.clone()));
    serve::serve(listener, api::router(Arc::clone(&shared)), cancel.clone()).await;
    cancel.cancel();
    // every task ends at `cancel`; none may hold the stop past two seconds (a service
    // manager would kill the daemon, and a deploy of it waits)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1000);
    let mut tasks = vec![
        ("monitor", monitor),
        ("loops", agent_loops),
        ("sinks", sinks_refresh),
        ("relay", relay),
    ];
    if let Some(b) = backups {
        tasks.push(("backups", b));
    }
    for (what, mut task) in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!("the {what} task did not stop in time; left behind");
            task.abort();
        }
    }
    if let Err(e) = write_private(&clean_mark, b"") {
        tracing::warn!("cannot write `{}`: {e:#}", clean_mark.display());
    }
    Ok(())
}

/// Each project's sinks as its release says, and the start as an event, or an alert after
/// an `unexpected` stop (a crash, a kill, a power loss).
async fn announce_start(
    shared: &Arc<Shared>,
    mem_total: u64,
    addr: std::net::SocketAddr,
    unexpected: bool,
) {
    let (projects, _) = shared.projects(mem_total);
    {
        let mut sinks = shared.sinks.lock().await;
        for p in &projects {
            sinks.insert(p.name.clone(), p.alerts.clone());
        }
    }
    for p in &projects {
        if unexpected {
            shared
                .alert(
                    &p.name,
                    "",
                    "daemon_restarted",
                    &format!(
                        "homebase daemon started on {addr} after an unexpected stop (crash, kill or power loss)"
                    ),
                )
                .await;
            shared
                .resolve(&p.name, "", "daemon_restarted", "running")
                .await;
        } else {
            shared
                .event(
                    &p.name,
                    "",
                    "daemon_started",
                    &format!("homebase daemon started on {addr}"),
                )
                .await;
        }
    }
}

/// Every 5 s, each project's alert sinks as its current release says.
async fn refresh_sinks(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let mem_total = shared.snapshot.read().await.mem_total;
        let (projects, _) = shared.projects(mem_total);
        {
            let mut sinks = shared.sinks.lock().await;
            sinks.clear();
            for p in projects {
                sinks.insert(p.name, p.alerts);
            }
        }
        tokio::select! { _ = cancel.cancelled() => break, _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {} }
    }
}

/// Written when the daemon stops on a signal, removed when it starts: its absence at a
/// start means the last run ended unexpectedly.
const CLEAN_STOP: &str = "clean-stop";

/// Once a day, after the configured hour (UTC), each project without a backup of that day
/// gets one: the daemon runs `homebase backup now` against its current release, on this
/// machine's engine. In swarm mode every node's daemon takes the part of the tasks that
/// run on it (`--this-node`). Looked at every 10 s; a failure is an event and an alert, and
/// is tried again a minute later.
async fn scheduled_backups(exe: PathBuf, shared: Arc<Shared>, cancel: CancellationToken) {
    // (project, day) for which this node said it had nothing to back up (once a day)
    let mut said_empty: HashSet<(String, String)> = HashSet::new();
    // project → not before this time: a failure is tried again a minute later; a swarm
    // node with nothing to back up looks again after 30 s (its tasks may be starting)
    let mut not_before: HashMap<String, i64> = HashMap::new();
    loop {
        let t = now();
        let today = homebase_proto::clock::day_stamp(t);
        said_empty.retain(|(_, day)| *day == today);
        let mem_total = shared.snapshot.read().await.mem_total;
        let (projects, _) = shared.projects(mem_total);
        for p in projects
            .iter()
            .filter(|p| p.backup.schedule == "daily" && (!p.swarm || p.node.is_some()))
        {
            let hour = (t % 86400) / 3600;
            let dir = layout::project_dir(&shared.home, &p.name).join(layout::BACKUPS);
            let done = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .any(|e| e.file_name().to_string_lossy().starts_with(&today))
                })
                .unwrap_or(false);
            let waiting = not_before.get(&p.name).is_some_and(|at| t < *at);
            if done || waiting || hour < i64::from(p.backup.at_hour) {
                continue;
            }
            let (program, rel, node) = (exe.clone(), p.release_dir.clone(), p.node.clone());
            let out = tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new(&program);
                cmd.arg("-C")
                    .arg(&rel)
                    .args(["backup", "now", "--json", "--scheduled"]);
                if let Some(node) = node {
                    cmd.args(["--this-node", &node]);
                }
                cmd.env("HOMEBASE__HOST__SSH", "local")
                    .env("HOMEBASE__PROJECT__COMPOSE", "[\"compose.yml\"]")
                    .env("HOMEBASE__PROJECT__ENV_FILES", "[]")
                    .env("HOMEBASE_COLOR", "never")
                    .output()
            })
            .await;
            // a backup that ran is read by its report; one that does not read failed
            let report = match &out {
                Ok(Ok(o)) if o.status.success() => Some(serde_json::from_slice::<
                    homebase_proto::BackupReport,
                >(&o.stdout)),
                _ => None,
            };
            match (out, report) {
                (_, Some(Err(e))) => {
                    let msg = format!(
                        "scheduled backup failed: its report did not read ({e}); it is tried again in a minute"
                    );
                    not_before.insert(p.name.clone(), t + 60);
                    shared.event(&p.name, "", "backup_failed", &msg).await;
                    shared.alert(&p.name, "", "backup_failed", &msg).await;
                }
                (_, Some(Ok(report))) => {
                    let (id, files) = (report.backup.id, report.backup.files.len());
                    let what = match &p.node {
                        Some(node) if files == 0 => {
                            not_before.insert(p.name.clone(), t + 30);
                            said_empty.insert((p.name.clone(), today.clone())).then(|| {
                                format!(
                                    "scheduled backup: nothing of the stack to back up on node {node}"
                                )
                            })
                        }
                        Some(node) => {
                            Some(format!("scheduled backup {id} taken (node {node}'s part)"))
                        }
                        // nothing worth a backup in the stack: said once a day
                        None if files == 0 => {
                            not_before.insert(p.name.clone(), t + 600);
                            said_empty.insert((p.name.clone(), today.clone())).then(|| {
                                "scheduled backup: the stack has no database or named volume to back up".to_string()
                            })
                        }
                        None => Some(format!("scheduled backup {id} taken")),
                    };
                    if let Some(what) = what {
                        shared.event(&p.name, "", "backup", &what).await;
                    }
                    shared
                        .resolve(&p.name, "", "backup_failed", "a scheduled backup succeeded")
                        .await;
                }
                (Ok(Ok(o)), None) => {
                    let msg = format!(
                        "scheduled backup failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    not_before.insert(p.name.clone(), t + 60);
                    shared.event(&p.name, "", "backup_failed", &msg).await;
                    shared.alert(&p.name, "", "backup_failed", &msg).await;
                }
                (Ok(Err(e)), None) => {
                    not_before.insert(p.name.clone(), t + 60);
                    tracing::warn!("cannot run {}: {e}", exe.display());
                }
                (Err(e), None) => tracing::warn!("backup task failed: {e}"),
            }
        }
        // Soon after a deploy brings a project (or a new day comes), not a minute later.
        tokio::select! { _ = cancel.cancelled() => break, _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {} }
    }
}
