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

/// A systemd user unit that runs the tunnel and restarts it.
pub fn systemd_unit(exe: &Path, root: &Path, project: &str) -> String {
    format!(
        "[Unit]\nDescription=homebase tunnel for {project}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart={} -C {} tunnel\nRestart=always\nRestartSec=5\nEnvironment=HOMEBASE_COLOR=never\n\n[Install]\nWantedBy=default.target\n",
        exe.display(),
        root.display()
    )
}

/// A launchd agent that runs the tunnel at login and keeps it alive.
pub fn launchd_plist(exe: &Path, root: &Path, project: &str, log: &Path) -> Result<Vec<u8>> {
    let mut d = plist::Dictionary::new();
    d.insert("Label".into(), plist::Value::String(launchd_label(project)));
    d.insert(
        "ProgramArguments".into(),
        plist::Value::Array(vec![
            exe.display().to_string().into(),
            "-C".into(),
            root.display().to_string().into(),
            "tunnel".into(),
        ]),
    );
    d.insert("RunAtLoad".into(), true.into());
    d.insert("KeepAlive".into(), true.into());
    d.insert("ThrottleInterval".into(), 5.into());
    d.insert("StandardOutPath".into(), log.display().to_string().into());
    d.insert("StandardErrorPath".into(), log.display().to_string().into());
    let mut env = plist::Dictionary::new();
    env.insert("HOMEBASE_COLOR".into(), "never".into());
    d.insert("EnvironmentVariables".into(), plist::Value::Dictionary(env));
    let mut out = Vec::new();
    plist::Value::Dictionary(d)
        .to_writer_xml(&mut out)
        .context("cannot write the launchd plist")?;
    Ok(out)
}

pub fn launchd_label(project: &str) -> String {
    format!("dev.homebase.tunnel.{project}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_files_run_the_tunnel() {
        let unit = systemd_unit(
            Path::new("/usr/bin/homebase"),
            Path::new("/home/me/stack"),
            "blackbox4",
        );
        assert!(unit.contains("ExecStart=/usr/bin/homebase -C /home/me/stack tunnel\n"));
        assert!(unit.contains("Restart=always"));
        let xml = launchd_plist(
            Path::new("/opt/homebase"),
            Path::new("/Users/me/stack"),
            "blackbox4",
            Path::new("/tmp/t.log"),
        )
        .unwrap();
        let v: plist::Value = plist::from_bytes(&xml).unwrap();
        let d = v.as_dictionary().unwrap();
        assert_eq!(
            d["Label"].as_string(),
            Some("dev.homebase.tunnel.blackbox4")
        );
        assert_eq!(d["KeepAlive"].as_boolean(), Some(true));
        assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
        let args: Vec<&str> = d["ProgramArguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_string().unwrap())
            .collect();
        assert_eq!(args, ["/opt/homebase", "-C", "/Users/me/stack", "tunnel"]);
    }

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
