//! Finding and loading the project: homebase.toml (searched upwards), its compose files and
//! their variables, validated once into objects the commands use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use homebase_stack::cluster::ClusterPlan;
use homebase_stack::config::{FILE_NAME, HostMemory, Mode, NodeSection};
use homebase_stack::{Bytes, ComposeProject, Config, LoadOptions, Plan};
use indexmap::IndexMap;

use crate::exit::{Exit, coded};
use crate::link::Link;

pub struct Project {
    /// The directory holding homebase.toml; compose paths are relative to it.
    pub root: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    pub compose: ComposeProject,
}

/// Where to find the project and how to read it: the CLI's global flags.
#[derive(Debug, Default, Clone)]
pub struct LoadArgs {
    /// `--config`: homebase.toml itself.
    pub config: Option<PathBuf>,
    /// `--directory`: where the search for homebase.toml starts (else the current one).
    pub directory: Option<PathBuf>,
    /// `--env-file`: instead of the project's own env files.
    pub env_files: Vec<PathBuf>,
    /// `--profile`: added to the project's profiles.
    pub profiles: Vec<String>,
}

/// The process environment as a map (the stack crate never reads it itself).
pub fn process_env() -> IndexMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

pub fn start_dir(global: &LoadArgs) -> Result<PathBuf> {
    match &global.directory {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().context("cannot read the current directory"),
    }
}

/// homebase.toml from `--config`, else the nearest one from the start directory upwards.
pub fn find_config(global: &LoadArgs) -> Result<PathBuf> {
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

pub fn load(global: &LoadArgs) -> Result<Project> {
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
    })
}

impl Project {
    /// The host memory to budget against and where the number came from; `detect` reads
    /// it through `link`.
    pub fn host_memory(&self, link: &Link, flag: Option<&str>) -> Result<(Bytes, String)> {
        if let Some(f) = flag {
            let b = Bytes::parse(f)
                .map_err(|e| coded(Exit::BadInput, format!("--host-memory: {e}")))?;
            return Ok((b, "--host-memory".into()));
        }
        if self.swarm() {
            let nodes = link.node_memory()?;
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
                let (bytes, host) = link.engine_memory(None)?;
                Ok((bytes, format!("detected on {host}")))
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

    /// Where each task of the stack can go (swarm mode): `None` in single mode.
    pub fn cluster_plan(&self, link: &Link, plan: &Plan) -> Result<Option<ClusterPlan>> {
        if !self.swarm() {
            return Ok(None);
        }
        let memory = link.node_memory()?;
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
    pub fn plan_that_fits(
        &self,
        link: &Link,
        host_memory_flag: Option<&str>,
        refused: &str,
    ) -> Result<Plan> {
        let (host_memory, _) = self.host_memory(link, host_memory_flag)?;
        let plan = self.plan(host_memory)?;
        let cluster = self.cluster_plan(link, &plan)?;
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
