//! The deploy lock, and the first round trip of a deploy or rollback that takes it.

use std::time::Duration;

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::sh_quote;

use super::{FIND_COMPOSE, HostProject, PsEntry, compose::parse_docker_ps_line};
use homebase_proto::clock::now_secs;

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
    let line = homebase_proto::LockHolder {
        holder: holder.to_string(),
        pid: u64::from(std::process::id()),
        time: now_secs(),
        token: token.to_string(),
        job,
        host_pid: None,
    };
    let info = serde_json::to_string(&line).unwrap_or_default();
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

#[derive(Debug, Default)]
pub enum LockOutcome {
    #[default]
    Acquired,
    Held {
        holder: String,
        pid: u64,
        age: Duration,
        /// Held by the release job on the host.
        job: bool,
    },
}

/// The last line of a script sent to the prepare command's stdin, to run it: a script cut
/// short by a lost link lacks it and is not run.
pub const GO: &str = "@@GO";

impl HostProject<'_> {
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
        let script = self.prepare_script(holder, token, up_to_date, with_log);
        let (out, rtt, keeper) = self.read_prepared(&script)?;
        let mut prepared = self.parse_prepared(&out, with_log)?;
        prepared.rtt = rtt;
        if matches!(prepared.lock, LockOutcome::Acquired) && prepared.up_to_date.is_none() {
            prepared.keeper = keeper;
        }
        Ok(prepared)
    }

    /// The prepare command (see [`HostProject::prepare`]); `up_to_date` a shell condition
    /// that, true, ends it at once with `uptodate ID` and no lock taken.
    fn prepare_script(
        &self,
        holder: &str,
        token: &str,
        up_to_date: Option<&str>,
        with_log: bool,
    ) -> String {
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
        format!(
            // an engine that does not answer: nothing is touched, no lock is left. A laptop
            // gone mid-output must not kill the script before it removes its lock (SIGPIPE,
            // SIGHUP): it then finds stdin closed at once.
            "trap '' PIPE HUP; echo @@T; d={d}; command -v docker >/dev/null 2>&1 || {{ echo nodocker; exit 0; }}; \
             e=$(docker info --format '{{{{.ServerVersion}}}}' 2>&1) || {{ echo noengine; echo \"$e\" | tail -1; exit 0; }}; \
             v=$({FIND_COMPOSE} version --short 2>&1) || {{ echo nocompose; echo \"$v\"; exit 0; }}; mkdir -p \"$d/releases\" && chmod 700 \"${{d%/*}}\" \"$d\"; \
             {up_to_date}l=$({take}); echo \"$l\"; \
             [ -f \"$d/job/pid\" ] && [ ! -f \"$d/job/done\" ] && ! kill -0 \"$(cat \"$d/job/pid\")\" 2>/dev/null && echo \"interrupted $(cat \"$d/job/new\" 2>/dev/null)\"; \
             echo @@HB@@; c=$(cat \"$d/current\" 2>/dev/null) && {{ echo \"$c\"; cat \"$d/releases/$c/hash\" 2>/dev/null; echo; }}; \
             echo @@HB@@; docker ps -a --filter label=com.docker.compose.project={p} --format '{{{{json .}}}}'; \
             echo @@HB@@; [ -n \"$c\" ] && sed 's/^/> /' \"$d/releases/$c/compose.yml\" 2>/dev/null; \
             {log}echo @@HB@@; {state}; echo @@HB@@END; case \"$l\" in acquired*) s=$(cat); \
               case \"$s\" in *{GO}) ( eval \"${{s%{GO}}}\" );; esac; \
               i=$({LOCK_INFO}); case \"$i\" in *'\"host_pid\":'\"$$\"'}}'*) rm -f \"$d/lock\";; esac;; esac",
            d = self.dir(),
            p = sh_quote(&self.project),
            state = super::tree::STATE,
        )
    }

    /// Runs the prepare command up to its end marker: its output, the link's round trip as
    /// it measured it, and the command itself still running (holding the lock) when it got
    /// that far.
    fn read_prepared(
        &self,
        script: &str,
    ) -> Result<(String, Option<Duration>, Option<homebase_remote::Stream>)> {
        let sent = std::time::Instant::now();
        let mut stream = self.session.stream(script)?;
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
        Ok((out, rtt, keeper))
    }

    /// What the prepare command's output says (`rtt` and `keeper` left for the caller).
    fn parse_prepared(&self, out: &str, with_log: bool) -> Result<Prepared> {
        let mut parts = out.split("@@HB@@\n");
        let answer = self.lock_answer(parts.next().unwrap_or(""))?;
        if answer.up_to_date.is_some() {
            return Ok(answer);
        }
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
        let tree = super::tree::parse_state(out.rsplit("@@HB@@\n").next().unwrap_or(""));
        Ok(Prepared {
            tree,
            current,
            current_compose,
            containers,
            log,
            releases: on_host,
            ..answer
        })
    }

    /// The lock part of the prepare command's answer: the lock (with what it took over and
    /// a job it found cut off), or the release the host already runs; an engine or Compose
    /// that does not work is an error naming the fix.
    fn lock_answer(&self, part: &str) -> Result<Prepared> {
        let mut lock_lines = part.lines();
        let mut took_over = None;
        let mut interrupted = None;
        let first = lock_lines.next();
        if let Some(id) = first.and_then(|l| l.strip_prefix("uptodate ")) {
            return Ok(Prepared {
                up_to_date: Some(id.trim().to_string()).filter(|i| homebase_proto::is_safe_name(i)),
                ..Prepared::default()
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
        Ok(Prepared {
            lock,
            took_over,
            interrupted,
            ..Prepared::default()
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
}

/// What a deploy learns in its first round trip.
#[derive(Default)]
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
    /// The project's files and repository on the host (`host::tree`).
    pub tree: super::tree::State,
}

fn held(info: &str) -> LockOutcome {
    let line: homebase_proto::LockHolder = serde_json::from_str(info).unwrap_or_default();
    LockOutcome::Held {
        holder: if line.holder.is_empty() {
            "unknown".into()
        } else {
            line.holder
        },
        // the job's lock names its process on the host
        pid: if line.job {
            line.host_pid.unwrap_or(0)
        } else {
            line.pid
        },
        age: Duration::from_secs(now_secs().saturating_sub(line.time)),
        job: line.job,
    }
}

#[cfg(test)]
mod tests {
    use super::{LockOutcome, Prepared};
    use crate::HostProject;
    use homebase_remote::{Session, Target};

    /// The prepare command's answer as recorded from a host (one part per `@@HB@@`).
    const RECORDED: &str = concat!(
        "acquired\n",
        "stale {\"holder\":\"me@laptop\",\"pid\":41,\"time\":1795465867,\"token\":\"t\"}\n",
        "interrupted 20261123T213000Z-1a2b\n",
        "@@HB@@\n",
        "20261123T213000Z-1a2b\n",
        "5f3c\n",
        "@@HB@@\n",
        "{\"Labels\":\"com.docker.compose.project=p,com.docker.compose.service=db\",\"Names\":\"p-db-1\",\"State\":\"running\",\"Status\":\"Up 5 seconds (healthy)\"}\n",
        "not json\n",
        "@@HB@@\n",
        "> services:\n",
        ">\n",
        ">   db: {}\n",
        "@@HB@@\n",
        "> {\"id\":\"20261123T213000Z-1a2b\",\"time\":1795465867,\"user\":\"me\",\"git_commit\":null,\"git_dirty\":false,\"config_hash\":\"h\",\"outcome\":\"deployed\",\"duration_ms\":1200}\n",
        "> garbage\n",
        "@@HB@@\n",
        "> 20261123T213000Z-1a2b 5f3c\n",
        "> ../escape x\n",
        "@@HB@@\n",
        "o abc\n",
        "m web/index.html\n",
        "g 0123456789012345678901234567890123456789\n",
    );

    fn parsed(out: &str, with_log: bool) -> anyhow::Result<Prepared> {
        let session = Session::open(&Target::Local).expect("local session");
        HostProject::new(&session, "p").parse_prepared(out, with_log)
    }

    #[test]
    fn a_recorded_prepare_answer_reads_as_its_parts() {
        let p = parsed(RECORDED, true).unwrap();
        assert!(matches!(p.lock, LockOutcome::Acquired));
        match p.took_over {
            Some(LockOutcome::Held {
                holder, pid, job, ..
            }) => {
                assert_eq!((holder.as_str(), pid, job), ("me@laptop", 41, false));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.interrupted.as_deref(), Some("20261123T213000Z-1a2b"));
        assert_eq!(
            p.current,
            Some(("20261123T213000Z-1a2b".into(), "5f3c".into()))
        );
        // a line that is not docker's JSON is left out, not an error
        assert_eq!(p.containers.len(), 1);
        assert_eq!(p.containers[0].service, "db");
        assert_eq!(p.containers[0].health, "healthy");
        assert_eq!(p.current_compose.as_deref(), Some("services:\n\n  db: {}"));
        // a log line that is not an entry, a release name that could leave its directory:
        // left out
        assert_eq!(p.log.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            p.releases,
            Some(vec![("20261123T213000Z-1a2b".into(), "5f3c".into())])
        );
        assert!(p.tree.objects.contains("abc"));
        assert_eq!(p.tree.edited, ["web/index.html"]);
        assert!(p.tree.deployed.is_some());
        // without the log asked for, none is read
        let p = parsed(RECORDED, false).unwrap();
        assert!(p.log.is_none() && p.releases.is_none());
    }

    #[test]
    fn the_lock_answers_read_as_their_outcome_or_error() {
        let p = parsed("uptodate 20261123T213000Z-1a2b\n", false).unwrap();
        assert_eq!(p.up_to_date.as_deref(), Some("20261123T213000Z-1a2b"));
        // an id that is not a plain name is no release
        let p = parsed("uptodate ../../x\n", false).unwrap();
        assert_eq!(p.up_to_date, None);
        let p = parsed(
            "held\n{\"holder\":\"ci@box\",\"pid\":7,\"host_pid\":99,\"job\":true,\"time\":0,\"token\":\"t\"}\n@@HB@@\n",
            false,
        )
        .unwrap();
        match p.lock {
            LockOutcome::Held {
                holder, pid, job, ..
            } => {
                // the job's lock names its process on the host
                assert_eq!((holder.as_str(), pid, job), ("ci@box", 99, true));
            }
            other => panic!("{other:?}"),
        }
        // a holder line that is not JSON still reads as held, by someone unknown
        let p = parsed("held\n{not json\n", false).unwrap();
        assert!(matches!(p.lock, LockOutcome::Held { ref holder, .. } if holder == "unknown"));
        for (answer, says) in [
            ("nodocker\n", "there is no `docker`"),
            (
                "noengine\nCannot connect to the Docker daemon\n",
                "does not answer (Cannot connect",
            ),
            (
                "nocompose\nunknown command\n",
                "`docker compose` does not work",
            ),
            ("", "unexpected answer"),
        ] {
            let e = parsed(answer, false).err().expect(answer);
            assert!(format!("{e:#}").contains(says), "{answer}: {e:#}");
        }
        let e = parsed("noengine\n", false).err().unwrap();
        assert_eq!(crate::exit::classify(&e), crate::exit::Exit::Unreachable);
    }
}
