//! The `diagnose` prompt: the status and the failing services' logs, gathered now.

use super::Homebase;
use homebase_proto::StatusReport;

const DIAGNOSE: &str = "Diagnose the homebase stack of this project from what follows: the stack's status (services, health, memory against limits, alerts, events, loops), and the last log lines of every service that is down or unhealthy.\n\
Say what is wrong, the evidence, and the smallest fix; name the homebase command or the compose change. The tools `logs`, `releases`, `loop_history` and `loop_logs` tell more. Do not change the host unless asked.";

/// Services whose logs the prompt gathers at most, and lines of each.
const DIAGNOSE_SERVICES: usize = 3;
const DIAGNOSE_LINES: u32 = 80;

impl Homebase {
    /// The `diagnose` prompt's text: instructions, then the status and the failing (or the
    /// named) services' logs, gathered now.
    pub(super) async fn diagnose(&self, service: Option<String>) -> String {
        let mut text = DIAGNOSE.to_string();
        let ran = self.run(&["status", "--json"], None).await;
        let report = ran.and_then(|r| self.document::<StatusReport>(&r));
        let mut look: Vec<String> = service.into_iter().collect();
        match &report {
            Ok(r) => {
                let firing: Vec<String> = r
                    .alerts
                    .iter()
                    .filter(|a| a.status == "firing")
                    .map(|a| format!("- {} {}: {}", a.kind, a.service, a.message))
                    .collect();
                text.push_str(&format!(
                    "\n\n## Status ({}, release {})\n```json\n{}\n```\n\n## Firing alerts\n{}\n",
                    if r.healthy { "healthy" } else { "NOT healthy" },
                    r.release.as_deref().unwrap_or("none"),
                    serde_json::to_string_pretty(r).unwrap_or_default(),
                    if firing.is_empty() {
                        "none".to_string()
                    } else {
                        firing.join("\n")
                    }
                ));
                for s in &r.services {
                    if (s.state != "running" || s.health == "unhealthy") && !look.contains(&s.name)
                    {
                        look.push(s.name.clone());
                    }
                }
            }
            Err(e) => text.push_str(&format!("\n\n## Status\n`homebase status` failed: {e}\n")),
        }
        let more = look.len().saturating_sub(DIAGNOSE_SERVICES);
        for s in look.iter().take(DIAGNOSE_SERVICES) {
            let n = DIAGNOSE_LINES.to_string();
            let lines = match self.run(&["logs", s, "-n", &n], None).await {
                Ok(ran) => self
                    .lines(&ran, s, DIAGNOSE_LINES)
                    .map(|j| j.0.lines.join("\n")),
                Err(e) => Err(e),
            };
            match lines {
                Ok(l) => text.push_str(&format!(
                    "\n## Logs of `{s}` (last {n} lines)\n```\n{l}\n```\n"
                )),
                Err(e) => text.push_str(&format!("\n## Logs of `{s}`\nunavailable: {e}\n")),
            }
        }
        if more > 0 {
            text.push_str(&format!(
                "\n({more} more failing services: call `logs` for them.)\n"
            ));
        }
        text
    }
}
