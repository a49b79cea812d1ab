//! `homebase status`, `releases`, `rollback`, `logs` and `exec`: the running stack.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::clock::parse_rfc3339;
use homebase_proto::{ServiceSnap, ServiceStatus, Snapshot, StatusReport};
use homebase_remote::sh_quote;
use homebase_stack::Bytes;
use serde_json::Value;

use crate::cli::{ExecArgs, Global, LogsArgs, ReleasesArgs, RestartArgs, RollbackArgs, StatusArgs};
use crate::commands::deploy::entry;
use crate::exit::{Exit, coded};
use crate::host::{HostProject, now_secs};
use crate::progress::Progress;
use crate::project;
use crate::release::{self, human_duration};
use crate::ui::{self, BAD, BOLD, GOOD, WARN, paint};

pub fn status(global: &Global, args: &StatusArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    let planned: Vec<String> = project.compose.services.keys().cloned().collect();
    let mut report = if project.swarm() {
        let (services, nodes) = crate::commands::swarm::status_services(&project, &host, &planned)?;
        let healthy = services.iter().all(|s| s.state == "running");
        StatusReport {
            project: host.project.clone(),
            host: host.session.host(),
            release: host.current()?.map(|c| c.0),
            services,
            healthy,
            daemon: String::new(),
            alerts: Vec::new(),
            events: Vec::new(),
            tunnels: Vec::new(),
            loops: Vec::new(),
            nodes,
        }
        // (the swarm's daemons are asked through a forward)
    } else {
        collect_status(&host, planned, global.daemon_dir.as_deref(), args.fresh)?
    };
    if report.daemon.is_empty() {
        daemon_view(&host, global.daemon_dir.as_deref(), &mut report);
    }
    if let homebase_remote::Target::Ssh(t) = project.target()
        && let Some(state) = crate::tunnel::running(&project.config.project.name, &t.destination)
    {
        for w in crate::tunnel::wanted_forwards(&project) {
            let Some(f) = state
                .forwards
                .iter()
                .find(|f| f.service == w.service && f.remote_port == w.remote_port)
            else {
                continue;
            };
            let p = w.probe.clone().unwrap_or(crate::probe::Probe::Tcp);
            let r = crate::probe::probe(f.local_port, &p, 3);
            report.tunnels.push(homebase_proto::TunnelProbe {
                service: w.service.clone(),
                local_port: f.local_port,
                probe: p.name(),
                ok: r.ok,
                rtt_ms: r.rtt.as_secs_f64() * 1000.0,
                detail: r.detail,
            });
        }
    }
    if args.json {
        ui::out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        ui::out(&human_status(&report))?;
    }
    Ok(if report.healthy {
        Exit::Ok
    } else {
        Exit::Refused
    })
}

/// A service's status from the daemon's snapshot (`None`: it has no container there).
/// A limit at the host's memory is the engine's way of saying there is none.
fn status_from_snapshot(
    name: &str,
    snap: Option<&ServiceSnap>,
    now: u64,
    host_memory: u64,
) -> ServiceStatus {
    let Some(s) = snap else {
        return ServiceStatus::missing(name);
    };
    // (the daemon's words, from the host: shown escaped)
    let state = ui::printable(&s.state);
    let running = state == "running";
    ServiceStatus {
        name: name.to_string(),
        health: ui::printable(&s.health),
        uptime_secs: running
            .then(|| parse_rfc3339(&s.started_at))
            .flatten()
            .map(|t| now.saturating_sub(t)),
        restarts: s.restarts,
        memory_bytes: running.then_some(s.memory_bytes),
        limit_bytes: Some(s.limit_bytes)
            .filter(|m| *m > 0 && (host_memory == 0 || *m < host_memory)),
        container: Some(ui::printable(&s.container)).filter(|c| !c.is_empty()),
        nodes: Vec::new(),
        state,
    }
}

/// Per service state, health, uptime, restarts, memory and limit, and the daemon's alerts,
/// events and loops, in one round trip. Memory is the daemon's last sample (at most its
/// interval old) when it runs, else (or with `fresh`) a `docker stats` sample (~2 s). Leaves
/// `daemon` empty when the daemon must be asked through a forward (no curl on the host).
pub fn collect_status(
    host: &HostProject,
    planned: Vec<String>,
    daemon_dir: Option<&str>,
    fresh: bool,
) -> Result<StatusReport> {
    use crate::daemon_client::on_host;
    let asks = [
        "/api/status".to_string(),
        "/api/events?limit=10".to_string(),
        format!("/api/loops?project={}", host.project),
    ];
    // With the daemon's snapshot of the project at its current release (a daemon new
    // enough to keep each container's start and restarts), the host runs no docker command
    // at all; a snapshot from before the last deploy is not used for the services.
    let script = format!(
        "p={p}; c=$(cat {d}/current 2>/dev/null); {ask}case \"{fresh}:$hb_d:$hb_a0\" in \
           0:running*\"\\\"name\\\":\\\"$p\\\",\\\"release\\\":\\\"$c\\\"\"*\"\\\"started_at\\\"\"*) echo daemon; echo '@@HB@@';; \
           *) ids=$(docker ps -aq --filter label=com.docker.compose.project=\"$p\"); \
         if [ -n \"$ids\" ]; then docker inspect $ids; echo '@@HB@@'; \
           case \"{fresh}:$hb_d:$hb_a0\" in 0:running*\"\\\"name\\\":\\\"$p\\\"\"*) ;; *) docker stats --no-stream --format '{{{{json .}}}}' $ids;; esac; \
         else echo '[]'; echo '@@HB@@'; fi;; esac; \
         echo '@@HB@@'; cat {d}/current 2>/dev/null; echo; echo '@@HB@@'; {print} true",
        ask = on_host::ask(daemon_dir, &asks),
        print = on_host::print(asks.len()),
        p = sh_quote(&host.project),
        d = host.dir(),
        fresh = u8::from(fresh),
    );
    let out = host.session.check(&script)?;
    let mut parts = out.splitn(4, "@@HB@@");
    let first = parts.next().unwrap_or("[]").trim();
    let from_daemon = first == "daemon";
    let inspect: Vec<Value> = serde_json::from_str(first).unwrap_or_default();
    let stats: Vec<Value> = parts
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let release = parts
        .next()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let answer = on_host::parse(
        parts.next().unwrap_or("").trim_start_matches('\n'),
        asks.len(),
    );
    // the daemon's last sample, by container name, and its view of each service
    let mut sampled: std::collections::HashMap<String, u64> = Default::default();
    let mut daemon_services: std::collections::HashMap<String, ServiceSnap> = Default::default();
    let mut sample_age = None;
    let mut host_memory = 0;
    let mut snapshot = Snapshot::default();
    if let on_host::Answer::Running { bodies, .. } = &answer
        && let Ok(snap) = serde_json::from_str::<Snapshot>(&bodies[0])
    {
        sample_age = Some((now_secs() as i64 - snap.ts).max(0));
        host_memory = snap.mem_total;
        for proj in snap.projects.iter().filter(|p| p.name == host.project) {
            for svc in &proj.services {
                sampled.insert(svc.container.clone(), svc.memory_bytes);
                daemon_services.insert(svc.name.clone(), svc.clone());
            }
        }
        snapshot = snap;
    }
    let now = now_secs();
    let mut services = Vec::new();
    for name in planned.iter().filter(|_| from_daemon) {
        services.push(status_from_snapshot(
            name,
            daemon_services.get(name.as_str()),
            now,
            host_memory,
        ));
    }
    for name in planned.iter().filter(|_| !from_daemon) {
        let c = inspect.iter().find(|c| {
            c["Config"]["Labels"]["com.docker.compose.service"].as_str() == Some(name.as_str())
        });
        let Some(c) = c else {
            services.push(ServiceStatus::missing(name));
            continue;
        };
        let cname = c["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let state = c["State"]["Status"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let health = c["State"]["Health"]["Status"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        let uptime_secs = (state == "running")
            .then(|| c["State"]["StartedAt"].as_str().and_then(parse_rfc3339))
            .flatten()
            .map(|t| now.saturating_sub(t));
        let limit = c["HostConfig"]["Memory"].as_u64().filter(|m| *m > 0);
        let memory = stats
            .iter()
            .find(|s| s["Name"].as_str() == Some(cname.as_str()))
            .and_then(|s| s["MemUsage"].as_str())
            .and_then(mem_used)
            .or_else(|| {
                (state == "running")
                    .then(|| sampled.get(&cname).copied())
                    .flatten()
            });
        services.push(ServiceStatus {
            name: name.clone(),
            state,
            health,
            uptime_secs,
            restarts: c["RestartCount"].as_u64().unwrap_or(0),
            memory_bytes: memory,
            limit_bytes: limit,
            container: Some(cname),
            nodes: Vec::new(),
        });
    }
    let healthy = services
        .iter()
        .all(|s| s.state == "running" && (s.health == "none" || s.health == "healthy"));
    let mut report = StatusReport {
        project: host.project.clone(),
        host: host.session.host(),
        release,
        services,
        healthy,
        tunnels: Vec::new(),
        loops: Vec::new(),
        nodes: Vec::new(),
        daemon: String::new(),
        alerts: Vec::new(),
        events: Vec::new(),
    };
    match answer {
        on_host::Answer::Running { endpoint, bodies } => {
            crate::daemon_client::remember_endpoint(host.session, &endpoint);
            // (read from a file of the host's: shown as text)
            let endpoint = ui::printable(&endpoint);
            report.daemon = match sample_age {
                Some(age) if from_daemon => {
                    format!("running at {endpoint} (its view of {age} s ago)")
                }
                Some(age) if !fresh => {
                    format!("running at {endpoint} (memory sampled {age} s ago)")
                }
                _ => format!("running at {endpoint}"),
            };
            daemon_fill(
                &mut report,
                snapshot,
                serde_json::from_str(&bodies[1]).unwrap_or_default(),
                serde_json::from_str(&bodies[2]).unwrap_or_default(),
            );
        }
        on_host::Answer::NotAnswering { endpoint } => {
            report.daemon = format!(
                "not answering at {}; showing the engine's view",
                ui::printable(&endpoint)
            );
        }
        on_host::Answer::NotInstalled => {
            report.daemon = "not installed on the host; showing the engine's view".into();
        }
        on_host::Answer::NoCurl => {}
    }
    Ok(report)
}

/// The daemon's alerts and events of this project, and its loops.
fn daemon_fill(
    report: &mut StatusReport,
    status: Snapshot,
    events: Vec<homebase_proto::EventRow>,
    loops: Vec<homebase_proto::LoopStatus>,
) {
    report.alerts = status
        .alerts
        .into_iter()
        .filter(|a| a.project == report.project)
        .collect();
    report.events = events
        .into_iter()
        .filter(|e| e.project == report.project)
        .collect();
    report.loops = loops;
}

/// Adds the daemon's alerts and latest events when it runs on the host (reached through a
/// forward on the same SSH connection); otherwise says the engine's view is shown.
fn daemon_view(host: &HostProject, dir: Option<&str>, report: &mut StatusReport) {
    let client = match crate::daemon_client::DaemonClient::connect(host.session, dir) {
        Ok(c) => c,
        Err(e @ crate::daemon_client::Unavailable::NotInstalled { .. }) => {
            let _ = e;
            report.daemon = "not installed on the host; showing the engine's view".into();
            return;
        }
        Err(e) => {
            report.daemon = format!("{e}; showing the engine's view");
            return;
        }
    };
    let fetched = (|| -> Result<_> {
        let status: Snapshot = client.get("/api/status")?;
        let events: Vec<homebase_proto::EventRow> = client.get("/api/events?limit=10")?;
        let loops: Vec<homebase_proto::LoopStatus> =
            client.get(&format!("/api/loops?project={}", report.project))?;
        Ok((status, events, loops))
    })();
    match fetched {
        Ok((status, events, loops)) => {
            report.daemon = format!("running at {}", client.endpoint);
            daemon_fill(report, status, events, loops);
        }
        Err(e) => {
            report.daemon = format!(
                "not answering at {} ({e:#}); showing the engine's view",
                client.endpoint
            )
        }
    }
}

/// The bytes in use from `docker stats`' MemUsage (`55.5MiB / 600MiB`).
pub(crate) fn mem_used(usage: &str) -> Option<u64> {
    let used = usage.split('/').next()?;
    Bytes::parse(used.trim()).ok().map(|b| b.0)
}

fn human_status(r: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} (release {})",
        paint(BOLD, &r.project),
        r.host,
        r.release.as_deref().unwrap_or("none")
    );
    let w = r
        .services
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            format!(
                "{:<w$}  {:<10}  {:<9}  {:>8}  {:>8}  {:>21}",
                "SERVICE", "STATE", "HEALTH", "UPTIME", "RESTARTS", "MEMORY / LIMIT"
            )
        )
    );
    for x in &r.services {
        let ok = x.state == "running" && (x.health == "none" || x.health == "healthy");
        let state = format!("{:<10}", x.state);
        let state = if ok {
            paint(GOOD, state)
        } else {
            paint(BAD, state)
        };
        let health = format!("{:<9}", x.health);
        let health = if x.health == "unhealthy" {
            paint(BAD, health)
        } else if x.health == "starting" {
            paint(WARN, health)
        } else {
            health
        };
        let mem = format!(
            "{} / {}",
            x.memory_bytes
                .map(|b| Bytes(b).to_string())
                .unwrap_or_else(|| "-".into()),
            x.limit_bytes
                .map(|b| Bytes(b).to_string())
                .unwrap_or_else(|| "none".into())
        );
        let up = x
            .uptime_secs
            .map(|u| human_duration(Duration::from_secs(u)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<w$}  {state}  {health}  {up:>8}  {:>8}  {mem:>21}",
            x.name, x.restarts
        );
    }
    if !r.daemon.is_empty() {
        let _ = writeln!(s, "daemon: {}", r.daemon);
    }
    for a in &r.alerts {
        let what = if a.service.is_empty() {
            "stack"
        } else {
            &a.service
        };
        let _ = writeln!(
            s,
            "{} {} {what}: {}",
            paint(BAD, "alert"),
            a.kind,
            a.message
        );
    }
    for e in r.events.iter().take(5) {
        let what = if e.service.is_empty() {
            "stack"
        } else {
            &e.service
        };
        let ago = human_duration(Duration::from_secs(
            now_secs().saturating_sub(e.ts.max(0) as u64),
        ));
        let _ = writeln!(
            s,
            "{}",
            paint(
                crate::ui::DIM,
                format!("{ago} ago: {} {what}: {}", e.kind, e.message)
            )
        );
    }
    s.push_str(&crate::commands::swarm::status_lines(&r.services, &r.nodes));
    for l in &r.loops {
        let _ = writeln!(s, "loop {}", crate::commands::loops::one_line(l));
    }
    for t in &r.tunnels {
        let mark = if t.ok {
            paint(GOOD, "✓")
        } else {
            paint(BAD, "✗")
        };
        let slow = if t.rtt_ms > 100.0 {
            paint(WARN, " (over 100 ms)")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{mark} tunnel 127.0.0.1:{} → {}: {} {:.1} ms{slow}",
            t.local_port, t.service, t.detail, t.rtt_ms
        );
    }
    let _ = writeln!(
        s,
        "{}",
        if r.healthy {
            paint(GOOD, "all services healthy")
        } else {
            paint(BAD, "something is not healthy")
        }
    );
    s
}

pub fn releases(global: &Global, args: &ReleasesArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    let (log, current) = host.log_and_current()?;
    if args.json {
        ui::out(
            &(serde_json::to_string_pretty(&homebase_proto::ReleasesReport {
                current,
                releases: log,
            })? + "\n"),
        )?;
        return Ok(Exit::Ok);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            format!(
                "{:<2}{:<28}  {:<12}  {:<8}  {:<10}  {}",
                "", "RELEASE", "OUTCOME", "USER", "COMMIT", "DURATION"
            )
        )
    );
    for e in &log {
        let mark = if current.as_deref() == Some(e.id.as_str()) && e.outcome == "deployed" {
            "* "
        } else {
            "  "
        };
        let commit = e
            .git_commit
            .as_deref()
            .map(|c| {
                format!(
                    "{}{}",
                    &c[..c.len().min(8)],
                    if e.git_dirty { "+" } else { "" }
                )
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{mark}{:<28}  {:<12}  {:<8}  {:<10}  {:.1}s",
            e.id,
            e.outcome,
            e.user,
            commit,
            e.duration_ms as f64 / 1000.0
        );
    }
    ui::out(&s)?;
    Ok(Exit::Ok)
}

pub fn rollback(global: &Global, args: &RollbackArgs) -> Result<Exit> {
    let started = Instant::now();
    let project = project::load(global)?;
    release::catch_interrupts();
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    let mut progress = Progress::new(args.json);
    progress.step("lock");
    let (mut lock, prepared) = release::Lock::take(
        &host,
        project.target(),
        &project.config.project.name,
        &mut progress,
        None,
        true,
    )?;
    match release::rtt_note(prepared.rtt, &session.host()) {
        Some(note) => progress.done_with(&note),
        None => progress.done(),
    }
    let current = prepared.current.map(|c| c.0);
    // the log and the releases on the host came with the lock
    let log = prepared.log.unwrap_or_default();
    let on_host = prepared.releases.unwrap_or_default();
    let target = match &args.id {
        Some(id) => id.clone(),
        None => {
            // The newest successfully deployed release before the current one.
            let deployed: Vec<&str> = log
                .iter()
                .filter(|e| e.outcome == "deployed" || e.outcome == "rollback")
                .map(|e| e.target.as_deref().unwrap_or(&e.id))
                .collect();
            let mut seen_current = current.is_none();
            let mut pick = None;
            for id in deployed.iter().rev() {
                if !seen_current {
                    if Some(*id) == current.as_deref() {
                        seen_current = true;
                    }
                    continue;
                }
                if Some(*id) != current.as_deref() {
                    pick = Some(id.to_string());
                    break;
                }
            }
            pick.ok_or_else(|| {
                coded(
                    Exit::BadInput,
                    "there is no earlier release to roll back to; `homebase releases` lists them",
                )
            })?
        }
    };
    crate::host::check_id(&target)?;
    let Some((_, hash)) = on_host.iter().find(|(id, _)| *id == target) else {
        return Err(coded(
            Exit::BadInput,
            format!(
                "release `{target}` is not on {}; `homebase releases` lists the ones that are",
                session.host()
            ),
        ));
    };
    let hash = hash.trim().to_string();
    let ok_entry = entry(
        &project,
        &target,
        &hash,
        "rollback",
        started,
        Some(target.clone()),
        None,
    );
    release::check_interrupt()?;
    if host.swarm {
        progress.step(&format!("roll back to release {target}"));
        let (ok, out) = host.up(&target, Duration::from_secs(args.timeout))?;
        if !ok {
            progress.fail("not healthy");
            let mut e = ok_entry;
            e.outcome = "failed".into();
            e.error = Some(out.trim().to_string());
            lock.finish(&e)?;
            return Err(coded(
                Exit::Refused,
                format!("release {target} did not become healthy:\n{}", out.trim()),
            ));
        }
        progress.done();
        host.set_current(&target)?;
        lock.finish(&ok_entry)?;
        rolled_back(args.json, &ok_entry, &target)?;
        return Ok(Exit::Ok);
    }
    let job = release::Job {
        project: project.config.project.name.clone(),
        new: target.clone(),
        prev: current,
        services: Vec::new(),
        wait: Duration::from_secs(args.timeout),
        fail_entry: entry(&project, &target, &hash, "failed", started, None, None),
        ok_entry,
        pre: started.elapsed(),
    };
    let followed = lock.run(
        &job,
        None,
        &mut progress,
        format!("roll back to release {target}"),
    )?;
    if let Some(err) = release::outcome_error(&followed, &session.host(), "rollback") {
        return Err(err);
    }
    let e = followed.entry.unwrap_or(job.ok_entry);
    rolled_back(args.json, &e, &target)?;
    Ok(Exit::Ok)
}

fn rolled_back(json: bool, e: &homebase_proto::ReleaseEntry, target: &str) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "event": "result", "release": e }))?
        );
    } else {
        eprintln!("rolled back to release {target}");
    }
    Ok(())
}

pub fn logs(global: &Global, args: &LogsArgs) -> Result<Exit> {
    let project = project::load(global)?;
    project.require_service(&args.service)?;
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    let since = args
        .since
        .as_ref()
        .map(|s| format!(" --since {}", sh_quote(s)))
        .unwrap_or_default();
    let script = if host.swarm {
        // every task's output, on whichever node it runs, through the manager
        format!(
            "docker service logs --no-task-ids --tail {}{since}{} {}",
            args.tail,
            if args.follow { " --follow" } else { "" },
            sh_quote(&format!("{}_{}", host.project, args.service))
        )
    } else if args.follow {
        // Compose follows every container of the service, new ones too
        format!(
            "{} logs --no-color --tail {}{since} --follow {}",
            host.compose(),
            args.tail,
            sh_quote(&args.service)
        )
    } else {
        // the engine's own logs of each container, prefixed with its name as Compose
        // does: no Compose start (~0.1 s on the host)
        format!(
            "p={p}; s={s}; names=$(docker ps -a --filter \"label=com.docker.compose.project=$p\" --filter \"label=com.docker.compose.service=$s\" --format '{{{{.Names}}}}') || exit 1; \
             [ -n \"$names\" ] || {{ echo \"service $s has no container on this host; deploy it first\" >&2; exit 0; }}; \
             for c in $names; do docker logs --tail {n}{since} \"$c\" 2>&1 | sed \"s/^/$c  | /\"; done",
            p = sh_quote(&host.project),
            s = sh_quote(&args.service),
            n = args.tail,
        )
    };
    // bytes from the host's containers: shown as text, never as terminal escapes
    let ok = crate::ui::run_printable(
        session.command(&script, false),
        &format!("the logs of `{}` on {}", args.service, session.host()),
    )?;
    Ok(if ok { Exit::Ok } else { Exit::Unreachable })
}

/// Restarts one service's containers (swarm: forces an update of its tasks) and waits, on
/// the host, until it is running and healthy: one round trip. Refused while a deploy holds
/// the lock (its health gate would see the restart).
pub fn restart(global: &Global, args: &RestartArgs) -> Result<Exit> {
    let project = project::load(global)?;
    project.require_service(&args.service)?;
    let session = project.open_session()?;
    let host = HostProject::of(&session, &project);
    let started = Instant::now();
    // progress on stderr; with --json, stdout is the report alone
    let mut progress = Progress::new(false);
    progress.step(&format!("restart {}", args.service));
    let restart = if host.swarm {
        format!(
            "err=$(docker service update --force --quiet --detach=false {n} 2>&1 >/dev/null) || {{ echo failed; printf '%s\\n' \"$err\"; exit 0; }}; echo \"restarted {n}\"",
            n = sh_quote(&format!("{}_{}", host.project, args.service))
        )
    } else {
        "ids=$(docker ps -aq --filter \"label=com.docker.compose.project=$p\" --filter \"label=com.docker.compose.service=$s\"); \
         [ -n \"$ids\" ] || { echo none; exit 0; }; \
         err=$(docker restart $ids 2>&1 >/dev/null) || { echo failed; printf '%s\\n' \"$err\"; exit 0; }; \
         echo \"restarted $(docker inspect --format '{{.Name}}' $ids | tr -d / | tr '\\n' ' ')\""
            .to_string()
    };
    let wait = if host.swarm {
        // the update above waited for the tasks to converge
        "echo healthy".to_string()
    } else {
        format!(
            "{HEALTHY_FN}n=0; until healthy \"$s\" >/dev/null; do n=$((n + 1)); [ $n -gt {t} ] && {{ echo unhealthy; exit 0; }}; sleep 1; done; echo healthy",
            HEALTHY_FN = release::HEALTHY_FN,
            t = args.timeout
        )
    };
    let script = format!(
        "d={d}; p={p}; s={s}; if [ -L \"$d/lock\" ]; then echo locked; readlink \"$d/lock\"; exit 0; fi; {restart}; {wait}",
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
    project.require_service(&args.service)?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let words: Vec<String> = args.command.iter().map(|w| sh_quote(w)).collect();
    let manager = project.open_session()?;
    // In swarm mode the command runs on the node Swarm chose, in one of the service's tasks.
    let (session, script) = if project.swarm() {
        let name = &project.config.project.name;
        let node = crate::commands::swarm::placements(&manager, name)?
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
        let session = project
            .node_session(&node)
            .with_context(|| format!("cannot reach node {node}, where `{}` runs", args.service))?;
        let script = format!(
            "{}; docker exec {}\"$c\" {}",
            crate::commands::swarm::locate_task(name, &args.service),
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
