//! A release on the host, for deploy and rollback alike: the lock, and the job that starts a
//! release, gates it on health and otherwise goes back to the previous one.
//!
//! The job runs detached on the host (`nohup sh ~/.homebase/<project>/job/run.sh`), so the
//! outcome never depends on the laptop: Ctrl-C, SIGKILL, a sleeping laptop or a dropped link
//! leave the host to end on its own, at the new release healthy or the previous one running,
//! the lock released and the release log written. The laptop follows the job's log
//! (`job/log`, one `@@ ` line per event, every other line quoted with `| `), reconnects after
//! a drop from the byte it had reached, and on Ctrl-C asks whether to abort (the job rolls
//! back) or detach. `homebase deploy --attach` follows a job from another command.
//!
//! The lock's holder line names a process on the host (`host_pid`): until the job starts, the
//! prepare script, which lives exactly as long as this process's pipe to it; then the job. A
//! lock whose process is gone is taken over at once by the next deploy, which first removes
//! what an interrupted `up` left (containers never started, or renamed aside).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::{Next, Session, Stream, Target, sh_quote};

use crate::exit::{Exit, coded};
use crate::host::{FIND_COMPOSE, GO, HostProject, LOCK_INFO, LockOutcome, Prepared, now_secs};
use crate::progress::Progress;

/// Locks without a holder process (an older homebase's) older than this are called stale.
const STALE_LOCK: Duration = Duration::from_secs(15 * 60);
/// How long the laptop tries to reach the host again after the link dropped mid-job.
const RECONNECT_FOR: Duration = Duration::from_secs(90);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C, SIGTERM and SIGHUP set a flag that the deploy reads between steps and while it
/// follows the job, instead of killing this process mid-step.
pub fn catch_interrupts() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Stops a deploy between steps when it was interrupted before the job started: nothing on
/// the host has changed yet, and the lock guard releases the lock.
pub fn check_interrupt() -> Result<()> {
    if take_interrupt() {
        return Err(coded(
            Exit::Interrupted,
            "interrupted before any container changed; the host is as it was",
        ));
    }
    Ok(())
}

/// The deploy lock, held by this process until it is handed to the job or released.
pub struct Lock<'a> {
    host: &'a HostProject<'a>,
    target: Target,
    token: String,
    holder: String,
    keeper: Option<Stream>,
    released: bool,
}

impl<'a> Lock<'a> {
    /// Takes the lock (exit 4 naming the holder when another deploy has it), reading the
    /// current release and the containers (with `with_log`, the release log and the
    /// releases on the host too) in the same round trip.
    pub fn take(
        host: &'a HostProject<'a>,
        target: Target,
        project: &str,
        progress: &mut Progress,
        up_to_date: Option<&UpToDate>,
        with_log: bool,
    ) -> Result<(Lock<'a>, Prepared)> {
        let token = format!("{}-{}-{}", whoami(), std::process::id(), now_secs());
        let holder = format!("{}@{}", whoami(), homebase_proto::sys::hostname("laptop"));
        let check = up_to_date.map(|u| u.script()).transpose()?;
        let mut prepared = host.prepare(&holder, &token, check.as_deref(), with_log)?;
        if prepared.up_to_date.is_some() {
            // nothing to do, and no lock was taken
            return Ok((
                Lock {
                    host,
                    target,
                    token,
                    holder,
                    keeper: None,
                    released: true,
                },
                prepared,
            ));
        }
        match &prepared.lock {
            LockOutcome::Acquired => {}
            LockOutcome::Held {
                holder,
                pid,
                age,
                job,
            } => {
                progress.fail("held");
                let host_name = host.session.host();
                let message = if *job {
                    format!(
                        "another deploy of `{project}` holds the lock: it is running on {host_name} as pid {pid}, started by {holder} {} ago; follow it with `homebase deploy --attach`, or wait for it",
                        human_duration(*age)
                    )
                } else {
                    let stale = if *age > STALE_LOCK {
                        " (stale: that deploy probably died)"
                    } else {
                        ""
                    };
                    format!(
                        "another deploy of `{project}` holds the lock on {host_name}: {holder}, pid {pid}, for {}{stale}; wait for it, or break the lock with `homebase deploy --force-unlock`",
                        human_duration(*age)
                    )
                };
                return Err(coded(Exit::Locked, message));
            }
        }
        if let Some(LockOutcome::Held { holder, age, .. }) = &prepared.took_over {
            progress.info(&format!(
                "took over the lock of a deploy that is gone ({holder}, {} ago)",
                human_duration(*age)
            ));
        }
        if let Some(id) = &prepared.interrupted {
            progress.info(&format!(
                "the deploy of release {id} was cut off on the host (it restarted, or the job was killed); this one cleans up after it"
            ));
        }
        let keeper = prepared.keeper.take();
        Ok((
            Lock {
                host,
                target,
                token,
                holder,
                keeper,
                released: false,
            },
            prepared,
        ))
    }

    /// Logs the outcome and releases the lock in one round trip.
    pub fn finish(&mut self, entry: &ReleaseEntry) -> Result<()> {
        self.host.finish(entry, &self.token)?;
        self.released = true;
        Ok(())
    }

    /// Whether the job of release `new` runs (or ran) on the host: asked again on a new
    /// connection, when the answer of the command that started it was lost.
    fn job_started(&self, new: &str) -> bool {
        let Ok(s) = Session::open(&self.target) else {
            return false;
        };
        let out = s.run(&format!(
            "d={}; [ -f \"$d/job/pid\" ] && cat \"$d/job/new\"",
            self.host.dir()
        ));
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == new)
    }

    /// Uploads `bundle` (if any), starts the job, hands it the lock, and follows it to its
    /// end (see [`follow`]), all in one script: its output is the start's answer, then
    /// `@@FOLLOW` and the job's log as [`follow`] reads it. The script goes to the prepare
    /// command that holds the lock (its stdin, ending with [`GO`]), so it costs one round
    /// trip of the link, not a new command's two; the bundle travels inside it. Without
    /// that command (swarm mode) it is a command of its own. When the script is cut before
    /// its answer, the host is asked whether the job started, so that a deploy that goes on
    /// there is followed, not mistaken for one that never began.
    pub fn run(
        mut self,
        job: &Job,
        bundle: Option<Bundle>,
        progress: &mut Progress,
        up_label: String,
    ) -> Result<Followed> {
        let uploading = bundle.is_some();
        let start = job.start_script(&self.host.dir(), &self.token, &self.holder)?;
        let keeper = self.keeper.take();
        let (upload, input) = match &bundle {
            Some(b) => {
                let (upload, input) = b.script(keeper.is_some() || b.small());
                (
                    format!("( {upload} ) || {{ echo uploadfailed; exit 0; }}\n"),
                    input,
                )
            }
            None => (String::new(), Vec::new()),
        };
        let script = format!(
            "{upload}s=$( ( {start} ) 2>&1 ); printf '%s\\n' \"$s\"; \
             case \"$s\" in *'started '*) ;; *) exit 0;; esac; echo @@FOLLOW\n{}",
            follower(&job.project, 0)
        );
        let session = self.host.session;
        let labels = Labels { up: up_label };
        let opened = match keeper {
            Some(mut keeper) => keeper
                .send_input(format!("{script}\n{GO}\n").as_bytes())
                .map(|()| keeper),
            None => session.stream(&script).and_then(|mut stream| {
                stream.send_input(&input)?;
                Ok(stream)
            }),
        };
        let (answer, stream) = match opened {
            Ok(mut stream) => match read_start(&mut stream) {
                Ok(answer) => (answer, Some(stream)),
                Err(answer) => {
                    // the start's answer is all there is: the command ended (or was cut)
                    let cut = stream.finish().is_err();
                    if cut && self.job_started(&job.new) {
                        self.hand_over();
                        if uploading {
                            progress.done();
                        }
                        return follow(session, &job.project, progress, &labels);
                    }
                    (answer, None)
                }
            },
            Err(e) => {
                if self.job_started(&job.new) {
                    self.hand_over();
                    return follow(session, &job.project, progress, &labels);
                }
                return Err(anyhow::Error::from(e).context(format!(
                    "release {} did not start on `{}`; nothing was changed",
                    job.new,
                    session.host()
                )));
            }
        };
        let Some(stream) = stream else {
            if answer.lines().any(|l| l == "uploadfailed") {
                anyhow::bail!(
                    "the upload of release {} to `{}` failed (is its disk full?); nothing was changed",
                    job.new,
                    session.host()
                );
            }
            anyhow::bail!(
                "the release job did not start on `{}` ({}); nothing was changed",
                session.host(),
                if answer.contains("notours") {
                    "the lock was no longer this deploy's"
                } else if answer.trim().is_empty() {
                    "the connection ended before it answered"
                } else {
                    answer.trim()
                }
            );
        };
        self.hand_over();
        if uploading {
            // the upload step (opened by the caller) ends with the job's start
            progress.done();
        }
        follow_from(session, &job.project, progress, &labels, Some(stream))
    }

    /// The job runs and holds the lock: this process lets go of it.
    fn hand_over(&mut self) {
        self.released = true;
        if let Some(k) = self.keeper.take() {
            k.close();
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if !self.released && self.host.unlock(&self.token).is_err() {
            let retry = Session::open(&self.target)
                .map_err(anyhow::Error::from)
                .and_then(|s| HostProject::new(&s, &self.host.project).unlock(&self.token));
            if let Err(e) = retry {
                crate::ui::warn(&format!(
                    "could not release the deploy lock ({e:#}); the next deploy takes it over once this process is gone"
                ));
            }
        }
        if let Some(k) = self.keeper.take() {
            k.close();
        }
    }
}

/// A deploy whose bundle the host already runs, healthy, needs no lock and no second round
/// trip: the prepare script checks it first and logs the `up-to-date` line itself.
pub struct UpToDate {
    pub project: String,
    pub hash: String,
    pub services: Vec<String>,
    /// The release-log line; the host fills in the release id and the time.
    pub entry: ReleaseEntry,
}

impl UpToDate {
    /// The shell condition (true when up to date, then the line is logged); `$d` is the
    /// project's directory.
    fn script(&self) -> Result<String> {
        for s in &self.services {
            if !homebase_proto::is_safe_name(s) {
                anyhow::bail!(
                    "service name `{}` cannot go into a script",
                    s.escape_debug()
                );
            }
        }
        let mut v = serde_json::to_value(&self.entry)?;
        v["id"] = "@ID@".into();
        v["time"] = "@TIME@".into();
        Ok(format!(
            "{{ p={p}; {HEALTHY_FN} [ ! -e \"$d/lock\" ] && [ ! -L \"$d/lock\" ] && c=$(cat \"$d/current\" 2>/dev/null) && [ -n \"$c\" ] && \
               [ \"$(cat \"$d/releases/$c/hash\" 2>/dev/null)\" = {h} ] && healthy {svcs} && \
               printf '%s\\n' {line} | sed -e \"s|@ID@|$c|\" -e \"s|\\\"@TIME@\\\"|$(date +%s)|\" >> \"$d/releases.jsonl\"; }}",
            p = sh_quote(&self.project),
            h = sh_quote(&self.hash),
            svcs = sh_quote(&self.services.join(" ")),
            line = sh_quote(&serde_json::to_string(&v)?),
        ))
    }
}

/// What the job does: start `new`, wait until every planned service is running and
/// healthy, make it current; otherwise (or on abort) start `prev` again, or remove `new`'s
/// containers when there is no previous release.
pub struct Job {
    pub project: String,
    pub new: String,
    pub prev: Option<String>,
    /// The services that must be running and healthy; empty: those `new`'s compose file
    /// enables.
    pub services: Vec<String>,
    pub wait: Duration,
    /// The release-log lines for success and failure; the job fills in time, duration and,
    /// on failure, the release that runs and the reason.
    pub ok_entry: ReleaseEntry,
    pub fail_entry: ReleaseEntry,
    /// Time the laptop spent before the job started.
    pub pre: Duration,
}

impl Job {
    fn start_script(&self, dir: &str, token: &str, holder: &str) -> Result<String> {
        crate::host::check_id(&self.new)?;
        if let Some(p) = &self.prev {
            crate::host::check_id(p)?;
        }
        for s in &self.services {
            if !homebase_proto::is_safe_name(s) {
                anyhow::bail!(
                    "service name `{}` cannot go into a script",
                    s.escape_debug()
                );
            }
        }
        let template = |e: &ReleaseEntry, fail: bool| -> Result<String> {
            let mut v = serde_json::to_value(e)?;
            v["time"] = "@TIME@".into();
            v["duration_ms"] = "@MS@".into();
            if fail {
                v["target"] = "@TARGET@".into();
                v["error"] = "@ERROR@".into();
            }
            Ok(serde_json::to_string(&v)?)
        };
        let header = format!(
            "d={dir}\np={p}\nnew={new}\nprev={prev}\nsvcs={svcs}\nwait={wait}\nlimit={limit}\ntok={tok}\npre_ms={pre}\ncompose={FIND_COMPOSE}\n",
            p = sh_quote(&self.project),
            new = sh_quote(&self.new),
            prev = sh_quote(self.prev.as_deref().unwrap_or("")),
            svcs = sh_quote(&self.services.join(" ")),
            wait = self.wait.as_secs().max(1),
            // Compose's own wait, plus time for pulls and the stop of the old containers
            limit = (self.wait + Duration::from_secs(300)).as_secs(),
            tok = sh_quote(token),
            pre = self.pre.as_millis(),
        );
        let prefix = crate::host::lock_line_prefix(holder, token, true);
        Ok(format!(
            "d={dir}; j=\"$d/job\"; {{ {LOCK_INFO}; }} | grep -qF {tok} || {{ echo notours; exit 0; }}; \
             rm -rf \"$j\"; mkdir -p \"$j\" && chmod 700 \"$j\" && cd \"$j\" || exit 1; \
             printf '%s\\n' {ok} > entry.ok; printf '%s\\n' {fail} > entry.fail; printf '%s\\n' {new} > new; \
             printf '%s' {script} > run.sh; \
             nohup sh \"$j/run.sh\" </dev/null >\"$j/log\" 2>&1 & jp=$!; echo \"$jp\" > \"$j/pid\"; \
             ln -s {prefix}\"$jp}}\" \"$d/lock.new.$jp\" && mv -f \"$d/lock.new.$jp\" \"$d/lock\" && : > \"$j/go\" && echo \"started $jp\"",
            tok = sh_quote(token),
            ok = sh_quote(&template(&self.ok_entry, false)?),
            fail = sh_quote(&template(&self.fail_entry, true)?),
            new = sh_quote(&self.new),
            script = sh_quote(&format!(
                "{header}{HEALTHY_FN}{JOB}{}\nreadlink \"$d/lock\" 2>/dev/null | grep -qF \"$tok\" && rm -f \"$d/lock\"\nsay end\n: > \"$j/done\"\n",
                crate::host::PRUNE
            )),
            prefix = sh_quote(&prefix),
        ))
    }
}

/// `healthy SERVICES`: every one of them has a running container of project `$p` that is
/// healthy or has no healthcheck; else it returns 1 with the others in `$unhealthy`. (It
/// never calls a `say` of its own: on macOS `/usr/bin/say` speaks aloud.)
pub const HEALTHY_FN: &str = r#"healthy() {
  ps=$(docker ps --filter "label=com.docker.compose.project=$p" --filter status=running --format '{{.Label "com.docker.compose.service"}} {{.Status}}') || return 1
  bad=
  for s in $1; do
    printf '%s\n' "$ps" | awk -v s="$s" '$1 == s && $2 == "Up" && !/\(unhealthy\)/ && !/\(health: starting\)/ { f = 1 } END { exit !f }' || bad="$bad $s"
  done
  unhealthy=$bad
  [ -z "$bad" ]
}
"#;

/// The job, after its variables (`d p new prev svcs wait limit tok pre_ms compose`).
/// `start_script` appends `PRUNE` (under the lock), the lock's release, `say end` and the
/// `done` file.
const JOB: &str = r#"j="$d/job"
say() { printf '@@ %s\n' "$*"; }
quote() { sed 's/^/| /'; }
n=0
while [ ! -f "$j/go" ]; do
  n=$((n + 1))
  if [ "$n" -gt 100 ]; then say outcome nogo the lock could not be handed to the job; say end; : > "$j/done"; exit 1; fi
  sleep 0.1
done
t0=$(date +%s)
up=; aborted=
trap '' HUP
trap 'aborted=1; [ -n "$up" ] && kill -TERM "$up" 2>/dev/null' TERM INT
# `docker info` within 10 s (a hung engine does not hang the job)
ask_engine() {
  docker info >/dev/null 2>&1 & a=$!
  ( sleep 10; kill -0 "$$" 2>/dev/null && kill "$a" 2>/dev/null ) & w=$!
  wait "$a"; r=$?
  pkill -P "$w" 2>/dev/null; kill "$w" 2>/dev/null
  return $r
}
engine_wait() {
  ask_engine && return 0
  say wait-engine
  n=0
  while [ "$n" -lt 24 ]; do sleep 5; ask_engine && return 0; n=$((n + 1)); done
  return 1
}
# containers an interrupted `up` left: never started, dead, or renamed aside by a recreate
cleanup() {
  docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.ID}} {{.Names}} {{.State}}' 2>/dev/null |
  while read -r id name state; do
    case "$state:$name" in
      created:*|dead:*|*:[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]_*)
        docker rm -f "$id" >/dev/null 2>&1 && say cleaned "$name" ;;
    esac
  done
}
# the services a release starts (those its compose file enables)
services_of() { ( cd "$d/releases/$1" && $compose -p "$p" -f compose.yml config --services 2>/dev/null ); }
# up_release ID SERVICES
up_release() {
  cleanup
  ( cd "$d/releases/$1" && exec $compose -p "$p" -f compose.yml up -d --wait --wait-timeout "$wait" --remove-orphans ) > "$j/up.out" 2>&1 &
  up=$!
  # the watchdog acts only while the job lives (a killed job leaves no stale pid to kill)
  ( sleep "$limit"; kill -0 "$$" 2>/dev/null && kill -TERM "$up" 2>/dev/null && say timeout "$limit" ) & wd=$!
  wait "$up"; rc=$?
  while kill -0 "$up" 2>/dev/null; do wait "$up"; rc=$?; done
  up=
  pkill -P "$wd" 2>/dev/null; kill "$wd" 2>/dev/null
  quote < "$j/up.out"
  [ "$rc" -eq 0 ] || return 1
  healthy "$2" || { say unhealthy $unhealthy; return 1; }
}
report() {
  docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.Names}} {{.Label "com.docker.compose.service"}} {{.State}} {{.Status}}' 2>/dev/null |
  while read -r name svc state status; do
    if [ "$state" = running ]; then
      case "$status" in *"(unhealthy)"*|*"(health: starting)"*) ;; *) continue ;; esac
    fi
    say report "$svc" "$name"
    {
      echo "state: $(docker inspect --format '{{.State.Status}} (exit {{.State.ExitCode}}, oom-killed {{.State.OOMKilled}})' "$name")"
      docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}health: exit {{.ExitCode}}: {{.Output}}{{end}}{{end}}' "$name" | tail -n 5
      echo 'last 50 log lines:'
      docker logs --tail 50 "$name" 2>&1
    } | quote
  done
}
entry() {
  now=$(date +%s)
  ms=$(( (now - t0) * 1000 + pre_ms ))
  line=$(sed -e "s|\"@TIME@\"|$now|" -e "s|\"@MS@\"|$ms|" -e "s|\"@TARGET@\"|$2|" -e "s|\"@ERROR@\"|$3|" "$j/entry.$1")
  printf '%s\n' "$line" >> "$d/releases.jsonl"
  say entry "$line"
}
[ -n "$svcs" ] || svcs=$(services_of "$new")
say step up "$new"
if [ -z "$aborted" ] && up_release "$new" "$svcs" && [ -z "$aborted" ]; then
  printf '%s\n' "$new" > "$d/current.tmp" && mv "$d/current.tmp" "$d/current"
  say ok
  entry ok null null
  say outcome ok "$new"
else
  trap '' TERM INT
  if [ -n "$aborted" ]; then why="was aborted from the laptop"; say fail aborted; else why="did not become healthy"; say fail not healthy; fi
  report
  if [ -n "$prev" ] && [ "$prev" != "$new" ] && [ -f "$d/releases/$prev/compose.yml" ]; then
    engine_wait
    say step back "$prev"
    if up_release "$prev" "$(services_of "$prev")"; then
      say ok; out=back; msg="release $new $why; rolled back to release $prev, which is healthy again"
    else
      say fail not healthy; report; out=back-failed; msg="release $new $why; the rollback to release $prev did not become healthy either"
    fi
    tgt="\"$prev\""
  else
    engine_wait
    say step remove
    if ( cd "$d/releases/$new" && exec $compose -p "$p" -f compose.yml down --remove-orphans ) > "$j/up.out" 2>&1; then
      say ok; out=removed; msg="release $new $why; there was no previous release, so its containers were removed (volumes kept)"
    else
      quote < "$j/up.out"; say fail; out=remove-failed; msg="release $new $why; there was no previous release, and removing its containers failed"
    fi
    tgt=null
  fi
  entry fail "$tgt" "\"$msg\""
  say outcome "$out" "$msg"
fi
"#;

/// What the lock step says of a long link (round trips over 50 ms): a change pays a few of
/// them, so a slow deploy is explained rather than mysterious.
pub fn rtt_note(rtt: Option<Duration>, host: &str) -> Option<String> {
    let rtt = rtt.filter(|r| *r > Duration::from_millis(50))?;
    Some(format!(
        "round trips of ~{} ms to {host}; a change costs a few of them",
        rtt.as_millis()
    ))
}

pub use crate::host::Bundle;

/// How a job ended, as the laptop saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new release is current and healthy.
    Ok,
    /// It failed (or was aborted); the job went back (`back`, `back-failed`, `removed`,
    /// `remove-failed`), as `message` says.
    Failed { kind: String, message: String },
    /// The job stopped without an outcome (the host restarted, or it was killed).
    Died,
    /// The user detached: the job goes on on the host.
    Detached,
    /// The link dropped and the host could not be reached again.
    Lost(String),
    /// No job has run for this project on the host.
    NoJob,
}

/// What the job said: its outcome, the release-log line it wrote, Compose's output and a
/// report per failing container.
pub struct Followed {
    pub outcome: Outcome,
    pub entry: Option<ReleaseEntry>,
    /// Compose's output of each step (`up`, then `back` or `remove`), in order.
    pub compose: Vec<(String, Vec<String>)>,
    pub reports: Vec<(String, String, Vec<String>)>,
    /// Quoted lines belong to the last report until the next step begins.
    in_report: bool,
}

/// How the steps of the job are named on the laptop.
pub struct Labels {
    pub up: String,
}

/// Follows the job's log from `offset` until it ends, reconnecting after a lost link; on
/// Ctrl-C asks (on a terminal) whether to abort or detach, and aborts otherwise.
/// Reads the start's answer, up to `@@FOLLOW`: `Ok` with it when the job started and the
/// follower goes on in the same command, `Err` with what came when the command ended first.
fn read_start(stream: &mut homebase_remote::Stream) -> std::result::Result<String, String> {
    let mut answer = String::new();
    let deadline = Instant::now() + homebase_remote::default_deadline();
    loop {
        match stream.next(Duration::from_millis(200)) {
            Next::Line(l, _) if l == "@@FOLLOW" => return Ok(answer),
            Next::Line(l, _) => {
                answer.push_str(&l);
                answer.push('\n');
            }
            Next::Partial(l) => answer.push_str(&l),
            Next::End => return Err(answer),
            Next::Idle if Instant::now() > deadline => return Err(answer),
            Next::Idle => {}
        }
    }
}

/// The shell that prints the job's log from byte `offset` on until the job is done (`@@
/// nojob` when there is none, `@@ died` when its process is gone without its end).
fn follower(project: &str, offset: u64) -> String {
    let dir = homebase_proto::layout::sh_project(&sh_quote(project));
    format!(
        "d={dir}; j=\"$d/job\"; [ -f \"$j/pid\" ] || {{ echo '@@ nojob'; exit 0; }}; pid=$(cat \"$j/pid\"); n={offset}; \
         size() {{ wc -c < \"$j/log\" | tr -d ' '; }}; \
         while :; do s=$(size); \
           if [ \"$s\" -gt \"$n\" ]; then tail -c +$((n + 1)) \"$j/log\" | head -c $((s - n)); n=$s; fi; \
           [ -f \"$j/done\" ] && [ \"$(size)\" -le \"$n\" ] && exit 0; \
           if ! kill -0 \"$pid\" 2>/dev/null && [ ! -f \"$j/done\" ]; then sleep 0.5; [ -f \"$j/done\" ] || {{ echo '@@ died'; exit 0; }}; fi; \
           sleep 0.2; done"
    )
}

pub fn follow(
    first: &Session,
    project: &str,
    progress: &mut Progress,
    labels: &Labels,
) -> Result<Followed> {
    follow_from(first, project, progress, labels, None)
}

/// [`follow`], going on with `opened` (a command already printing the job's log from its
/// start) before it opens one of its own.
fn follow_from(
    first: &Session,
    project: &str,
    progress: &mut Progress,
    labels: &Labels,
    mut opened: Option<homebase_remote::Stream>,
) -> Result<Followed> {
    let dir = homebase_proto::layout::sh_project(&sh_quote(project));
    let mut followed = Followed {
        outcome: Outcome::Died,
        entry: None,
        compose: Vec::new(),
        reports: Vec::new(),
        in_report: false,
    };
    let mut offset: u64 = 0;
    let mut owned: Option<Session> = None;
    let mut aborted = false;
    loop {
        let session = owned.as_ref().unwrap_or(first);
        let mut stream = match opened.take() {
            Some(s) => s,
            None => session.stream(&follower(project, offset))?,
        };
        let mut ended = false;
        loop {
            match stream.next(Duration::from_millis(200)) {
                Next::Line(text, bytes) => {
                    offset += bytes as u64;
                    if handle(&text, &mut followed, progress, labels, session) {
                        ended = true;
                    }
                }
                Next::Partial(_) => {}
                Next::Idle => {
                    if !take_interrupt() {
                        continue;
                    }
                    match decide(progress, aborted) {
                        Choice::Abort => {
                            aborted = true;
                            progress.info(
                                "aborting: the host stops the new release and goes back to the previous one",
                            );
                            let kill = format!(
                                "d={dir}; kill -TERM \"$(cat \"$d/job/pid\")\" 2>/dev/null; true"
                            );
                            if let Err(e) = session.check(&kill) {
                                progress.info(&format!("could not reach the host to abort: {e:#}"));
                            }
                        }
                        Choice::Detach => {
                            followed.outcome = Outcome::Detached;
                            stream.close();
                            return Ok(followed);
                        }
                        Choice::Continue => {}
                    }
                }
                Next::End => break,
            }
        }
        let status = stream.finish();
        if ended || matches!(followed.outcome, Outcome::NoJob) {
            return Ok(followed);
        }
        if status.is_ok() {
            // the follower ended on its own without the job's end: the job died
            return Ok(followed);
        }
        // The link dropped: reach the host again and go on from the byte we had.
        progress.info(&format!(
            "lost the connection to {} ({}); the deploy goes on there; reconnecting…",
            first.host(),
            status.err().map(|e| e.to_string()).unwrap_or_default()
        ));
        let until = Instant::now() + RECONNECT_FOR;
        owned = loop {
            match Session::open(first.target()) {
                Ok(s) => break Some(s),
                Err(e) if Instant::now() >= until => {
                    followed.outcome = Outcome::Lost(e.to_string());
                    return Ok(followed);
                }
                Err(_) => std::thread::sleep(Duration::from_secs(3)),
            }
        };
    }
}

/// One line of the job's log; true at its end.
fn handle(
    line: &str,
    f: &mut Followed,
    progress: &mut Progress,
    labels: &Labels,
    session: &Session,
) -> bool {
    if let Some(text) = line.strip_prefix("| ") {
        let text = crate::ui::printable(text);
        match (f.in_report, f.reports.last_mut(), f.compose.last_mut()) {
            (true, Some((_, _, lines)), _) | (false, _, Some((_, lines))) => lines.push(text),
            _ => {}
        }
        return false;
    }
    let Some(event) = line.strip_prefix("@@ ") else {
        return false;
    };
    let (word, rest) = event.split_once(' ').unwrap_or((event, ""));
    let id = |s: &str| Some(s.to_string()).filter(|s| homebase_proto::is_safe_name(s));
    match word {
        "step" => {
            let (what, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            f.in_report = false;
            f.compose.push((what.to_string(), Vec::new()));
            match (what, id(arg)) {
                ("up", _) => progress.step(&labels.up),
                ("back", Some(prev)) => progress.step(&format!("roll back to release {prev}")),
                ("remove", _) => progress.step("remove the failed first release (volumes kept)"),
                _ => {}
            }
        }
        "ok" => progress.done(),
        "fail" => progress.fail(&crate::ui::printable(rest)),
        "wait-engine" => progress.info(&format!(
            "the Docker engine on {} does not answer; the host waits up to 2 minutes for it before it goes back",
            session.host()
        )),
        "timeout" => progress.info(&format!(
            "`docker compose up` did not finish within {}s; it was stopped",
            crate::ui::printable(rest)
        )),
        "cleaned" => progress.info(&format!(
            "removed container `{}`, left behind by an interrupted deploy",
            crate::ui::printable(rest)
        )),
        "report" => {
            f.in_report = true;
            let (svc, name) = rest.split_once(' ').unwrap_or((rest, ""));
            f.reports.push((
                crate::ui::printable(svc),
                crate::ui::printable(name),
                Vec::new(),
            ));
        }
        "entry" => f.entry = serde_json::from_str(rest).ok(),
        "outcome" => {
            let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
            f.outcome = if kind == "ok" {
                Outcome::Ok
            } else {
                Outcome::Failed {
                    kind: crate::ui::printable(kind),
                    message: crate::ui::printable(message),
                }
            };
        }
        "nojob" => f.outcome = Outcome::NoJob,
        "died" => f.outcome = Outcome::Died,
        "end" => return true,
        _ => {}
    }
    false
}

enum Choice {
    Abort,
    Detach,
    Continue,
}

/// Ctrl-C while the job runs: on a terminal, ask; otherwise abort (a second interrupt after
/// an abort detaches: the host finishes the rollback by itself).
fn decide(progress: &Progress, aborted: bool) -> Choice {
    if aborted {
        return Choice::Detach;
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Choice::Abort;
    }
    let answer = progress.ask(
        "interrupted: the deploy goes on on the host. [a]bort and roll back, [d]etach and let it finish there, or [c]ontinue watching? ",
    );
    match answer.trim().chars().next() {
        Some('a' | 'A') => Choice::Abort,
        Some('c' | 'C') => Choice::Continue,
        _ => Choice::Detach,
    }
}

/// The failure report: Compose's last lines of each step and each failing container's
/// state and logs.
pub fn failure_report(f: &Followed) -> String {
    let mut report = String::new();
    for (step, lines) in &f.compose {
        let tail = &lines[lines.len().saturating_sub(5)..];
        let when = if step == "up" {
            ""
        } else {
            " (on the way back)"
        };
        report.push_str(&format!("\ncompose said{when}:\n{}", tail.join("\n")));
    }
    for (svc, name, lines) in &f.reports {
        report.push_str(&format!(
            "\n--- service `{svc}` ({name}) ---\n{}",
            lines.join("\n")
        ));
    }
    report
}

/// The error for a job that did not end at a healthy new release, or `None` when it did.
pub fn outcome_error(f: &Followed, host: &str, what: &str) -> Option<anyhow::Error> {
    match &f.outcome {
        Outcome::Ok => None,
        Outcome::Failed { message, .. } => Some(coded(
            Exit::Refused,
            format!("{message}{}", failure_report(f)),
        )),
        Outcome::Died => Some(coded(
            Exit::Unreachable,
            format!(
                "the {what} job on {host} stopped before it finished (the host restarted, or it was killed); run `homebase deploy` again: it cleans up and brings the stack to one release"
            ),
        )),
        Outcome::Detached => Some(coded(
            Exit::Interrupted,
            format!(
                "detached: the {what} goes on on {host} and ends by itself (the new release healthy, or the previous one back); `homebase deploy --attach` follows it, `homebase releases` shows how it ended"
            ),
        )),
        Outcome::Lost(e) => Some(coded(
            Exit::Unreachable,
            format!(
                "lost the connection to {host} and could not reach it again within {}s ({e}); the {what} goes on there and ends by itself (the new release healthy, or the previous one back); `homebase deploy --attach` follows it",
                RECONNECT_FOR.as_secs()
            ),
        )),
        Outcome::NoJob => Some(coded(
            Exit::Refused,
            format!("no deploy has run on {host} for this project yet"),
        )),
    }
}

pub fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(log: &str) -> Followed {
        let session = Session::open(&Target::Local).expect("local session");
        let mut progress = Progress::new(true);
        let labels = Labels { up: "up".into() };
        let mut f = Followed {
            outcome: Outcome::Died,
            entry: None,
            compose: Vec::new(),
            reports: Vec::new(),
            in_report: false,
        };
        for line in log.lines() {
            if handle(line, &mut f, &mut progress, &labels, &session) {
                break;
            }
        }
        f
    }

    #[test]
    fn a_failed_job_log_reads_as_its_outcome_and_reports() {
        let f = read(
            "@@ step up r2\n| Container p-api-1  Started\n| api is unhealthy\n@@ unhealthy api\n@@ fail not healthy\n\
             @@ report api p-api-1\n| state: running\n| @@ outcome ok\n| \u{1b}[31mred\n\
             @@ step back r1\n| Container p-api-1  Healthy\n@@ ok\n\
             @@ entry {\"id\":\"r2\",\"time\":1,\"user\":\"u\",\"git_commit\":null,\"git_dirty\":false,\"config_hash\":\"h\",\"outcome\":\"rolled-back\",\"duration_ms\":5}\n\
             @@ outcome back release r2 did not become healthy; rolled back to release r1, which is healthy again\n@@ end\n",
        );
        assert_eq!(
            f.outcome,
            Outcome::Failed {
                kind: "back".into(),
                message: "release r2 did not become healthy; rolled back to release r1, which is healthy again".into()
            }
        );
        // a container's log line that looks like an event is only text of its report
        assert_eq!(f.reports.len(), 1);
        assert_eq!(f.reports[0].2[1], "@@ outcome ok");
        // and cannot reach the terminal as an escape sequence
        assert_eq!(f.reports[0].2[2], "\\u{1b}[31mred");
        assert_eq!(f.compose[0].0, "up");
        assert_eq!(f.compose[0].1.len(), 2);
        assert_eq!(f.compose[1].1, vec!["Container p-api-1  Healthy"]);
        assert_eq!(f.entry.map(|e| e.outcome), Some("rolled-back".into()));
        let report = failure_report(&read(
            "@@ step up r2\n| one\n@@ fail x\n@@ report api c\n| boom\n",
        ));
        assert!(report.contains("compose said:\none"), "{report}");
        assert!(
            report.contains("--- service `api` (c) ---\nboom"),
            "{report}"
        );
    }

    #[test]
    fn a_job_that_stops_without_its_end_has_died() {
        assert_eq!(read("@@ step up r2\n| x\n@@ died\n").outcome, Outcome::Died);
        assert_eq!(
            read("@@ step up r2\n@@ ok\n@@ outcome ok r2\n@@ end\n").outcome,
            Outcome::Ok
        );
    }
}
