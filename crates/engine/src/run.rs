//! One-off containers (agent-loop iterations): create with a memory limit and a workspace
//! mount, start, stream output, wait, read a file back, kill, remove. They carry homebase's
//! loop labels, never compose labels, so compose and the watch loop leave them alone.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, EventsOptions,
    KillContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use futures_util::{Stream, StreamExt};

use crate::{Engine, EngineError};

/// A piece of a container's output, and whether it came from its standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stderr: bool,
    pub bytes: Vec<u8>,
}

impl From<bollard::container::LogOutput> for Chunk {
    fn from(o: bollard::container::LogOutput) -> Chunk {
        let stderr = matches!(o, bollard::container::LogOutput::StdErr { .. });
        Chunk {
            stderr,
            bytes: o.into_bytes().to_vec(),
        }
    }
}

/// `<project>/<loop>` on every iteration container.
pub const LOOP_LABEL: &str = "dev.homebase.loop";
/// The iteration's row id in the daemon's store.
pub const ITERATION_LABEL: &str = "dev.homebase.loop.iteration";

/// Where the workspace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory.
    Bind(String),
    /// A named volume (created by the engine when missing).
    Volume(String),
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub workdir: String,
    pub workspace: Source,
    pub memory: u64,
    pub oom_score_adj: i64,
    pub user: Option<String>,
    pub labels: HashMap<String, String>,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Mount the workspace read-only (helpers that only look at it).
    pub workspace_read_only: bool,
    pub walls: Walls,
}

/// The walls of a one-off container: every capability dropped but `capabilities`,
/// `no-new-privileges`, a pids limit, its network, and extra host paths read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walls {
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// 0: no limit.
    pub pids_limit: u32,
    /// `bridge`, `none` or a network's name.
    pub network: String,
    /// (host path, container path), mounted read-only.
    pub read_only_mounts: Vec<(String, String)>,
}

impl Walls {
    /// The tightest walls: no capability, no network, 64 processes.
    pub fn sealed() -> Walls {
        Walls {
            capabilities: Vec::new(),
            no_new_privileges: true,
            pids_limit: 64,
            network: "none".into(),
            read_only_mounts: Vec::new(),
        }
    }
}

/// How a container ended (or that it has not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: String,
}

/// A container found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub id: String,
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
}

impl Engine {
    /// Creates (does not start) a one-off container; returns its id.
    pub async fn create(&self, spec: &RunSpec) -> Result<String, EngineError> {
        let read_only = Some(spec.workspace_read_only);
        let mount = match &spec.workspace {
            Source::Bind(path) => Mount {
                target: Some(spec.workdir.clone()),
                source: Some(path.clone()),
                typ: Some(MountType::BIND),
                read_only,
                ..Default::default()
            },
            Source::Volume(name) => Mount {
                target: Some(spec.workdir.clone()),
                source: Some(name.clone()),
                typ: Some(MountType::VOLUME),
                read_only,
                ..Default::default()
            },
        };
        let mut mounts = vec![mount];
        mounts.extend(spec.walls.read_only_mounts.iter().map(|(src, dst)| Mount {
            target: Some(dst.clone()),
            source: Some(src.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }));
        let w = &spec.walls;
        let memory = i64::try_from(spec.memory).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            entrypoint: spec.entrypoint.clone(),
            env: Some(spec.env.clone()),
            working_dir: Some(spec.workdir.clone()),
            user: spec.user.clone(),
            labels: Some(spec.labels.clone()),
            host_config: Some(HostConfig {
                memory: Some(memory),
                // no swap beyond the limit
                memory_swap: Some(memory),
                oom_score_adj: Some(spec.oom_score_adj),
                mounts: Some(mounts),
                init: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(w.capabilities.clone()),
                security_opt: w
                    .no_new_privileges
                    .then(|| vec!["no-new-privileges:true".to_string()]),
                pids_limit: (w.pids_limit > 0).then_some(i64::from(w.pids_limit)),
                network_mode: Some(w.network.clone()),
                privileged: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(self.call(format!("create container {}", spec.name)))?;
        Ok(r.id)
    }

    /// Creates, starts and waits for a one-off container (up to `timeout`), returns how it
    /// ended and its output (at most `max` bytes), and removes it whatever happened.
    pub async fn run_to_end(
        &self,
        spec: &RunSpec,
        timeout: std::time::Duration,
        max: usize,
    ) -> Result<(Exit, Vec<u8>), EngineError> {
        let id = self.create(spec).await?;
        let result = async {
            self.start_one(&id).await?;
            let mut out = Vec::new();
            let follow = async {
                let mut s = std::pin::pin!(self.output(&id));
                while let Some(chunk) = s.next().await {
                    let chunk = chunk?.bytes;
                    let room = max.saturating_sub(out.len());
                    out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok::<(), EngineError>(())
            };
            match tokio::time::timeout(timeout, follow).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(EngineError::Timeout {
                        endpoint: self.endpoint.clone(),
                        action: format!("run {}", spec.name),
                        secs: timeout.as_secs(),
                    });
                }
            }
            let exit = self.exit(&id).await?;
            Ok((exit, out))
        }
        .await;
        let _ = self.remove(&id).await;
        result
    }

    /// Whether an image is present on the host.
    pub async fn has_image(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Pulls an image from its registry.
    pub async fn pull(&self, image: &str) -> Result<(), EngineError> {
        let mut s = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(r) = s.next().await {
            r.map_err(self.call(format!("pull {image}")))?;
        }
        Ok(())
    }

    pub async fn start_one(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(self.call(format!("start {id}")))
    }

    /// Output (stdout and stderr, as it comes) from the start; follows until the container ends.
    pub fn output(&self, id: &str) -> impl Stream<Item = Result<Chunk, EngineError>> + '_ {
        let id = id.to_string();
        self.docker
            .logs(
                &id,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    tail: "all".into(),
                    ..Default::default()
                }),
            )
            .map(move |r| {
                r.map(Chunk::from)
                    .map_err(self.call(format!("logs of {id}")))
            })
    }

    /// The last `lines` lines of a container's output (for one that ended unwatched).
    pub async fn output_tail(&self, id: &str, lines: usize) -> Result<Vec<Chunk>, EngineError> {
        let mut s = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.push(Chunk::from(
                chunk.map_err(self.call(format!("logs of {id}")))?,
            ));
        }
        Ok(out)
    }

    pub async fn exit(&self, id: &str) -> Result<Exit, EngineError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(self.call(format!("inspect {id}")))?;
        let s = c.state.unwrap_or_default();
        Ok(Exit {
            running: s.running.unwrap_or(false) || s.paused.unwrap_or(false),
            exit_code: s.exit_code.unwrap_or(-1),
            oom_killed: s.oom_killed.unwrap_or(false),
            error: s.error.unwrap_or_default(),
        })
    }

    /// Whether the engine has logged an out-of-memory kill of this container since `since`
    /// (seconds). Docker takes a container's `OOMKilled` from the exit event, and containerd
    /// sends its OOM event from another watcher, which can come after the exit: the flag
    /// then stays false while the event log still says "oom".
    pub async fn oom_logged(&self, id: &str, since: i64) -> Result<bool, EngineError> {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("container".to_string(), vec![id.to_string()]);
        filters.insert("event".to_string(), vec!["oom".to_string()]);
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64 + 1)
            .max(since);
        let mut s = self.docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: Some(until.to_string()),
            filters: Some(filters),
        }));
        while let Some(e) = s.next().await {
            if e.map_err(self.call(format!("events of {id}")))?
                .action
                .as_deref()
                == Some("oom")
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub async fn kill(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "KILL".into(),
                }),
            )
            .await
            .map_err(self.call(format!("kill {id}")))
    }

    /// Removes a container and its anonymous volumes, running or not.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(self.call(format!("remove {id}")))
    }

    /// Containers carrying `label` (any value), running or not.
    pub async fn labelled(&self, label: &str) -> Result<Vec<Labelled>, EngineError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![label.to_string()]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(self.call(format!("list containers labelled {label}")))?;
        Ok(list
            .into_iter()
            .map(|c| Labelled {
                id: c.id.unwrap_or_default(),
                name: crate::first_name(c.names),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
            })
            .collect())
    }

    /// A regular file from a container's filesystem (its mounts included), up to `max`
    /// bytes; `None` when it does not exist.
    pub async fn read_file(
        &self,
        id: &str,
        path: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let mut s = self.docker.download_from_container(
            id,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(b) => {
                    archive.extend_from_slice(&b);
                    if archive.len() as u64 > max + 64 * 1024 {
                        break;
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(e) => return Err(self.call(format!("read {path} from {id}"))(e)),
            }
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let Ok(mut entries) = tar.entries() else {
            return Ok(None);
        };
        let Some(Ok(entry)) = entries.next() else {
            return Ok(None);
        };
        if !entry.header().entry_type().is_file() {
            return Ok(None);
        }
        let mut out = Vec::new();
        use std::io::Read;
        let _ = entry.take(max).read_to_end(&mut out);
        Ok(Some(out))
    }

    /// Where a named volume's files are on the engine's machine, when it exists.
    pub async fn volume_path(&self, name: &str) -> Option<String> {
        self.docker
            .inspect_volume(name)
            .await
            .ok()
            .map(|v| v.mountpoint)
            .filter(|m| !m.is_empty())
    }
}
