//! Wire types: the JSON documents `homebase … --json` prints (and, later, the daemon's API
//! serves). Defined once here so both ends agree; domain types stay free of serde.
//!
//! Invariant: only additive changes; a field once published keeps its name and meaning.

pub mod clock;
pub mod layout;
pub mod relay;
mod reports;

pub use reports::*;
pub mod sys;
pub mod text;

/// Health from the engine's status text (`Up 5 minutes (healthy)`): `healthy`,
/// `unhealthy`, `starting`, or empty when the container has no healthcheck.
pub fn health_from_status(status: &str) -> &'static str {
    if status.contains("(unhealthy)") {
        "unhealthy"
    } else if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("health: starting") {
        "starting"
    } else {
        ""
    }
}

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `homebase plan --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlanReport {
    pub project: String,
    pub services: Vec<ServicePlan>,
    /// Services left out because their profiles are not enabled.
    pub inactive: Vec<String>,
    /// Agent loops (`[loops.NAME]`): one iteration at a time, each within its limit.
    #[serde(default)]
    pub loops: Vec<LoopPlan>,
    pub totals: Totals,
    pub host_memory_bytes: u64,
    pub host_memory_source: String,
    pub target: f64,
    pub budget_bytes: u64,
    /// budget minus peak; negative when over budget.
    pub headroom_bytes: i64,
    pub fits: bool,
    pub problems: Vec<String>,
    /// Swarm mode: where the check placed each task (Swarm does the real placing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<NodePlan>>,
    /// The project's own files a deploy carries to the host, and the images built there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesPlan>,
}

/// The project's files in `homebase plan --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FilesPlan {
    /// How many files the stack references (build contexts, bind mounts, env files, …).
    pub files: u64,
    pub bytes: u64,
    /// Whether the list is git's (tracked plus untracked not ignored) or a walk less
    /// `.dockerignore`.
    pub from_git: bool,
    /// Services whose image the host builds, with the tag.
    pub builds: Vec<BuildPlan>,
}

/// A service the host builds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BuildPlan {
    pub service: String,
    pub image: String,
}

/// A node of the swarm in `homebase plan --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct NodePlan {
    pub name: String,
    pub budget_bytes: u64,
    pub reserved_bytes: u64,
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    pub image: Option<String>,
    pub kind: String,
    pub limit_bytes: Option<u64>,
    pub limit_source: Option<String>,
    pub reservation_bytes: Option<u64>,
    pub reservation_source: Option<String>,
    pub priority: String,
    pub priority_source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LoopPlan {
    pub name: String,
    pub image: String,
    pub limit_bytes: u64,
    pub priority: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Totals {
    pub sustained_bytes: u64,
    pub peak_bytes: u64,
}

/// A failure, as printed with `--json` when a command fails.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ErrorReport {
    pub error: String,
    pub exit_code: i32,
}

/// One line of the host's release log (`~/.homebase/<project>/releases.jsonl`) and of
/// `homebase releases --json`: the current release and the release log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ReleasesReport {
    pub current: Option<String>,
    pub releases: Vec<ReleaseEntry>,
}

/// A line of the release log (`releases.jsonl` on the host).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ReleaseEntry {
    pub id: String,
    /// Unix seconds.
    pub time: u64,
    pub user: String,
    pub git_commit: Option<String>,
    pub git_dirty: bool,
    pub config_hash: String,
    /// `deployed`, `up-to-date`, `rolled-back`, `failed`, `rollback`.
    pub outcome: String,
    pub duration_ms: u64,
    /// For a rollback: the release it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `homebase status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StatusReport {
    pub project: String,
    pub host: String,
    /// The current release id, if the project was deployed.
    pub release: Option<String>,
    pub services: Vec<ServiceStatus>,
    /// Every planned service running, and healthy where it has a healthcheck.
    pub healthy: bool,
    /// `running at 127.0.0.1:7780`, or why the engine's view is shown instead.
    #[serde(default)]
    pub daemon: String,
    /// Active alerts, from the daemon.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// The daemon's latest events (newest first).
    #[serde(default)]
    pub events: Vec<EventRow>,
    /// Probes through the running `homebase tunnel`, when one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelProbe>,
    /// The project's agent loops, from the daemon.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<LoopStatus>,
    /// Swarm mode: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
}

/// An agent loop as the daemon runs it (`/api/loops`, `homebase loop ls --json`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
pub struct LoopStatus {
    pub project: String,
    pub name: String,
    /// `active`, `paused`, `stopped`, `completed`, `exhausted` (max iterations), `idle`
    /// (not started yet).
    pub state: String,
    /// Why the loop is in that state (`completion marker in iteration 7`).
    pub reason: String,
    /// Runs are numbered from 1; `homebase loop start` begins a new one.
    pub run: i64,
    /// Iterations of the current run.
    pub iterations: i64,
    pub max_iterations: Option<u32>,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Unix seconds at which an open breaker allows its trial iteration.
    pub breaker_until: Option<i64>,
    /// Set while an iteration runs: its number and start (Unix seconds).
    pub running: Option<RunningIteration>,
    /// What the loop waits for before its next iteration (`pause`, `rate limit`,
    /// `usage limit`, `memory`, `breaker`, `schedule`, `changes`), and until when.
    pub waiting: Option<String>,
    pub wait_until: Option<i64>,
    pub image: String,
    pub memory_limit_bytes: u64,
    pub priority: String,
    pub mode: String,
    pub last: Option<IterationRecord>,
    /// `text`, `json` or `stream-json`: whether the agent's result (and its cost) is read.
    #[serde(default)]
    pub output_format: String,
    /// What the agent spent (loops that read its result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<LoopSpend>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RunningIteration {
    pub n: i64,
    pub started: i64,
    pub container: String,
}

/// One recorded iteration (`homebase loop history --json`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct IterationRecord {
    pub id: i64,
    pub run: i64,
    pub n: i64,
    /// Unix seconds.
    pub started: i64,
    pub ended: Option<i64>,
    /// `running`, `ok`, `error`, `completed`, `timeout`, `oom`, `usage_limit`, `stopped`,
    /// `interrupted`, `failed_to_start`.
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    /// Files added, changed or removed in the workspace; `None` when it cannot be seen.
    pub files_changed: Option<i64>,
    /// `git diff --shortstat` against the commit before the iteration, when a git checkout.
    pub diffstat: Option<String>,
    /// The end of the output (at most a few KB).
    pub tail: String,
    pub note: String,
    /// The commit on the loop's branch after the iteration (`workspace = "git"`: what the
    /// agent left uncommitted is committed for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What the agent reported in its result (loops with `output_format = "json"` or
    /// `"stream-json"` whose output ended with a valid result object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<AgentResult>,
}

/// The result an agent printed at the end of an iteration (Claude Code's `type: "result"`
/// object), as homebase accepted it: every figure checked, none negative or absurd.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AgentResult {
    /// `success`, `error_max_turns`, `error_during_execution`, …
    pub subtype: String,
    pub is_error: bool,
    /// What the agent spent, in the currency it reports (Claude Code: US dollars).
    pub cost_usd: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub turns: Option<u64>,
    pub duration_ms: Option<u64>,
    pub session_id: Option<String>,
}

impl AgentResult {
    /// Every token the agent reported (input, output, cache writes and reads): what the
    /// token caps count.
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_tokens)
            .saturating_add(self.cache_read_tokens)
    }
}

/// A loop's spend as its agent reported it: the last iteration, today, this month and the
/// last hour (the days and months of `[spend] time_zone`), beside its caps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LoopSpend {
    pub last_cost_usd: Option<f64>,
    pub last_tokens: Option<u64>,
    pub today_cost_usd: f64,
    pub today_tokens: u64,
    pub month_cost_usd: f64,
    pub month_tokens: u64,
    /// Spent in the last 60 minutes: the rate per hour.
    pub hour_cost_usd: f64,
    pub hour_tokens: u64,
    /// Iterations of today that reported a result.
    pub today_results: u64,
    pub max_cost_per_day: Option<f64>,
    pub max_cost_per_month: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub max_tokens_per_month: Option<u64>,
    /// Unix seconds: the start of today and of this month in the caps' calendar.
    pub day_start: i64,
    pub month_start: i64,
}

/// `homebase loop pull NAME --json`: what came from the loop's branch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LoopPullReport {
    pub name: String,
    /// The branch in the laptop's repository (`homebase/NAME`).
    pub branch: String,
    /// Its tip, and the tip it had before (`None`: it is new).
    pub head: String,
    pub before: Option<String>,
    /// The commits that came, oldest first: id and subject.
    pub commits: Vec<PulledCommit>,
    /// `git diff --shortstat` of the branch against the laptop's HEAD's merge base.
    pub shortstat: String,
    /// The files it changes against that base.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PulledCommit {
    pub id: String,
    pub subject: String,
}

/// A service probed through the tunnel.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TunnelProbe {
    pub service: String,
    pub local_port: u16,
    pub probe: String,
    pub ok: bool,
    pub rtt_ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    /// `running`, `exited`, `paused`, `restarting`, `missing`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `none` when the service has no healthcheck.
    pub health: String,
    pub uptime_secs: Option<u64>,
    pub restarts: u64,
    pub memory_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub container: Option<String>,
    /// Swarm mode: the nodes its running tasks are on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl ServiceStatus {
    /// A planned service with no container on the host.
    pub fn missing(name: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.to_string(),
            state: "missing".into(),
            health: "none".into(),
            uptime_secs: None,
            restarts: 0,
            memory_bytes: None,
            limit_bytes: None,
            container: None,
            nodes: Vec::new(),
        }
    }
}

/// A node of the swarm (`homebase nodes --json`, `status`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
pub struct NodeStatus {
    /// Its name in [nodes] (the `homebase.node` label), else its hostname.
    pub name: String,
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    pub leader: bool,
    /// `ready`, `down`, `unknown`, `disconnected`; `not joined` for a configured node that
    /// is not in the swarm.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub address: String,
    pub memory_bytes: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Services with a running task there.
    pub tasks: Vec<String>,
}

/// `homebase restart --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RestartReport {
    pub service: String,
    /// The containers restarted (compose mode) or the swarm service updated.
    pub containers: Vec<String>,
    /// Running and healthy (or without a healthcheck) within the timeout.
    pub healthy: bool,
    pub ms: u64,
}

/// A step of `homebase deploy --json`, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DeployEvent {
    /// `step`, `done`, `failed`, `rollback`, `result`.
    pub event: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

/// An alert raised by the daemon (`/api/status`, webhooks).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Alert {
    /// `down`, `unhealthy`, `oom`, `crash_loop`, `memory`, `daemon_restarted`, …
    pub kind: String,
    pub project: String,
    pub service: String,
    pub message: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Unix seconds.
    pub time: i64,
    /// The host the daemon runs on.
    pub host: String,
}

/// One entry of the daemon's event log (`/api/events`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct EventRow {
    pub ts: i64,
    pub project: String,
    pub service: String,
    pub kind: String,
    pub message: String,
}

/// Whether `s` may name a release, a backup or a file of one on the host and on the laptop:
/// letters, digits, `.`, `_` and `-`, at most 128 characters, not starting with `.` (so
/// never `..`, a hidden name or a path). Ids and names read back from the host (release
/// logs, manifests) are checked with it before they reach a path or a script.
/// A test message sent to one project's alert sinks (`POST /api/alerts/test`): which sinks
/// are configured and which of them failed to take it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
pub struct AlertTest {
    pub project: String,
    /// The configured sinks: `webhook`, `ntfy`, `slack`, `discord`.
    pub sinks: Vec<String>,
    /// One line per sink that did not accept the message (`ntfy: connection refused`).
    pub failed: Vec<String>,
}

pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The Swarm node label homebase puts on every node with its name from `[nodes]`: what
/// placement constraints pin to and what the daemon names a node by.
pub const NODE_LABEL: &str = "homebase.node";

/// The daemon's view of the host (`/api/status`, and each `snapshot` message of its event
/// stream): what it sampled in its last round, every watched project and its services, the
/// active alerts and the loops. Read by `homebase status` and the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    pub ts: i64,
    pub host: String,
    pub mem_total: u64,
    /// Space on the filesystem of Docker's data root, when the daemon can see it (on a Mac
    /// the data root is inside Colima's VM and is not visible).
    pub disk: Option<Disk>,
    pub projects: Vec<ProjectSnap>,
    pub alerts: Vec<Alert>,
    /// Agent loops of the watched projects.
    pub loops: Vec<LoopStatus>,
    /// On a swarm manager: every node and the services running there.
    pub nodes: Vec<NodeStatus>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disk {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct ProjectSnap {
    pub name: String,
    pub release: String,
    pub budget_bytes: u64,
    pub memory_bytes: u64,
    /// Git commit of the release's config directory, from the release log.
    pub commit: Option<String>,
    pub services: Vec<ServiceSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct ServiceSnap {
    pub name: String,
    pub container: String,
    pub state: String,
    pub health: String,
    pub priority: String,
    pub memory_bytes: u64,
    pub limit_bytes: u64,
    pub cpu_percent: f64,
    /// The engine's own words: `Up 5 minutes (healthy)`, `Exited (137) 3 seconds ago`.
    pub status_text: String,
    /// Set while the memory governor holds the service paused or stopped.
    pub governed: Option<String>,
    /// Set when the daemon gave up on a crash loop.
    pub gave_up: bool,
    /// When the container last started (RFC 3339); empty when the engine did not say.
    pub started_at: String,
    /// Restarts the engine made of it.
    pub restarts: u64,
}

/// One sample of a service's memory and CPU in the daemon's history (averaged over the
/// resolution when coarser than raw).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub ts: i64,
    pub memory_bytes: f64,
    pub cpu_percent: f64,
}

/// `/api/history`: a service's samples over a time range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub project: String,
    pub service: String,
    /// 0 for raw samples, else the seconds each point averages.
    pub resolution_secs: i64,
    pub points: Vec<Point>,
}

/// A message of the daemon's live stream (`/api/stream`, server-sent events): the whole
/// view after each round, and each event as it happens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamMessage {
    Snapshot {
        snapshot: Snapshot,
    },
    Event {
        ts: i64,
        project: String,
        service: String,
        kind: String,
        message: String,
    },
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn safe_names() {
        for ok in ["20261201-183000", "db.pgdump", "data-0.tar.gz", "a_b"] {
            assert!(super::is_safe_name(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/etc", ".hidden", "a b", "a;b", "$(id)", "a\nb",
        ] {
            assert!(!super::is_safe_name(bad), "{bad:?}");
        }
        assert!(!super::is_safe_name(&"a".repeat(129)));
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    #[test]
    fn stream_messages_carry_their_type_as_the_dashboard_reads_it() {
        let e = StreamMessage::Event {
            ts: 5,
            project: "p".into(),
            service: "db".into(),
            kind: "restart".into(),
            message: "m".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["service"], "db");
        let s = StreamMessage::Snapshot {
            snapshot: Snapshot {
                ts: 7,
                projects: vec![ProjectSnap {
                    name: "p".into(),
                    services: vec![ServiceSnap {
                        name: "db".into(),
                        restarts: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        let text = serde_json::to_string(&s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["snapshot"]["projects"][0]["services"][0]["restarts"], 2);
        assert_eq!(serde_json::from_str::<StreamMessage>(&text).unwrap(), s);
    }

    #[test]
    fn a_snapshot_missing_newer_fields_still_reads() {
        // an older daemon's view: no restarts, started_at, disk or nodes
        let old = r#"{"ts":1,"host":"h","mem_total":8,"projects":[{"name":"p","release":"r","budget_bytes":1,"memory_bytes":1,"services":[{"name":"db","container":"p-db-1","state":"running","health":"healthy","memory_bytes":3,"limit_bytes":4}]}],"alerts":[],"loops":[],"errors":[]}"#;
        let s: Snapshot = serde_json::from_str(old).unwrap();
        assert_eq!(s.projects[0].services[0].restarts, 0);
        assert_eq!(s.projects[0].services[0].started_at, "");
        assert_eq!(s.disk, None);
    }
}
