//! `homebase loop`: the project's agent loops, as the host daemon runs them. Commands go to
//! the daemon's API through the SSH master; `logs` reads the loop's output file on the host.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use homebase_proto::layout::{self, LOOP_OUTPUT, LOOPS};
use homebase_proto::{IterationRecord, LoopStatus};
use homebase_remote::sh_quote;

use crate::cli::{Global, LoopArgs, LoopCommand};
use crate::daemon_client;
use crate::exit::{Exit, coded};
use crate::loop_view::{ago, money, one_line, tokens};
use crate::project::{self, Link, Project};
use crate::ui::{self, BAD, BOLD, DIM, GOOD, WARN, paint};
use homebase_proto::clock::human_duration;

mod pull;

pub fn run(global: &Global, args: &LoopArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    if let Some(name) = loop_name(&args.command) {
        require_loop(&project, name)?;
    }
    let session = link.open_session()?;
    let p = project.config.project.name.clone();
    if let LoopCommand::Pull { name } = &args.command {
        return pull::run(&project, &session, name, args.json);
    }
    if let LoopCommand::Logs { name, follow, tail } = &args.command {
        return logs(&session, &p, name, *follow, *tail);
    }
    let dir = global.daemon_dir.as_deref();
    // a daemon that is not there or does not answer: exit 3, as an unreachable host
    let unreachable = |e: anyhow::Error| {
        if e.downcast_ref::<daemon_client::Unavailable>().is_some() {
            coded(Exit::Unreachable, e.to_string())
        } else {
            e
        }
    };
    match &args.command {
        LoopCommand::Ls => {
            let loops: Vec<LoopStatus> =
                daemon_client::get_json(&session, dir, &format!("/api/loops?project={p}"))
                    .map_err(unreachable)?;
            if args.json {
                ui::out(&(serde_json::to_string_pretty(&loops)? + "\n"))?;
            } else if loops.is_empty() {
                ui::out(&format!(
                    "no agent loops are running for `{p}` on {}{}\n",
                    session.host(),
                    if project.config.loops.is_empty() {
                        "; add a [loops.NAME] section to homebase.toml and deploy"
                    } else {
                        "; deploy to start the loops in homebase.toml"
                    }
                ))?;
            } else {
                let mut s = String::new();
                for l in &loops {
                    let _ = writeln!(s, "{}", one_line(l));
                }
                ui::out(&s)?;
            }
            Ok(Exit::Ok)
        }
        LoopCommand::History { name, limit } => {
            let rows: Vec<IterationRecord> = daemon_client::get_json(
                &session,
                dir,
                &format!("/api/loops/{p}/{name}/history?limit={limit}"),
            )
            .map_err(unreachable)?;
            if args.json {
                ui::out(&(serde_json::to_string_pretty(&rows)? + "\n"))?;
            } else {
                ui::out(&history_table(&rows))?;
            }
            Ok(Exit::Ok)
        }
        LoopCommand::Start { name }
        | LoopCommand::Stop { name }
        | LoopCommand::Pause { name }
        | LoopCommand::Resume { name } => {
            let action = match &args.command {
                LoopCommand::Start { .. } => "start",
                LoopCommand::Stop { .. } => "stop",
                LoopCommand::Pause { .. } => "pause",
                _ => "resume",
            };
            control(&session, dir, &p, name, action, args.json).map_err(unreachable)
        }
        LoopCommand::Logs { .. } | LoopCommand::Pull { .. } => Ok(Exit::Ok),
    }
}

/// `loop logs NAME [-f]`: the loop's output log on the host, read (or followed) there.
fn logs(
    session: &homebase_remote::Session,
    p: &str,
    name: &str,
    follow: bool,
    tail: u32,
) -> Result<Exit> {
    let file = format!(
        "{}/{LOOPS}/{}/{LOOP_OUTPUT}",
        layout::sh_project(&sh_quote(p)),
        sh_quote(name)
    );
    let script = if follow {
        format!("touch {file} 2>/dev/null; tail -n {tail} -F {file}")
    } else {
        format!(
            "if [ -f {file} ]; then tail -n {tail} {file}; else echo 'loop {name} has no output yet' >&2; fi"
        )
    };
    let (ok, _) = ui::run_printable(
        session.command(&script, false),
        &format!("the output of loop `{name}` on {}", session.host()),
    )?;
    Ok(if ok { Exit::Ok } else { Exit::Unreachable })
}

/// `loop start|stop|pause|resume NAME`: asks the daemon, and says what it answered.
fn control(
    session: &homebase_remote::Session,
    dir: Option<&str>,
    p: &str,
    name: &str,
    action: &str,
    json: bool,
) -> Result<Exit> {
    let (code, body) = daemon_client::request(
        session,
        dir,
        "POST",
        &format!("/api/loops/{p}/{name}/{action}"),
    )?;
    match code {
        200 => {
            let l: LoopStatus = serde_json::from_str(&body)?;
            if json {
                ui::out(&(serde_json::to_string_pretty(&l)? + "\n"))?;
            } else {
                ui::out(&format!("{}\n", one_line(&l)))?;
            }
            Ok(Exit::Ok)
        }
        404 => Err(coded(
            Exit::BadInput,
            format!(
                "{}; deploy first if you just added it",
                ui::printable(body.trim())
            ),
        )),
        409 => Err(coded(Exit::Refused, ui::printable(body.trim()))),
        _ => Err(anyhow::anyhow!(
            "the daemon answered {code} to `loop {action} {name}`: {}",
            ui::printable(body.trim())
        )),
    }
}

fn loop_name(c: &LoopCommand) -> Option<&str> {
    match c {
        LoopCommand::Ls => None,
        LoopCommand::Start { name }
        | LoopCommand::Stop { name }
        | LoopCommand::Pause { name }
        | LoopCommand::Resume { name }
        | LoopCommand::Logs { name, .. }
        | LoopCommand::Pull { name }
        | LoopCommand::History { name, .. } => Some(name),
    }
}

/// An unknown loop name is bad input, caught before any connection.
fn require_loop(project: &Project, name: &str) -> Result<()> {
    if project.config.loops.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = project.config.loops.keys().map(String::as_str).collect();
    let hint = match homebase_stack::error::did_you_mean(name, known.iter().copied()) {
        Some(s) => format!("; did you mean `{s}`?"),
        None if known.is_empty() => {
            "; homebase.toml defines no loops: add a [loops.NAME] section and deploy".into()
        }
        None => format!("; the loops are: {}", known.join(", ")),
    };
    Err(coded(
        Exit::BadInput,
        format!("homebase.toml has no loop `{name}`{hint}"),
    ))
}

fn history_table(rows: &[IterationRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            format!(
                "{:>4}  {:>5}  {:<15}  {:>5}  {:>9}  {:>6}  {:>7}  {:>7}  {:<10}  NOTE",
                "RUN", "ITER", "OUTCOME", "EXIT", "DURATION", "FILES", "COST", "TOKENS", "STARTED"
            )
        )
    );
    for i in rows {
        let outcome = format!("{:<15}", i.outcome);
        let outcome = match i.outcome.as_str() {
            "ok" | "completed" => paint(GOOD, outcome),
            "running" | "usage_limit" | "stopped" | "interrupted" => paint(WARN, outcome),
            _ => paint(BAD, outcome),
        };
        let note = match (&i.diffstat, i.note.is_empty()) {
            (Some(d), true) => d.clone(),
            (Some(d), false) => format!("{d}; {}", i.note),
            (None, _) => i.note.clone(),
        };
        let note = match &i.commit {
            Some(c) => format!("commit {} · {note}", &c[..c.len().min(12)]),
            None => note,
        };
        let last_line = i
            .tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(60)
            .collect::<String>();
        let note = match (&i.result, note.is_empty()) {
            // the last line is the result itself: say what it holds instead
            (Some(r), true) => format!(
                "{}{}",
                r.subtype,
                r.turns.map(|t| format!(", {t} turns")).unwrap_or_default()
            ),
            (None, true) => last_line,
            (_, false) => note,
        };
        let r = i.result.as_ref();
        let _ = writeln!(
            s,
            "{:>4}  {:>5}  {outcome}  {:>5}  {:>9}  {:>6}  {:>7}  {:>7}  {:<10}  {}",
            i.run,
            i.n,
            i.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            i.duration_ms
                .map(|d| human_duration(Duration::from_millis(d.max(0) as u64)))
                .unwrap_or_else(|| "-".into()),
            i.files_changed
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            r.and_then(|r| r.cost_usd)
                .map(money)
                .unwrap_or_else(|| "-".into()),
            r.map(|r| tokens(r.tokens())).unwrap_or_else(|| "-".into()),
            format!("{} ago", ago(i.started)),
            paint(DIM, note)
        );
    }
    if rows.is_empty() {
        let _ = writeln!(s, "no iterations recorded yet");
    }
    s
}
