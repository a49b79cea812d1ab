//! The engine not answering: the monitor's outage (an alert, the start command at most
//! every 30 s, resolved when it answers), and the daemon's start before the engine is up
//! (at a boot, Colima may come after the daemon).

use std::sync::Arc;
use std::time::Duration;

use homebase_engine::Engine;
use tokio_util::sync::CancellationToken;

use crate::projects::Project;
use crate::shared::Shared;

/// The engine's outage: when it began, and when the daemon last tried to start it.
#[derive(Default)]
pub(super) struct Outage {
    pub(super) since: Option<std::time::Instant>,
    tried: Option<std::time::Instant>,
}

impl Outage {
    /// After a round: alerts when the engine stops answering, runs the start command (at
    /// most every 30 s) while it does not, and resolves when it answers again.
    pub(super) async fn step(
        &mut self,
        answered: bool,
        endpoint: &str,
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
                endpoint
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
        let Some(cmd) = engine_start_command(projects) else {
            return;
        };
        self.tried = Some(std::time::Instant::now());
        let said = start_engine(&cmd).await;
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

/// The command that starts the engine: the first project's `[daemon] engine_start`, else
/// `colima start` where Colima is installed.
fn engine_start_command(projects: &[Project]) -> Option<String> {
    projects
        .iter()
        .find_map(|p| p.daemon.engine_start.clone())
        .or_else(default_engine_start)
}

/// Runs the start command (for at most 120 s) and says how it went.
async fn start_engine(cmd: &str) -> String {
    let run = tokio::process::Command::new("sh")
        .args(["-c", cmd])
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
    said
}

/// How long a daemon that starts before the engine waits before it alerts and runs the
/// start command itself (a boot's Colima usually comes up within it).
const AT_START_GRACE: Duration = Duration::from_secs(30);

/// The engine, once it answers; `None` when the daemon stops first. A daemon may start
/// before its engine (at a boot, Colima starts after it, or not at all): it serves its
/// API meanwhile, tries every 2 s, and after [`AT_START_GRACE`] alerts each project and
/// runs the start command, again at most every 30 s; the alert resolves when it answers.
pub(crate) async fn engine_when_up(
    endpoint: &str,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) -> Option<Engine> {
    let began = std::time::Instant::now();
    let mut said = false;
    let mut outage = Outage::default();
    loop {
        match Engine::connect(endpoint).await {
            Ok(engine) => {
                if outage.since.is_some() {
                    let (projects, _) = shared.projects(0);
                    outage.step(true, endpoint, shared, &projects).await;
                }
                return Some(engine);
            }
            Err(e) => {
                if !said {
                    said = true;
                    tracing::warn!("{e}; waiting for it (trying every 2 s)");
                }
                if began.elapsed() >= AT_START_GRACE {
                    let (projects, _) = shared.projects(0);
                    outage.step(false, endpoint, shared, &projects).await;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
