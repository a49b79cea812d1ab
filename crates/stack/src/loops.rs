//! `[loops.NAME]` in homebase.toml: agent loops the host daemon runs, one fresh,
//! memory-limited container per iteration, until the work is done.
//!
//! ```toml
//! [loops.ralph]
//! image = "homebase/claude-code:latest"
//! command = 'claude -p "$(cat PROMPT.md)" --dangerously-skip-permissions'
//! workspace = "git"                 # a checkout of the project's own repository (or a host
//!                                   # path, or "volume:NAME")
//! memory = "2GiB"
//! timeout = "30m"
//! env_files = ["ralph.env"]         # secrets: uploaded with the release, mode 0600
//! completion_file = "prd.json"      # done when every story has "passes": true
//! max_per_hour = 20
//! ```

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::{Priority, size_required};
use crate::units::Bytes;

/// `workspace = "git"`: the project's own repository (see [`LoopSection::git_workspace`]).
pub const GIT_WORKSPACE: &str = "git";

pub const DEFAULT_MARKER: &str = "<promise>COMPLETE</promise>";
/// What Claude Code and similar agents print when a plan's usage limit is reached.
pub const DEFAULT_USAGE_LIMIT_PATTERN: &str =
    r"(?i)(usage limit reached|usage limit exceeded|you've hit your limit|hit your usage limit)";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSection {
    /// The image of one iteration (it must exist on the host or be pullable); empty when
    /// `build` makes it.
    #[serde(default)]
    pub image: String,
    /// Build the iteration's image on the host from the project's files, as Compose's
    /// `build:` does: a context directory (relative to homebase.toml), or a table with
    /// `context`, `dockerfile`, `args` and `target`.
    pub build: Option<LoopBuild>,
    /// One iteration: a string runs under `sh -c`, a list runs as it is.
    pub command: LoopCommand,
    /// A host path (absolute or `~/…`) or `volume:NAME`; mounted at `workdir`.
    /// Default: `~/.homebase/<project>/loops/<name>/workspace` on the host. `git`: that
    /// directory as a checkout of the project's own repository on branch
    /// `homebase/<name>`, brought by each deploy (see [`LoopSection::git_workspace`]).
    pub workspace: Option<String>,
    #[serde(default = "default_workdir")]
    pub workdir: String,
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Files of `KEY=value` lines (API keys): uploaded with each release, mode 0600,
    /// never printed.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// Memory limit of one iteration's container (no swap beyond it).
    #[serde(deserialize_with = "size_required")]
    pub memory: Bytes,
    /// An iteration running longer is killed and recorded as timed out.
    #[serde(default = "default_timeout", with = "dur")]
    pub timeout: Duration,
    /// `batch` by default: the kernel kills an iteration before a database.
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Pause between iterations.
    #[serde(default, with = "dur")]
    pub pause: Duration,
    /// Iterations of one run; the run ends (exhausted) when reached.
    pub max_iterations: Option<u32>,
    /// When to iterate: `continuous`, `schedule` (one iteration per `every`) or `on_change`
    /// (when files in the workspace change).
    #[serde(default)]
    pub run: RunMode,
    /// The interval of `run = "schedule"`.
    #[serde(default, with = "opt_dur")]
    pub every: Option<Duration>,
    /// Start a run as soon as the loop is deployed (`false`: on `homebase loop start`).
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// The run completes when an iteration's output contains this.
    #[serde(default = "default_marker")]
    pub completion_marker: String,
    /// A JSON file in the workspace: the run completes when every object in it that has a
    /// `passes` field has `"passes": true` (the Ralph `prd.json`).
    pub completion_file: Option<String>,
    /// The breaker opens after this many iterations in a row without file changes.
    #[serde(default = "default_no_progress")]
    pub breaker_no_progress: u32,
    /// … or after this many identical errors in a row.
    #[serde(default = "default_same_error")]
    pub breaker_same_error: u32,
    /// How long an open breaker waits before one trial iteration.
    #[serde(default = "default_cooldown", with = "dur")]
    pub breaker_cooldown: Duration,
    /// At most this many iterations start in any hour.
    pub max_per_hour: Option<u32>,
    /// A regular expression; output matching it means the agent hit a usage limit.
    #[serde(default = "default_usage_pattern")]
    pub usage_limit_pattern: String,
    /// Wait after a usage limit when the output names no reset time.
    #[serde(default = "default_usage_backoff", with = "dur")]
    pub usage_limit_backoff: Duration,
    /// Run the iteration as this user (`1000:1000`), as `docker run --user`.
    pub user: Option<String>,
    /// What the agent prints: `text`, or its result as JSON at the end of its output
    /// (`json`, `stream-json`: Claude Code's `--output-format`), from which homebase reads
    /// the iteration's cost, tokens and outcome.
    #[serde(default)]
    pub output_format: OutputFormat,
    /// Caps on what this loop's agent reports it spent (see [`crate::spend`]): no new
    /// iteration starts once one is reached, until the period turns.
    pub max_cost_per_day: Option<f64>,
    pub max_cost_per_month: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_tokens_per_month: Option<u64>,
    /// The iteration container's walls (hardened by default; relax one item at a time).
    #[serde(default)]
    pub sandbox: Sandbox,
}

/// The capabilities an iteration keeps by default: enough for a root process in the image
/// to own, read and write its own files and switch users (package managers, `su`); nothing
/// that reaches the network stack, devices, the kernel or other processes' namespaces.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// Capabilities that would hand an agent the host (`sandbox.capabilities` refuses them).
const REFUSED_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_BOOT",
    "DAC_READ_SEARCH",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "BPF",
    "PERFMON",
    "NET_ADMIN",
    "SYSLOG",
];

/// `loops.NAME.output_format`: how the agent ends its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Plain text: outcomes from the exit code and text patterns, no cost.
    #[default]
    Text,
    /// One JSON result object (`claude -p … --output-format json`).
    Json,
    /// JSON lines, the result object last (`--output-format stream-json`).
    StreamJson,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Text => "text",
            OutputFormat::Json => "json",
            OutputFormat::StreamJson => "stream-json",
        }
    }
}

/// A loop's `build`: a context directory, or Compose's build keys that a loop needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LoopBuild {
    Context(String),
    Full(LoopBuildTable),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopBuildTable {
    #[serde(default = "default_context")]
    pub context: String,
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub args: IndexMap<String, String>,
    pub target: Option<String>,
}

fn default_context() -> String {
    ".".into()
}

impl LoopBuild {
    /// The build as a Compose `build:` mapping (`context` as written).
    pub fn to_compose(&self) -> serde_norway::Value {
        use serde_norway::{Mapping, Value};
        let mut m = Mapping::new();
        match self {
            LoopBuild::Context(c) => {
                m.insert("context".into(), Value::String(c.clone()));
            }
            LoopBuild::Full(t) => {
                m.insert("context".into(), Value::String(t.context.clone()));
                if let Some(d) = &t.dockerfile {
                    m.insert("dockerfile".into(), Value::String(d.clone()));
                }
                if !t.args.is_empty() {
                    let args: Mapping = t
                        .args
                        .iter()
                        .map(|(k, v)| (Value::String(k.clone()), Value::String(v.clone())))
                        .collect();
                    m.insert("args".into(), Value::Mapping(args));
                }
                if let Some(tg) = &t.target {
                    m.insert("target".into(), Value::String(tg.clone()));
                }
            }
        }
        Value::Mapping(m)
    }
}

/// `[loops.NAME.sandbox]`: what an iteration container may do. The agent in it runs with
/// every permission and reads untrusted text, so by default it gets no new privileges,
/// only [`DEFAULT_CAPABILITIES`], a pids limit, its own network namespace, and the
/// workspace as the only writable host path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Capabilities added to the default set (`NET_RAW`, `NET_BIND_SERVICE`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `false` lets setuid binaries in the image gain privileges (`sudo` inside).
    #[serde(default = "default_true")]
    pub no_new_privileges: bool,
    /// Most processes (and threads) at once; `0` for no limit.
    #[serde(default = "default_pids")]
    pub pids_limit: u32,
    /// `bridge` (default, the engine's NAT network), `none`, or a user network's name.
    /// `host` is refused: the agent would reach every port on the host.
    #[serde(default = "default_network")]
    pub network: String,
    /// Extra host paths, `SRC:DST`, always mounted read-only (credentials, a git config).
    #[serde(default)]
    pub mounts: Vec<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            capabilities: Vec::new(),
            no_new_privileges: true,
            pids_limit: default_pids(),
            network: default_network(),
            mounts: Vec::new(),
        }
    }
}

fn default_pids() -> u32 {
    1024
}
fn default_network() -> String {
    "bridge".into()
}

impl Sandbox {
    /// The capabilities the container keeps (default set plus the configured ones).
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        for c in &self.capabilities {
            let c = normalize_cap(c);
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    }

    /// Each extra mount as (host path, container path).
    pub fn mount_pairs(&self) -> Vec<(String, String)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let m = m.strip_suffix(":ro").unwrap_or(m);
                m.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect()
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        for c in &self.capabilities {
            let n = normalize_cap(c);
            let valid = !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            if !valid {
                return Err(format!(
                    "loops.{name}.sandbox.capabilities: `{c}` is not a capability name (for example \"NET_RAW\")"
                ));
            }
            if REFUSED_CAPABILITIES.contains(&n.as_str()) {
                return Err(format!(
                    "loops.{name}.sandbox.capabilities: `{c}` would give the agent the host; \
                     run such work as a compose service you control instead of an agent loop"
                ));
            }
        }
        let net = self.network.trim();
        if net == "host" || net.starts_with("container:") {
            return Err(format!(
                "loops.{name}.sandbox.network = \"{net}\": an agent must not share the host's \
                 (or another container's) network; use \"bridge\" (default), \"none\" or a network's name"
            ));
        }
        if net.is_empty() {
            return Err(format!(
                "loops.{name}.sandbox.network is empty: leave it out for \"bridge\""
            ));
        }
        for m in &self.mounts {
            let spec = m.strip_suffix(":ro").unwrap_or(m);
            if m.ends_with(":rw") {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: extra mounts are read-only; the workspace is \
                     the only writable host path (put what the agent writes there)"
                ));
            }
            let Some((src, dst)) = spec.split_once(':') else {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: write it as \"HOST_PATH:CONTAINER_PATH\""
                ));
            };
            if !(src.starts_with('/') || src.starts_with("~/")) || !dst.starts_with('/') {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: the host path must be absolute or `~/…`, \
                     the container path absolute"
                ));
            }
            if let Some(why) = refused_mount(src, None, &[]) {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{src}` {why}; mount only the files the agent needs"
                ));
            }
        }
        Ok(())
    }
}

/// `path` with `.` and `..` resolved by their names (no filesystem access), `~` kept as
/// the first component; `None` when `..` would climb above the root.
pub fn normalize_path(path: &str) -> Option<String> {
    let (lead, rest) = match path.strip_prefix('~') {
        Some(r) if r.is_empty() || r.starts_with('/') => ("~", r),
        _ => ("", path),
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(format!("{lead}/{}", parts.join("/")))
}

/// Directories under home that hold the keys to the host (ssh keys, homebase's token and
/// state, engine credentials and the VM with the engine).
const PRIVATE_UNDER_HOME: &[&str] = &[
    ".ssh",
    ".homebase",
    ".docker",
    ".colima",
    ".gnupg",
    ".aws",
    ".kube",
    ".config/gh",
];
/// System paths an agent must not see any part of.
const PRIVATE_SYSTEM: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/private/etc",
    "/private/var/run",
];

fn is_within(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

/// Why an extra read-only mount of `src` would hand the agent the host, or `None`.
/// Refused: a path that is, contains or lies inside `~/.ssh`, `~/.homebase`, `~/.docker`,
/// `~/.colima` (and the like), `/etc` and the system's virtual trees, the engine's data root
/// or socket (`private`: the daemon passes the real ones), any `.sock`; a path that is home
/// itself or contains it. `home`: the host's home when known (the daemon, after resolving
/// links); on the laptop `~` and `/home/USER`, `/Users/USER`, `/root` stand for it.
pub fn refused_mount(src: &str, home: Option<&str>, private: &[&str]) -> Option<String> {
    let Some(p) = normalize_path(src) else {
        return Some("climbs above the root with `..`".into());
    };
    let p = match (home, p.strip_prefix('~')) {
        (Some(h), Some(rest)) => format!("{}{rest}", h.trim_end_matches('/')),
        _ => p,
    };
    let p = p.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    // the homes this path may be: `~`, the host's, or the usual places of one
    let mut homes: Vec<String> = vec!["~".into()];
    if let Some(h) = home {
        homes.push(h.trim_end_matches('/').to_string());
    }
    let homeish = |d: &str| {
        homes.iter().any(|h| h == d)
            || d == "/root"
            || (d.split('/').filter(|c| !c.is_empty()).count() == 2
                && (d.starts_with("/home/") || d.starts_with("/Users/")))
    };
    if p == "/" || p == "~" || homeish(p) || ["/home", "/Users"].contains(&p) {
        return Some(
            "is a home directory or contains one (its keys and homebase's token with it)".into(),
        );
    }
    if let Some(h) = home
        && is_within(h.trim_end_matches('/'), p)
    {
        return Some("contains the home directory (its keys and homebase's token with it)".into());
    }
    if p.ends_with(".sock") || p.contains("docker.sock") {
        return Some("is a socket: an engine's socket is the host".into());
    }
    if comps.iter().any(|c| PRIVATE_UNDER_HOME.contains(c)) || p.contains("/.config/gh") {
        return Some(
            "is or lies in a directory of keys (ssh, homebase, the engine, its VM)".into(),
        );
    }
    for d in PRIVATE_SYSTEM
        .iter()
        .copied()
        .chain(private.iter().copied())
    {
        let d = d.trim_end_matches('/');
        if d.is_empty() {
            continue;
        }
        if is_within(p, d) || is_within(d, p) {
            return Some(format!(
                "is, contains or lies in `{d}` (the host's system or the engine)"
            ));
        }
    }
    // a directory holding a home's private directories: `/home/u/..` spelled otherwise
    for h in &homes {
        for d in PRIVATE_UNDER_HOME {
            if is_within(&format!("{h}/{d}"), p) {
                return Some(format!("contains `{h}/{d}`"));
            }
        }
    }
    None
}

fn normalize_cap(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LoopCommand {
    Shell(String),
    Exec(Vec<String>),
}

impl LoopCommand {
    /// The container's command.
    pub fn argv(&self) -> Vec<String> {
        match self {
            LoopCommand::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            LoopCommand::Exec(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    Continuous,
    Schedule,
    OnChange,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Continuous => "continuous",
            RunMode::Schedule => "schedule",
            RunMode::OnChange => "on_change",
        }
    }
}

/// Where an iteration's workspace lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspace {
    /// A host directory (bind mount); `~/` is the daemon user's home.
    Path(String),
    /// A named Docker volume.
    Volume(String),
}

impl LoopSection {
    /// The workspace is a checkout of the project's own repository: deploy pushes the
    /// laptop's commit to the host, the loop works on branch `homebase/<name>` (its default
    /// workspace directory), each iteration's changes are committed, and `homebase loop
    /// pull` brings the branch back.
    pub fn git_workspace(&self) -> bool {
        self.workspace.as_deref() == Some(GIT_WORKSPACE)
    }

    pub fn workspace(&self, project: &str, name: &str) -> Workspace {
        if self.git_workspace() {
            return Workspace::Path(homebase_proto::layout::default_workspace(project, name));
        }
        match &self.workspace {
            Some(w) => match w.strip_prefix("volume:") {
                Some(v) => Workspace::Volume(v.to_string()),
                None => Workspace::Path(w.clone()),
            },
            None => Workspace::Path(homebase_proto::layout::default_workspace(project, name)),
        }
    }

    /// The loop's own caps.
    pub fn caps(&self) -> crate::spend::Caps {
        crate::spend::Caps {
            cost_per_day: self.max_cost_per_day,
            cost_per_month: self.max_cost_per_month,
            tokens_per_day: self.max_tokens_per_day,
            tokens_per_month: self.max_tokens_per_month,
        }
    }

    /// The agent ends its output with a result homebase reads.
    pub fn reads_result(&self) -> bool {
        self.output_format != OutputFormat::Text
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), String> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!(
                "loops.{name}: a loop name may use letters, digits, `-` and `_` only"
            ));
        }
        if self.image.trim().is_empty() && self.build.is_none() {
            return Err(format!(
                "loops.{name}: name the image of one iteration (`image = \"…\"`), or have the host build it from the project (`build = \"./dir\"`)"
            ));
        }
        if !self.image.trim().is_empty() && self.build.is_some() {
            return Err(format!(
                "loops.{name}: set `image` or `build`, not both (a built image is tagged by homebase)"
            ));
        }
        if matches!(&self.command, LoopCommand::Exec(v) if v.is_empty())
            || matches!(&self.command, LoopCommand::Shell(s) if s.trim().is_empty())
        {
            return Err(format!(
                "loops.{name}.command is empty: give the command of one iteration"
            ));
        }
        if let Some(w) = self.workspace.as_ref().filter(|_| !self.git_workspace()) {
            let ok = w.starts_with('/')
                || w.starts_with("~/")
                || w.strip_prefix("volume:").is_some_and(|v| !v.is_empty());
            if !ok {
                return Err(format!(
                    "loops.{name}.workspace = `{w}`: use `git` (a checkout of the project's repository), an absolute host path, `~/…`, or `volume:NAME`"
                ));
            }
        }
        if !self.workdir.starts_with('/') {
            return Err(format!(
                "loops.{name}.workdir = `{}`: use an absolute path inside the container",
                self.workdir
            ));
        }
        if self.memory.0 < 6 << 20 {
            return Err(format!(
                "loops.{name}.memory = {} is below Docker's minimum of 6 MiB",
                self.memory
            ));
        }
        if self.timeout.is_zero() {
            return Err(format!("loops.{name}.timeout must be above zero"));
        }
        match (self.run, self.every) {
            (RunMode::Schedule, None) => {
                return Err(format!(
                    "loops.{name}: run = \"schedule\" needs `every` (for example every = \"1h\")"
                ));
            }
            (RunMode::Schedule, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(format!(
                    "loops.{name}.every applies only to run = \"schedule\""
                ));
            }
        }
        if self.max_per_hour == Some(0) || self.max_iterations == Some(0) {
            return Err(format!(
                "loops.{name}: max_per_hour and max_iterations must be at least 1 (leave them out for no limit)"
            ));
        }
        if let Err(e) = regex_syntax_check(&self.usage_limit_pattern) {
            return Err(format!(
                "loops.{name}.usage_limit_pattern is not a valid regular expression: {e}"
            ));
        }
        self.sandbox.validate(name)?;
        let caps = self.caps();
        caps.validate(&format!("loops.{name}"))?;
        if !caps.is_empty() && !self.reads_result() {
            return Err(format!(
                "loops.{name}: a cost or token cap needs the agent's result: set output_format = \"json\" or \"stream-json\" and run the agent with that output (claude -p … --output-format stream-json)"
            ));
        }
        if self.completion_marker.is_empty() {
            return Err(format!(
                "loops.{name}.completion_marker is empty: leave it out for the default `{DEFAULT_MARKER}`"
            ));
        }
        Ok(())
    }
}

/// The pattern's syntax, checked without compiling (this crate keeps to parsing);
/// the daemon compiles it.
fn regex_syntax_check(pattern: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string().lines().last().unwrap_or_default().to_string())
}

fn default_workdir() -> String {
    "/workspace".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_priority() -> Priority {
    Priority::Batch
}
fn default_true() -> bool {
    true
}
fn default_marker() -> String {
    DEFAULT_MARKER.into()
}
fn default_no_progress() -> u32 {
    3
}
fn default_same_error() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_usage_pattern() -> String {
    DEFAULT_USAGE_LIMIT_PATTERN.into()
}
fn default_usage_backoff() -> Duration {
    Duration::from_secs(3600)
}

/// Durations as `"30m"`, `"1h 30m"`, `"90s"`, or a number of seconds.
mod dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"30m\", \"90s\" or \"1h 30m\"")
        })? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{t}`: {e}; write it like \"30m\", \"90s\" or \"1h 30m\""
                ))
            }),
        }
    }
}

mod opt_dur {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::dur::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(
            Path::new("homebase.toml"),
            &format!("[project]\nname = \"p\"\n{text}"),
            &Default::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_loop_with_defaults() {
        let c =
            parse("[loops.ralph]\nimage = \"cc\"\ncommand = \"claude -p hi\"\nmemory = \"2GiB\"\n")
                .unwrap();
        let l = &c.loops["ralph"];
        assert_eq!(l.command.argv(), ["sh", "-c", "claude -p hi"]);
        assert_eq!(l.timeout.as_secs(), 1800);
        assert_eq!(l.breaker_no_progress, 3);
        assert_eq!(l.breaker_same_error, 5);
        assert_eq!(l.breaker_cooldown.as_secs(), 1800);
        assert_eq!(l.completion_marker, super::DEFAULT_MARKER);
        assert_eq!(l.priority, crate::config::Priority::Batch);
        assert_eq!(
            l.workspace("p", "ralph"),
            super::Workspace::Path("~/.homebase/p/loops/ralph/workspace".into())
        );
        assert!(l.autostart);
    }

    #[test]
    fn durations_and_modes() {
        let c = parse(
            "[loops.nightly]\nimage = \"cc\"\ncommand = [\"run\", \"it\"]\nmemory = \"1g\"\ntimeout = \"1h 30m\"\npause = 5\nrun = \"schedule\"\nevery = \"6h\"\nworkspace = \"volume:ws\"\n",
        )
        .unwrap();
        let l = &c.loops["nightly"];
        assert_eq!(l.timeout.as_secs(), 5400);
        assert_eq!(l.pause.as_secs(), 5);
        assert_eq!(l.every.map(|d| d.as_secs()), Some(6 * 3600));
        assert_eq!(
            l.workspace("p", "nightly"),
            super::Workspace::Volume("ws".into())
        );
    }

    #[test]
    fn bad_loops_are_explained() {
        let base = "image = \"cc\"\ncommand = \"x\"\nmemory = \"1g\"\n";
        for (extra, want) in [
            ("timeout = \"soon\"", "invalid duration `soon`"),
            ("run = \"schedule\"", "needs `every`"),
            ("workspace = \"relative/dir\"", "an absolute host path"),
            (
                "usage_limit_pattern = \"(unclosed\"",
                "not a valid regular expression",
            ),
            ("max_per_hour = 0", "at least 1"),
            ("memory_limit = \"1g\"", "unknown field `memory_limit`"),
            (
                "sandbox = { network = \"host\" }",
                "must not share the host's",
            ),
            (
                "sandbox = { network = \"container:db\" }",
                "must not share the host's",
            ),
            (
                "sandbox = { mounts = [\"/var/run/docker.sock:/var/run/docker.sock\"] }",
                "an engine's socket is the host",
            ),
            (
                "sandbox = { mounts = [\"~/.colima/default/docker.sock:/d.sock\"] }",
                "an engine's socket is the host",
            ),
            (
                "sandbox = { mounts = [\"~/.gitconfig:/root/.gitconfig:rw\"] }",
                "extra mounts are read-only",
            ),
            (
                "sandbox = { capabilities = [\"SYS_ADMIN\"] }",
                "would give the agent the host",
            ),
            (
                "sandbox = { capabilities = [\"cap_all\"] }",
                "would give the agent the host",
            ),
            (
                "sandbox = { capabilities = [\"net raw\"] }",
                "is not a capability name",
            ),
            (
                "sandbox = { privileged = true }",
                "unknown field `privileged`",
            ),
        ] {
            let e = parse(&format!("[loops.l]\n{base}{extra}\n")).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = parse("[loops.l]\nimage = \"cc\"\ncommand = \"x\"\n").unwrap_err();
        assert!(e.contains("missing field `memory`"), "{e}");
    }

    #[test]
    fn mounts_of_keys_homes_and_the_engine_are_refused_however_spelled() {
        use super::refused_mount;
        for p in [
            "~/.ssh/id_ed25519",
            "~/.homebase/daemon/token",
            "~",
            "~/",
            "~/work/../.ssh",
            "~/.colima/default",
            "/etc/shadow",
            "/etc",
            "/var/lib/docker",
            "/var/lib",
            "/",
            "/home",
            "/home/u",
            "/home/u/.docker/config.json",
            "/Users/u",
            "/root",
            "~/../../etc",
            "/x/../../etc",
            "/tmp/d.sock",
        ] {
            assert!(refused_mount(p, None, &[]).is_some(), "{p} was accepted");
        }
        for p in [
            "~/.gitconfig",
            "/opt/creds/key.json",
            "~/work/notes",
            "/home/u/work",
        ] {
            assert_eq!(refused_mount(p, None, &[]), None, "{p}");
        }
        // on the host: the real home and engine, after links are resolved
        let home = Some("/srv/users/u");
        for p in [
            "/srv/users/u",
            "/srv/users",
            "/srv",
            "/srv/users/u/.ssh",
            "/data/docker/volumes/x",
        ] {
            assert!(
                refused_mount(p, home, &["/data/docker"]).is_some(),
                "{p} was accepted"
            );
        }
        assert_eq!(
            refused_mount("/srv/users/u/.gitconfig", home, &["/data/docker"]),
            None
        );
        assert_eq!(refused_mount("~/.gitconfig", home, &[]), None);
        assert!(refused_mount("~/.ssh", home, &[]).is_some());
    }

    #[test]
    fn the_sandbox_is_hardened_by_default_and_relaxed_item_by_item() {
        let base = "[loops.l]\nimage = \"cc\"\ncommand = \"x\"\nmemory = \"1g\"\n";
        let c = parse(base).unwrap();
        let s = &c.loops["l"].sandbox;
        assert!(s.no_new_privileges);
        assert_eq!(s.pids_limit, 1024);
        assert_eq!(s.network, "bridge");
        assert_eq!(s.capabilities(), super::DEFAULT_CAPABILITIES);
        let c = parse(&format!(
            "{base}[loops.l.sandbox]\ncapabilities = [\"cap_net_raw\", \"CHOWN\"]\nno_new_privileges = false\npids_limit = 0\nnetwork = \"none\"\nmounts = [\"~/.gitconfig:/home/agent/.gitconfig:ro\"]\n"
        ))
        .unwrap();
        let s = &c.loops["l"].sandbox;
        assert!(!s.no_new_privileges);
        assert_eq!(s.capabilities().last().map(String::as_str), Some("NET_RAW"));
        assert_eq!(
            s.capabilities().len(),
            super::DEFAULT_CAPABILITIES.len() + 1
        );
        assert_eq!(
            s.mount_pairs(),
            [(
                "~/.gitconfig".to_string(),
                "/home/agent/.gitconfig".to_string()
            )]
        );
    }
}
