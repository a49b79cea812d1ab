//! `homebase.toml`: which compose files make the project, where it runs, and the memory
//! budget and priorities of its services.
//!
//! Precedence: command-line flags > environment (`HOMEBASE__SECTION__KEY`) > file > defaults.
//! The CLI applies flags; this module applies the environment, handed in as a map.

use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::units::Bytes;

mod parse;

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
    /// What the project's loops may spend together, and the calendar of every cap.
    #[serde(default)]
    pub spend: crate::spend::SpendSection,
    /// The hosts of a swarm (`project.mode = "swarm"`), in order; the first is the manager
    /// unless one says `manager = true`.
    #[serde(default)]
    pub nodes: IndexMap<String, NodeSection>,
    /// What `homebase mcp` lets a coding agent do beyond reading.
    #[serde(default)]
    pub mcp: McpSection,
    /// The project's own files that deploy brings to the host (`[files]`).
    #[serde(default)]
    pub files: FilesSection,
}

/// `[files]`: how much of the project's own code a deploy may carry to the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    /// The most the files the stack references may weigh together; a larger tree (a
    /// `node_modules` nobody ignored) is refused before the host changes.
    #[serde(default = "default_files_max_size", deserialize_with = "size_required")]
    pub max_size: Bytes,
}

fn default_files_max_size() -> Bytes {
    Bytes(256 * 1024 * 1024)
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            max_size: default_files_max_size(),
        }
    }
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
    /// A shell command that starts the Docker engine when it stops answering (default:
    /// `colima start` where Colima is installed, as the user's LaunchAgent would; nothing
    /// elsewhere: a Linux engine is its service manager's).
    pub engine_start: Option<String>,
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
            engine_start: None,
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
    /// An OpenSSH configuration file to read instead of ~/.ssh/config (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// How long the SSH connection stays open after a command, for the next one to use
    /// without a handshake (0: a connection per command).
    #[serde(default = "default_persist")]
    pub persist_secs: u64,
    /// Further ways to the same host (a tailnet name, another address), tried when the
    /// first does not answer; the host's key is checked under `ssh`'s name on every way.
    #[serde(default)]
    pub also: Vec<String>,
    /// A relay the host keeps a reverse tunnel to: the way in from anywhere, with no port
    /// open at home.
    pub relay: Option<RelaySection>,
}

/// `[host.relay]`: any SSH server both the laptop and the host reach (a small VPS). The
/// host keeps `ssh -R 127.0.0.1:<tunnel_port>:127.0.0.1:22` to it (the daemon does, from
/// `homebase setup` on); the laptop reaches the host through it, the host's own key
/// checked end to end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// The relay's ssh destination (`user@host`, an `~/.ssh/config` alias).
    pub ssh: String,
    /// The relay's sshd port (default: what ssh's configuration says, else 22).
    pub port: Option<u16>,
    /// The port on the relay's loopback that leads to the host's sshd.
    #[serde(default = "default_tunnel_port")]
    pub tunnel_port: u16,
    /// The laptop's key for the relay (default: ssh's own choice).
    pub identity_file: Option<PathBuf>,
    /// The laptop's known-hosts file for the relay (default: ssh's own).
    pub known_hosts_file: Option<PathBuf>,
}

fn default_tunnel_port() -> u16 {
    2222
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
            ssh_config: None,
            connect_timeout_secs: default_connect_timeout(),
            persist_secs: default_persist(),
            also: Vec::new(),
            relay: None,
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

impl BudgetSection {
    /// The host memory the budget is taken from: the configured size, else `detected` (the
    /// engine's MemTotal).
    pub fn host(&self, detected: Bytes) -> Bytes {
        match self.host_memory {
            HostMemory::Size(b) => b,
            HostMemory::Detect => detected,
        }
    }

    /// The memory budget: the host's memory × `target`.
    pub fn of(&self, host_memory: Bytes) -> Bytes {
        Bytes((host_memory.0 as f64 * self.target) as u64)
    }
}

impl Config {
    /// A service's priority, and why when it is the default: homebase.toml's
    /// `services.NAME.priority`, else its kind's (a database is critical). The plan and the
    /// daemon's governor both take it from here.
    pub fn priority_of(
        &self,
        name: &str,
        svc: &crate::model::Service,
    ) -> (Priority, Option<&'static str>) {
        if let Some(p) = self.services.get(name).and_then(|s| s.priority) {
            return (p, None);
        }
        let p = crate::kinds::Kind::of(svc.image_repo().as_deref()).default_priority();
        let why = if p == Priority::Critical {
            "a database"
        } else {
            "not a database"
        };
        (p, Some(why))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("homebase.toml"), text, &IndexMap::new())
    }

    #[test]
    fn the_ways_to_a_host_are_read_and_bad_ones_refused_with_the_fix() {
        let c = parse(
            "[project]\nname = \"p\"\n[host]\nssh = \"me@mini.lan\"\nalso = [\"me@mini.ts.net\"]\n[host.relay]\nssh = \"me@vps\"\n",
        )
        .unwrap();
        assert_eq!(c.host.also, ["me@mini.ts.net"]);
        let r = c.host.relay.unwrap();
        assert_eq!(
            (r.ssh.as_str(), r.tunnel_port, r.port),
            ("me@vps", 2222, None)
        );
        for (toml, says) in [
            (
                "[host]\nrelay = { ssh = \"me@vps\" }\n",
                "host.ssh is `local`",
            ),
            (
                "[host]\nssh = \"m\"\nalso = [\"-oProxyCommand=x\"]\n",
                "host.also has `-oProxyCommand=x`",
            ),
            (
                "[host]\nssh = \"m\"\nrelay = { ssh = \"local\" }\n",
                "not an ssh destination",
            ),
            (
                "[host]\nssh = \"m\"\nrelay = { ssh = \"me@vps\", tunnel_port = 22 }\n",
                "privileged port",
            ),
            (
                "[host]\nssh = \"m\"\nrelay = { ssh = \"me@vps\", tunel_port = 2000 }\n",
                "tunel_port",
            ),
        ] {
            let e = parse(&format!("[project]\nname = \"p\"\n{toml}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
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
    fn the_budget_and_priorities_follow_one_rule() {
        let c = parse("[project]\nname = \"demo\"\n[budget]\ntarget = 0.5\n[services.cache]\npriority = \"critical\"\n").unwrap();
        assert_eq!(c.budget.host(Bytes(16 << 30)), Bytes(16 << 30));
        assert_eq!(c.budget.of(Bytes(16 << 30)), Bytes(8 << 30));
        let sized =
            parse("[project]\nname = \"demo\"\n[budget]\nhost_memory = \"8GiB\"\n").unwrap();
        assert_eq!(sized.budget.host(Bytes(16 << 30)), Bytes(8 << 30));
        assert_eq!(sized.budget.of(Bytes(10 << 30)), Bytes(8 << 30));
        let service = |image: &str| {
            let raw: serde_norway::Mapping =
                serde_norway::from_str(&format!("image: {image}\n")).unwrap();
            crate::model::Service::from_raw("x", raw, Path::new("compose.yml")).unwrap()
        };
        assert_eq!(
            c.priority_of("db", &service("pgvector/pgvector:pg17")),
            (Priority::Critical, Some("a database"))
        );
        assert_eq!(
            c.priority_of("api", &service("brain-api:1")),
            (Priority::Normal, Some("not a database"))
        );
        assert_eq!(
            c.priority_of("cache", &service("brain-api:1")),
            (Priority::Critical, None)
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("[project]\nname = \"demo\"\n[budget]\ntarget = 0.8\nhost_mem = \"16GiB\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `host_mem`"), "{e}");
    }
}
