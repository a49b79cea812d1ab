//! `homebase mcp`: the project's stack and agent loops as Model Context Protocol tools for the
//! user's coding agent, over stdio (built on `rmcp`, the official Rust SDK).
//!
//! Every tool runs one `homebase … --json` child of this very binary, for the same project
//! (`--config`, the same env files, profiles and daemon directory): the answers, the errors
//! (word for word) and the exit codes are the CLI's, a tool call keeps its own signal
//! handling and standard output (this process's stdout is the protocol), and the child
//! reuses the warm SSH connection, so a call costs what the command costs.
//!
//! What leaves here is bounded and scrubbed: log lines and history rows are capped, long
//! strings cut with a note, control characters escaped, and every value of the project's
//! env files, of secret-looking environment variables and of the alert URLs is replaced by
//! `<redacted>`. Tools that change the host exist only when `[mcp] allow` names them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use homebase_proto::{
    DeployEvent, IterationRecord, LoopStatus, PlanReport, ReleaseEntry, ReleasesReport,
    RestartReport, StatusReport,
};
use homebase_stack::config::McpPermission;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Implementation;
use rmcp::model::ListToolsResult;
use rmcp::model::{GetPromptRequestParams, GetPromptResponse, GetPromptResult};
use rmcp::model::{
    ListPromptsResult, ListResourcesResult, PaginatedRequestParams, Prompt, PromptArgument,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    RequestMetaObject, Resource, ResourceContents, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, Json, Peer, RoleServer, ServerHandler, ServiceExt};
use rmcp::{tool, tool_handler, tool_router};
use serde_json::Value;

use crate::cli::Global;
use crate::exit::Exit;
use crate::project::{self, Project};
use homebase_proto::BackupManifest as Manifest;

/// Log lines a tool returns at most, and by default.
const MAX_LINES: u32 = 500;
const DEFAULT_LINES: u32 = 100;
/// History rows and releases a tool returns at most.
const MAX_ROWS: u32 = 200;
/// Characters of one string (a log line, an error, a field) kept.
const MAX_CHARS: usize = 4000;
/// Values shorter than this are not treated as secrets (`1`, `true`, `db`).
const MIN_SECRET: usize = 6;

pub fn run(global: &Global) -> Result<Exit> {
    // A project that does not load is reported now, where the client shows the server's
    // stderr, rather than on every call.
    let project = project::load(global)?;
    let server = Homebase::new(global, &project)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the MCP server's runtime")?;
    runtime.block_on(async move {
        let service = server
            .serve(rmcp::transport::stdio())
            .await
            .context("the MCP client did not complete the handshake on stdio")?;
        service
            .waiting()
            .await
            .context("the MCP connection on stdio failed")?;
        anyhow::Ok(())
    })?;
    Ok(Exit::Ok)
}

#[derive(Clone)]
pub struct Homebase {
    exe: PathBuf,
    /// The global flags every child gets: the same project as this server's.
    base: Vec<String>,
    config_path: PathBuf,
    tool_router: ToolRouter<Self>,
}

/// What a child printed, and how it ended.
struct Ran {
    stdout: String,
    stderr: String,
    code: Option<i32>,
    events: Vec<DeployEvent>,
    result: Option<ReleaseEntry>,
}

/// The permission a tool needs, `None` for the reading ones.
fn permission_of(tool: &str) -> Option<McpPermission> {
    match tool {
        "loop_start" | "loop_stop" | "loop_pause" | "loop_resume" => {
            Some(McpPermission::LoopControl)
        }
        "restart" => Some(McpPermission::Restart),
        "deploy" => Some(McpPermission::Deploy),
        "rollback" => Some(McpPermission::Rollback),
        _ => None,
    }
}

/// A name the client sent (a service, a loop, a release), checked as the CLI checks it and
/// never one the child could take for a flag.
fn name_arg(what: &str, s: &str) -> Result<String, String> {
    if homebase_proto::is_safe_name(s) && !s.starts_with('-') {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{}` is not a {what} (letters, digits, `.`, `_`, `-`, not starting with `-` or `.`)",
            s.escape_debug()
        ))
    }
}

/// A health-gate wait the client sent: 1 s to a day, 120 s when left out.
fn timeout_arg(secs: Option<u64>) -> Result<String, String> {
    match secs.unwrap_or(120) {
        s @ 1..=crate::cli::MAX_TIMEOUT => Ok(s.to_string()),
        s => Err(format!(
            "timeout_secs = {s} is out of range: give 1 to {} seconds",
            crate::cli::MAX_TIMEOUT
        )),
    }
}

#[tool_router(router = tool_router)]
impl Homebase {
    fn new(global: &Global, project: &Project) -> Result<Homebase> {
        let exe = std::env::current_exe().context("cannot find the homebase binary itself")?;
        let mut base = vec![
            "--color".to_string(),
            "never".to_string(),
            "--config".to_string(),
            project.config_path.display().to_string(),
        ];
        for f in &global.env_files {
            let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            base.extend(["--env-file".to_string(), f.display().to_string()]);
        }
        for p in global.profiles.iter().filter(|p| !p.is_empty()) {
            base.extend(["--profile".to_string(), p.clone()]);
        }
        if let Some(d) = &global.daemon_dir {
            base.extend(["--daemon-dir".to_string(), d.clone()]);
        }
        Ok(Homebase {
            exe,
            base,
            config_path: project.config_path.clone(),
            tool_router: Self::tool_router(),
        })
    }

    #[tool(
        description = "The stack on the host now: every service's state, health, uptime, restarts, memory against its limit, the current release, the daemon's alerts and events, the agent loops and tunnels. `healthy` is false when a planned service is down or unhealthy.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn status(&self, _: Parameters<NoInput>) -> Result<Json<StatusReport>, String> {
        let ran = self.run(&["status", "--json"], None).await?;
        self.document(&ran).map(Json)
    }

    #[tool(
        description = "The memory plan, computed on the laptop: each service's limit and reservation, their sums against the host's budget, and whether the stack fits (`fits`). Nothing on the host is touched.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn plan(&self, input: Parameters<PlanInput>) -> Result<Json<PlanReport>, String> {
        let mut args = vec!["plan".to_string(), "--json".to_string()];
        if let Some(m) = &input.0.host_memory {
            args.push(format!("--host-memory={m}"));
        }
        let ran = self.run_owned(args, None).await?;
        self.document(&ran).map(Json)
    }

    #[tool(
        description = "The releases recorded on the host (who deployed what, when, the outcome and any error), oldest first, and the current one.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn releases(&self, input: Parameters<ReleasesInput>) -> Result<Json<Releases>, String> {
        let ran = self.run(&["releases", "--json"], None).await?;
        let all: ReleasesReport = self.document(&ran)?;
        let limit = input.0.limit.unwrap_or(20).clamp(1, MAX_ROWS) as usize;
        let omitted = all.releases.len().saturating_sub(limit);
        Ok(Json(Releases {
            current: all.current,
            releases: all.releases.into_iter().skip(omitted).collect(),
            omitted,
        }))
    }

    #[tool(
        description = "The last lines of a service's logs on the host (default 100, at most 500), optionally only those newer than `since`.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn logs(&self, input: Parameters<LogsInput>) -> Result<Json<Lines>, String> {
        let input = input.0;
        let n = input.lines.unwrap_or(DEFAULT_LINES).clamp(1, MAX_LINES);
        let service = name_arg("service name", &input.service)?;
        let mut args = vec!["logs".to_string(), "-n".to_string(), n.to_string()];
        if let Some(s) = &input.since {
            args.push(format!("--since={s}"));
        }
        args.extend(["--".to_string(), service]);
        let ran = self.run_owned(args, None).await?;
        self.lines(&ran, &input.service, n)
    }

    #[tool(
        description = "Every agent loop of the project as the host daemon runs it: state, iteration, circuit breaker, what it waits for (a spend cap among others), the running and the last iteration, and what its agent spent (the last iteration, today, this month, the last hour, beside the loop's caps).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_list(&self, _: Parameters<NoInput>) -> Result<Json<Loops>, String> {
        let ran = self.run(&["loop", "--json", "ls"], None).await?;
        let loops: Vec<LoopStatus> = self.document(&ran)?;
        Ok(Json(Loops { loops }))
    }

    #[tool(
        description = "A loop's iterations, newest first (default 20, at most 200): outcome, exit code, duration, files changed, error signature, and the agent's reported result (cost, tokens, turns, subtype).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_history(
        &self,
        input: Parameters<LoopHistoryInput>,
    ) -> Result<Json<LoopHistory>, String> {
        let input = input.0;
        let limit = input.limit.unwrap_or(20).clamp(1, MAX_ROWS);
        let ran = self
            .run_owned(
                vec![
                    "loop".into(),
                    "--json".into(),
                    "history".into(),
                    "--limit".into(),
                    limit.to_string(),
                    "--".into(),
                    name_arg("loop name", &input.name)?,
                ],
                None,
            )
            .await?;
        let iterations: Vec<IterationRecord> = self.document(&ran)?;
        Ok(Json(LoopHistory {
            name: input.name,
            iterations,
        }))
    }

    #[tool(
        description = "The last lines of an agent loop's output (default 100, at most 500): what the agent printed, iteration by iteration.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_logs(&self, input: Parameters<LoopLogsInput>) -> Result<Json<Lines>, String> {
        let input = input.0;
        let n = input.lines.unwrap_or(DEFAULT_LINES).clamp(1, MAX_LINES);
        let ran = self
            .run_owned(
                vec![
                    "loop".into(),
                    "logs".into(),
                    "--tail".into(),
                    n.to_string(),
                    "--".into(),
                    name_arg("loop name", &input.name)?,
                ],
                None,
            )
            .await?;
        self.lines(&ran, &format!("loop {}", input.name), n)
    }

    #[tool(
        description = "The backups kept on the host, oldest first: id, time, and per service the kind (pg_dump or volume), size and checksum.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn backup_list(&self, _: Parameters<NoInput>) -> Result<Json<Backups>, String> {
        let ran = self.run(&["backup", "--json", "ls"], None).await?;
        let backups: Vec<Manifest> = self.document(&ran)?;
        Ok(Json(Backups { backups }))
    }

    #[tool(
        description = "Start an agent loop (needs `loop_control` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_start(&self, input: Parameters<LoopInput>) -> Result<Json<LoopStatus>, String> {
        self.loop_action("start", &input.0.name).await
    }

    #[tool(
        description = "Stop an agent loop after killing its running iteration (needs `loop_control` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_stop(&self, input: Parameters<LoopInput>) -> Result<Json<LoopStatus>, String> {
        self.loop_action("stop", &input.0.name).await
    }

    #[tool(
        description = "Pause an agent loop: its running iteration finishes, no new one starts (needs `loop_control` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_pause(&self, input: Parameters<LoopInput>) -> Result<Json<LoopStatus>, String> {
        self.loop_action("pause", &input.0.name).await
    }

    #[tool(
        description = "Resume a paused agent loop (needs `loop_control` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn loop_resume(&self, input: Parameters<LoopInput>) -> Result<Json<LoopStatus>, String> {
        self.loop_action("resume", &input.0.name).await
    }

    #[tool(
        description = "Restart one service's containers and wait until it is healthy again (needs `restart` in [mcp] allow of homebase.toml). Refused while a deploy runs.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn restart(
        &self,
        input: Parameters<RestartInput>,
    ) -> Result<Json<RestartReport>, String> {
        self.allowed(McpPermission::Restart)?;
        let input = input.0;
        let ran = self
            .run_owned(
                vec![
                    "restart".into(),
                    "--json".into(),
                    "--timeout".into(),
                    timeout_arg(input.timeout_secs)?,
                    "--".into(),
                    name_arg("service name", &input.service)?,
                ],
                None,
            )
            .await?;
        self.document(&ran).map(Json)
    }

    #[tool(
        description = "Deploy the stack as it is on the laptop: plan, lock, upload, start, health gate, automatic rollback; a no-op when the host already runs it. Reports each step as progress (needs `deploy` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn deploy(
        &self,
        input: Parameters<DeployInput>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<Json<ReleaseRun>, String> {
        self.allowed(McpPermission::Deploy)?;
        let input = input.0;
        let mut args = vec![
            "deploy".to_string(),
            "--json".to_string(),
            "--timeout".to_string(),
            timeout_arg(input.timeout_secs)?,
        ];
        if input.force.unwrap_or(false) {
            args.push("--force".into());
        }
        let ran = self.run_owned(args, progress_to(meta, peer)).await?;
        Ok(Json(self.release_run(ran)))
    }

    #[tool(
        description = "Go back to an earlier release (default: the one before the current), with the same health gate as a deploy. Reports each step as progress (needs `rollback` in [mcp] allow of homebase.toml).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn rollback(
        &self,
        input: Parameters<RollbackInput>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<Json<ReleaseRun>, String> {
        self.allowed(McpPermission::Rollback)?;
        let input = input.0;
        let mut args = vec![
            "rollback".to_string(),
            "--json".to_string(),
            "--timeout".to_string(),
            timeout_arg(input.timeout_secs)?,
        ];
        if let Some(r) = input.release {
            args.extend(["--".to_string(), name_arg("release id", &r)?]);
        }
        let ran = self.run_owned(args, progress_to(meta, peer)).await?;
        Ok(Json(self.release_run(ran)))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Homebase {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_prompts()
                .build(),
        );
        info.server_info = Implementation::new("homebase", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "homebase runs this project's Docker Compose stack and agent loops on an always-on host. Read with status, plan, releases, logs, loop_list, loop_history, loop_logs and backup_list; the tools that change the host work only when [mcp] allow in homebase.toml names them.".into(),
        );
        info
    }

    /// Only the tools `[mcp] allow` permits: the reading ones always, each that changes the
    /// host when its permission is named (read from homebase.toml at each call).
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let allow = self.allow_set();
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| permission_of(&t.name).is_none_or(|p| allow.contains(&p)))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    /// Watches homebase.toml for a change of `[mcp] allow` and tells the client that the
    /// tool list changed (`notifications/tools/list_changed`) until it goes away.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut seen = me.allow_set();
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let now = me.allow_set();
                if now != seen {
                    seen = now;
                    if context.peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
                if context.peer.is_transport_closed() {
                    return;
                }
            }
        });
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut compose = Resource::new("homebase://compose", "rendered compose file");
        compose.description = Some(
            "The exact compose file deploy uses (limits and reservations applied), secret values redacted".into(),
        );
        compose.mime_type = Some("application/yaml".into());
        let mut current = Resource::new("homebase://release/current", "current release");
        current.description =
            Some("The release-log record of the release the host runs now".into());
        current.mime_type = Some("application/json".into());
        Ok(ListResourcesResult::with_all_items(vec![compose, current]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let text = match uri {
            "homebase://compose" => {
                let ran = self.run(&["render"], None).await.map_err(tool_failed)?;
                if ran.code != Some(0) {
                    return Err(tool_failed(self.failure(&ran)));
                }
                let scrub = self.scrubber();
                ran.stdout
                    .lines()
                    .map(|l| crate::ui::printable(&scrub.redact(l)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            "homebase://release/current" => {
                let ran = self
                    .run(&["releases", "--json"], None)
                    .await
                    .map_err(tool_failed)?;
                let all: ReleasesReport = self.document(&ran).map_err(tool_failed)?;
                let record = all
                    .current
                    .as_ref()
                    .and_then(|c| all.releases.iter().rev().find(|e| &e.id == c));
                serde_json::to_string_pretty(&homebase_proto::CurrentRelease {
                    current: all.current.clone(),
                    record: record.cloned(),
                })
                .map_err(|e| tool_failed(e.to_string()))?
            }
            other => {
                return Err(ErrorData::resource_not_found(
                    format!(
                        "no resource `{other}`: the resources are homebase://compose and homebase://release/current"
                    ),
                    None,
                ));
            }
        };
        // the type `resources/list` announced
        let mime = if uri == "homebase://compose" {
            "application/yaml"
        } else {
            "application/json"
        };
        Ok(
            ReadResourceResult::new(vec![ResourceContents::text(text, uri).with_mime_type(mime)])
                .into(),
        )
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut service = PromptArgument::new("service");
        service.description =
            Some("The service to look at first (default: every failing one)".into());
        service.required = Some(false);
        let mut p = Prompt::new(
            "diagnose",
            Some(
                "Diagnose the stack: status, recent alerts and events, the failing service's logs, recent releases",
            ),
            Some(vec![service]),
        );
        p.title = Some("Diagnose the stack".into());
        Ok(ListPromptsResult::with_all_items(vec![p]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "diagnose" {
            return Err(ErrorData::invalid_params(
                format!("no prompt `{}`: the prompt is `diagnose`", request.name),
                None,
            ));
        }
        let service = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("service"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let text = self.diagnose(service).await;
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description("Diagnose the homebase stack")
                .into(),
        )
    }
}

fn tool_failed(message: String) -> ErrorData {
    ErrorData::internal_error(message, None)
}

mod child;
mod io;

pub use io::{
    Backups, DeployInput, Lines, LogsInput, LoopHistory, LoopHistoryInput, LoopInput,
    LoopLogsInput, Loops, NoInput, PlanInput, ReleaseRun, Releases, ReleasesInput, RestartInput,
    RollbackInput,
};
mod lenient;
mod prompt;
mod scrub;

use child::progress_to;
