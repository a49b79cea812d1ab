//! After an iteration's container has ended: what its workspace and its files say.

use super::Supervisor;
use crate::loops::LoopConfig;
use crate::loops::text;

impl Supervisor {
    /// The completion file, read from the finished container (its workspace mount): whether
    /// every story in it passes.
    pub(super) async fn completion_file(&self, cfg: &LoopConfig, container: &str) -> Option<bool> {
        let l = &cfg.section;
        let f = l.completion_file.as_ref()?;
        if container.is_empty() {
            return None;
        }
        let path = format!("{}/{}", l.workdir.trim_end_matches('/'), f);
        match self.engine.read_file(container, &path, 4 << 20).await {
            Ok(Some(data)) => text::all_pass(&data),
            _ => None,
        }
    }

    /// After an iteration run as root: setuid and setgid bits it left in the workspace
    /// cleared, and said.
    pub(super) async fn clear_setuid(&mut self, cfg: &LoopConfig, n: i64) {
        let Ok(user) = self.user(cfg).await else {
            return;
        };
        if !crate::workspace::is_root(&user) {
            return;
        }
        let ws = cfg.workspace();
        let cleared =
            crate::workspace::strip_setuid(&self.engine, &ws, &cfg.section.image, &cfg.label())
                .await;
        if !cleared.is_empty() {
            let names = cleared
                .iter()
                .map(|f| format!("`{}`", f.escape_debug()))
                .collect::<Vec<_>>()
                .join(", ");
            self.event(
                "loop_setuid_cleared",
                &format!("iteration {n} (run as root) left setuid or setgid files; homebase cleared the bits: {names}"),
            )
            .await;
        }
    }

    /// A git workspace after the iteration: the diffstat against the head before it, and
    /// the commit that records its work.
    pub(super) async fn git_after(
        &mut self,
        cfg: &LoopConfig,
        before_head: Option<&str>,
        container: &str,
        n: i64,
        run: i64,
    ) -> (Option<String>, Option<String>) {
        let ws = cfg.workspace();
        let label = cfg.label();
        let commits = cfg.section.git_workspace() && !container.is_empty();
        let user = if before_head.is_some() || commits {
            self.user(cfg)
                .await
                .ok()
                .and_then(|u| crate::workspace::helper_user(&u, &ws))
        } else {
            None
        };
        let diffstat = match before_head {
            Some(head) => {
                crate::workspace::diffstat(&self.engine, &ws, user.as_deref(), &label, head).await
            }
            None => None,
        };
        let commit = if commits {
            crate::workspace::Helper {
                engine: &self.engine,
                ws: &ws,
                user: user.as_deref(),
                label: &label,
            }
            .commit(&format!(
                "homebase: loop {} iteration {n} (run {run})",
                cfg.name
            ))
            .await
        } else {
            None
        };
        (diffstat, commit)
    }
}
