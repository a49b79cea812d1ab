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

mod sandbox;

pub use sandbox::{DEFAULT_CAPABILITIES, Sandbox, normalize_path, refused_mount};

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
pub(super) fn default_true() -> bool {
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
