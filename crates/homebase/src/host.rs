//! The project's state on the host, under `~/.homebase/<project>/`:
//!
//! ```text
//! lock/info            the deploy lock (holder, pid, time); a directory, so taking it is atomic
//! releases/<id>/       one release bundle: compose.yml, homebase.toml, hash (mode 0600)
//! current              the id of the release that is running
//! releases.jsonl       the release log, one JSON object per line
//! ```
//!
//! Every operation is one shell script run through the session, so it costs one round trip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use homebase_proto::ReleaseEntry;
use homebase_remote::{Session, sh_quote};
use serde_json::Value;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct HostProject<'a> {
    pub session: &'a Session,
    pub project: String,
}

/// A container of the project, as `docker compose ps` reports it.
#[derive(Debug, Clone)]
pub struct PsEntry {
    pub service: String,
    pub name: String,
    pub state: String,
    pub health: String,
}

#[derive(Debug)]
pub enum LockOutcome {
    Acquired,
    Held {
        holder: String,
        pid: u64,
        age: Duration,
    },
}

impl<'a> HostProject<'a> {
    pub fn new(session: &'a Session, project: &str) -> Self {
        HostProject {
            session,
            project: project.to_string(),
        }
    }

    /// `"$HOME/.homebase/<project>"` for scripts.
    pub fn dir(&self) -> String {
        format!("\"$HOME/.homebase/\"{}", sh_quote(&self.project))
    }

    pub fn compose(&self) -> String {
        format!("docker compose -p {}", sh_quote(&self.project))
    }

    /// Fails with the install hint when the host has no Docker or no Compose v2.
    pub fn require_compose(&self) -> Result<()> {
        let out = self.session.run("docker compose version --short")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            anyhow::bail!(
                "`docker compose` does not work on `{}`: {}; install Docker with the Compose v2 plugin there (on macOS: `brew install colima docker docker-compose && colima start`)",
                self.session.host(),
                err.trim()
            );
        }
        Ok(())
    }

    pub fn lock(&self, holder: &str, token: &str) -> Result<LockOutcome> {
        let info = serde_json::json!({ "holder": holder, "pid": std::process::id(), "time": now_secs(), "token": token }).to_string();
        let script = format!(
            "d={d}; mkdir -p \"$d/releases\" && if mkdir \"$d/lock\" 2>/dev/null; then cat > \"$d/lock/info\"; echo acquired; else cat \"$d/lock/info\" 2>/dev/null || echo '{{}}'; fi",
            d = self.dir()
        );
        let out = self.session.check_with_input(&script, info.as_bytes())?;
        if out.trim() == "acquired" {
            return Ok(LockOutcome::Acquired);
        }
        let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        let time = v["time"].as_u64().unwrap_or(0);
        Ok(LockOutcome::Held {
            holder: v["holder"].as_str().unwrap_or("unknown").to_string(),
            pid: v["pid"].as_u64().unwrap_or(0),
            age: Duration::from_secs(now_secs().saturating_sub(time)),
        })
    }

    /// Releases the lock if it is still ours.
    pub fn unlock(&self, token: &str) -> Result<()> {
        let script = format!(
            "d={d}; grep -q {t} \"$d/lock/info\" 2>/dev/null && rm -rf \"$d/lock\"; true",
            d = self.dir(),
            t = sh_quote(token)
        );
        self.session.check(&script)?;
        Ok(())
    }

    pub fn force_unlock(&self) -> Result<()> {
        self.session.check(&format!("rm -rf {}/lock", self.dir()))?;
        Ok(())
    }

    /// The current release id and its bundle hash, if any.
    pub fn current(&self) -> Result<Option<(String, String)>> {
        let script = format!(
            "d={d}; c=$(cat \"$d/current\" 2>/dev/null) || exit 0; echo \"$c\"; cat \"$d/releases/$c/hash\" 2>/dev/null",
            d = self.dir()
        );
        let out = self.session.check(&script)?;
        let mut lines = out.lines();
        match (lines.next(), lines.next()) {
            (Some(id), hash) if !id.trim().is_empty() => Ok(Some((
                id.trim().to_string(),
                hash.unwrap_or("").trim().to_string(),
            ))),
            _ => Ok(None),
        }
    }

    /// Containers of the project (all states).
    pub fn ps(&self) -> Result<Vec<PsEntry>> {
        let out = self
            .session
            .check(&format!("{} ps -a --format json", self.compose()))?;
        Ok(parse_ps(&out))
    }

    /// Uploads a bundle atomically: into a temp dir, then renamed to `releases/<id>`.
    pub fn upload(&self, id: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let mut archive = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(now_secs());
            header.set_cksum();
            archive
                .append_data(&mut header, name, *data)
                .context("cannot build the release bundle")?;
        }
        let bytes = archive
            .into_inner()
            .context("cannot build the release bundle")?;
        let script = format!(
            "set -e; d={d}; t=\"$d/releases/.tmp-{id}\"; rm -rf \"$t\"; mkdir -p \"$t\"; chmod 700 \"$t\"; tar -xf - -C \"$t\"; find \"$t\" -type f -exec chmod 600 {{}} +; rm -rf \"$d/releases/{id}\"; mv \"$t\" \"$d/releases/{id}\"",
            d = self.dir(),
            id = id
        );
        self.session.check_with_input(&script, &bytes)?;
        Ok(())
    }

    /// `docker compose up -d --wait` of a release; returns (success, combined output).
    pub fn up(&self, id: &str, wait_timeout: Duration) -> Result<(bool, String)> {
        let script = format!(
            "cd {d}/releases/{id} && {c} -f compose.yml up -d --wait --wait-timeout {t} --remove-orphans 2>&1",
            d = self.dir(),
            c = self.compose(),
            t = wait_timeout.as_secs().max(1)
        );
        let out = self.session.run(&script)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ))
    }

    /// Removes the project's containers and networks, never its volumes.
    pub fn down(&self, id: &str) -> Result<()> {
        self.session.check(&format!(
            "cd {d}/releases/{id} && {c} -f compose.yml down --remove-orphans",
            d = self.dir(),
            c = self.compose()
        ))?;
        Ok(())
    }

    pub fn set_current(&self, id: &str) -> Result<()> {
        self.session.check(&format!(
            "d={d}; echo {id} > \"$d/current.tmp\" && mv \"$d/current.tmp\" \"$d/current\"",
            d = self.dir()
        ))?;
        Ok(())
    }

    pub fn append_log(&self, entry: &ReleaseEntry) -> Result<()> {
        let line = serde_json::to_string(entry)? + "\n";
        self.session.check_with_input(
            &format!("cat >> {}/releases.jsonl", self.dir()),
            line.as_bytes(),
        )?;
        Ok(())
    }

    pub fn log(&self) -> Result<Vec<ReleaseEntry>> {
        let out = self.session.check(&format!(
            "cat {}/releases.jsonl 2>/dev/null; true",
            self.dir()
        ))?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    pub fn release_exists(&self, id: &str) -> Result<bool> {
        let out = self.session.run(&format!(
            "test -f {}/releases/{}/compose.yml",
            self.dir(),
            sh_quote(id)
        ))?;
        Ok(out.status.success())
    }

    /// State, health log and the last 50 log lines of a container, for a failure report.
    pub fn diagnose(&self, container: &str) -> Result<String> {
        let c = sh_quote(container);
        let script = format!(
            "echo \"state: $(docker inspect --format '{{{{.State.Status}}}} (exit {{{{.State.ExitCode}}}}, oom-killed {{{{.State.OOMKilled}}}})' {c})\"; \
             docker inspect --format '{{{{if .State.Health}}}}{{{{range .State.Health.Log}}}}health: exit {{{{.ExitCode}}}}: {{{{.Output}}}}{{{{end}}}}{{{{end}}}}' {c} | tail -n 5; \
             echo 'last 50 log lines:'; docker logs --tail 50 {c} 2>&1"
        );
        Ok(self
            .session
            .run(&script)
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())?)
    }
}

/// `docker compose ps --format json` prints one object per line (newer Compose) or an array.
pub fn parse_ps(out: &str) -> Vec<PsEntry> {
    let values: Vec<Value> = match serde_json::from_str::<Value>(out.trim()) {
        Ok(Value::Array(a)) => a,
        _ => out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    values
        .iter()
        .map(|v| PsEntry {
            service: v["Service"].as_str().unwrap_or("").to_string(),
            name: v["Name"].as_str().unwrap_or("").to_string(),
            state: v["State"].as_str().unwrap_or("").to_string(),
            health: v["Health"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_ps_formats() {
        let lines = "{\"Service\":\"db\",\"Name\":\"p-db-1\",\"State\":\"running\",\"Health\":\"healthy\"}\n{\"Service\":\"api\",\"Name\":\"p-api-1\",\"State\":\"exited\",\"Health\":\"\"}\n";
        let ps = parse_ps(lines);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].state, "exited");
        let array =
            "[{\"Service\":\"db\",\"Name\":\"p-db-1\",\"State\":\"running\",\"Health\":\"\"}]";
        assert_eq!(parse_ps(array)[0].service, "db");
    }
}
