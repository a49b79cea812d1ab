//! Following the release job from the laptop: its log read from the byte reached, through
//! lost links (reconnecting) and Ctrl-C (abort or detach), into an outcome and the error
//! and exit code it means.

use std::time::{Duration, Instant};

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::{Next, Session, sh_quote};

use super::take_interrupt;
use crate::exit::{Exit, coded};
use crate::report::Report;

/// How long the laptop tries to reach the host again after the link dropped mid-job.
const RECONNECT_FOR: Duration = Duration::from_secs(90);

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

impl Followed {
    /// A release that ended in this process (swarm mode), with what the engine said of each
    /// step.
    pub(super) fn ended(
        outcome: Outcome,
        entry: ReleaseEntry,
        compose: Vec<(String, Vec<String>)>,
    ) -> Followed {
        Followed {
            outcome,
            entry: Some(entry),
            compose,
            reports: Vec::new(),
            in_report: false,
        }
    }
}

/// How the steps of the job are named on the laptop.
pub struct Labels {
    pub up: String,
}

/// Follows the job's log from `offset` until it ends, reconnecting after a lost link; on
/// Ctrl-C asks (on a terminal) whether to abort or detach, and aborts otherwise.
/// Reads the start's answer, up to `@@FOLLOW`: `Ok` with it when the job started and the
/// follower goes on in the same command, `Err` with what came when the command ended first.
pub(super) fn read_start(
    stream: &mut homebase_remote::Stream,
) -> std::result::Result<String, String> {
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
pub(super) fn follower(project: &str, offset: u64) -> String {
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
    progress: &mut dyn Report,
    labels: &Labels,
) -> Result<Followed> {
    follow_from(first, project, progress, labels, None)
}

/// [`follow`], going on with `opened` (a command already printing the job's log from its
/// start) before it opens one of its own.
pub(super) fn follow_from(
    first: &Session,
    project: &str,
    progress: &mut dyn Report,
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
    progress: &mut dyn Report,
    labels: &Labels,
    session: &Session,
) -> bool {
    if let Some(text) = line.strip_prefix("| ") {
        let text = homebase_proto::text::printable(text);
        if !f.in_report
            && f.compose.last().is_some_and(|(s, _)| s == "build")
            && text.starts_with('#')
        {
            progress.detail(&text);
        }
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
                ("git-helper", _) => progress.step(&format!(
                    "build homebase's git helper image {} on the host (once)",
                    homebase_proto::layout::GIT_HELPER_IMAGE
                )),
                ("build", _) => progress.step(&format!(
                    "build images on the host ({})",
                    homebase_proto::text::printable(arg)
                )),
                _ => {}
            }
        }
        "ok" => progress.done(),
        "fail" => progress.fail(&homebase_proto::text::printable(rest)),
        "wait-stops" => progress.info(
            "waiting for the containers the interrupted `up` was stopping, so that the way back starts them again",
        ),
        "wait-engine" => progress.info(&format!(
            "the Docker engine on {} does not answer; the host waits up to 2 minutes for it before it goes back",
            session.host()
        )),
        "timeout" => progress.info(&format!(
            "`docker compose up` did not finish within {}s; it was stopped",
            homebase_proto::text::printable(rest)
        )),
        "aside" => progress.info(&format!(
            "moved the host's edited `{}` aside ({}/)",
            homebase_proto::text::printable(rest),
            homebase_proto::layout::shown(&["<project>", "set-aside", "<release>"])
        )),
        "cleaned" => progress.info(&format!(
            "removed container `{}`, left behind by an interrupted deploy",
            homebase_proto::text::printable(rest)
        )),
        "report" => {
            f.in_report = true;
            let (svc, name) = rest.split_once(' ').unwrap_or((rest, ""));
            f.reports.push((
                homebase_proto::text::printable(svc),
                homebase_proto::text::printable(name),
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
                    kind: homebase_proto::text::printable(kind),
                    message: homebase_proto::text::printable(message),
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
fn decide(progress: &dyn Report, aborted: bool) -> Choice {
    if aborted {
        return Choice::Detach;
    }
    let Some(answer) = progress.ask(
        "interrupted: the deploy goes on on the host. [a]bort and roll back, [d]etach and let it finish there, or [c]ontinue watching? ",
    ) else {
        return Choice::Abort;
    };
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
        // (a stack's step says which services did not converge and why, task by task)
        let (who, keep, when) = match step.as_str() {
            "up" => ("compose", 5, ""),
            "build" => continue, // its progress; the log's tail is `build-log`
            "build-log" => ("the build", 40, ""),
            "stack" => ("docker stack", 30, ""),
            _ => ("compose", 5, " (on the way back)"),
        };
        let tail = &lines[lines.len().saturating_sub(keep)..];
        report.push_str(&format!("\n{who} said{when}:\n{}", tail.join("\n")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use homebase_remote::Target;

    fn read(log: &str) -> Followed {
        let session = Session::open(&Target::Local).expect("local session");
        let mut progress = crate::report::Quiet;
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
