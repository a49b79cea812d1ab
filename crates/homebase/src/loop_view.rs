//! How an agent loop reads for a person: one line per loop (`loop ls`, `status`), its
//! spend, an iteration's outcome. Shared by the commands that show loops.

use std::fmt::Write as _;
use std::time::Duration;

use homebase_proto::clock::{human_duration, now_secs};
use homebase_proto::{IterationRecord, LoopSpend, LoopStatus};

use crate::ui::{BAD, BOLD, DIM, GOOD, WARN, paint};

pub fn ago(t: i64) -> String {
    human_duration(Duration::from_secs(
        now_secs().saturating_sub(t.max(0) as u64),
    ))
}

pub fn until(t: i64) -> String {
    human_duration(Duration::from_secs(
        (t.max(0) as u64).saturating_sub(now_secs()),
    ))
}

/// `ralph  active  run 2, iteration 7/50 running for 3m  breaker closed  last: ok (exit 0, 4 files)`.
pub fn one_line(l: &LoopStatus) -> String {
    let state = match l.state.as_str() {
        "active" => paint(GOOD, &l.state),
        "completed" => paint(GOOD, &l.state),
        "paused" | "idle" => paint(WARN, &l.state),
        _ => paint(BAD, &l.state),
    };
    let max = l
        .max_iterations
        .map(|m| format!("/{m}"))
        .unwrap_or_default();
    let mut s = format!("{}  {state}  run {}, ", paint(BOLD, &l.name), l.run);
    match &l.running {
        Some(r) => {
            let _ = write!(s, "iteration {}{max} running for {}", r.n, ago(r.started));
        }
        None => {
            let _ = write!(s, "{} iterations{max}", l.iterations);
        }
    }
    let breaker = match l.breaker.as_str() {
        "closed" => "breaker closed".to_string(),
        other => paint(
            BAD,
            format!(
                "breaker {other}{}",
                l.breaker_until
                    .map(|u| format!(" (trial in {})", until(u)))
                    .unwrap_or_default()
            ),
        ),
    };
    let _ = write!(s, "  {breaker}");
    if let Some(spend) = &l.spend {
        let _ = write!(s, "  {}", spend_text(spend));
    }
    if let Some(w) = &l.waiting {
        let _ = write!(
            s,
            "  {}",
            paint(
                WARN,
                format!(
                    "waiting: {w}{}",
                    l.wait_until
                        .map(|u| format!(" (for {})", until(u)))
                        .unwrap_or_default()
                )
            )
        );
    }
    if let Some(last) = &l.last {
        let _ = write!(s, "  last: {}", outcome_text(last));
    }
    if !l.reason.is_empty() && l.state != "active" {
        let _ = write!(s, "  {}", paint(DIM, format!("({})", l.reason)));
    }
    s
}

/// `$1.23 of $5 today ($0.42 last, $8.10 this month, $0.60/h), 1.2M tokens today`.
pub fn spend_text(s: &LoopSpend) -> String {
    let of = |cap: Option<f64>| cap.map(|c| format!(" of {}", money(c))).unwrap_or_default();
    let of_tokens = |cap: Option<u64>| {
        cap.map(|c| format!(" of {}", tokens(c)))
            .unwrap_or_default()
    };
    let mut t = format!(
        "{}{} today (",
        money(s.today_cost_usd),
        of(s.max_cost_per_day)
    );
    if let Some(last) = s.last_cost_usd {
        let _ = write!(t, "{} last, ", money(last));
    }
    let _ = write!(
        t,
        "{}{} this month, {}/h), {}{} tokens today",
        money(s.month_cost_usd),
        of(s.max_cost_per_month),
        money(s.hour_cost_usd),
        tokens(s.today_tokens),
        of_tokens(s.max_tokens_per_day)
    );
    if let Some(cap) = s.max_tokens_per_month {
        let _ = write!(
            t,
            " ({} of {} this month)",
            tokens(s.month_tokens),
            tokens(cap)
        );
    }
    t
}

/// `$0.42`; amounts under a cent keep their first figure (`$0.004`).
pub fn money(v: f64) -> String {
    if v > 0.0 && v < 0.01 {
        format!("${v:.3}")
    } else {
        format!("${v:.2}")
    }
}

/// `950`, `12.3k`, `4.1M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

pub fn outcome_text(i: &IterationRecord) -> String {
    let mut parts = Vec::new();
    if let Some(c) = i.exit_code {
        parts.push(format!("exit {c}"));
    }
    if let Some(f) = i.files_changed {
        parts.push(format!("{f} files"));
    }
    if let Some(c) = i.result.as_ref().and_then(|r| r.cost_usd) {
        parts.push(money(c));
    }
    let o = if parts.is_empty() {
        i.outcome.clone()
    } else {
        format!("{} ({})", i.outcome, parts.join(", "))
    };
    match i.outcome.as_str() {
        "ok" | "completed" => paint(GOOD, o),
        "running" | "usage_limit" | "stopped" | "interrupted" => paint(WARN, o),
        _ => paint(BAD, o),
    }
}
