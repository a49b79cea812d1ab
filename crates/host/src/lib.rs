//! The host protocol: everything homebase does on the host, as a library the CLI's
//! commands call. [`project`] loads a project (homebase.toml, its compose files) and
//! [`link`] holds its connections (the ways to the host, the sessions planning opened);
//! what runs on the host is one shell script per round trip, built and parsed here: the
//! project's directory and its runtime (this module), the lock, the bundle and the tree
//! of project files, the release job and its follower ([`release`]), the project's files
//! and images ([`source`]), backups ([`backup`]), the daemon's API ([`daemon_client`]),
//! making a host ready ([`setup`]).
//! Every answer from the host is parsed into a typed result here. Progress goes through
//! [`report::Report`]; errors carry their exit code ([`exit`]). Nothing here prints.
//!
//! The project's state on the host, under `~/.homebase/<project>/`:
//!
//! ```text
//! lock                 the deploy lock: a symlink whose target is its holder's line (JSON)
//! releases/<id>/       one release bundle: compose.yml, homebase.toml, hash (mode 0600)
//! current              the id of the release that is running
//! releases.jsonl       the release log, one JSON object per line
//! job/                 the last release job (`release.rs`): run.sh, log, pid, done
//! ```
//!
//! Every operation is one shell script run through the session, so it costs one round trip.
//!
//! The project runs on one of two runtimes ([`Runtime`]): a Compose project on one host
//! ([`compose`]), or a swarm stack deployed from the manager ([`stack`]). What differs
//! between them (starting a release, removing it, listing its containers, finding a
//! service's container, its logs, a restart) is asked of [`HostProject`], which picks the
//! half; the release directory, the lock ([`lock`]) and the bundle ([`bundle`]) are shared.

pub mod backup;
mod bundle;
mod compose;
pub mod daemon_client;
pub mod exit;
pub mod facts;
pub mod link;
mod lock;
pub mod loops;
pub mod preflight;
pub mod project;
pub mod release;
pub mod report;
pub mod service_files;
pub mod setup;
pub mod source;
pub mod stack;
pub mod status;
pub mod tree;

pub use bundle::Bundle;
pub use compose::HEALTHY_FN;
pub use lock::{GO, LOCK_INFO, LockOutcome, PRUNE, Prepared, lock_line_prefix};

use std::time::Duration;

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::{Session, sh_quote};

/// The Compose v2 command on the host, as a shell word list: `docker compose` when the
/// docker CLI finds its plugin, else the plugin binary itself where Homebrew, Docker's
/// packages or Docker Desktop put it (Homebrew's plugin is found by `docker` only once
/// `~/.docker/config.json` lists its directory in `cliPluginsExtraDirs`, which `homebase
/// setup` adds). The plugin binary takes the same arguments as `docker compose`.
pub const FIND_COMPOSE: &str = "$(docker compose version >/dev/null 2>&1 && echo docker compose || { for p in /opt/homebrew/lib/docker/cli-plugins/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose \"$HOME/.docker/cli-plugins/docker-compose\" /usr/libexec/docker/cli-plugins/docker-compose /Applications/Docker.app/Contents/Resources/cli-plugins/docker-compose; do [ -x \"$p\" ] && echo \"$p\" && exit 0; done; echo docker compose; })";

/// How the project's services run on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A Compose project (`docker compose -p <project>`) on one host.
    Compose,
    /// A swarm stack (`docker stack deploy`), driven from the manager.
    Stack,
}

pub struct HostProject<'a> {
    pub session: &'a Session,
    pub project: String,
    pub runtime: Runtime,
}

/// A container of the project, as `docker compose ps` reports it.
#[derive(Debug, Clone)]
pub struct PsEntry {
    pub service: String,
    pub name: String,
    pub state: String,
    pub health: String,
    /// Swarm: the replicas the service wants.
    pub desired: Option<usize>,
}

impl<'a> HostProject<'a> {
    pub fn new(session: &'a Session, project: &str) -> Self {
        HostProject {
            session,
            project: project.to_string(),
            runtime: Runtime::Compose,
        }
    }

    /// The project on its host (the manager, in swarm mode).
    pub fn of(session: &'a Session, project: &crate::project::Project) -> Self {
        HostProject {
            session,
            project: project.config.project.name.clone(),
            runtime: if project.swarm() {
                Runtime::Stack
            } else {
                Runtime::Compose
            },
        }
    }

    /// A swarm stack rather than a compose project.
    pub fn is_stack(&self) -> bool {
        self.runtime == Runtime::Stack
    }

    /// `"$HOME/.homebase/<project>"` for scripts.
    pub fn dir(&self) -> String {
        homebase_proto::layout::sh_project(&sh_quote(&self.project))
    }

    pub fn compose(&self) -> String {
        format!("{FIND_COMPOSE} -p {}", sh_quote(&self.project))
    }

    /// The current release id and its bundle hash, if any.
    pub fn current(&self) -> Result<Option<(String, String)>> {
        let script = format!(
            "d={d}; c=$(cat \"$d/current\" 2>/dev/null) || exit 0; echo \"$c\"; cat \"$d/releases/$c/hash\" 2>/dev/null",
            d = self.dir()
        );
        Ok(parse_current(&self.session.check(&script)?))
    }

    /// Containers of the project (all states); in swarm mode one entry per service.
    pub fn ps(&self) -> Result<Vec<PsEntry>> {
        match self.runtime {
            Runtime::Compose => compose::ps(self),
            Runtime::Stack => stack::ps(self),
        }
    }

    /// Starts release `id` and waits until it is healthy (Compose's `--wait`, or the stack's
    /// convergence); returns (success, combined output).
    pub fn up(&self, id: &str, wait_timeout: Duration) -> Result<(bool, String)> {
        check_id(id)?;
        match self.runtime {
            Runtime::Compose => compose::up(self, id, wait_timeout),
            Runtime::Stack => stack::up(self, id, wait_timeout),
        }
    }

    /// Removes the project's containers and networks, never its volumes.
    pub fn down(&self, id: &str) -> Result<()> {
        check_id(id)?;
        match self.runtime {
            Runtime::Compose => compose::down(self, id),
            Runtime::Stack => stack::down(self),
        }
    }

    /// The script that prints a service's logs (`since`: ` --since WHEN`, or empty), or
    /// follows them.
    pub fn logs(&self, service: &str, tail: usize, since: &str, follow: bool) -> String {
        match self.runtime {
            Runtime::Compose => compose::logs(self, service, tail, since, follow),
            Runtime::Stack => stack::logs(self, service, tail, since, follow),
        }
    }

    /// Shell (with `$p` the project and `$s` the service set) that restarts a service and
    /// waits until it is healthy: prints `none` (no container), or `failed` and the
    /// engine's error, or `restarted NAMES` then `healthy` or `unhealthy`.
    pub fn restart(&self, service: &str, timeout: u64) -> String {
        match self.runtime {
            Runtime::Compose => compose::restart(timeout),
            Runtime::Stack => stack::restart(self, service),
        }
    }

    /// Shell that sets `$c` to a running container of `service` on the engine the script
    /// runs on (in swarm mode, the node's task of it), or fails the script (exit 125)
    /// naming it.
    pub fn locate(&self, service: &str) -> String {
        match self.runtime {
            Runtime::Compose => compose::locate(&self.project, service),
            Runtime::Stack => stack::locate_task(&self.project, service),
        }
    }

    pub fn set_current(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.session.check(&format!(
            "d={d}; echo {id} > \"$d/current.tmp\" && mv \"$d/current.tmp\" \"$d/current\"",
            d = self.dir()
        ))?;
        Ok(())
    }

    /// The release log (oldest first) and the current release's id, in one round trip.
    pub fn log_and_current(&self) -> Result<(Vec<ReleaseEntry>, Option<String>)> {
        let out = self.session.check(&format!(
            "d={}; cat \"$d/current\" 2>/dev/null; echo; cat \"$d/releases.jsonl\" 2>/dev/null; true",
            self.dir()
        ))?;
        Ok(parse_log_and_current(&out))
    }

    pub fn release_exists(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        let out = self.session.run(&format!(
            "test -f {}/releases/{}/compose.yml",
            self.dir(),
            sh_quote(id)
        ))?;
        Ok(out.status.success())
    }
}

/// The current release's id and its bundle hash, a line each; an id that is not a plain
/// name (a host-edited `current`) is no release.
fn parse_current(out: &str) -> Option<(String, String)> {
    let mut lines = out.lines().map(str::trim);
    match (lines.next(), lines.next()) {
        (Some(id), hash) if !id.is_empty() && homebase_proto::is_safe_name(id) => {
            Some((id.to_string(), hash.unwrap_or("").to_string()))
        }
        _ => None,
    }
}

/// The current release's id on the first line, then the release log: the entries that read
/// as entries, oldest first (a torn or edited line is left out).
fn parse_log_and_current(out: &str) -> (Vec<ReleaseEntry>, Option<String>) {
    let mut lines = out.lines();
    let current = lines
        .next()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let log = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    (log, current)
}

/// Refuses a release id that could leave the project's directory or break a script (ids
/// come from the user's command line and from the host's release log).
pub fn check_id(id: &str) -> Result<()> {
    if homebase_proto::is_safe_name(id) {
        Ok(())
    } else {
        Err(crate::exit::coded(
            crate::exit::Exit::BadInput,
            format!(
                "`{}` is not a release id (letters, digits, `.`, `_`, `-`); `homebase releases` lists them",
                id.escape_debug()
            ),
        ))
    }
}

/// The bytes in use from `docker stats`' MemUsage (`55.5MiB / 600MiB`).
pub fn mem_used(usage: &str) -> Option<u64> {
    let used = usage.split('/').next()?;
    homebase_stack::Bytes::parse(used.trim()).ok().map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::{mem_used, parse_current, parse_log_and_current};

    #[test]
    fn the_current_release_reads_from_its_two_lines() {
        assert_eq!(
            parse_current("20261123T213000Z-1a2b\n5f3c\n"),
            Some(("20261123T213000Z-1a2b".into(), "5f3c".into()))
        );
        // a release whose hash file is gone still is the current one
        assert_eq!(
            parse_current("20261123T213000Z-1a2b\n"),
            Some(("20261123T213000Z-1a2b".into(), String::new()))
        );
        assert_eq!(parse_current(""), None);
        assert_eq!(parse_current("\n"), None);
        // a host-edited `current` naming a path is no release
        assert_eq!(parse_current("../../etc\nx\n"), None);
    }

    #[test]
    fn the_release_log_keeps_the_entries_that_read_as_entries() {
        let entry = r#"{"id":"r1","time":1795465867,"user":"me","git_commit":null,"git_dirty":false,"config_hash":"h","outcome":"deployed","duration_ms":1200}"#;
        let out = format!("r1\n{entry}\n{{\"id\":\"torn\n{entry}\n");
        let (log, current) = parse_log_and_current(&out);
        assert_eq!(current.as_deref(), Some("r1"));
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].outcome, "deployed");
        // no current release, no log
        let (log, current) = parse_log_and_current("\n");
        assert!(log.is_empty() && current.is_none());
    }

    #[test]
    fn memory_in_use_reads_as_docker_stats_prints_it() {
        assert_eq!(mem_used("1.5GiB / 8GiB"), Some(1_610_612_736));
        assert_eq!(mem_used("512MiB / 2GiB"), Some(536_870_912));
        assert_eq!(mem_used("--"), None);
    }
}
