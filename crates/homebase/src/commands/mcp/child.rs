//! Running one `homebase … --json` child per tool call, its progress passed to the client.

use super::Homebase;
use super::Lines;
use super::MAX_CHARS;
use super::Ran;
use super::ReleaseRun;
use super::scrub::Scrubber;
use super::scrub::last_document;
use super::scrub::project_secrets;
use crate::project;
use homebase_proto::DeployEvent;
use homebase_proto::ErrorReport;
use homebase_proto::LoopStatus;
use homebase_stack::config::McpPermission;
use rmcp::Json;
use rmcp::Peer;
use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::model::RequestMetaObject;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::process::Stdio;
use tokio::io::BufReader;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Where a long tool's steps go: the client's progress token, if it sent one.
pub(super) fn progress_to(meta: RequestMetaObject, peer: Peer<RoleServer>) -> Option<Progress> {
    meta.get_progress_token()
        .map(|token| Progress { token, peer })
}

pub(super) struct Progress {
    token: rmcp::model::ProgressToken,
    peer: Peer<RoleServer>,
}

impl Homebase {
    /// Refuses a tool that changes the host unless homebase.toml allows it (read at each
    /// call, so an edit takes effect without restarting the server).
    /// What `[mcp] allow` permits now (nothing when homebase.toml does not read).
    pub(super) fn allow_set(&self) -> Vec<McpPermission> {
        std::fs::read_to_string(&self.config_path)
            .ok()
            .and_then(|text| {
                homebase_stack::Config::parse(&self.config_path, &text, &project::process_env())
                    .ok()
            })
            .map(|c| c.mcp.allow)
            .unwrap_or_default()
    }

    pub(super) fn allowed(&self, what: McpPermission) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.config_path)
            .map_err(|e| format!("cannot read `{}`: {e}", self.config_path.display()))?;
        let config =
            homebase_stack::Config::parse(&self.config_path, &text, &project::process_env())
                .map_err(|e| e.to_string())?;
        if config.mcp.allow.contains(&what) {
            return Ok(());
        }
        Err(format!(
            "this tool changes the host and homebase.toml does not allow it; to let the agent use it, add `{}` to `allow` in the [mcp] section of `{}`:\n[mcp]\nallow = [\"{}\"]",
            what.name(),
            self.config_path.display(),
            what.name()
        ))
    }

    pub(super) async fn loop_action(
        &self,
        action: &str,
        name: &str,
    ) -> Result<Json<LoopStatus>, String> {
        self.allowed(McpPermission::LoopControl)?;
        let name = super::name_arg("loop name", name)?;
        let ran = self
            .run(&["loop", "--json", action, "--", &name], None)
            .await?;
        self.document(&ran).map(Json)
    }

    pub(super) async fn run(
        &self,
        args: &[&str],
        progress: Option<Progress>,
    ) -> Result<Ran, String> {
        self.run_owned(args.iter().map(|a| a.to_string()).collect(), progress)
            .await
    }

    /// Runs `homebase BASE ARGS`; with `progress`, each JSON event line becomes a progress
    /// notification as it arrives. The child is killed if the call is cancelled (a deploy's
    /// job goes on on the host and ends on one healthy release by itself).
    pub(super) async fn run_owned(
        &self,
        args: Vec<String>,
        progress: Option<Progress>,
    ) -> Result<Ran, String> {
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&self.base)
            .args(&args)
            .env("HOMEBASE_COLOR", "never")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", self.exe.display()))?;
        let mut stderr = child.stderr.take();
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut buf).await;
            }
            buf
        });
        let mut stdout = String::new();
        let mut events = Vec::new();
        let mut result = None;
        if let Some(out) = child.stdout.take() {
            let mut lines = BufReader::new(out).lines();
            let mut n = 0u32;
            while let Ok(Some(line)) = lines.next_line().await {
                // one JSON event per line from `deploy --json` and `rollback --json`
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v.get("event").is_some()
                {
                    if v["event"] == "result" {
                        result = serde_json::from_value(v["release"].clone()).ok();
                    } else if let Ok(e) = serde_json::from_value::<DeployEvent>(v) {
                        n += 1;
                        if let Some(p) = &progress {
                            let message = match &e.message {
                                Some(m) if e.step.is_empty() => m.clone(),
                                Some(m) => format!("{} {}: {m}", e.event, e.step),
                                None => format!("{} {}", e.event, e.step),
                            };
                            let _ = p
                                .peer
                                .notify_progress(
                                    ProgressNotificationParam::new(p.token.clone(), f64::from(n))
                                        .with_message(self.scrubber().text(&message)),
                                )
                                .await;
                        }
                        events.push(e);
                    }
                }
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("`homebase {}` did not end: {e}", args.join(" ")))?;
        let stderr = String::from_utf8_lossy(&err_task.await.unwrap_or_default()).to_string();
        Ok(Ran {
            stdout,
            stderr,
            code: status.code(),
            events,
            result,
        })
    }

    /// The child's JSON document, bounded and scrubbed; its error (the CLI's text) otherwise.
    pub(super) fn document<T: DeserializeOwned>(&self, ran: &Ran) -> Result<T, String> {
        let scrub = self.scrubber();
        if let Some(mut v) = last_document(&ran.stdout) {
            if let Ok(e) = serde_json::from_value::<ErrorReport>(v.clone())
                && v.get("exit_code").is_some()
            {
                return Err(scrub.text(&e.error));
            }
            scrub.value(&mut v);
            return serde_json::from_value(v).map_err(|e| {
                format!("homebase printed a document this server does not read: {e}")
            });
        }
        Err(self.failure(ran))
    }

    /// Plain lines of a child (logs), bounded and scrubbed.
    pub(super) fn lines(&self, ran: &Ran, source: &str, n: u32) -> Result<Json<Lines>, String> {
        if ran.code != Some(0) {
            return Err(self.failure(ran));
        }
        let scrub = self.scrubber();
        let all: Vec<&str> = ran.stdout.lines().collect();
        let skip = all.len().saturating_sub(n as usize);
        let mut cut = 0;
        let lines: Vec<String> = all[skip..]
            .iter()
            .map(|l| {
                let s = scrub.text(l);
                if s.chars().count() >= MAX_CHARS {
                    cut += 1;
                }
                s
            })
            .collect();
        let mut notes = Vec::new();
        if cut > 0 {
            notes.push(format!(
                "{cut} long lines were cut at {MAX_CHARS} characters"
            ));
        }
        if scrub.redacted.get() > 0 {
            notes.push("values of the project's secrets were replaced by <redacted>".into());
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        Ok(Json(Lines {
            source: source.to_string(),
            lines,
            note,
        }))
    }

    pub(super) fn release_run(&self, ran: Ran) -> ReleaseRun {
        let scrub = self.scrubber();
        let code = ran.code.unwrap_or(-1);
        let error = (code != 0).then(|| self.failure(&ran));
        let mut steps = ran.events;
        for s in &mut steps {
            s.message = s.message.as_deref().map(|m| scrub.text(m));
        }
        let release = ran.result.map(|mut r| {
            r.error = r.error.as_deref().map(|e| scrub.text(e));
            r
        });
        ReleaseRun {
            ok: code == 0,
            exit_code: code,
            release,
            steps,
            error,
        }
    }

    /// The CLI's error: the `--json` error report, else its stderr's `error:` lines.
    pub(super) fn failure(&self, ran: &Ran) -> String {
        let scrub = self.scrubber();
        // `--json` ends a failure with a (pretty-printed) error report
        if let Some(e) =
            last_document(&ran.stdout).and_then(|v| serde_json::from_value::<ErrorReport>(v).ok())
        {
            return scrub.text(&e.error);
        }
        let text = ran.stderr.trim();
        let from = text.find("error:").map(|i| &text[i..]).unwrap_or(text);
        let from = from.strip_prefix("error:").unwrap_or(from).trim();
        if from.is_empty() {
            format!("homebase ended with {:?} and said nothing", ran.code)
        } else {
            scrub.text(from)
        }
    }

    pub(super) fn scrubber(&self) -> Scrubber {
        Scrubber::new(project_secrets(&self.config_path))
    }
}
