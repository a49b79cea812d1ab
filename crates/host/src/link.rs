//! The connections of one command to its host (or its swarm's nodes): the ways to `[host]`
//! and the one this command took, and the sessions planning opened (reading `detect`ed
//! memory) kept for the command's own first use, so that one command uses one SSH master
//! per host. Built from the project's config; it holds no other state of the project.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use homebase_remote::{Session, SshTarget, Target};
use homebase_stack::config::{HostMemory, HostSection, Mode, NodeSection};
use homebase_stack::{Bytes, Config};
use indexmap::IndexMap;

use crate::exit::{Exit, coded};

pub struct Link {
    host: HostSection,
    nodes: IndexMap<String, NodeSection>,
    /// The manager's name in swarm mode; `None` in single-host mode.
    manager: Option<String>,
    /// Connections opened before the command asked for one, by node name (`""` is `[host]`).
    spare: Mutex<HashMap<String, Session>>,
    /// The ways to `[host]` (built once per command), and the one this command took.
    ways: OnceLock<Vec<Target>>,
    way: OnceLock<usize>,
    /// Each node's memory, read once per command.
    node_memory: OnceLock<Vec<(String, Bytes, String)>>,
}

/// A configured path with `~` expanded.
fn expand(p: Option<&Path>) -> Option<PathBuf> {
    p.map(homebase_proto::sys::expand_home)
}

/// How a way reached the host, for a note: `as me@mini through the relay me@vps`.
pub fn way_words(t: &Target) -> String {
    match t {
        Target::Ssh(t) => match &t.via {
            Some(v) => format!("as {} {v}", t.destination),
            None => format!("as {}", t.destination),
        },
        Target::Local => "locally".into(),
    }
}

impl Link {
    pub fn new(config: &Config) -> Link {
        let manager = (config.project.mode == Mode::Swarm)
            .then(|| config.manager().map(|(name, _)| name.clone()))
            .flatten();
        Link {
            host: config.host.clone(),
            nodes: config.nodes.clone(),
            manager,
            spare: Mutex::default(),
            ways: OnceLock::new(),
            way: OnceLock::new(),
            node_memory: OnceLock::new(),
        }
    }

    /// Each node's memory and where it came from: `[nodes]`, or for `detect` its engine's
    /// MemTotal, read once per command.
    pub fn node_memory(&self) -> Result<Vec<(String, Bytes, String)>> {
        if let Some(known) = self.node_memory.get() {
            return Ok(known.clone());
        }
        let mut out = Vec::new();
        for (name, n) in &self.nodes {
            match n.memory {
                HostMemory::Size(b) => out.push((name.clone(), b, "homebase.toml".to_string())),
                HostMemory::Detect => {
                    let (b, _) = self.engine_memory(Some(name))?;
                    out.push((name.clone(), b, "detected".to_string()));
                }
            }
        }
        let _ = self.node_memory.set(out.clone());
        Ok(out)
    }

    /// The engine's total memory on `[host]` (the manager in swarm mode; `node` names a
    /// node of the swarm) as `docker info` reports it, and where it was read. On a Mac
    /// that is Colima's VM, which is what limits the stack. The connection is kept for the
    /// command's own use.
    pub fn engine_memory(&self, node: Option<&str>) -> Result<(Bytes, String)> {
        let session = match node {
            Some(n) => self.node_session(n)?,
            None => self.open_session()?,
        };
        let out = session.check("docker info --format '{{.MemTotal}}'");
        let host = session.host();
        self.keep_spare(
            node.unwrap_or(self.manager.as_deref().unwrap_or("")),
            session,
        );
        let out = out?;
        let bytes: u64 = out.trim().parse().map_err(|_| {
            let fix = match node {
                Some(n) => format!("set nodes.{n}.memory"),
                None => "set budget.host_memory instead".to_string(),
            };
            coded(
                Exit::Unreachable,
                format!(
                    "`docker info` on {host} did not report MemTotal (got `{}`); {fix}",
                    homebase_proto::text::printable(out.trim())
                ),
            )
        })?;
        Ok((Bytes(bytes), host))
    }

    fn keep_spare(&self, key: &str, session: Session) {
        if let Ok(mut spare) = self.spare.lock() {
            spare.insert(key.to_string(), session);
        }
    }

    fn take_spare(&self, key: &str) -> Option<Session> {
        self.spare.lock().ok()?.remove(key)
    }

    /// A connection to node `name` of the swarm: the one planning opened, else a new one.
    pub fn node_session(&self, name: &str) -> Result<Session> {
        if let Some(s) = self.take_spare(name) {
            return Ok(s);
        }
        let n = self
            .nodes
            .get(name)
            .with_context(|| format!("no node `{name}` in homebase.toml's [nodes]"))?;
        Ok(Session::open(&self.node_target(n))?)
    }

    /// The manager in swarm mode, else `[host]`: by the way this command reached it (the
    /// first way before it connected).
    pub fn target(&self) -> Target {
        if let Some(n) = self.manager.as_ref().and_then(|m| self.nodes.get(m)) {
            return self.node_target(n);
        }
        let ways = self.ways();
        let i = self.way.get().copied().unwrap_or(0);
        ways.get(i)
            .or(ways.first())
            .cloned()
            .unwrap_or(Target::Local)
    }

    /// Every way to `[host]`, in the order they are tried: `ssh`, each of `also`, then
    /// through `[host.relay]`. The host's key is checked under the first way's name on
    /// every one of them.
    pub fn ways(&self) -> &[Target] {
        self.ways.get_or_init(|| {
            let h = &self.host;
            let first = self.host_target(&h.ssh, h.port);
            let Target::Ssh(base) = &first else {
                return vec![first];
            };
            if h.also.is_empty() && h.relay.is_none() {
                return vec![first];
            }
            // the first way's key entry (its HostKeyAlias, or its name and port)
            let alias = base
                .resolve()
                .map(|r| r.known_hosts_entry())
                .unwrap_or_else(|| base.host_name().to_string());
            let mut ways = vec![first.clone()];
            for w in &h.also {
                if let Target::Ssh(mut t) = self.host_target(w, h.port) {
                    t.host_key_alias = Some(alias.clone());
                    ways.push(t.into());
                }
            }
            if let (Some(r), Some(relay)) = (&h.relay, self.relay_target()) {
                let mut t = base.clone();
                t.hostname = Some("127.0.0.1".into());
                t.port = Some(r.tunnel_port);
                t.proxy_command = Some(relay.proxy_command());
                t.host_key_alias = Some(alias.clone());
                t.via = Some(format!("through the relay {}", r.ssh));
                ways.push(t.into());
            }
            ways
        })
    }

    /// The relay's target as the laptop reaches it (`[host.relay]`), if there is one.
    pub fn relay_target(&self) -> Option<SshTarget> {
        let h = &self.host;
        let r = h.relay.as_ref()?;
        let mut relay = SshTarget::new(r.ssh.clone());
        relay.port = r.port;
        relay.identity_file = expand(r.identity_file.as_deref());
        relay.known_hosts_file = expand(r.known_hosts_file.as_deref());
        relay.config_file = expand(h.ssh_config.as_deref());
        relay.connect_timeout = Duration::from_secs(h.connect_timeout_secs);
        relay.persist = Duration::ZERO;
        Some(relay)
    }

    /// A node of the swarm, with `[host]`'s key, known_hosts and timeout.
    pub fn node_target(&self, n: &NodeSection) -> Target {
        self.host_target(&n.ssh, n.port.or(self.host.port))
    }

    fn host_target(&self, ssh: &str, port: Option<u16>) -> Target {
        let h = &self.host;
        if ssh == "local" {
            return Target::Local;
        }
        let mut t = SshTarget::new(ssh.to_string());
        t.port = port;
        t.identity_file = expand(h.identity_file.as_deref());
        t.known_hosts_file = expand(h.known_hosts_file.as_deref());
        t.config_file = expand(h.ssh_config.as_deref());
        t.connect_timeout = Duration::from_secs(h.connect_timeout_secs);
        t.persist = Duration::from_secs(h.persist_secs);
        t.into()
    }

    /// A node by its name in [nodes] (swarm mode), with "did you mean" when it is not one.
    pub fn named_node(&self, name: &str) -> Result<Target> {
        if self.manager.is_none() {
            return Err(coded(
                Exit::BadInput,
                "--node is for swarm mode (project.mode = \"swarm\"); this project runs on one host",
            ));
        }
        match self.nodes.get(name) {
            Some(n) => Ok(self.node_target(n)),
            None => {
                let all: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
                let hint = homebase_stack::error::did_you_mean(name, all.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("the nodes are: {}", all.join(", ")));
                Err(coded(
                    Exit::BadInput,
                    format!("there is no node `{name}` in [nodes] of homebase.toml; {hint}"),
                ))
            }
        }
    }

    /// A connection to `[host]` (the manager in swarm mode): the one planning opened, else
    /// a new one, by the first way that answers.
    pub fn open_session(&self) -> Result<Session> {
        if let Some(s) = self.take_spare(self.manager.as_deref().unwrap_or("")) {
            return Ok(s);
        }
        if self.manager.is_some() {
            return Ok(Session::open(&self.target())?);
        }
        let (session, i) = homebase_remote::open_first(self.ways())?;
        let first_time = self.way.set(i).is_ok();
        if i > 0 && first_time {
            // the command says which way it took when it is not the first
            crate::report::note(&format!(
                "reached the host {} ({} did not answer first)",
                way_words(session.target()),
                self.ways()
                    .first()
                    .map(|w| w.to_string())
                    .unwrap_or_default()
            ));
        }
        Ok(session)
    }
}
