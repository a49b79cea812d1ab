//! Wire types: the JSON documents `homebase … --json` prints (and, later, the daemon's API
//! serves). Defined once here so both ends agree; domain types stay free of serde.
//!
//! Invariant: only additive changes; a field once published keeps its name and meaning.

use serde::{Deserialize, Serialize};

/// `homebase plan --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanReport {
    pub project: String,
    pub services: Vec<ServicePlan>,
    /// Services left out because their profiles are not enabled.
    pub inactive: Vec<String>,
    pub totals: Totals,
    pub host_memory_bytes: u64,
    pub host_memory_source: String,
    pub target: f64,
    pub budget_bytes: u64,
    /// budget minus peak; negative when over budget.
    pub headroom_bytes: i64,
    pub fits: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub sustained_bytes: u64,
    pub peak_bytes: u64,
}

/// A failure, as printed with `--json` when a command fails.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorReport {
    pub error: String,
    pub exit_code: i32,
}
