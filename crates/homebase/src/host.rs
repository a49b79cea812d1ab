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

/// The Compose v2 command on the host, as a shell word list: `docker compose` when the
/// docker CLI finds its plugin, else the plugin binary itself where Homebrew, Docker's
/// packages or Docker Desktop put it (Homebrew's plugin is found by `docker` only once
/// `~/.docker/config.json` lists its directory in `cliPluginsExtraDirs`, which `homebase
/// setup` adds). The plugin binary takes the same arguments as `docker compose`.
pub const FIND_COMPOSE: &str = "$(docker compose version >/dev/null 2>&1 && echo docker compose || { for p in /opt/homebrew/lib/docker/cli-plugins/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose \"$HOME/.docker/cli-plugins/docker-compose\" /usr/libexec/docker/cli-plugins/docker-compose /Applications/Docker.app/Contents/Resources/cli-plugins/docker-compose; do [ -x \"$p\" ] && echo \"$p\" && exit 0; done; echo docker compose; })";

/// The deploy lock is a symlink whose target is its holder's line (JSON): `ln -s` creates
/// it, holder and all, in one atomic step that fails when it exists, so a second deploy
/// never sees a lock without its holder. The line names the process on the host that holds
/// it (`host_pid`): while the laptop prepares, a shell that lives as long as the laptop's
/// command (its stdin is the laptop's pipe); once the release starts, the detached job. A
/// lock whose process is gone is stale at once. An older homebase's lock (a directory with
/// an `info` file, no `host_pid`) is read too.
pub const LOCK_INFO: &str =
    "{ readlink \"$d/lock\" 2>/dev/null || cat \"$d/lock/info\" 2>/dev/null; }";

/// The holder's line up to its `host_pid` value, which the script appends (`$$`, `$jp`).
/// `job`: the lock is held by the release job on the host, not by a laptop.
pub fn lock_line_prefix(holder: &str, token: &str, job: bool) -> String {
    let info = serde_json::json!({ "holder": holder, "pid": std::process::id(), "time": now_secs(), "token": token, "job": job }).to_string();
    format!("{},\"host_pid\":", info.trim_end_matches('}'))
}

/// The shell condition that takes the lock for `holder`, held by the host process
/// `pid_expr` (true when taken).
fn take_lock(holder: &str, token: &str, pid_expr: &str) -> String {
    // (`ln -s` into an older homebase's lock directory would succeed: refuse that first)
    format!(
        "[ ! -d \"$d/lock\" ] && ln -s {}\"{pid_expr}}}\" \"$d/lock\" 2>/dev/null",
        sh_quote(&lock_line_prefix(holder, token, false))
    )
}

/// Takes the lock, or takes over a lock whose holding process is gone (prints `stale` and
/// its line); else prints `held` and the holder's line.
fn take_or_take_over(holder: &str, token: &str, pid_expr: &str) -> String {
    let take = take_lock(holder, token, pid_expr);
    format!(
        "if {take}; then echo acquired; else \
           i=$({LOCK_INFO}); hp=$(printf '%s' \"$i\" | sed -n 's/.*\"host_pid\":\\([0-9][0-9]*\\).*/\\1/p'); \
           if [ -n \"$hp\" ] && ! kill -0 \"$hp\" 2>/dev/null && mv \"$d/lock\" \"$d/lock.stale.$$\" 2>/dev/null; then \
             if [ \"$(readlink \"$d/lock.stale.$$\")\" = \"$i\" ] && rm -f \"$d/lock.stale.$$\" && {take}; then echo acquired; echo \"stale $i\"; \
             else {{ [ -e \"$d/lock\" ] || [ -L \"$d/lock\" ] || mv \"$d/lock.stale.$$\" \"$d/lock\"; }}; rm -f \"$d/lock.stale.$$\"; echo held; {LOCK_INFO}; echo; fi; \
           else echo held; echo \"$i\"; fi; \
         fi"
    )
}

/// Kept releases: the newest this many (by id, which is a time) and the current one, and
/// only those the release log names (an upload whose deploy was cut off before its job
/// started is removed); temp directories an interrupted upload or backup left, once an hour
/// old. Runs under the lock, at the end of a deploy or a rollback (`$d` is the project's
/// directory).
pub const PRUNE: &str = "c=$(cat \"$d/current\" 2>/dev/null); n=0; for r in $(ls -1 \"$d/releases\" 2>/dev/null | sort -r); do if [ \"$r\" != \"$c\" ] && ! grep -qF \"\\\"id\\\":\\\"$r\\\"\" \"$d/releases.jsonl\" 2>/dev/null; then rm -rf \"$d/releases/$r\"; continue; fi; n=$((n + 1)); [ $n -gt 20 ] && [ \"$r\" != \"$c\" ] && rm -rf \"$d/releases/$r\"; done; find \"$d/releases\" \"$d/backups\" -maxdepth 1 -name '.tmp-*' -mmin +60 -exec rm -rf {} + 2>/dev/null";

pub struct HostProject<'a> {
    pub session: &'a Session,
    pub project: String,
    /// A swarm stack (`docker stack`) rather than a compose project.
    pub swarm: bool,
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

#[derive(Debug)]
pub enum LockOutcome {
    Acquired,
    Held {
        holder: String,
        pid: u64,
        age: Duration,
        /// Held by the release job on the host.
        job: bool,
    },
}

impl<'a> HostProject<'a> {
    pub fn new(session: &'a Session, project: &str) -> Self {
        HostProject {
            session,
            project: project.to_string(),
            swarm: false,
        }
    }

    /// The project on its host (the manager, in swarm mode).
    pub fn of(session: &'a Session, project: &crate::project::Project) -> Self {
        HostProject {
            session,
            project: project.config.project.name.clone(),
            swarm: project.swarm(),
        }
    }

    /// `"$HOME/.homebase/<project>"` for scripts.
    pub fn dir(&self) -> String {
        homebase_proto::layout::sh_project(&sh_quote(&self.project))
    }

    pub fn compose(&self) -> String {
        format!("{FIND_COMPOSE} -p {}", sh_quote(&self.project))
    }

    /// One round trip at the start of a deploy or rollback: checks the engine and Compose,
    /// takes the lock (or takes over one whose holder is gone), and reads the current release
    /// and the project's containers. The script then stays on the host, holding the lock for
    /// this process, until its stdin closes ([`Prepared::keeper`]): when this process ends
    /// or its connection drops, it removes the lock unless it was released or handed to the
    /// job in the meantime. What comes on its stdin ending with the line [`GO`] it runs
    /// first ([`Lock::run`](crate::release::Lock::run): the job's start and its follower, on
    /// the same channel, one round trip instead of a new command's two); anything else
    /// (a cut link, a laptop gone) it ignores.
    /// With `with_log`, the release log and the releases on the host (id and hash) come in
    /// the same round trip (what a rollback chooses from).
    pub fn prepare(
        &self,
        holder: &str,
        token: &str,
        up_to_date: Option<&str>,
        with_log: bool,
    ) -> Result<Prepared> {
        let take = take_or_take_over(holder, token, "$$");
        let log = if with_log {
            "echo @@HB@@; sed 's/^/> /' \"$d/releases.jsonl\" 2>/dev/null; \
             echo @@HB@@; for r in \"$d\"/releases/*/; do [ -f \"$r/compose.yml\" ] && \
               printf '> %s %s\\n' \"$(basename \"$r\")\" \"$(cat \"$r/hash\" 2>/dev/null)\"; done; "
        } else {
            ""
        };
        let up_to_date = up_to_date
            .map(|check| format!("if {check}; then echo \"uptodate $c\"; exit 0; fi; "))
            .unwrap_or_default();
        let script = format!(
            // an engine that does not answer: nothing is touched, no lock is left. A laptop
            // gone mid-output must not kill the script before it removes its lock (SIGPIPE,
            // SIGHUP): it then finds stdin closed at once.
            "trap '' PIPE HUP; echo @@T; d={d}; command -v docker >/dev/null 2>&1 || {{ echo nodocker; exit 0; }}; \
             e=$(docker info --format '{{{{.ServerVersion}}}}' 2>&1) || {{ echo noengine; echo \"$e\" | tail -1; exit 0; }}; \
             v=$({FIND_COMPOSE} version --short 2>&1) || {{ echo nocompose; echo \"$v\"; exit 0; }}; mkdir -p \"$d/releases\"; \
             {up_to_date}l=$({take}); echo \"$l\"; \
             [ -f \"$d/job/pid\" ] && [ ! -f \"$d/job/done\" ] && ! kill -0 \"$(cat \"$d/job/pid\")\" 2>/dev/null && echo \"interrupted $(cat \"$d/job/new\" 2>/dev/null)\"; \
             echo @@HB@@; c=$(cat \"$d/current\" 2>/dev/null) && {{ echo \"$c\"; cat \"$d/releases/$c/hash\" 2>/dev/null; echo; }}; \
             echo @@HB@@; docker ps -a --filter label=com.docker.compose.project={p} --format '{{{{json .}}}}'; \
             echo @@HB@@; [ -n \"$c\" ] && sed 's/^/> /' \"$d/releases/$c/compose.yml\" 2>/dev/null; \
             {log}echo @@HB@@END; case \"$l\" in acquired*) s=$(cat); \
               case \"$s\" in *{GO}) ( eval \"${{s%{GO}}}\" );; esac; \
               i=$({LOCK_INFO}); case \"$i\" in *'\"host_pid\":'\"$$\"'}}'*) rm -f \"$d/lock\";; esac;; esac",
            d = self.dir(),
            p = sh_quote(&self.project)
        );
        let sent = std::time::Instant::now();
        let mut stream = self.session.stream(&script)?;
        let deadline = sent + homebase_remote::default_deadline();
        let mut out = String::new();
        // the script's first line comes back after a channel's open and one exchange: two
        // round trips of the link
        let mut rtt = None;
        let complete = loop {
            match stream.next(Duration::from_millis(200)) {
                homebase_remote::Next::Line(l, _) if l == "@@T" => {
                    rtt = Some(sent.elapsed() / 2);
                }
                homebase_remote::Next::Line(l, _) if l == "@@HB@@END" => break true,
                homebase_remote::Next::Line(l, _) | homebase_remote::Next::Partial(l) => {
                    out.push_str(&l);
                    out.push('\n');
                }
                homebase_remote::Next::End => break false,
                homebase_remote::Next::Idle if std::time::Instant::now() > deadline => {
                    return Err(homebase_remote::RemoteError::Timeout {
                        host: self.session.host(),
                        command: "take the deploy lock".into(),
                        secs: homebase_remote::default_deadline().as_secs(),
                    }
                    .into());
                }
                homebase_remote::Next::Idle => {}
            }
        };
        let keeper = if complete {
            Some(stream)
        } else {
            // the script ended early (no docker, no engine) or the connection failed
            stream.finish()?;
            None
        };
        let mut parts = out.split("@@HB@@\n");
        let lock_part = parts.next().unwrap_or("");
        let mut lock_lines = lock_part.lines();
        let mut took_over = None;
        let mut interrupted = None;
        let first = lock_lines.next();
        if let Some(id) = first.and_then(|l| l.strip_prefix("uptodate ")) {
            return Ok(Prepared {
                lock: LockOutcome::Acquired,
                rtt,
                current: None,
                current_compose: None,
                containers: Vec::new(),
                keeper: None,
                took_over: None,
                interrupted: None,
                up_to_date: Some(id.trim().to_string()).filter(|i| homebase_proto::is_safe_name(i)),
                log: None,
                releases: None,
            });
        }
        let lock = match first {
            Some("acquired") => {
                for l in lock_lines {
                    if let Some(info) = l.strip_prefix("stale ") {
                        took_over = Some(held(info));
                    } else if let Some(id) = l.strip_prefix("interrupted ") {
                        interrupted =
                            Some(id.trim().to_string()).filter(|i| homebase_proto::is_safe_name(i));
                    }
                }
                LockOutcome::Acquired
            }
            Some("held") => held(lock_lines.next().unwrap_or("{}")),
            Some("nodocker") => {
                return Err(crate::exit::coded(
                    crate::exit::Exit::Unreachable,
                    format!(
                        "there is no `docker` on `{}` (not on its PATH, nor in /opt/homebrew/bin, /usr/local/bin or Docker Desktop's bin); install it there (macOS: `brew install colima docker docker-compose && colima start`; Debian: `sudo apt-get install docker.io`); nothing was changed",
                        self.session.host()
                    ),
                ));
            }
            Some("noengine") => {
                return Err(crate::exit::coded(
                    crate::exit::Exit::Unreachable,
                    format!(
                        "the Docker engine on `{}` does not answer ({}); start it (`colima start` on a Mac, the docker service on Linux) and deploy again; nothing was changed",
                        self.session.host(),
                        lock_lines.collect::<Vec<_>>().join(" ").trim()
                    ),
                ));
            }
            Some("nocompose") => anyhow::bail!(
                "`docker compose` does not work on `{}`: {}; install Docker with the Compose v2 plugin there (on macOS: `brew install colima docker docker-compose && colima start`)",
                self.session.host(),
                lock_lines.collect::<Vec<_>>().join(" ").trim()
            ),
            other => anyhow::bail!(
                "unexpected answer from `{}` while taking the deploy lock: {other:?}",
                self.session.host()
            ),
        };
        let mut cur = parts.next().unwrap_or("").lines().map(str::trim);
        let current = match (cur.next(), cur.next()) {
            (Some(id), hash) if !id.is_empty() && homebase_proto::is_safe_name(id) => {
                Some((id.to_string(), hash.unwrap_or("").to_string()))
            }
            _ => None,
        };
        let containers = parts
            .next()
            .unwrap_or("")
            .lines()
            .filter_map(parse_docker_ps_line)
            .collect();
        // the current release's compose file, each line quoted `> `
        let current_compose = parts
            .next()
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("> ").or((l == ">").then_some("")))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .filter(|t| !t.trim().is_empty());
        let quoted = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("> "))
                .map(str::to_string)
                .collect()
        };
        let log = parts.next().filter(|_| with_log).map(|text| {
            quoted(text)
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        });
        let on_host = parts.next().filter(|_| with_log).map(|text| {
            quoted(text)
                .iter()
                .filter_map(|l| {
                    let (id, hash) = l.split_once(' ').unwrap_or((l.as_str(), ""));
                    homebase_proto::is_safe_name(id).then(|| (id.to_string(), hash.to_string()))
                })
                .collect()
        });
        let keeper = keeper.filter(|_| matches!(lock, LockOutcome::Acquired));
        Ok(Prepared {
            lock,
            rtt,
            current,
            current_compose,
            containers,
            keeper,
            took_over,
            interrupted,
            up_to_date: None,
            log,
            releases: on_host,
        })
    }

    /// Appends to the release log and releases the lock, in one round trip.
    pub fn finish(&self, entry: &ReleaseEntry, token: &str) -> Result<()> {
        // the line on the command line, not stdin: a command that reads stdin costs a round
        // trip more
        let line = serde_json::to_string(entry)?;
        let script = format!(
            "d={d}; printf '%s\\n' {line} >> \"$d/releases.jsonl\"; {PRUNE}; {{ {LOCK_INFO}; }} | grep -q {t} && rm -rf \"$d/lock\"; true",
            d = self.dir(),
            line = sh_quote(&line),
            t = sh_quote(token)
        );
        self.session.check(&script)?;
        Ok(())
    }

    /// Releases the lock if it is still ours.
    pub fn unlock(&self, token: &str) -> Result<()> {
        let script = format!(
            "d={d}; {{ {LOCK_INFO}; }} | grep -q {t} && rm -rf \"$d/lock\"; true",
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
        if self.swarm {
            return crate::commands::swarm::ps(self);
        }
        let out = self.session.check(&format!(
            "docker ps -a --filter label=com.docker.compose.project={} --format '{{{{json .}}}}'",
            sh_quote(&self.project)
        ))?;
        Ok(out.lines().filter_map(parse_docker_ps_line).collect())
    }

    /// Uploads a bundle atomically: into a temp dir, then renamed to `releases/<id>`.
    pub fn upload(&self, id: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let bundle = self.bundle(id, files)?;
        let (script, input) = bundle.script(bundle.small());
        self.session.check_with_input(&script, &input)?;
        Ok(())
    }

    /// Release `id`'s files as a bundle to upload (see [`Bundle::script`]).
    pub fn bundle(&self, id: &str, files: &[(&str, &[u8])]) -> Result<Bundle> {
        check_id(id)?;
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
        Ok(Bundle {
            dir: self.dir(),
            id: id.to_string(),
            bytes,
        })
    }

    /// `docker compose up -d --wait` of a release; returns (success, combined output).
    pub fn up(&self, id: &str, wait_timeout: Duration) -> Result<(bool, String)> {
        check_id(id)?;
        if self.swarm {
            return crate::commands::swarm::up(self, id, wait_timeout);
        }
        let script = format!(
            "cd {d}/releases/{id} && {c} -f compose.yml up -d --wait --wait-timeout {t} --remove-orphans 2>&1",
            d = self.dir(),
            c = self.compose(),
            t = wait_timeout.as_secs().max(1)
        );
        // Compose's own wait, plus time for pulls and the stop of the old containers
        let deadline =
            (wait_timeout + Duration::from_secs(300)).max(homebase_remote::STEP_DEADLINE);
        let out = self.session.run_with_deadline(&script, b"", deadline)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ))
    }

    /// Removes the project's containers and networks, never its volumes.
    pub fn down(&self, id: &str) -> Result<()> {
        check_id(id)?;
        if self.swarm {
            return crate::commands::swarm::down(self);
        }
        self.session.check(&format!(
            "cd {d}/releases/{id} && {c} -f compose.yml down --remove-orphans",
            d = self.dir(),
            c = self.compose()
        ))?;
        Ok(())
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
        let mut lines = out.lines();
        let current = lines
            .next()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let log = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
        Ok((log, current))
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

/// The last line of a script sent to the prepare command's stdin, to run it: a script cut
/// short by a lost link lacks it and is not run.
pub const GO: &str = "@@GO";

/// Bundles up to this size (the tar) may go base64-encoded in a command's own text.
const INLINE_BUNDLE: usize = 64 * 1024;

/// A release's files as a tar, to upload into `releases/<id>` atomically.
pub struct Bundle {
    dir: String,
    id: String,
    bytes: Vec<u8>,
}

impl Bundle {
    /// Small enough to go in a command's own text (Linux takes one argument of up to 128
    /// KiB): a command that reads its stdin waits one more round trip for it.
    pub fn small(&self) -> bool {
        self.bytes.len() <= INLINE_BUNDLE
    }

    /// The script that uploads it (exit 1 on any failure, nothing left but a temp dir), for
    /// a command that goes on after it, and what to send on that command's stdin: nothing
    /// when `inline` (the archive, base64, is in the script), else the archive.
    pub fn script(&self, inline: bool) -> (String, Vec<u8>) {
        let take = if inline {
            use base64::Engine as _;
            format!(
                "printf '%s' {} | {{ base64 -d 2>/dev/null || base64 -D; }} > \"$t.tar\"",
                base64::engine::general_purpose::STANDARD.encode(&self.bytes)
            )
        } else {
            "cat > \"$t.tar\"".to_string()
        };
        let script = format!(
            // every step chained with && (no `set -e`: it is off inside a list that is tested,
            // as when a command goes on after the upload), and the archive taken whole (its
            // size checked) before anything is unpacked: a cut link leaves only the temp dir
            "d={d}; t=\"$d/releases/.tmp-{id}\"; rm -rf \"$t\" && mkdir -p \"$t\" && chmod 700 \"$t\" && \
             {take} && [ \"$(wc -c < \"$t.tar\" | tr -d ' ')\" = {n} ] && tar -xf \"$t.tar\" -C \"$t\" && rm -f \"$t.tar\" && \
             find \"$t\" -type f -exec chmod 600 {{}} + && rm -rf \"$d/releases/{id}\" && mv \"$t\" \"$d/releases/{id}\" || {{ rm -rf \"$t\" \"$t.tar\"; exit 1; }}",
            d = self.dir,
            id = self.id,
            n = self.bytes.len()
        );
        (
            script,
            if inline {
                Vec::new()
            } else {
                self.bytes.clone()
            },
        )
    }
}

/// What a deploy learns in its first round trip.
pub struct Prepared {
    pub lock: LockOutcome,
    /// The link's round trip, as the prepare command measured it.
    pub rtt: Option<Duration>,
    pub current: Option<(String, String)>,
    /// The current release's rendered compose file (what a deploy compares databases with).
    pub current_compose: Option<String>,
    pub containers: Vec<PsEntry>,
    /// The script that holds the lock for this process (while the lock is ours).
    pub keeper: Option<homebase_remote::Stream>,
    /// The lock was taken over from a holder whose process was gone.
    pub took_over: Option<LockOutcome>,
    /// A release job that was cut off on the host (the host restarted, or it was killed).
    pub interrupted: Option<String>,
    /// The host already runs this bundle, healthy: the id of its release (no lock taken).
    pub up_to_date: Option<String>,
    /// With `with_log`: the release log (oldest first).
    pub log: Option<Vec<ReleaseEntry>>,
    /// With `with_log`: the releases on the host, id and hash.
    pub releases: Option<Vec<(String, String)>>,
}

fn held(info: &str) -> LockOutcome {
    let v: Value = serde_json::from_str(info).unwrap_or(Value::Null);
    let time = v["time"].as_u64().unwrap_or(0);
    let job = v["job"].as_bool().unwrap_or(false);
    LockOutcome::Held {
        holder: v["holder"].as_str().unwrap_or("unknown").to_string(),
        // the job's lock names its process on the host
        pid: v[if job { "host_pid" } else { "pid" }]
            .as_u64()
            .unwrap_or(0),
        age: Duration::from_secs(now_secs().saturating_sub(time)),
        job,
    }
}

/// One line of `docker ps --format '{{json .}}'`: the compose service comes from the labels,
/// health from the status text (`Up 5 seconds (healthy)`).
fn parse_docker_ps_line(line: &str) -> Option<PsEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let labels = v["Labels"].as_str().unwrap_or("");
    let service = labels
        .split(',')
        .find_map(|l| l.strip_prefix("com.docker.compose.service="))?
        .to_string();
    let status = v["Status"].as_str().unwrap_or("");
    let health = homebase_engine::health_from_status(status);
    Some(PsEntry {
        service,
        name: v["Names"].as_str().unwrap_or("").to_string(),
        state: v["State"].as_str().unwrap_or("").to_string(),
        health: health.to_string(),
        desired: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_ps_lines() {
        let line = r#"{"Labels":"com.docker.compose.project=p,com.docker.compose.service=db","Names":"p-db-1","State":"running","Status":"Up 5 seconds (healthy)"}"#;
        let e = parse_docker_ps_line(line).unwrap();
        assert_eq!(
            (e.service.as_str(), e.state.as_str(), e.health.as_str()),
            ("db", "running", "healthy")
        );
        let starting = line.replace("(healthy)", "(health: starting)");
        assert_eq!(parse_docker_ps_line(&starting).unwrap().health, "starting");
        assert!(parse_docker_ps_line(r#"{"Labels":"","Names":"x"}"#).is_none());
    }
}
