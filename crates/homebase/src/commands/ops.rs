//! `homebase logs`, `exec` and `restart`: the running stack's services.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_remote::sh_quote;

use crate::cli::{ExecArgs, Global, LogsArgs, RestartArgs};
use crate::exit::{Exit, coded};
use crate::host::HostProject;
use crate::progress::Progress;
use crate::project::{self, Link};
use crate::ui::{self};

pub fn logs(global: &Global, args: &LogsArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    project.require_service(&args.service)?;
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    let since = args
        .since
        .as_ref()
        .map(|s| format!(" --since {}", sh_quote(s)))
        .unwrap_or_default();
    let script = host.logs(&args.service, args.tail as usize, &since, args.follow);
    // bytes from the host's containers: shown as text, never as terminal escapes
    let (ok, lines) = crate::ui::run_printable(
        session.command(&script, false),
        &format!("the logs of `{}` on {}", args.service, session.host()),
    )?;
    if ok && lines == 0 && !args.follow {
        // silence would read as a broken command
        crate::ui::warn(&format!(
            "`{}` wrote no output{}",
            args.service,
            args.since
                .as_ref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_else(|| " since its container started".into())
        ));
    }
    Ok(if ok { Exit::Ok } else { Exit::Unreachable })
}

/// Restarts one service's containers (swarm: forces an update of its tasks) and waits, on
/// the host, until it is running and healthy: one round trip. Refused while a deploy holds
/// the lock (its health gate would see the restart).
pub fn restart(global: &Global, args: &RestartArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    project.require_service(&args.service)?;
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    let started = Instant::now();
    // progress on stderr; with --json, stdout is the report alone
    let mut progress = Progress::new(false);
    progress.step(&format!("restart {}", args.service));
    let script = format!(
        "d={d}; p={p}; s={s}; if [ -L \"$d/lock\" ]; then echo locked; readlink \"$d/lock\"; exit 0; fi; {}",
        host.restart(&args.service, args.timeout),
        d = host.dir(),
        p = sh_quote(&host.project),
        s = sh_quote(&args.service),
    );
    let deadline = Duration::from_secs(args.timeout) + homebase_remote::STEP_DEADLINE;
    let out = session.run_with_deadline(&script, b"", deadline)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let fail = |progress: &mut Progress, code: Exit, message: String| {
        progress.fail("refused");
        Err(coded(code, message))
    };
    match first {
        "locked" => {
            return fail(
                &mut progress,
                Exit::Locked,
                format!(
                    "a deploy holds the lock on {} ({}); restart `{}` when it has ended",
                    session.host(),
                    ui::printable(lines.next().unwrap_or("").trim()),
                    args.service
                ),
            );
        }
        "none" => {
            return fail(
                &mut progress,
                Exit::Refused,
                format!(
                    "service `{}` has no container on {}; `homebase deploy` starts it",
                    args.service,
                    session.host()
                ),
            );
        }
        "failed" => {
            let why: Vec<String> = lines.map(ui::printable).collect();
            return fail(
                &mut progress,
                Exit::Unreachable,
                format!(
                    "restarting `{}` on {} failed: {}",
                    args.service,
                    session.host(),
                    why.join("; ")
                ),
            );
        }
        _ if !first.starts_with("restarted ") => {
            return Err(anyhow::anyhow!(
                "restarting `{}` on {} ended without an answer (exit {}): {}",
                args.service,
                session.host(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        _ => {}
    }
    let containers: Vec<String> = first["restarted ".len()..]
        .split_whitespace()
        .map(ui::printable)
        .collect();
    let healthy = lines.next() == Some("healthy");
    let report = homebase_proto::RestartReport {
        service: args.service.clone(),
        containers,
        healthy,
        ms: started.elapsed().as_millis() as u64,
    };
    if healthy {
        progress.done();
    } else {
        progress.fail("not healthy");
    }
    if args.json {
        ui::out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else if healthy {
        ui::out(&format!(
            "{} restarted ({}) and healthy\n",
            args.service,
            report.containers.join(", ")
        ))?;
    } else {
        ui::out(&format!(
            "{} restarted ({}) but not healthy within {} s; `homebase logs {}` says why\n",
            args.service,
            report.containers.join(", "),
            args.timeout,
            args.service
        ))?;
    }
    Ok(if healthy { Exit::Ok } else { Exit::Refused })
}

pub fn exec(global: &Global, args: &ExecArgs) -> Result<Exit> {
    use std::io::IsTerminal;
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    project.require_service(&args.service)?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let words: Vec<String> = args.command.iter().map(|w| sh_quote(w)).collect();
    let manager = link.open_session()?;
    // In swarm mode the command runs on the node Swarm chose, in one of the service's tasks.
    let (session, script) = if project.swarm() {
        let name = &project.config.project.name;
        let node = crate::host::stack::placements(&manager, name)?
            .remove(&args.service)
            .map(|p| p.node)
            .ok_or_else(|| {
                coded(
                    Exit::Refused,
                    format!(
                        "`{}` has no running task on a ready node; `homebase status` shows why",
                        args.service
                    ),
                )
            })?;
        project.config.nodes.get(&node).ok_or_else(|| {
            coded(
                Exit::Refused,
                format!(
                    "`{}` runs on node `{node}`, which is not in [nodes] of homebase.toml; add it to reach it",
                    args.service
                ),
            )
        })?;
        let session = link
            .node_session(&node)
            .with_context(|| format!("cannot reach node {node}, where `{}` runs", args.service))?;
        let script = format!(
            "{}; docker exec {}\"$c\" {}",
            crate::host::stack::locate_task(name, &args.service),
            if tty { "-it " } else { "-i " },
            words.join(" "),
        );
        (session, script)
    } else {
        let host = HostProject::of(&manager, &project);
        let script = format!(
            "{} exec {}{} {}",
            host.compose(),
            if tty { "" } else { "-T " },
            sh_quote(&args.service),
            words.join(" ")
        );
        (manager, script)
    };
    let status = session
        .command(&script, tty)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run ssh for `{}`: {e}", session.host()))?;
    match status.code() {
        Some(0) => Ok(Exit::Ok),
        Some(c) => Err(coded(
            Exit::Refused,
            format!(
                "`{}` exited with {c} in `{}`",
                args.command.join(" "),
                args.service
            ),
        )),
        None => Err(coded(Exit::Refused, "the command was killed")),
    }
}
