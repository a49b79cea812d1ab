//! The documents of the commands that report what they did (`setup`, `preflight`,
//! `backup`, `dash`, `tunnel`, the final line of `deploy` and `rollback`) and the daemon's
//! sign-in answers: printed with `--json` or sent over the API, typed on both ends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ReleaseEntry;

/// One item of `setup` or `preflight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckItem {
    pub name: String,
    /// `ok`, `changed`, `missing`, `warning`.
    pub state: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckItem {
    pub fn new(
        name: &str,
        state: &str,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> CheckItem {
        CheckItem {
            name: name.into(),
            state: state.into(),
            detail: detail.into(),
            fix,
        }
    }
}

/// `setup --json`, `preflight --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Checklist {
    pub items: Vec<CheckItem>,
    /// Something was changed by this run.
    pub changed: bool,
    /// Nothing is missing.
    pub ready: bool,
}

/// A backup on the host: `backups/<id>/manifest.json`, and what `backup ls --json` lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BackupManifest {
    pub id: String,
    pub project: String,
    pub time: u64,
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    /// A manifest read from the host is only believed when its id is its directory's name,
    /// it is this project's, and every name in it is a plain file name: it decides paths
    /// on the laptop and words in scripts on the host.
    pub fn check(&self, dir_name: &str, project: &str) -> Result<(), String> {
        if !crate::is_safe_name(&self.id) || self.id != dir_name {
            return Err(format!(
                "its manifest's id `{}` is not its directory's name",
                self.id.escape_debug()
            ));
        }
        if self.project != project {
            return Err(format!(
                "its manifest names another project (`{}`)",
                self.project.escape_debug()
            ));
        }
        for f in &self.files {
            let service_ok = crate::is_safe_name(&f.service);
            let node_ok = f.node.as_deref().is_none_or(crate::is_safe_name);
            if !crate::is_safe_name(&f.file) || !service_ok || !node_ok {
                return Err(format!(
                    "its manifest lists an unsafe file name `{}`",
                    f.file.escape_debug()
                ));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("`{}` has no valid SHA-256", f.file.escape_debug()));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BackupFile {
    pub service: String,
    /// `pg_dump` or `volume`.
    pub kind: String,
    /// For `volume`: the path in the container it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// Swarm mode: the node that ran the service and keeps this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `backup now --json` (the daemon reads it after a scheduled backup): the backup taken
/// (no files: nothing of the stack to back up) and the ids pruned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BackupReport {
    pub backup: BackupManifest,
    pub pruned: Vec<String>,
}

/// `backup pull --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BackupPulled {
    pub id: String,
    pub to: String,
    pub files: usize,
    /// Every file's checksum checked against the manifest.
    pub verified: bool,
}

/// `dash --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DashOpened {
    pub url: String,
    pub local_port: u16,
    pub browser_opened: bool,
}

/// `POST /api/login-code`: a one-time code for a browser.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LoginCode {
    pub code: String,
    pub expires_in: i64,
}

/// `POST /api/session`: a dashboard session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DashSession {
    pub session: String,
    pub expires_in: i64,
}

/// The last line of `deploy --json` and `rollback --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ReleaseResult {
    /// Always `result`.
    pub event: String,
    pub release: ReleaseEntry,
}

impl ReleaseResult {
    pub fn new(release: ReleaseEntry) -> ReleaseResult {
        ReleaseResult {
            event: "result".into(),
            release,
        }
    }
}

/// The resource `homebase://release/current` of the MCP server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CurrentRelease {
    pub current: Option<String>,
    pub record: Option<ReleaseEntry>,
}

/// A forward of `homebase tunnel`, as its events show it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TunnelForward {
    pub service: String,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
    /// Set when the wanted local port was taken and another was used.
    pub remapped_from: Option<u16>,
}

/// A line of `tunnel --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TunnelEvent {
    /// The tunnel goes another way to the host than before.
    Way {
        via: String,
    },
    /// A wanted local port was taken.
    Remapped {
        service: String,
        from: u16,
        to: u16,
    },
    /// Swarm moved a service to another node.
    Moved {
        service: String,
        from: String,
        to: String,
    },
    Down {
        reason: String,
        retry_ms: u64,
    },
    Up {
        ssh_pid: u32,
        reconnects: u32,
        forwards: Vec<TunnelForward>,
    },
}

/// `tunnel --check --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TunnelCheck {
    pub host: String,
    /// `running tunnel` or `one-off connection`, as the check says.
    pub via: String,
    pub services: Vec<TunnelCheckService>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TunnelCheckService {
    pub service: String,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
    pub probe: String,
    pub ok: bool,
    pub rtt_ms: f64,
    /// Over the plan's 100 ms.
    pub slow: bool,
    pub detail: String,
}

/// The deploy lock's holder line on the host (the lock symlink's target): who holds it,
/// the laptop process and the host process that hold it, since when, and the token that
/// releases it. An older homebase's line lacks `job` and `host_pid`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LockHolder {
    #[serde(default)]
    pub holder: String,
    /// The process (on the laptop, or the job's on the host) that took it.
    #[serde(default)]
    pub pid: u64,
    #[serde(default)]
    pub time: u64,
    #[serde(default)]
    pub token: String,
    /// Held by the release job on the host, not by a laptop.
    #[serde(default)]
    pub job: bool,
    /// The process on the host whose life is the lock's: appended by the script that takes
    /// it (`$$`), so it is always the last key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<u64>,
}
