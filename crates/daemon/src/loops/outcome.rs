//! What an iteration's end means for its run, as pure functions: the outcome from what was
//! watched, then the run's bookkeeping (counters, the circuit breaker, completion, the
//! maximum) with the events and alerts to raise. The supervisor gathers the facts and
//! carries out the effects.

use std::fmt::Write as _;

use homebase_proto::clock::rfc3339;
use homebase_stack::loops::LoopSection;

use super::gates::USAGE_LIMIT;
use super::output::Watched;
use super::result::{self, Said};
use super::state::{Breaker, RunState};
use super::text::{error_signature, reset_time};
use crate::loops::store::LoopRow;
use homebase_proto::clock::setting_duration;

/// How an iteration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by hand (or the loop was removed).
    Stopped,
    /// Killed by the kernel at its memory limit.
    Oom,
    Timeout,
    /// The completion marker was in its output, or the completion file says every task
    /// passes.
    Completed,
    /// The agent reported a usage limit.
    UsageLimit,
    /// The agent stopped at its maximum number of turns (its result said so).
    MaxTurns,
    /// Its container could not be created or started.
    FailedToStart,
    Ok,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stopped => "stopped",
            Outcome::Oom => "oom",
            Outcome::Timeout => "timeout",
            Outcome::Completed => "completed",
            Outcome::UsageLimit => "usage_limit",
            Outcome::MaxTurns => "max_turns",
            Outcome::FailedToStart => "failed_to_start",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }

    /// The outcomes the breaker counts as errors.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::Error | Outcome::Timeout | Outcome::Oom | Outcome::FailedToStart
        )
    }
}

/// The outcome, in order of precedence: a stop by hand, the kernel, the timeout, then
/// what the agent said (done; then its result's verdict, or without a result a usage limit
/// in its text), then its exit.
pub fn classify(w: &Watched, all_pass: Option<bool>, said: Said) -> Outcome {
    if w.stopped {
        Outcome::Stopped
    } else if w.oom {
        Outcome::Oom
    } else if w.timed_out {
        Outcome::Timeout
    } else if w.marker || all_pass == Some(true) {
        Outcome::Completed
    } else {
        match said {
            Said::UsageLimit | Said::Nothing { usage_limit: true } => Outcome::UsageLimit,
            Said::MaxTurns => Outcome::MaxTurns,
            Said::Error => Outcome::Error,
            Said::Success => Outcome::Ok,
            Said::Nothing { usage_limit: false } => match w.exit_code {
                None => Outcome::FailedToStart,
                Some(0) => Outcome::Ok,
                Some(_) => Outcome::Error,
            },
        }
    }
}

/// The record's note: why the iteration ended as it did, when that is not plain.
pub fn note(w: &Watched, l: &LoopSection, extra: &str) -> String {
    let mut notes = Vec::new();
    if !extra.is_empty() {
        notes.push(extra.to_string());
    }
    if w.oom {
        notes.push(format!("killed by the kernel at its {} limit", l.memory));
    }
    if w.timed_out {
        notes.push(format!(
            "killed after its {} timeout",
            setting_duration(l.timeout.as_secs())
        ));
    }
    if !w.error.is_empty() && w.exit_code.is_none() {
        notes.push(w.error.clone());
    }
    notes.join("; ")
}

/// An iteration's end, as the run's bookkeeping needs it.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    pub n: i64,
    pub ended: i64,
    pub outcome: Outcome,
    pub exit_code: Option<i64>,
    /// Files the iteration changed in the workspace (`None`: the daemon cannot see it).
    pub files_changed: Option<i64>,
    /// Completed by the marker in its output (else by the completion file).
    pub marker: bool,
    /// The end of its output (for the error's signature and a usage limit's reset time).
    pub text: &'a str,
}

/// What the supervisor raises for the run's bookkeeping, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An entry in the daemon's event log.
    Event(&'static str, String),
    /// An alert, sent to the configured channels until resolved.
    Alert(&'static str, String),
    /// The alert of that kind is over.
    Resolve(&'static str, String),
    /// A one-off notification.
    Notify(&'static str, String),
}

/// Updates the run after iteration `e.n`: its counters, the breaker (no progress, the same
/// error, a half-open trial), the wait for a usage limit, completion and the maximum.
/// Returns the events and alerts to raise, in order.
pub fn account(row: &mut LoopRow, l: &LoopSection, e: &Ended) -> Vec<Effect> {
    let n = e.n;
    let mut fx = vec![Effect::Event(
        "loop_iteration_end",
        format!(
            "iteration {n}: {}{}",
            e.outcome.as_str(),
            e.exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default()
        ),
    )];
    row.iterations = row.iterations.max(n);
    row.last_ended = Some(e.ended);
    if e.outcome == Outcome::Oom {
        fx.push(Effect::Event(
            "loop_oom",
            format!(
                "iteration {n} ran out of memory ({} limit) and was killed; the loop goes on",
                l.memory
            ),
        ));
    }
    match e.outcome {
        Outcome::Completed => {
            row.state = RunState::Completed;
            row.reason = if e.marker {
                format!("completion marker in the output of iteration {n}")
            } else {
                format!(
                    "every task in {} passes (iteration {n})",
                    l.completion_file.as_deref().unwrap_or("")
                )
            };
            if n == 1 && !e.marker {
                // a new run that ends at once: the workspace still says "done"
                let _ = write!(
                    row.reason,
                    "; the run ended at its first iteration because {} already marks every task done: give it new tasks (or set `passes` to false) before `homebase loop start`",
                    l.completion_file
                        .as_deref()
                        .unwrap_or("the completion file")
                );
            }
            row.breaker = Breaker::Closed;
            // good news: a notice to the channels, never an alert that fires
            fx.push(Effect::Event("loop_completed", row.reason.clone()));
            fx.push(Effect::Notify("loop_completed", row.reason.clone()));
            fx.push(Effect::Resolve("loop_breaker", "the run completed".into()));
        }
        Outcome::Stopped => {}
        Outcome::UsageLimit => {
            let reset =
                reset_time(e.text, e.ended).filter(|r| *r > e.ended && *r - e.ended <= 7 * 86400);
            let until = reset.unwrap_or(e.ended + l.usage_limit_backoff.as_secs() as i64);
            row.wait_kind = Some(USAGE_LIMIT.into());
            row.wait_until = Some(until);
            fx.push(Effect::Event(
                "loop_usage_limit",
                format!(
                    "the agent hit its usage limit; next iteration at {} ({})",
                    rfc3339(until),
                    if reset.is_some() {
                        "the reset time it named"
                    } else {
                        "no reset time named: the default back-off"
                    }
                ),
            ));
        }
        Outcome::Oom
        | Outcome::Timeout
        | Outcome::FailedToStart
        | Outcome::Ok
        | Outcome::MaxTurns
        | Outcome::Error => {
            breaker(row, l, e, &mut fx);
        }
    }
    if row.state == RunState::Active
        && let Some(max) = l.max_iterations
        && row.iterations >= i64::from(max)
    {
        row.state = RunState::Exhausted;
        row.reason = format!("reached max_iterations = {max} without completing");
        fx.push(Effect::Event("loop_exhausted", row.reason.clone()));
        fx.push(Effect::Notify("loop_exhausted", row.reason.clone()));
    }
    fx
}

/// The breaker's counters and state after an iteration that neither completed nor hit a
/// usage limit.
fn breaker(row: &mut LoopRow, l: &LoopSection, e: &Ended, fx: &mut Vec<Effect>) {
    row.wait_kind = None;
    row.wait_until = None;
    let error = e.outcome.is_error();
    if error {
        let sig = error_signature(e.outcome.as_str(), e.exit_code, e.text);
        row.same_error = if row.last_error.as_deref() == Some(sig.as_str()) {
            row.same_error + 1
        } else {
            1
        };
        row.last_error = Some(sig);
    } else {
        row.same_error = 0;
        row.last_error = None;
    }
    // Unknown changes (a workspace the daemon cannot see) count as progress.
    let progress = e.files_changed.is_none_or(|c| c > 0);
    row.no_progress = if progress { 0 } else { row.no_progress + 1 };
    let trip = if row.no_progress >= i64::from(l.breaker_no_progress) {
        Some(format!(
            "{} iterations in a row changed no file",
            row.no_progress
        ))
    } else if row.same_error >= i64::from(l.breaker_same_error) {
        Some(format!(
            "{} identical errors in a row: {}",
            row.same_error,
            row.last_error.as_deref().unwrap_or("")
        ))
    } else {
        None
    };
    let n = e.n;
    if row.breaker == Breaker::HalfOpen {
        if progress && !error {
            row.breaker = Breaker::Closed;
            row.no_progress = 0;
            row.same_error = 0;
            fx.push(Effect::Event(
                "loop_breaker_closed",
                format!("trial iteration {n} made progress; the breaker is closed"),
            ));
            fx.push(Effect::Resolve(
                "loop_breaker",
                "the trial iteration made progress".into(),
            ));
        } else {
            let why = if error { "failed" } else { "changed no file" };
            open(row, l, e.ended, &format!("trial iteration {n} {why}"), fx);
        }
    } else if let Some(why) = trip {
        open(row, l, e.ended, &why, fx);
    }
}

fn open(row: &mut LoopRow, l: &LoopSection, now: i64, why: &str, fx: &mut Vec<Effect>) {
    let until = now + l.breaker_cooldown.as_secs() as i64;
    row.breaker = Breaker::Open { until };
    row.reason = why.to_string();
    let msg = format!(
        "circuit breaker open: {why}; one trial iteration after a {} cool-down ({})",
        setting_duration(l.breaker_cooldown.as_secs()),
        rfc3339(until)
    );
    fx.push(Effect::Event("loop_breaker_open", msg.clone()));
    fx.push(Effect::Alert("loop_breaker", msg));
}

/// What an iteration's end says: its outcome, the text its verdicts read, the note, and the
/// agent's result.
pub struct Judged {
    pub outcome: Outcome,
    pub text: String,
    pub note: String,
    pub agent: Option<homebase_proto::AgentResult>,
}

/// The agent's own result first; its text patterns only when there is none. A result that
/// could not be read adds why to the note (unless the iteration was cut short).
pub fn judge(
    l: &LoopSection,
    w: &Watched,
    no_container: bool,
    all_pass: Option<bool>,
    note: &str,
) -> Judged {
    let usage = regex::Regex::new(&l.usage_limit_pattern).ok();
    let read = (l.reads_result() && !no_container).then(|| result::read(&w.ending));
    let mut text = String::from_utf8_lossy(&w.tail).to_string();
    let said = match &read {
        Some(Ok(r)) => {
            text = r.text.clone();
            result::said(r, usage.as_ref())
        }
        _ => Said::Nothing {
            usage_limit: usage.as_ref().is_some_and(|re| re.is_match(&text)),
        },
    };
    let outcome = classify(w, all_pass, said);
    let mut extra = note.to_string();
    if let Some(Err(why)) = &read
        && !(w.stopped || w.oom || w.timed_out)
    {
        extra = [note, why.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
    }
    Judged {
        outcome,
        text,
        note: extra,
        agent: read.and_then(Result::ok).map(|r| r.result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loops::test_config;

    fn watched(exit: Option<i64>) -> Watched {
        Watched {
            exit_code: exit,
            oom: false,
            timed_out: false,
            stopped: false,
            marker: false,
            tail: Vec::new(),
            ending: crate::loops::result::Ending::Empty,
            error: String::new(),
        }
    }

    fn ended(n: i64, outcome: Outcome, files: Option<i64>, text: &str) -> Ended<'_> {
        Ended {
            n,
            ended: 10_000 + n * 100,
            outcome,
            exit_code: match outcome {
                Outcome::Ok => Some(0),
                Outcome::Error => Some(1),
                _ => None,
            },
            files_changed: files,
            marker: false,
            text,
        }
    }

    fn active() -> LoopRow {
        LoopRow {
            state: RunState::Active,
            run: 1,
            ..Default::default()
        }
    }

    fn kinds(fx: &[Effect]) -> Vec<&'static str> {
        fx.iter()
            .map(|f| match f {
                Effect::Event(k, _)
                | Effect::Alert(k, _)
                | Effect::Resolve(k, _)
                | Effect::Notify(k, _) => *k,
            })
            .collect()
    }

    #[test]
    fn outcomes_in_order_of_precedence() {
        let no = Said::Nothing { usage_limit: false };
        let limit = Said::Nothing { usage_limit: true };
        let mut w = watched(Some(1));
        assert_eq!(classify(&w, None, no), Outcome::Error);
        assert_eq!(classify(&w, None, limit), Outcome::UsageLimit);
        assert_eq!(classify(&w, Some(true), limit), Outcome::Completed);
        assert_eq!(classify(&w, Some(false), no), Outcome::Error);
        // the agent's result is read before the exit code
        assert_eq!(classify(&w, None, Said::Success), Outcome::Ok);
        assert_eq!(classify(&w, None, Said::MaxTurns), Outcome::MaxTurns);
        assert_eq!(classify(&w, None, Said::UsageLimit), Outcome::UsageLimit);
        assert_eq!(
            classify(&watched(Some(0)), None, Said::Error),
            Outcome::Error
        );
        w.marker = true;
        assert_eq!(classify(&w, None, limit), Outcome::Completed);
        assert_eq!(classify(&w, None, Said::Error), Outcome::Completed);
        w.timed_out = true;
        assert_eq!(classify(&w, None, no), Outcome::Timeout);
        w.oom = true;
        assert_eq!(classify(&w, None, no), Outcome::Oom);
        w.stopped = true;
        assert_eq!(classify(&w, None, Said::Success), Outcome::Stopped);
        assert_eq!(classify(&watched(Some(0)), None, no), Outcome::Ok);
        assert_eq!(classify(&watched(None), None, no), Outcome::FailedToStart);
        assert!(!Outcome::MaxTurns.is_error());
    }

    #[test]
    fn iterations_without_progress_open_the_breaker() {
        let l = test_config("breaker_no_progress = 3\nbreaker_cooldown = \"10m\"").section;
        let mut row = active();
        for n in 1..=2 {
            let fx = account(&mut row, &l, &ended(n, Outcome::Ok, Some(0), ""));
            assert_eq!(row.breaker, Breaker::Closed);
            assert_eq!(kinds(&fx), ["loop_iteration_end"]);
        }
        assert_eq!(row.no_progress, 2);
        let fx = account(&mut row, &l, &ended(3, Outcome::Ok, Some(0), ""));
        assert_eq!(
            row.breaker,
            Breaker::Open {
                until: 10_300 + 600
            }
        );
        assert_eq!(row.reason, "3 iterations in a row changed no file");
        assert_eq!(
            kinds(&fx),
            ["loop_iteration_end", "loop_breaker_open", "loop_breaker"]
        );
        assert!(matches!(&fx[2], Effect::Alert(_, m) if m.contains("10 min cool-down")));
        // a change resets the count; so does a workspace the daemon cannot see
        let mut row = active();
        account(&mut row, &l, &ended(1, Outcome::Ok, Some(0), ""));
        account(&mut row, &l, &ended(2, Outcome::Ok, Some(4), ""));
        assert_eq!(row.no_progress, 0);
        account(&mut row, &l, &ended(3, Outcome::Ok, Some(0), ""));
        account(&mut row, &l, &ended(4, Outcome::Ok, None, ""));
        assert_eq!(row.no_progress, 0);
    }

    #[test]
    fn the_same_error_again_and_again_opens_the_breaker() {
        let l = test_config("breaker_same_error = 3\nbreaker_no_progress = 100").section;
        let mut row = active();
        account(
            &mut row,
            &l,
            &ended(1, Outcome::Error, Some(1), "Error: token 17 expired"),
        );
        account(
            &mut row,
            &l,
            &ended(2, Outcome::Error, Some(1), "Error: token 23 expired"),
        );
        assert_eq!(row.same_error, 2, "numbers do not make errors differ");
        // a different error starts the count again
        account(
            &mut row,
            &l,
            &ended(3, Outcome::Error, Some(1), "Error: disk full"),
        );
        assert_eq!(row.same_error, 1);
        account(
            &mut row,
            &l,
            &ended(4, Outcome::Error, Some(1), "Error: disk full"),
        );
        assert_eq!(row.breaker, Breaker::Closed);
        let fx = account(
            &mut row,
            &l,
            &ended(5, Outcome::Error, Some(1), "Error: disk full"),
        );
        assert!(matches!(row.breaker, Breaker::Open { .. }));
        assert!(
            row.reason
                .starts_with("3 identical errors in a row: error (exit 1): Error: disk full"),
            "{}",
            row.reason
        );
        assert!(kinds(&fx).contains(&"loop_breaker"));
        // a success clears it
        let mut row = active();
        account(&mut row, &l, &ended(1, Outcome::Error, Some(1), "Error: x"));
        account(&mut row, &l, &ended(2, Outcome::Ok, Some(1), ""));
        assert_eq!((row.same_error, row.last_error.as_deref()), (0, None));
    }

    #[test]
    fn a_half_open_trial_closes_the_breaker_on_progress_and_reopens_it_otherwise() {
        let l = test_config("breaker_cooldown = \"30m\"").section;
        let mut row = LoopRow {
            breaker: Breaker::HalfOpen,
            no_progress: 4,
            ..active()
        };
        let fx = account(&mut row, &l, &ended(6, Outcome::Ok, Some(2), ""));
        assert_eq!(row.breaker, Breaker::Closed);
        assert_eq!(row.no_progress, 0);
        assert_eq!(
            kinds(&fx),
            ["loop_iteration_end", "loop_breaker_closed", "loop_breaker"]
        );
        assert!(matches!(fx[2], Effect::Resolve(..)));

        for (outcome, files, why) in [
            (Outcome::Ok, Some(0), "trial iteration 6 changed no file"),
            (Outcome::Error, Some(3), "trial iteration 6 failed"),
        ] {
            let mut row = LoopRow {
                breaker: Breaker::HalfOpen,
                ..active()
            };
            let e = ended(6, outcome, files, "Error: x");
            account(&mut row, &l, &e);
            assert_eq!(
                row.breaker,
                Breaker::Open {
                    until: e.ended + 1800
                }
            );
            assert_eq!(row.reason, why);
        }
    }

    #[test]
    fn a_usage_limit_waits_for_the_reset_it_names_or_the_back_off() {
        let l = test_config("usage_limit_backoff = \"1h\"").section;
        let mut row = active();
        let e = ended(
            1,
            Outcome::UsageLimit,
            Some(0),
            "usage limit reached, try again in 2 hours",
        );
        let fx = account(&mut row, &l, &e);
        assert_eq!(row.wait_kind.as_deref(), Some(USAGE_LIMIT));
        assert_eq!(row.wait_until, Some(e.ended + 7200));
        assert!(
            matches!(&fx[1], Effect::Event("loop_usage_limit", m) if m.contains("the reset time it named"))
        );
        // it is not an error, and it does not count against progress
        assert_eq!((row.no_progress, row.same_error), (0, 0));
        let mut row = active();
        let e = ended(1, Outcome::UsageLimit, Some(0), "usage limit reached");
        account(&mut row, &l, &e);
        assert_eq!(row.wait_until, Some(e.ended + 3600));
        // a later iteration clears the wait
        account(&mut row, &l, &ended(2, Outcome::Ok, Some(1), ""));
        assert_eq!((row.wait_kind.as_deref(), row.wait_until), (None, None));
    }

    #[test]
    fn completion_ends_the_run_and_the_maximum_exhausts_it() {
        let l = test_config("completion_file = \"prd.json\"\nmax_iterations = 3").section;
        let mut row = LoopRow {
            breaker: Breaker::HalfOpen,
            ..active()
        };
        let fx = account(&mut row, &l, &ended(2, Outcome::Completed, Some(1), ""));
        assert_eq!(row.state, RunState::Completed);
        assert_eq!(row.reason, "every task in prd.json passes (iteration 2)");
        assert_eq!(row.breaker, Breaker::Closed);
        assert_eq!(
            kinds(&fx),
            [
                "loop_iteration_end",
                "loop_completed",
                "loop_completed",
                "loop_breaker"
            ]
        );
        // a run that completes at its first iteration says why
        let mut at_once = active();
        account(&mut at_once, &l, &ended(1, Outcome::Completed, Some(1), ""));
        assert!(
            at_once
                .reason
                .contains("prd.json already marks every task done"),
            "{}",
            at_once.reason
        );
        let mut marker = ended(3, Outcome::Completed, Some(1), "");
        marker.marker = true;
        let mut row = active();
        account(&mut row, &l, &marker);
        assert_eq!(row.reason, "completion marker in the output of iteration 3");
        assert_eq!(
            row.state,
            RunState::Completed,
            "completing on the last iteration is not exhausting"
        );

        let mut row = active();
        account(&mut row, &l, &ended(2, Outcome::Ok, Some(1), ""));
        assert_eq!(row.state, RunState::Active);
        let fx = account(&mut row, &l, &ended(3, Outcome::Ok, Some(1), ""));
        assert_eq!(row.state, RunState::Exhausted);
        assert_eq!(row.reason, "reached max_iterations = 3 without completing");
        assert!(matches!(
            fx.last(),
            Some(Effect::Notify("loop_exhausted", _))
        ));
    }

    #[test]
    fn an_oom_is_an_error_the_loop_goes_on_after() {
        let l = test_config("memory = \"256MiB\"\ntimeout = \"5m\"").section;
        let mut row = active();
        let fx = account(&mut row, &l, &ended(1, Outcome::Oom, Some(1), ""));
        assert!(matches!(&fx[1], Effect::Event("loop_oom", m) if m.contains("256 MiB limit")));
        assert_eq!(row.state, RunState::Active);
        assert_eq!(row.same_error, 1);
        let mut w = watched(Some(137));
        w.oom = true;
        assert_eq!(
            note(&w, &l, ""),
            "killed by the kernel at its 256 MiB limit"
        );
        let mut w = watched(Some(137));
        w.timed_out = true;
        assert_eq!(
            note(&w, &l, "adopted after a daemon restart"),
            "adopted after a daemon restart; killed after its 5 min timeout"
        );
        let mut w = watched(None);
        w.error = "no such image".into();
        assert_eq!(note(&w, &l, ""), "no such image");
    }
}
