//! `homebase.toml`: which compose files make the project, where it runs, and the memory
//! budget and priorities of its services.
//!
//! Precedence: command-line flags > environment (`HOMEBASE__SECTION__KEY`) > file > defaults.
//! The CLI applies flags; this module applies the environment, handed in as a map.

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::units::Bytes;

pub const FILE_NAME: &str = "homebase.toml";
/// Environment overrides: `HOMEBASE__BUDGET__TARGET=0.7`, `HOMEBASE__SERVICES__RALPH__MEMORY=3GiB`.
pub const ENV_PREFIX: &str = "HOMEBASE__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable `{var}`: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub project: ProjectSection,
    #[serde(default)]
    pub host: HostSection,
    #[serde(default)]
    pub budget: BudgetSection,
    #[serde(default)]
    pub render: RenderSection,
    #[serde(default)]
    pub services: IndexMap<String, ServiceSection>,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub backup: BackupSection,
    /// Agent loops the host daemon runs (`[loops.NAME]`).
    #[serde(default)]
    pub loops: IndexMap<String, crate::loops::LoopSection>,
    /// The hosts of a swarm (`project.mode = "swarm"`), in order; the first is the manager
    /// unless one says `manager = true`.
    #[serde(default)]
    pub nodes: IndexMap<String, NodeSection>,
    /// What `homebase mcp` lets a coding agent do beyond reading.
    #[serde(default)]
    pub mcp: McpSection,
}

/// `[mcp]`: the tools `homebase mcp` offers that change the host. Reading tools are always
/// there; these only when named in `allow`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    #[serde(default)]
    pub allow: Vec<McpPermission>,
}

/// A group of tools that change the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpPermission {
    /// `loop_start`, `loop_stop`, `loop_pause`, `loop_resume`.
    LoopControl,
    /// `restart`: one service's containers.
    Restart,
    /// `deploy`: the stack as it is on the laptop.
    Deploy,
    /// `rollback`: to an earlier release.
    Rollback,
}

impl McpPermission {
    pub fn name(self) -> &'static str {
        match self {
            McpPermission::LoopControl => "loop_control",
            McpPermission::Restart => "restart",
            McpPermission::Deploy => "deploy",
            McpPermission::Rollback => "rollback",
        }
    }
}

impl Config {
    /// The swarm manager's name and section (swarm mode only).
    pub fn manager(&self) -> Option<(&String, &NodeSection)> {
        self.nodes
            .iter()
            .find(|(_, n)| n.manager)
            .or_else(|| self.nodes.first())
    }
}

/// Backups kept on the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// The newest backup of each of this many days is kept.
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    /// The newest backup of each of this many weeks is kept.
    #[serde(default = "default_keep_weekly")]
    pub keep_weekly: u32,
    /// `daily` (the host daemon takes one a day) or `off`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// The hour (UTC, 0–23) after which the daily backup is taken.
    #[serde(default = "default_at_hour")]
    pub at_hour: u32,
}

fn default_schedule() -> String {
    "daily".into()
}
fn default_at_hour() -> u32 {
    3
}

fn default_keep_daily() -> u32 {
    7
}
fn default_keep_weekly() -> u32 {
    4
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            keep_daily: default_keep_daily(),
            keep_weekly: default_keep_weekly(),
            schedule: default_schedule(),
            at_hour: default_at_hour(),
        }
    }
}

/// How the host daemon watches this project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Sampling interval of container stats.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Share of the budget above which the governor pauses batch, then normal services.
    #[serde(default = "default_high")]
    pub high_watermark: f64,
    /// Share of the budget below which paused services are resumed.
    #[serde(default = "default_low")]
    pub low_watermark: f64,
    /// A container restarted this many times within `crash_loop_minutes` is a crash loop.
    #[serde(default = "default_crash_restarts")]
    pub crash_loop_restarts: u32,
    #[serde(default = "default_crash_minutes")]
    pub crash_loop_minutes: u64,
    /// Seconds a container may stay unhealthy before the daemon restarts it.
    #[serde(default = "default_unhealthy_grace")]
    pub unhealthy_grace_secs: u64,
    /// Alert when Docker's data root has less free space than this share (percent).
    #[serde(default = "default_disk_low")]
    pub disk_low_percent: f64,
}

fn default_disk_low() -> f64 {
    10.0
}

fn default_interval_ms() -> u64 {
    2000
}
fn default_high() -> f64 {
    0.90
}
fn default_low() -> f64 {
    0.75
}
fn default_crash_restarts() -> u32 {
    5
}
fn default_crash_minutes() -> u64 {
    5
}
fn default_unhealthy_grace() -> u64 {
    10
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            interval_ms: default_interval_ms(),
            high_watermark: default_high(),
            low_watermark: default_low(),
            crash_loop_restarts: default_crash_restarts(),
            crash_loop_minutes: default_crash_minutes(),
            unhealthy_grace_secs: default_unhealthy_grace(),
            disk_low_percent: default_disk_low(),
        }
    }
}

/// Where alerts go. Each is optional; every alert goes to all that are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// A URL that receives a JSON POST per alert.
    pub webhook: Option<String>,
    /// An ntfy topic URL (`https://ntfy.sh/my-topic`).
    pub ntfy: Option<String>,
    /// A Slack incoming-webhook URL.
    pub slack: Option<String>,
    /// A Discord webhook URL.
    pub discord: Option<String>,
    /// The same alert is not sent again within this many seconds.
    #[serde(default = "default_cooldown")]
    pub cooldown_secs: u64,
}

fn default_cooldown() -> u64 {
    300
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            webhook: None,
            ntfy: None,
            slack: None,
            discord: None,
            cooldown_secs: default_cooldown(),
        }
    }
}

impl AlertsSection {
    /// The configuration with the webhook URLs (which carry secrets) hidden.
    pub fn redacted(&self) -> String {
        let show = |v: &Option<String>| v.as_ref().map(|_| "<set>").unwrap_or("-");
        format!(
            "webhook {}, ntfy {}, slack {}, discord {}",
            show(&self.webhook),
            show(&self.ntfy),
            show(&self.slack),
            show(&self.discord)
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    pub name: String,
    #[serde(default = "default_compose")]
    pub compose: Vec<PathBuf>,
    /// `--env-file`s for interpolation; default: `.env` beside the first compose file.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    #[serde(default)]
    pub profiles: Vec<String>,
    /// `single` (one host, Docker Compose) or `swarm` (the `[nodes]`, Docker Swarm).
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Single,
    Swarm,
}

/// One host of a swarm (`[nodes.NAME]`). SSH options not given here come from `[host]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// An ssh destination (`user@host`, an `~/.ssh/config` alias).
    pub ssh: String,
    /// The swarm manager (default: the first node). One manager per cluster.
    #[serde(default)]
    pub manager: bool,
    /// The node's memory (`detect`: its engine's MemTotal).
    #[serde(default)]
    pub memory: HostMemory,
    /// Node labels, for placement constraints (`node.labels.role == db`).
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// The address other nodes reach this one at (default: the host part of `ssh`).
    pub advertise_addr: Option<String>,
    pub port: Option<u16>,
}

impl NodeSection {
    /// The address swarm traffic uses.
    pub fn address(&self) -> String {
        self.advertise_addr.clone().unwrap_or_else(|| {
            let host = self.ssh.rsplit('@').next().unwrap_or(&self.ssh);
            host.to_string()
        })
    }
}

fn default_compose() -> Vec<PathBuf> {
    vec![PathBuf::from("compose.yml")]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// An ssh destination (`user@host`, an `~/.ssh/config` alias) or `local`.
    #[serde(default = "default_ssh")]
    pub ssh: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// How long the SSH connection stays open after a command, for the next one to use
    /// without a handshake (0: a connection per command).
    #[serde(default = "default_persist")]
    pub persist_secs: u64,
}

fn default_ssh() -> String {
    "local".into()
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_persist() -> u64 {
    300
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            ssh: default_ssh(),
            port: None,
            identity_file: None,
            known_hosts_file: None,
            connect_timeout_secs: default_connect_timeout(),
            persist_secs: default_persist(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    #[serde(default)]
    pub host_memory: HostMemory,
    #[serde(default = "default_target")]
    pub target: f64,
}

fn default_target() -> f64 {
    0.80
}

impl Default for BudgetSection {
    fn default() -> Self {
        BudgetSection {
            host_memory: HostMemory::default(),
            target: default_target(),
        }
    }
}

/// The host's memory: a size, or `detect` (the engine's MemTotal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostMemory {
    Size(Bytes),
    #[default]
    Detect,
}

impl<'de> Deserialize<'de> for HostMemory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Memory::deserialize(d)?;
        Ok(match m.0 {
            None => HostMemory::Detect,
            Some(b) => HostMemory::Size(b),
        })
    }
}

/// A memory size in homebase.toml: `"2GiB"`, `"512m"`, or a number of bytes.
/// (`detect` deserializes to `None`, accepted only where it makes sense.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub Option<Bytes>);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a memory size such as \"2GiB\" or \"512m\"")
        })? {
            Raw::Int(n) => Ok(Memory(Some(Bytes(n)))),
            Raw::Str(s) if s.eq_ignore_ascii_case("detect") => Ok(Memory(None)),
            Raw::Str(s) => Bytes::parse(&s)
                .map(|b| Memory(Some(b)))
                .map_err(serde::de::Error::custom),
        }
    }
}

pub(crate) fn size_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    size(d)?.ok_or_else(|| serde::de::Error::custom("expected a memory size such as \"2GiB\""))
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
    match Memory::deserialize(d)?.0 {
        Some(b) => Ok(Some(b)),
        None => Err(serde::de::Error::custom(
            "`detect` only applies to budget.host_memory",
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Killed last, never paused by the memory governor (databases).
    Critical,
    Normal,
    /// Paused first under memory pressure (agent loops, batch jobs).
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Batch => "batch",
        }
    }

    /// `oom_score_adj` so that the kernel kills batch work before databases. Never
    /// negative: lowering it needs CAP_SYS_RESOURCE, which rootless and sandboxed engines
    /// lack (runc then fails to start the container); the order is what matters.
    pub fn oom_score_adj(self) -> i64 {
        match self {
            Priority::Critical => 0,
            Priority::Normal => 300,
            Priority::Batch => 600,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub priority: Option<Priority>,
    /// Memory limit; overrides the compose file.
    #[serde(default, deserialize_with = "size")]
    pub memory: Option<Bytes>,
    /// Expected steady use; becomes the reservation.
    #[serde(default, deserialize_with = "size")]
    pub sustained: Option<Bytes>,
    /// Local port for the tunnel to this service's first published port.
    pub local_port: Option<u16>,
    /// HTTP path probed through the tunnel (`/health`).
    pub health_path: Option<String>,
    /// Swarm: placement constraints, as Swarm writes them (`node.labels.role == db`).
    #[serde(default)]
    pub placement: Vec<String>,
    /// Swarm: pin to this node of `[nodes]` (where its volume is).
    pub node: Option<String>,
    /// Swarm: how many tasks (default 1).
    pub replicas: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderSection {
    /// json-file log rotation: size of one file and how many are kept.
    #[serde(default = "default_log_max_size")]
    pub log_max_size: String,
    #[serde(default = "default_log_max_file")]
    pub log_max_file: u32,
    /// Restart policy for services that set none.
    #[serde(default = "default_restart")]
    pub restart: String,
    /// Derive memory settings (PostgreSQL, Neo4j, Node.js, JVM) from each limit.
    #[serde(default = "default_true")]
    pub tune: bool,
}

fn default_log_max_size() -> String {
    "10m".into()
}
fn default_log_max_file() -> u32 {
    3
}
fn default_restart() -> String {
    "unless-stopped".into()
}
fn default_true() -> bool {
    true
}

impl Default for RenderSection {
    fn default() -> Self {
        RenderSection {
            log_max_size: default_log_max_size(),
            log_max_file: default_log_max_file(),
            restart: default_restart(),
            tune: true,
        }
    }
}

impl Config {
    /// Parses `text` (read from `path`) and applies `HOMEBASE__…` variables from `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &IndexMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        apply_env(&mut table, env)?;
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn load(path: &Path, env: &IndexMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text, env)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let name = &self.project.name;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(err(format!(
                "project.name `{name}` is not a valid Compose project name: use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
            )));
        }
        if self.project.compose.is_empty() {
            return Err(err(
                "project.compose is empty: name at least one compose file".into(),
            ));
        }
        if !(self.budget.target > 0.0 && self.budget.target <= 1.0) {
            return Err(err(format!(
                "budget.target = {} is out of range: give the share of host memory the stack may use, between 0 and 1 (for example 0.80)",
                self.budget.target
            )));
        }
        let d = &self.daemon;
        if !(0.0 < d.low_watermark && d.low_watermark < d.high_watermark && d.high_watermark <= 1.0)
        {
            return Err(err(format!(
                "daemon.low_watermark ({}) must be below daemon.high_watermark ({}), both between 0 and 1",
                d.low_watermark, d.high_watermark
            )));
        }
        if !matches!(self.backup.schedule.as_str(), "daily" | "off") || self.backup.at_hour > 23 {
            return Err(err(format!(
                "backup.schedule = `{}`, at_hour = {}: use schedule = \"daily\" or \"off\" and an hour from 0 to 23 (UTC)",
                self.backup.schedule, self.backup.at_hour
            )));
        }
        if d.interval_ms < 200 {
            return Err(err(format!(
                "daemon.interval_ms = {} is too short: use 200 or more",
                d.interval_ms
            )));
        }
        for (name, l) in &self.loops {
            l.validate(name).map_err(err)?;
        }
        if self.project.mode == Mode::Swarm {
            if self.nodes.is_empty() {
                return Err(err(
                    "project.mode = \"swarm\" needs at least one [nodes.NAME] with an ssh destination".into(),
                ));
            }
            let managers = self.nodes.values().filter(|n| n.manager).count();
            if managers > 1 {
                return Err(err(format!(
                    "{managers} nodes say manager = true; homebase runs one manager: keep it on one node"
                )));
            }
            for (svc, s) in &self.services {
                if let Some(node) = &s.node
                    && !self.nodes.contains_key(node)
                {
                    let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
                    return Err(err(format!(
                        "services.{svc}.node = `{node}` is not in [nodes]{}",
                        crate::error::did_you_mean(node, known.iter().copied())
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_else(|| format!("; the nodes are: {}", known.join(", ")))
                    )));
                }
                for c in &s.placement {
                    crate::cluster::Constraint::parse(c)
                        .map_err(|e| err(format!("services.{svc}.placement: {e}")))?;
                }
            }
        } else if !self.nodes.is_empty() {
            return Err(err(
                "[nodes] is set but project.mode is not \"swarm\": add mode = \"swarm\" under [project], or remove [nodes]".into(),
            ));
        }
        for (svc, s) in &self.services {
            if let (Some(limit), Some(sustained)) = (s.memory, s.sustained)
                && sustained > limit
            {
                return Err(err(format!(
                    "services.{svc}: sustained ({sustained}) is above memory ({limit}); a reservation cannot exceed the limit: raise memory or lower sustained"
                )));
            }
        }
        Ok(())
    }
}

/// Overlays `HOMEBASE__A__B=value` onto the table at `a.b`. Values are read as TOML when
/// they parse as a TOML value (numbers, booleans, arrays), else as strings.
fn apply_env(table: &mut toml::Table, env: &IndexMap<String, String>) -> Result<(), ConfigError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) || parts.len() < 2 {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "expected `HOMEBASE__SECTION__KEY` (sections and keys separated by double underscores)".into(),
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut cur = &mut *table;
        for (i, part) in parts.iter().enumerate() {
            // service names may contain `-`, which environment names cannot
            let key = cur
                .keys()
                .find(|k| k.to_ascii_lowercase().replace('-', "_") == part.replace('-', "_"))
                .cloned()
                .unwrap_or_else(|| part.clone());
            if i == parts.len() - 1 {
                cur.insert(key, parsed.clone());
                break;
            }
            let entry = cur
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(next) = entry else {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("`{part}` is not a section"),
                });
            };
            cur = next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("homebase.toml"), text, &IndexMap::new())
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse("[project]\nname = \"demo\"\n").unwrap();
        assert_eq!(c.project.compose, [PathBuf::from("compose.yml")]);
        assert_eq!(c.host.ssh, "local");
        assert_eq!(c.budget.host_memory, HostMemory::Detect);
        assert_eq!(c.budget.target, 0.8);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: IndexMap<String, String> = [
            ("HOMEBASE__BUDGET__TARGET", "0.5"),
            ("HOMEBASE__BUDGET__HOST_MEMORY", "8GiB"),
            ("HOMEBASE__SERVICES__BRAIN_API__MEMORY", "3GiB"),
            ("HOMEBASE__HOST__SSH", "me@mini"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::parse(
            Path::new("homebase.toml"),
            "[project]\nname = \"demo\"\n[services.brain-api]\nmemory = \"1GiB\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.budget.target, 0.5);
        assert_eq!(c.budget.host_memory, HostMemory::Size(Bytes(8 << 30)));
        assert_eq!(c.services["brain-api"].memory, Some(Bytes(3 << 30)));
        assert_eq!(c.host.ssh, "me@mini");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("[project]\nname = \"demo\"\n[budget]\ntarget = 0.8\nhost_mem = \"16GiB\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `host_mem`"), "{e}");
    }
}
