//! Finding and loading the project: homebase.toml (searched upwards), its compose files and
//! their variables, validated once into objects the commands use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use homebase_remote::{Session, SshTarget, Target};
use homebase_stack::cluster::ClusterPlan;
use homebase_stack::config::{FILE_NAME, HostMemory, Mode, NodeSection};
use homebase_stack::{Bytes, ComposeProject, Config, LoadOptions, Plan};
use indexmap::IndexMap;

use crate::cli::Global;
use crate::exit::{Exit, coded};

pub struct Project {
    /// The directory holding homebase.toml; compose paths are relative to it.
    pub root: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    pub compose: ComposeProject,
    /// Connections planning opened (to read `detect`ed memory), handed to the command's own
    /// first `open_session` / `node_session` so that one command uses one SSH master per
    /// host. Keyed by node name; `""` is `[host]` (or the manager).
    spare: std::sync::Mutex<std::collections::HashMap<String, Session>>,
    /// Each node's memory, read once per command.
    node_memory: std::sync::OnceLock<Vec<(String, Bytes, String)>>,
    /// The ways to `[host]` (built once per command), and the one this command took.
    ways: std::sync::OnceLock<Vec<Target>>,
    way: std::sync::OnceLock<usize>,
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

/// The process environment as a map (the stack crate never reads it itself).
pub fn process_env() -> IndexMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

pub fn start_dir(global: &Global) -> Result<PathBuf> {
    match &global.directory {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().context("cannot read the current directory"),
    }
}

/// homebase.toml from `--config`, else the nearest one from the start directory upwards.
pub fn find_config(global: &Global) -> Result<PathBuf> {
    if let Some(c) = &global.config {
        if !c.is_file() {
            return Err(coded(
                Exit::BadInput,
                format!("config file `{}` does not exist", c.display()),
            ));
        }
        return Ok(c.clone());
    }
    let start = start_dir(global)?;
    let mut dir: Option<&Path> = Some(&start);
    while let Some(d) = dir {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(coded(
        Exit::BadInput,
        format!(
            "no {FILE_NAME} in `{}` or any parent directory; run `homebase init` to write one, or pass --config FILE",
            start.display()
        ),
    ))
}

pub fn load(global: &Global) -> Result<Project> {
    let config_path = find_config(global)?;
    let config_path = std::path::absolute(&config_path)
        .with_context(|| format!("cannot resolve `{}`", config_path.display()))?;
    let root = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env = process_env();
    let config = Config::load(&config_path, &env)?;
    let files: Vec<PathBuf> = config
        .project
        .compose
        .iter()
        .map(|f| root.join(f))
        .collect();
    let env_files: Vec<PathBuf> = if global.env_files.is_empty() {
        config
            .project
            .env_files
            .iter()
            .map(|f| root.join(f))
            .collect()
    } else {
        global.env_files.clone()
    };
    let mut profiles = config.project.profiles.clone();
    profiles.extend(global.profiles.iter().filter(|p| !p.is_empty()).cloned());
    let opts = LoadOptions {
        project_dir: files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf),
        files,
        env,
        env_files,
        profiles,
    };
    let compose = ComposeProject::load(&opts)?;
    Ok(Project {
        root,
        config_path,
        config,
        compose,
        spare: Default::default(),
        node_memory: Default::default(),
        ways: Default::default(),
        way: Default::default(),
    })
}

impl Project {
    /// The host memory to budget against and where the number came from.
    pub fn host_memory(&self, flag: Option<&str>) -> Result<(Bytes, String)> {
        if let Some(f) = flag {
            let b = Bytes::parse(f)
                .map_err(|e| coded(Exit::BadInput, format!("--host-memory: {e}")))?;
            return Ok((b, "--host-memory".into()));
        }
        if self.swarm() {
            let nodes = self.node_memory()?;
            let total = Bytes(nodes.iter().map(|(_, b, _)| b.0).sum());
            let from: Vec<String> = nodes
                .iter()
                .map(|(n, b, src)| format!("{n} {b} ({src})"))
                .collect();
            return Ok((total, format!("the swarm's nodes: {}", from.join(", "))));
        }
        match self.config.budget.host_memory {
            HostMemory::Size(b) => Ok((b, "homebase.toml".into())),
            HostMemory::Detect => {
                // The engine's MemTotal: on a Mac that is Colima's VM, which is what limits the stack.
                let session = self.open_session()?;
                let out = session.check("docker info --format '{{.MemTotal}}'");
                let host = session.host();
                self.keep_spare("", session);
                let out = out?;
                let bytes: u64 = out.trim().parse().map_err(|_| {
                    coded(
                        Exit::Unreachable,
                        format!("`docker info` on {host} did not report MemTotal (got `{}`); set budget.host_memory instead", out.trim()),
                    )
                })?;
                Ok((Bytes(bytes), format!("detected on {host}")))
            }
        }
    }

    /// Runs `f` on each node `keep` selects, all at once (a thread and, in `f`, an SSH
    /// connection each); the results in [nodes] order, named. A panic in `f` is passed on.
    pub fn per_node<'p, T: Send>(
        &'p self,
        keep: impl Fn(&str) -> bool,
        f: impl Fn(&'p str, &'p NodeSection) -> T + Sync,
    ) -> Vec<(String, T)> {
        std::thread::scope(|scope| {
            let f = &f;
            let handles: Vec<_> = self
                .config
                .nodes
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|(name, n)| (name.clone(), scope.spawn(move || f(name, n))))
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| match h.join() {
                    Ok(t) => (name, t),
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    pub fn swarm(&self) -> bool {
        self.config.project.mode == Mode::Swarm
    }

    /// Each node's memory: from [nodes] or, for `detect`, its engine's MemTotal.
    pub fn node_memory(&self) -> Result<Vec<(String, Bytes, String)>> {
        if let Some(known) = self.node_memory.get() {
            return Ok(known.clone());
        }
        let mut out = Vec::new();
        for (name, n) in &self.config.nodes {
            match n.memory {
                HostMemory::Size(b) => out.push((name.clone(), b, "homebase.toml".to_string())),
                HostMemory::Detect => {
                    let session = self.node_session(name)?;
                    let text = session.check("docker info --format '{{.MemTotal}}'");
                    self.keep_spare(name, session);
                    let text = text?;
                    let b: u64 = text.trim().parse().map_err(|_| {
                        coded(
                            Exit::Unreachable,
                            format!("`docker info` on node {name} did not report MemTotal; set nodes.{name}.memory"),
                        )
                    })?;
                    out.push((name.clone(), Bytes(b), "detected".to_string()));
                }
            }
        }
        let _ = self.node_memory.set(out.clone());
        Ok(out)
    }

    /// Keeps a connection planning opened for the command's own use.
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
            .config
            .nodes
            .get(name)
            .with_context(|| format!("no node `{name}` in homebase.toml's [nodes]"))?;
        Ok(Session::open(&self.node_target(n))?)
    }

    /// Where each task of the stack can go (swarm mode): `None` in single mode.
    pub fn cluster_plan(&self, plan: &Plan) -> Result<Option<ClusterPlan>> {
        if !self.swarm() {
            return Ok(None);
        }
        let memory = self.node_memory()?;
        let nodes = homebase_stack::cluster::nodes(&self.config, |name| {
            memory
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, b, _)| *b)
                .unwrap_or_default()
        });
        Ok(Some(homebase_stack::cluster::place(
            plan,
            &self.config,
            &nodes,
        )))
    }

    /// The manager in swarm mode, else `[host]`: by the way this command reached it (the
    /// first way before it connected).
    pub fn target(&self) -> Target {
        if self.swarm()
            && let Some((_, n)) = self.config.manager()
        {
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
            let h = &self.config.host;
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
        let h = &self.config.host;
        let r = h.relay.as_ref()?;
        let mut relay = SshTarget::new(r.ssh.clone());
        relay.port = r.port;
        relay.identity_file = expand(r.identity_file.as_deref());
        relay.known_hosts_file = expand(r.known_hosts_file.as_deref());
        relay.config_file = expand(h.ssh_config.as_deref());
        relay.connect_timeout = std::time::Duration::from_secs(h.connect_timeout_secs);
        relay.persist = std::time::Duration::ZERO;
        Some(relay)
    }

    /// A node of the swarm, with `[host]`'s key, known_hosts and timeout.
    pub fn node_target(&self, n: &NodeSection) -> Target {
        self.host_target(&n.ssh, n.port.or(self.config.host.port))
    }

    fn host_target(&self, ssh: &str, port: Option<u16>) -> Target {
        let h = &self.config.host;
        if ssh == "local" {
            return Target::Local;
        }
        let mut t = SshTarget::new(ssh.to_string());
        t.port = port;
        t.identity_file = expand(h.identity_file.as_deref());
        t.known_hosts_file = expand(h.known_hosts_file.as_deref());
        t.config_file = expand(h.ssh_config.as_deref());
        t.connect_timeout = std::time::Duration::from_secs(h.connect_timeout_secs);
        t.persist = std::time::Duration::from_secs(h.persist_secs);
        t.into()
    }

    /// A node by its name in [nodes] (swarm mode), with "did you mean" when it is not one.
    pub fn named_node(&self, name: &str) -> Result<Target> {
        if !self.swarm() {
            return Err(coded(
                Exit::BadInput,
                "--node is for swarm mode (project.mode = \"swarm\"); this project runs on one host",
            ));
        }
        match self.config.nodes.get(name) {
            Some(n) => Ok(self.node_target(n)),
            None => {
                let all: Vec<&str> = self.config.nodes.keys().map(String::as_str).collect();
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

    /// One connection for the whole command run.
    /// A connection to `[host]` (the manager in swarm mode): the one planning opened, else
    /// a new one.
    pub fn open_session(&self) -> Result<Session> {
        let key = match self.config.manager() {
            Some((name, _)) if self.swarm() => name.as_str(),
            _ => "",
        };
        if let Some(s) = self.take_spare(key) {
            return Ok(s);
        }
        if self.swarm() {
            return Ok(Session::open(&self.target())?);
        }
        let (session, i) = homebase_remote::open_first(self.ways())?;
        let first_time = self.way.set(i).is_ok();
        if i > 0 && first_time {
            // the command says which way it took when it is not the first
            crate::ui::note(&format!(
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

    /// Fails with "did you mean" when `name` is not a service of the project.
    pub fn require_service(&self, name: &str) -> Result<()> {
        if self.compose.services.contains_key(name) {
            return Ok(());
        }
        let hint = homebase_stack::error::did_you_mean(
            name,
            self.compose.services.keys().map(String::as_str),
        )
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_else(|| {
            format!(
                "; the services are: {}",
                self.compose
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        Err(coded(
            Exit::BadInput,
            format!("there is no service `{name}`{hint}"),
        ))
    }

    /// The plan, or a refusal (exit 1) that lists why the stack does not fit; `refused`
    /// opens the message (`deploy refused, the host was not touched`).
    pub fn plan_that_fits(&self, host_memory_flag: Option<&str>, refused: &str) -> Result<Plan> {
        let (host_memory, _) = self.host_memory(host_memory_flag)?;
        let plan = self.plan(host_memory)?;
        let cluster = self.cluster_plan(&plan)?;
        let mut problems: Vec<String> = plan
            .problems
            .iter()
            .map(|p| format!("  - {}", p.explain()))
            .collect();
        if let Some(c) = &cluster {
            problems.extend(c.problems.iter().map(|p| format!("  - {p}")));
        }
        if problems.is_empty() {
            return Ok(plan);
        }
        Err(coded(
            Exit::Refused,
            format!("{refused}:\n{}", problems.join("\n")),
        ))
    }

    /// The file deploy uses: a compose file, or a stack file in swarm mode.
    /// The compose file deploy uses: [`Project::render_with`] the project's files as they
    /// are now.
    pub fn render(&self, plan: &Plan) -> Result<homebase_stack::render::Rendered> {
        self.render_with(plan, &self.source()?)
    }

    /// The compose file deploy uses, each built service's image tagged by its inputs.
    pub fn render_with(
        &self,
        plan: &Plan,
        source: &crate::source::Source,
    ) -> Result<homebase_stack::render::Rendered> {
        let compose = source.tagged(&self.compose);
        Ok(if self.swarm() {
            homebase_stack::swarm::render_swarm(plan, &compose, &self.config)?
        } else {
            homebase_stack::render::render(plan, &compose, &self.config.render)?
        })
    }

    /// The project's files the stack references, read and checked.
    pub fn source(&self) -> Result<crate::source::Source> {
        crate::source::Source::collect(&self.compose, &self.config, &self.root)
    }

    pub fn plan(&self, host_memory: Bytes) -> Result<Plan> {
        Ok(Plan::new(&self.config, &self.compose, host_memory)?)
    }
}
