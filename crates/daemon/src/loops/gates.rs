//! The gates before each iteration, as one pure function of the loop's state, its
//! configuration and what the supervisor read: whether to iterate now, wait (and why, and
//! until when), or stay idle. The supervisor reads; this decides.

use homebase_stack::loops::RunMode;

use homebase_stack::spend::Periods;

use super::LoopConfig;
use super::state::RunState;
use crate::loops::store::{LoopRow, Spent};
use homebase_proto::clock::setting_duration;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Iterate,
    /// Wait; `kind` names the reason in one word or two.
    Wait {
        kind: &'static str,
        reason: String,
        until: Option<i64>,
    },
    /// Not active: nothing to do until a command.
    Idle,
}

/// What [`decide`] answers when the next gate compares the workspace with the last
/// iteration's: read its fingerprint into [`Readings::workspace`] and decide again.
/// (Reading it costs a scan of the workspace, so it is read only when every gate before
/// passed.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsWorkspace;

/// What the supervisor read for the gates.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub now: i64,
    /// Start times of this loop's iterations in the last hour, oldest first (read when
    /// `max_per_hour` is set).
    pub started_last_hour: Vec<i64>,
    /// The stack's memory in use, as the governor last read it (`None` before its first
    /// reading).
    pub stack_memory: Option<u64>,
    /// The workspace's fingerprint now: `None` not read yet, `Some(None)` unreadable.
    pub workspace: Option<Option<String>>,
    /// What the loop and its project spent this day and month (read when a cap is set).
    pub spend: Option<SpendReading>,
}

/// What the spend caps compare, in the calendar of `[spend] time_zone`.
#[derive(Debug, Clone, Copy)]
pub struct SpendReading {
    pub periods: Periods,
    pub loop_day: Spent,
    pub loop_month: Spent,
    pub project_day: Spent,
    pub project_month: Spent,
}

/// The first cap reached, month caps before day caps (a month's wait is the longer):
/// why, and until when.
pub fn cap_reached(cfg: &LoopConfig, s: &SpendReading) -> Option<(String, i64)> {
    let own = cfg.section.caps();
    let project = cfg.project_caps;
    let checks = [
        (
            "this month",
            &own,
            &s.loop_month,
            true,
            "",
            s.periods.month.1,
        ),
        (
            "this month",
            &project,
            &s.project_month,
            true,
            "[spend] ",
            s.periods.month.1,
        ),
        ("today", &own, &s.loop_day, false, "", s.periods.day.1),
        (
            "today",
            &project,
            &s.project_day,
            false,
            "[spend] ",
            s.periods.day.1,
        ),
    ];
    for (when, caps, spent, month, section, until) in checks {
        let (cost_cap, tokens_cap, unit) = if month {
            (caps.cost_per_month, caps.tokens_per_month, "month")
        } else {
            (caps.cost_per_day, caps.tokens_per_day, "day")
        };
        let whose = if section.is_empty() {
            format!("loop `{}`", cfg.name)
        } else {
            format!("project `{}`'s loops together", cfg.project)
        };
        if let Some(cap) = cost_cap
            && spent.cost >= cap
        {
            return Some((
                format!(
                    "{whose} spent ${:.2} {when}, {section}max_cost_per_{unit} = {cap}",
                    spent.cost
                ),
                until,
            ));
        }
        if let Some(cap) = tokens_cap
            && spent.tokens >= cap
        {
            return Some((
                format!(
                    "{whose} used {} tokens {when}, {section}max_tokens_per_{unit} = {cap}",
                    spent.tokens
                ),
                until,
            ));
        }
    }
    None
}

/// The gates, in order: state, breaker, usage limit, spend caps, hourly cap, pause or
/// schedule, workspace changes, memory.
pub fn decide(row: &LoopRow, cfg: &LoopConfig, r: &Readings) -> Result<Next, NeedsWorkspace> {
    let l = &cfg.section;
    let t = r.now;
    if row.state != RunState::Active {
        return Ok(Next::Idle);
    }
    if let Some(until) = row.breaker.cooling(t) {
        return Ok(Next::Wait {
            kind: "breaker",
            reason: format!(
                "circuit breaker open ({}); one trial iteration at the end of the cool-down",
                row.reason
            ),
            until: Some(until),
        });
    }
    if row.wait_kind.as_deref() == Some(USAGE_LIMIT)
        && let Some(until) = row.wait_until.filter(|u| *u > t)
    {
        return Ok(Next::Wait {
            kind: "usage limit",
            reason: "the agent reported a usage limit; waiting for its reset".into(),
            until: Some(until),
        });
    }
    if let Some(spend) = &r.spend
        && let Some((reason, until)) = cap_reached(cfg, spend)
    {
        return Ok(Next::Wait {
            kind: SPEND_CAP,
            reason: format!("{reason}; no new iteration until the period turns"),
            until: Some(until),
        });
    }
    if let Some(max) = l.max_per_hour {
        let started = &r.started_last_hour;
        if started.len() as u32 >= max {
            return Ok(Next::Wait {
                kind: "rate limit",
                reason: format!(
                    "{} iterations in the last hour (max_per_hour = {max})",
                    started.len()
                ),
                until: started.first().map(|s| s + 3600),
            });
        }
    }
    let first_of_run = row.iterations == 0;
    if let Some(wait) = pace(row, l, t) {
        return Ok(wait);
    }
    if l.run == RunMode::OnChange && !first_of_run {
        match &r.workspace {
            None => return Err(NeedsWorkspace),
            Some(fp) if fp.is_some() && *fp == row.fingerprint => {
                return Ok(Next::Wait {
                    kind: "changes",
                    reason: "no file in the workspace changed since the last iteration".into(),
                    until: None,
                });
            }
            Some(_) => {}
        }
    }
    // Memory: the governor's view of the project (after its first reading).
    Ok(memory(cfg, r).unwrap_or(Next::Iterate))
}

/// The pace of a run: a schedule's period since the last start, or the pause since the
/// last end (the first iteration of a run goes at once).
fn pace(row: &LoopRow, l: &homebase_stack::loops::LoopSection, t: i64) -> Option<Next> {
    let first_of_run = row.iterations == 0;
    match l.run {
        RunMode::Schedule => {
            if let (Some(every), Some(last)) = (l.every, row.last_started)
                && !first_of_run
            {
                let next = last + every.as_secs() as i64;
                if next > t {
                    return Some(Next::Wait {
                        kind: "schedule",
                        reason: format!(
                            "one iteration every {}",
                            setting_duration(every.as_secs())
                        ),
                        until: Some(next),
                    });
                }
            }
        }
        RunMode::Continuous | RunMode::OnChange => {
            if let Some(ended) = row.last_ended.filter(|_| !first_of_run) {
                let next = ended + l.pause.as_secs() as i64;
                if next > t {
                    return Some(Next::Wait {
                        kind: "pause",
                        reason: format!(
                            "{} between iterations",
                            setting_duration(l.pause.as_secs())
                        ),
                        until: Some(next),
                    });
                }
            }
        }
    }
    None
}

/// The memory gate: the stack read at least once, below its high watermark, and room in
/// the budget for one more iteration. No budget (unknown host memory): no gate.
fn memory(cfg: &LoopConfig, r: &Readings) -> Option<Next> {
    let l = &cfg.section;
    if cfg.budget == 0 {
        return None;
    }
    let Some(used) = r.stack_memory else {
        return Some(Next::Wait {
            kind: "first reading",
            reason: "the stack's memory has not been read yet".into(),
            until: None,
        });
    };
    let high = (cfg.budget as f64 * cfg.high_watermark) as u64;
    if used > high {
        return Some(Next::Wait {
            kind: "memory",
            reason: format!(
                "the stack uses {:.0}% of its budget, above the {:.0}% high watermark",
                100.0 * used as f64 / cfg.budget as f64,
                cfg.high_watermark * 100.0
            ),
            until: None,
        });
    }
    if used + l.memory.0 > cfg.budget {
        return Some(Next::Wait {
            kind: "memory",
            reason: format!(
                "an iteration may use {} and the budget has {} left",
                l.memory,
                homebase_stack::Bytes(cfg.budget.saturating_sub(used))
            ),
            until: None,
        });
    }
    None
}

/// `LoopRow::wait_kind` while the agent's usage limit holds the loop.
pub const USAGE_LIMIT: &str = "usage_limit";
/// The wait of a loop whose spend reached a cap.
pub const SPEND_CAP: &str = "spend cap";

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(row: &LoopRow, cfg: &LoopConfig, r: &Readings) -> Next {
        decide(row, cfg, r).expect("decided without the workspace")
    }
    use crate::loops::state::Breaker;
    use crate::loops::test_config;

    fn active() -> LoopRow {
        LoopRow {
            state: RunState::Active,
            run: 1,
            iterations: 3,
            last_started: Some(900),
            last_ended: Some(950),
            ..Default::default()
        }
    }

    fn reading(now: i64) -> Readings {
        Readings {
            now,
            stack_memory: Some(1 << 30),
            workspace: Some(Some("after".into())),
            ..Default::default()
        }
    }

    fn kind(n: &Next) -> Option<&'static str> {
        match n {
            Next::Wait { kind, .. } => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn only_an_active_loop_iterates() {
        let cfg = test_config("");
        for s in [
            RunState::Paused,
            RunState::Stopped,
            RunState::Completed,
            RunState::Exhausted,
            RunState::Idle,
        ] {
            let row = LoopRow {
                state: s,
                ..active()
            };
            assert_eq!(decided(&row, &cfg, &reading(2000)), Next::Idle, "{s}");
        }
        assert_eq!(decided(&active(), &cfg, &reading(2000)), Next::Iterate);
    }

    #[test]
    fn an_open_breaker_holds_the_loop_until_its_cool_down_ends() {
        let cfg = test_config("");
        let row = LoopRow {
            breaker: Breaker::Open { until: 3000 },
            reason: "5 iterations in a row changed no file".into(),
            ..active()
        };
        let n = decided(&row, &cfg, &reading(2000));
        assert_eq!(kind(&n), Some("breaker"));
        assert!(
            matches!(&n, Next::Wait { until: Some(3000), reason, .. } if reason.contains("changed no file")),
            "{n:?}"
        );
        // the cool-down over: the trial iteration may run
        assert_eq!(decided(&row, &cfg, &reading(3000)), Next::Iterate);
    }

    #[test]
    fn a_usage_limit_holds_the_loop_until_its_reset() {
        let cfg = test_config("");
        let row = LoopRow {
            wait_kind: Some(USAGE_LIMIT.into()),
            wait_until: Some(5000),
            ..active()
        };
        let n = decided(&row, &cfg, &reading(4000));
        assert_eq!(kind(&n), Some("usage limit"));
        assert!(matches!(
            n,
            Next::Wait {
                until: Some(5000),
                ..
            }
        ));
        assert_eq!(decided(&row, &cfg, &reading(5000)), Next::Iterate);
    }

    #[test]
    fn the_hourly_cap_waits_for_the_oldest_start_to_age_out() {
        let cfg = test_config("max_per_hour = 2");
        let mut r = reading(4000);
        r.started_last_hour = vec![1000, 3000];
        let n = decided(&active(), &cfg, &r);
        assert_eq!(kind(&n), Some("rate limit"));
        assert!(
            matches!(
                n,
                Next::Wait {
                    until: Some(4600),
                    ..
                }
            ),
            "{n:?}"
        );
        r.started_last_hour = vec![3000];
        assert_eq!(decided(&active(), &cfg, &r), Next::Iterate);
    }

    #[test]
    fn the_pause_and_the_schedule_space_iterations() {
        let cfg = test_config("pause = \"60s\"");
        let n = decided(&active(), &cfg, &reading(1000));
        assert_eq!(kind(&n), Some("pause"));
        assert!(
            matches!(
                n,
                Next::Wait {
                    until: Some(1010),
                    ..
                }
            ),
            "{n:?}"
        );
        assert_eq!(decided(&active(), &cfg, &reading(1010)), Next::Iterate);
        // the first iteration of a run does not wait
        let first = LoopRow {
            iterations: 0,
            ..active()
        };
        assert_eq!(decided(&first, &cfg, &reading(1000)), Next::Iterate);

        let cfg = test_config("run = \"schedule\"\nevery = \"1h\"");
        let n = decided(&active(), &cfg, &reading(2000));
        assert_eq!(kind(&n), Some("schedule"));
        assert!(
            matches!(
                n,
                Next::Wait {
                    until: Some(4500),
                    ..
                }
            ),
            "{n:?}"
        );
        assert_eq!(decided(&active(), &cfg, &reading(4500)), Next::Iterate);
    }

    #[test]
    fn on_change_reads_the_workspace_only_past_the_other_gates_and_waits_for_a_change() {
        let cfg = test_config("run = \"on_change\"");
        let row = LoopRow {
            fingerprint: Some("before".into()),
            ..active()
        };
        let mut r = reading(2000);
        r.workspace = None;
        assert_eq!(decide(&row, &cfg, &r), Err(NeedsWorkspace));
        // a gate before it answers without the workspace
        let held = LoopRow {
            breaker: Breaker::Open { until: 9000 },
            ..row.clone()
        };
        assert_eq!(kind(&decided(&held, &cfg, &r)), Some("breaker"));
        r.workspace = Some(Some("before".into()));
        assert_eq!(kind(&decided(&row, &cfg, &r)), Some("changes"));
        r.workspace = Some(Some("after".into()));
        assert_eq!(decided(&row, &cfg, &r), Next::Iterate);
        // a workspace the daemon cannot read does not hold the loop
        r.workspace = Some(None);
        assert_eq!(decided(&row, &cfg, &r), Next::Iterate);
    }

    #[test]
    fn the_memory_gate_waits_for_a_reading_and_for_room() {
        // budget 4 GiB, high watermark 90%, an iteration may use 512 MiB
        let cfg = test_config("memory = \"512MiB\"");
        let gib = 1u64 << 30;
        let mut r = reading(2000);
        r.stack_memory = None;
        assert_eq!(kind(&decided(&active(), &cfg, &r)), Some("first reading"));
        r.stack_memory = Some(3 * gib + gib * 3 / 4); // 93.75%: above the watermark
        let n = decided(&active(), &cfg, &r);
        assert!(
            matches!(&n, Next::Wait { kind: "memory", reason, .. } if reason.contains("94% of its budget")),
            "{n:?}"
        );
        r.stack_memory = Some(3 * gib + gib / 2 + 1); // under the watermark, but no room for 512 MiB
        let n = decided(&active(), &cfg, &r);
        assert!(
            matches!(&n, Next::Wait { kind: "memory", reason, .. } if reason.contains("may use 512 MiB")),
            "{n:?}"
        );
        r.stack_memory = Some(3 * gib);
        assert_eq!(decided(&active(), &cfg, &r), Next::Iterate);
    }

    fn spent(cost: f64, tokens: u64) -> Spent {
        Spent {
            cost,
            tokens,
            results: 1,
        }
    }

    fn spend(loop_day: Spent, project_month: Spent) -> SpendReading {
        SpendReading {
            periods: Periods {
                day: (0, 86_400),
                month: (0, 30 * 86_400),
            },
            loop_day,
            loop_month: loop_day,
            project_day: project_month,
            project_month,
        }
    }

    #[test]
    fn a_cap_reached_holds_the_loop_until_its_period_turns() {
        let mut cfg = test_config("max_cost_per_day = 5.0\nmax_tokens_per_month = 1000000");
        let mut r = reading(2000);
        r.spend = Some(spend(spent(4.99, 10), Spent::default()));
        assert_eq!(decided(&active(), &cfg, &r), Next::Iterate);
        r.spend = Some(spend(spent(5.0, 10), Spent::default()));
        let n = decided(&active(), &cfg, &r);
        assert!(
            matches!(&n, Next::Wait { kind: SPEND_CAP, until: Some(86_400), reason }
                if reason.contains("spent $5.00 today, max_cost_per_day = 5")),
            "{n:?}"
        );
        // a month's cap waits for the month
        r.spend = Some(spend(spent(1.0, 1_000_000), Spent::default()));
        let n = decided(&active(), &cfg, &r);
        assert!(
            matches!(&n, Next::Wait { kind: SPEND_CAP, until: Some(2_592_000), reason }
                if reason.contains("1000000 tokens this month")),
            "{n:?}"
        );
        // the project's caps count every loop
        cfg.project_caps.cost_per_month = Some(100.0);
        r.spend = Some(spend(spent(1.0, 10), spent(100.5, 10)));
        let n = decided(&active(), &cfg, &r);
        assert!(
            matches!(&n, Next::Wait { kind: SPEND_CAP, reason, .. }
                if reason.contains("[spend] max_cost_per_month = 100") && reason.contains("together")),
            "{n:?}"
        );
        // a raised cap lets it go on at once
        cfg.project_caps.cost_per_month = Some(200.0);
        assert_eq!(decided(&active(), &cfg, &r), Next::Iterate);
        // no reading (no cap set): no gate
        r.spend = None;
        assert_eq!(decided(&active(), &cfg, &r), Next::Iterate);
    }
}
