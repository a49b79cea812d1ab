//! Tunnels from the laptop to the stack: which ports to forward, where the running tunnel
//! keeps its state, and the service files that keep it running in the background.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use homebase_remote::Forward;
use homebase_stack::kinds::Kind;
use serde::{Deserialize, Serialize};

use crate::probe::Probe;
use crate::project::Project;

/// One forward with what it is for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceForward {
    pub service: String,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
    /// Set when the wanted local port was taken and another was used.
    pub remapped_from: Option<u16>,
    #[serde(skip)]
    pub probe: Option<Probe>,
}

impl ServiceForward {
    /// The forward as `tunnel --json` shows it.
    pub fn shown(&self) -> homebase_proto::TunnelForward {
        homebase_proto::TunnelForward {
            service: self.service.clone(),
            local_port: self.local_port,
            remote_host: self.remote_host.clone(),
            remote_port: self.remote_port,
            remapped_from: self.remapped_from,
        }
    }

    pub fn forward(&self) -> Forward {
        Forward {
            local_port: self.local_port,
            remote_host: self.remote_host.clone(),
            remote_port: self.remote_port,
        }
    }
}

/// Every TCP port the stack publishes on the host, forwarded to the same local port unless
/// homebase.toml says otherwise. Ports are not checked for being free here.
pub fn wanted_forwards(project: &Project) -> Vec<ServiceForward> {
    let mut out = Vec::new();
    for (name, svc) in &project.compose.services {
        let over = project.config.services.get(name);
        let kind = Kind::of(svc.image_repo().as_deref());
        for (i, port) in svc.ports.iter().enumerate() {
            let (Some(published), true) = (port.published_port(), port.protocol == "tcp") else {
                continue;
            };
            // A port published on every address is reached on the host's loopback.
            let remote_host = match port.host_ip.as_deref() {
                None | Some("0.0.0.0") | Some("::") | Some("") => "127.0.0.1".to_string(),
                Some(ip) => ip.to_string(),
            };
            let local_port = if i == 0 {
                over.and_then(|o| o.local_port).unwrap_or(published)
            } else {
                published
            };
            let target = port.target_port().unwrap_or(published);
            let health_path = over.and_then(|o| o.health_path.clone());
            let probe = match (kind, target, health_path) {
                (_, _, Some(path)) => Probe::Http(path),
                (Kind::Postgres, 5432, _) => Probe::Postgres,
                (Kind::Neo4j, 7687, _) => Probe::Bolt,
                (_, 80 | 443 | 3000 | 5000 | 7474 | 8000 | 8080 | 8888 | 9000, _) => {
                    Probe::Http("/".into())
                }
                _ => Probe::Tcp,
            };
            out.push(ServiceForward {
                service: name.clone(),
                local_port,
                remote_host,
                remote_port: published,
                remapped_from: None,
                probe: Some(probe),
            });
        }
    }
    out
}

/// Moves forwards whose local port is taken to a free one, noting where they came from.
pub fn remap_taken(forwards: &mut [ServiceForward]) -> Result<()> {
    let mut used: Vec<u16> = Vec::new();
    for f in forwards.iter_mut() {
        let free =
            !used.contains(&f.local_port) && TcpListener::bind(("127.0.0.1", f.local_port)).is_ok();
        if !free {
            let l = TcpListener::bind(("127.0.0.1", 0))
                .context("cannot find a free local port on 127.0.0.1")?;
            let port = l.local_addr().context("cannot read a local port")?.port();
            f.remapped_from = Some(f.local_port);
            f.local_port = port;
        }
        used.push(f.local_port);
    }
    Ok(())
}

/// Where the laptop keeps homebase's own state (tunnel locks and their forwards).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOMEBASE_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("homebase");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support/homebase")
    } else {
        home.join(".local/state/homebase")
    }
}

/// A running tunnel's record, for `tunnel --check` and `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelState {
    pub pid: u32,
    pub host: String,
    pub forwards: Vec<ServiceForward>,
}

pub struct TunnelLock {
    _file: File,
    pub state_path: PathBuf,
}

fn key(project: &str, host: &str) -> String {
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("tunnel-{project}-{clean}")
}

/// Takes the lock for (project, host), or says which process holds it.
pub fn lock(
    project: &str,
    host: &str,
) -> Result<std::result::Result<TunnelLock, Option<TunnelState>>> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join(format!("{}.lock", key(project, host)));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    let state_path = dir.join(format!("{}.json", key(project, host)));
    match file.try_lock() {
        Ok(()) => Ok(Ok(TunnelLock {
            _file: file,
            state_path,
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Err(read_state(&state_path))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock `{}`", path.display())))
        }
    }
}

pub fn read_state(path: &Path) -> Option<TunnelState> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The running tunnel's state, if one is running for (project, host).
pub fn running(project: &str, host: &str) -> Option<TunnelState> {
    match lock(project, host) {
        Ok(Err(state)) => state,
        _ => None,
    }
}

pub fn launchd_label(project: &str) -> String {
    format!("dev.homebase.tunnel.{project}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_ports_are_remapped() {
        let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let mut f = vec![ServiceForward {
            service: "db".into(),
            local_port: port,
            remote_host: "127.0.0.1".into(),
            remote_port: 5432,
            remapped_from: None,
            probe: None,
        }];
        remap_taken(&mut f).unwrap();
        assert_eq!(f[0].remapped_from, Some(port));
        assert_ne!(f[0].local_port, port);
    }
}
