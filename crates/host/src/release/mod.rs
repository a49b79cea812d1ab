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

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::{Session, Stream, Target, sh_quote};

mod entry;
mod follow;
mod job;
mod stack;

pub use entry::entry;
pub use follow::{Followed, Labels, follow, outcome_error};
use follow::{follow_from, follower, read_start};
pub use job::Job;
pub use stack::upload_to_workers;

use crate::exit::{Exit, coded};
use crate::report::Report;
use crate::{GO, HEALTHY_FN, HostProject, LockOutcome, Prepared, PsEntry};
use homebase_proto::clock::human_duration;
use homebase_proto::clock::now_secs;

/// Locks without a holder process (an older homebase's) older than this are called stale.
const STALE_LOCK: Duration = Duration::from_secs(15 * 60);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Notes an interrupt (Ctrl-C, SIGTERM, SIGHUP: the CLI's signal handler calls it), which
/// the deploy reads between steps and while it follows the job, instead of this process
/// being killed mid-step.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
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
        progress: &mut dyn Report,
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
    /// trip of the link, not a new command's two; the bundle travels inside it. When the
    /// script is cut before its answer, the host is asked whether the job started, so that
    /// a deploy that goes on there is followed, not mistaken for one that never began.
    /// In swarm mode there is no job and no bundle (the caller uploaded the release to
    /// every node): [`stack::run`] gates from this process.
    pub fn run(
        mut self,
        job: &Job,
        bundle: Option<Bundle>,
        progress: &mut dyn Report,
        up_label: String,
    ) -> Result<Followed> {
        if self.host.is_stack() {
            return stack::run(self, job, progress, &up_label);
        }
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
                crate::report::warn(&format!(
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

/// What the lock step says of a long link (round trips over 50 ms): a change pays a few of
/// them, so a slow deploy is explained rather than mysterious.
pub fn rtt_note(rtt: Option<Duration>, host: &str) -> Option<String> {
    let rtt = rtt.filter(|r| *r > Duration::from_millis(50))?;
    Some(format!(
        "round trips of ~{} ms to {host}; a change costs a few of them",
        rtt.as_millis()
    ))
}

pub use crate::Bundle;

pub fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The service runs, and is healthy where it has a healthcheck.
pub fn service_healthy(service: &str, ps: &[PsEntry]) -> bool {
    ps.iter().any(|p| {
        p.service == service
            && p.state == "running"
            && (p.health.is_empty() || p.health == "healthy")
    })
}
