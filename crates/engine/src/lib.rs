//! The Docker Engine, through its API (bollard): which containers belong to which compose
//! project, their memory and CPU, their events, and the few actions the daemon takes
//! (restart, pause, unpause, start, stop).
//!
//! Invariant: the only crate that talks to the engine's API; it knows nothing of homebase's
//! configuration, only compose labels.

pub mod run;
pub mod swarm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    EventsOptions, ListContainersOptions, RestartContainerOptions, StartContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures_util::{Stream, StreamExt};

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot reach the Docker engine at `{endpoint}`: {source}; is Docker (or Colima) running?"
    )]
    Connect {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker engine at `{endpoint}`: {action} failed: {source}")]
    Call {
        endpoint: String,
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker engine at `{endpoint}`: {action} did not end within {secs}s")]
    Timeout {
        endpoint: String,
        action: String,
        secs: u64,
    },
}

/// Where the engine listens, found as the docker CLI finds it: `DOCKER_HOST`, then the
/// current docker context (Colima's `~/.colima/default/docker.sock` on a Mac), then the
/// default socket.
pub fn find_endpoint(env_docker_host: Option<&str>, home: Option<&Path>) -> String {
    if let Some(h) = env_docker_host.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if let Some(home) = home
        && let Some(h) = context_endpoint(&home.join(".docker"))
    {
        return h;
    }
    "unix:///var/run/docker.sock".to_string()
}

/// The endpoint of the current docker context, from `config.json` and the context's
/// `meta.json` (stored under the SHA-256 of its name).
fn context_endpoint(docker_dir: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_dir.join("config.json")).ok()?).ok()?;
    let name = config["currentContext"]
        .as_str()
        .filter(|n| !n.is_empty() && *n != "default")?;
    let digest: String = Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            docker_dir
                .join("contexts/meta")
                .join(digest)
                .join("meta.json"),
        )
        .ok()?,
    )
    .ok()?;
    meta["Endpoints"]["docker"]["Host"]
        .as_str()
        .map(str::to_string)
}

/// Health from the engine's status text (the docker CLI prints the same text).
pub use homebase_proto::health_from_status;

/// A container of a compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub project: String,
    pub service: String,
    /// `running`, `exited`, `paused`, `restarting`, `created`, `dead`.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty when there is no healthcheck.
    pub health: String,
    /// The engine's status text (`Up 5 minutes (healthy)`).
    pub status: String,
    /// A swarm task: Swarm restarts and replaces it, the daemon only watches.
    pub swarm: bool,
}

/// A container's start and restarts, from its inspect document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifetime {
    pub started_at: String,
    pub restarts: u64,
}

/// One stats reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Memory as `docker stats` shows it: usage minus page cache (inactive file).
    pub memory: u64,
    pub limit: u64,
    pub cpu_total: u64,
    pub system_total: u64,
    pub online_cpus: u32,
}

impl Reading {
    /// CPU % between two readings of the same container (100% = one core).
    pub fn cpu_percent_since(&self, prev: &Reading) -> f64 {
        let cpu = self.cpu_total.saturating_sub(prev.cpu_total) as f64;
        let sys = self.system_total.saturating_sub(prev.system_total) as f64;
        if sys <= 0.0 {
            0.0
        } else {
            cpu / sys * f64::from(self.online_cpus.max(1)) * 100.0
        }
    }
}

/// A container event the daemon acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: i64,
    pub id: String,
    pub project: String,
    pub service: String,
    /// `die`, `oom`, `start`, `restart`, `health_status: unhealthy`, …
    pub action: String,
    pub exit_code: Option<i64>,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    pub endpoint: String,
}

impl Engine {
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let err = |source| EngineError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION).map_err(err)?
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, 30, bollard::API_DEFAULT_VERSION).map_err(err)?
        } else {
            Docker::connect_with_unix(endpoint, 30, bollard::API_DEFAULT_VERSION).map_err(err)?
        };
        let docker = docker.negotiate_version().await.map_err(err)?;
        Ok(Engine {
            docker,
            endpoint: endpoint.to_string(),
        })
    }

    fn call(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> EngineError + '_ {
        let action = action.into();
        move |source| EngineError::Call {
            endpoint: self.endpoint.clone(),
            action,
            source,
        }
    }

    /// Whether the engine answers (`/_ping`, the cheapest call there is).
    pub async fn ping(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// The engine's total memory (the VM's, under Colima) and its data root.
    pub async fn info(&self) -> Result<(u64, Option<PathBuf>), EngineError> {
        let info = self.docker.info().await.map_err(self.call("info"))?;
        Ok((
            info.mem_total.unwrap_or(0).max(0) as u64,
            info.docker_root_dir.map(PathBuf::from),
        ))
    }

    /// Every container of a compose project, and every running task container of a swarm
    /// stack on this node (a stack's exited task containers are Swarm's history, not ours).
    pub async fn containers(&self) -> Result<Vec<Container>, EngineError> {
        let mut out = self.labelled_containers(PROJECT_LABEL, true).await?;
        let tasks = self.labelled_containers(swarm::STACK_LABEL, false).await?;
        out.extend(tasks);
        Ok(out)
    }

    async fn labelled_containers(
        &self,
        label: &str,
        all: bool,
    ) -> Result<Vec<Container>, EngineError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(self.call("list containers"))?;
        let stack = label == swarm::STACK_LABEL;
        Ok(list
            .into_iter()
            .filter_map(|c| container(c, stack))
            .collect())
    }

    /// One stats reading of a running container.
    pub async fn stats(&self, id: &str) -> Result<Reading, EngineError> {
        let mut stream = self.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let s = match stream.next().await {
            Some(r) => r.map_err(self.call(format!("stats of {id}")))?,
            None => return Ok(Reading::default()),
        };
        let mem = s.memory_stats.unwrap_or_default();
        let stats = mem.stats.unwrap_or_default();
        // cgroup v1 reports total_inactive_file, v2 inactive_file; docker stats subtracts it
        let cache = stats
            .get("total_inactive_file")
            .or_else(|| stats.get("inactive_file"))
            .copied()
            .unwrap_or(0);
        let cpu = s.cpu_stats.unwrap_or_default();
        Ok(Reading {
            memory: mem.usage.unwrap_or(0).saturating_sub(cache),
            limit: mem.limit.unwrap_or(0),
            cpu_total: cpu.cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
            system_total: cpu.system_cpu_usage.unwrap_or(0),
            online_cpus: cpu.online_cpus.unwrap_or(1),
        })
    }

    /// When the container last started (RFC 3339, as the engine writes it) and how often
    /// the engine restarted it.
    pub async fn lifetime(&self, id: &str) -> Result<Lifetime, EngineError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(self.call(format!("inspect {id}")))?;
        Ok(Lifetime {
            started_at: c.state.and_then(|s| s.started_at).unwrap_or_default(),
            restarts: c.restart_count.unwrap_or(0).max(0) as u64,
        })
    }

    pub async fn restart(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .restart_container(
                id,
                Some(RestartContainerOptions {
                    t: Some(10),
                    ..Default::default()
                }),
            )
            .await
            .map_err(self.call(format!("restart {id}")))
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(self.call(format!("start {id}")))
    }

    pub async fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(10),
                    ..Default::default()
                }),
            )
            .await
            .map_err(self.call(format!("stop {id}")))
    }

    pub async fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .pause_container(id)
            .await
            .map_err(self.call(format!("pause {id}")))
    }

    pub async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(self.call(format!("unpause {id}")))
    }

    /// Container events of compose projects, as they happen (not of swarm tasks).
    pub fn events(&self) -> impl Stream<Item = Result<Event, EngineError>> + '_ {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("label".to_string(), vec![PROJECT_LABEL.to_string()]);
        self.docker
            .events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .filter_map(move |r| {
                let event = match r.map_err(self.call("events")) {
                    Err(e) => Some(Err(e)),
                    Ok(m) => {
                        let actor = m.actor.unwrap_or_default();
                        let attrs = actor.attributes.unwrap_or_default();
                        // a swarm task of an image Compose built: Swarm's, not ours to heal
                        match owner(&attrs) {
                            Some((project, service, false)) => Some(Ok(Event {
                                time: m.time.unwrap_or(0),
                                id: actor.id.unwrap_or_default(),
                                project,
                                service,
                                action: m.action.unwrap_or_default(),
                                exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
                            })),
                            _ => None,
                        }
                    }
                };
                std::future::ready(event)
            })
    }
}

/// Whose a container is, from its labels: a swarm task's stack and service, or a compose
/// project's. A task of an image Compose built carries the compose labels too (the image
/// has them), so the stack label decides: such a task is Swarm's, never restarted or
/// paused as if it were a compose container.
fn owner(labels: &HashMap<String, String>) -> Option<(String, String, bool)> {
    if let Some(p) = labels.get(swarm::STACK_LABEL) {
        let s = labels
            .get("com.docker.swarm.service.name")
            .map(|n| n.strip_prefix(&format!("{p}_")).unwrap_or(n).to_string())
            .unwrap_or_default();
        return Some((p.clone(), s, true));
    }
    let p = labels.get(PROJECT_LABEL)?;
    let s = labels.get(SERVICE_LABEL).cloned().unwrap_or_default();
    Some((p.clone(), s, false))
}

/// A listed container's name, without the engine's leading `/`.
fn first_name(names: Option<Vec<String>>) -> String {
    names
        .and_then(|n| n.into_iter().next())
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// A listed container as the daemon sees it; `None` when it is not of the list asked for
/// (a swarm task in the compose list, or the other way round).
fn container(c: ContainerSummary, stack: bool) -> Option<Container> {
    let labels = c.labels.unwrap_or_default();
    let (project, service, swarm) = owner(&labels)?;
    if swarm != stack {
        return None;
    }
    let status = c.status.unwrap_or_default();
    Some(Container {
        swarm,
        id: c.id.unwrap_or_default(),
        name: first_name(c.names),
        project,
        service,
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        health: health_from_status(&status).to_string(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(labels: &[(&str, &str)]) -> ContainerSummary {
        ContainerSummary {
            id: Some("c1".into()),
            names: Some(vec!["/x-notes-1".into()]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            status: Some("Up 2 minutes (healthy)".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_of_an_image_compose_built_is_swarms_not_a_compose_container() {
        // what `docker compose build` leaves on the image, and so on every task of it
        let built = [
            (PROJECT_LABEL, "x"),
            (SERVICE_LABEL, "notes"),
            (swarm::STACK_LABEL, "x"),
            ("com.docker.swarm.service.name", "x_notes"),
        ];
        assert_eq!(container(summary(&built), false), None);
        let task = container(summary(&built), true).unwrap();
        assert!(task.swarm);
        assert_eq!((&task.project[..], &task.service[..]), ("x", "notes"));
        assert_eq!(task.health, "healthy");

        let compose = container(summary(&built[..2]), false).unwrap();
        assert!(!compose.swarm);
        assert_eq!(
            (&compose.name[..], &compose.service[..]),
            ("x-notes-1", "notes")
        );
        assert_eq!(container(summary(&built[..2]), true), None);
        assert_eq!(container(summary(&[]), false), None);
    }

    #[test]
    fn endpoint_from_env_then_context_then_default() {
        assert_eq!(
            find_endpoint(Some("unix:///x.sock"), None),
            "unix:///x.sock"
        );
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            find_endpoint(None, Some(home.path())),
            "unix:///var/run/docker.sock"
        );
        // a Colima context, stored as the docker CLI stores it
        let docker = home.path().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(docker.join("config.json"), r#"{"currentContext":"colima"}"#).unwrap();
        use sha2::{Digest, Sha256};
        let digest: String = Sha256::digest(b"colima")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let meta = docker.join("contexts/meta").join(digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(meta.join("meta.json"), r#"{"Name":"colima","Endpoints":{"docker":{"Host":"unix:///Users/me/.colima/default/docker.sock"}}}"#).unwrap();
        assert_eq!(
            find_endpoint(None, Some(home.path())),
            "unix:///Users/me/.colima/default/docker.sock"
        );
        assert_eq!(
            find_endpoint(Some(""), Some(home.path())),
            "unix:///Users/me/.colima/default/docker.sock"
        );
    }

    #[test]
    fn cpu_percent_between_readings() {
        let a = Reading {
            cpu_total: 1_000,
            system_total: 10_000,
            online_cpus: 2,
            ..Default::default()
        };
        let b = Reading {
            cpu_total: 2_000,
            system_total: 20_000,
            online_cpus: 2,
            ..Default::default()
        };
        assert!((b.cpu_percent_since(&a) - 20.0).abs() < 1e-9);
    }
}
