//! What the tools take and give: their inputs (with the schemas clients see) and their
//! structured outputs.

use homebase_proto::{DeployEvent, IterationRecord, LoopStatus, ReleaseEntry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lenient;
use homebase_proto::BackupManifest as Manifest;

// ---- tool inputs ----

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoInput {}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanInput {
    /// Budget against this much host memory instead of budget.host_memory (`16GiB`).
    pub host_memory: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReleasesInput {
    /// The newest this many releases (default 20, at most 200).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsInput {
    /// The compose service.
    pub service: String,
    /// How many lines from the end (default 100, at most 500).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u32")]
    pub lines: Option<u32>,
    /// Only lines newer than this: `10m`, `2h`, or an RFC 3339 time.
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LoopInput {
    /// The loop's name (`[loops.NAME]` in homebase.toml).
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LoopHistoryInput {
    /// The loop's name (`[loops.NAME]` in homebase.toml).
    pub name: String,
    /// The newest this many iterations (default 20, at most 200).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LoopLogsInput {
    /// The loop's name (`[loops.NAME]` in homebase.toml).
    pub name: String,
    /// How many lines from the end of its output (default 100, at most 500).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u32")]
    pub lines: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RestartInput {
    /// The compose service whose containers to restart.
    pub service: String,
    /// Seconds to wait until it is running and healthy again (default 120).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u64")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeployInput {
    /// Redeploy even when the host already runs this exact release.
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "bool")]
    pub force: Option<bool>,
    /// Seconds to wait for every service to be running and healthy (default 120).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u64")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RollbackInput {
    /// The release to go back to (default: the one before the current); see `releases`.
    pub release: Option<String>,
    /// Seconds to wait for every service to be running and healthy (default 120).
    #[serde(default, deserialize_with = "lenient::opt")]
    #[schemars(with = "u64")]
    pub timeout_secs: Option<u64>,
}

// ---- tool outputs (beyond the CLI's own documents) ----

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Releases {
    pub current: Option<String>,
    /// Oldest first: the newest `limit` of the release log.
    pub releases: Vec<ReleaseEntry>,
    /// Older entries left out.
    pub omitted: usize,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Lines {
    /// The service or loop the lines are from.
    pub source: String,
    /// Oldest first; control characters escaped, long lines cut.
    pub lines: Vec<String>,
    /// Set when something was cut or redacted.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Loops {
    pub loops: Vec<LoopStatus>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct LoopHistory {
    pub name: String,
    /// Newest first.
    pub iterations: Vec<IterationRecord>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Backups {
    /// Oldest first.
    pub backups: Vec<Manifest>,
}

/// How a deploy or a rollback ended.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseRun {
    /// The new release is current and healthy (or the host already ran it).
    pub ok: bool,
    /// homebase's exit code: 0 ok, 1 refused or rolled back, 2 bad input, 3 unreachable,
    /// 4 locked, 130 interrupted.
    pub exit_code: i32,
    /// The release-log line it wrote.
    pub release: Option<ReleaseEntry>,
    /// Its steps, as `deploy --json` reported them.
    pub steps: Vec<DeployEvent>,
    /// Why it failed: the CLI's error text.
    pub error: Option<String>,
}
