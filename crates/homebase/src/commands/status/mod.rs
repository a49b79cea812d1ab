//! `homebase status`: each service's state, health, uptime, restarts, memory and limit,
//! with the daemon's alerts, events and loops, in one round trip (from the daemon's view
//! when it runs and has seen the current release).

mod swarm;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use homebase_proto::clock::parse_rfc3339;
use homebase_proto::{ServiceSnap, ServiceStatus, Snapshot, StatusReport};
use homebase_remote::sh_quote;
use homebase_stack::Bytes;
use serde_json::Value;

use crate::cli::{Global, StatusArgs};
use crate::exit::Exit;
use crate::host::HostProject;
use crate::project;
use crate::ui::{self, BAD, BOLD, GOOD, WARN, paint};
use homebase_proto::clock::human_duration;
use homebase_proto::clock::now_secs;

pub fn status(global: &Global, args: &StatusArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let session = project.link.open_session()?;
    let host = HostProject::of(&session, &project);
    let planned: Vec<String> = project.compose.services.keys().cloned().collect();
    let mut report = if project.swarm() {
        let (services, nodes) = swarm::status_services(&project, &host, &planned)?;
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
    if let homebase_remote::Target::Ssh(t) = project.link.target()
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
    let script = status_script(host, daemon_dir, &asks, fresh);
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
        services.push(status_from_engine(name, &inspect, &stats, &sampled, now));
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

/// The status command: the daemon's answers to `asks`, and the engine's view unless the
/// daemon's snapshot is of the current release (see [`collect_status`]).
fn status_script(
    host: &HostProject,
    daemon_dir: Option<&str>,
    asks: &[String],
    fresh: bool,
) -> String {
    use crate::daemon_client::on_host;
    // With the daemon's snapshot of the project at its current release (a daemon new
    // enough to keep each container's start and restarts), the host runs no docker command
    // at all; a snapshot from before the last deploy is not used for the services.
    format!(
        "p={p}; c=$(cat {d}/current 2>/dev/null); {ask}case \"{fresh}:$hb_d:$hb_a0\" in \
           0:running*\"\\\"name\\\":\\\"$p\\\",\\\"release\\\":\\\"$c\\\"\"*\"\\\"started_at\\\"\"*) echo daemon; echo '@@HB@@';; \
           *) ids=$(docker ps -aq --filter label=com.docker.compose.project=\"$p\"); \
         if [ -n \"$ids\" ]; then docker inspect $ids; echo '@@HB@@'; \
           case \"{fresh}:$hb_d:$hb_a0\" in 0:running*\"\\\"name\\\":\\\"$p\\\"\"*) ;; *) docker stats --no-stream --format '{{{{json .}}}}' $ids;; esac; \
         else echo '[]'; echo '@@HB@@'; fi;; esac; \
         echo '@@HB@@'; cat {d}/current 2>/dev/null; echo; echo '@@HB@@'; {print} true",
        ask = on_host::ask(daemon_dir, asks),
        print = on_host::print(asks.len()),
        p = sh_quote(&host.project),
        d = host.dir(),
        fresh = u8::from(fresh),
    )
}

/// A service as the engine reports it (`docker inspect`, `docker stats`); its memory the
/// daemon's last sample (`sampled`, by container) when `docker stats` was not run.
fn status_from_engine(
    name: &str,
    inspect: &[Value],
    stats: &[Value],
    sampled: &std::collections::HashMap<String, u64>,
    now: u64,
) -> ServiceStatus {
    let c = inspect
        .iter()
        .find(|c| c["Config"]["Labels"]["com.docker.compose.service"].as_str() == Some(name));
    let Some(c) = c else {
        return ServiceStatus::missing(name);
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
        .and_then(crate::host::mem_used)
        .or_else(|| {
            (state == "running")
                .then(|| sampled.get(&cname).copied())
                .flatten()
        });
    ServiceStatus {
        name: name.to_string(),
        state,
        health,
        uptime_secs,
        restarts: c["RestartCount"].as_u64().unwrap_or(0),
        memory_bytes: memory,
        limit_bytes: limit,
        container: Some(cname),
        nodes: Vec::new(),
    }
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

fn human_status(r: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} (release {})",
        paint(BOLD, &r.project),
        r.host,
        r.release.as_deref().unwrap_or("none")
    );
    services_table(&mut s, &r.services);
    if !r.daemon.is_empty() {
        let _ = writeln!(s, "daemon: {}", r.daemon);
    }
    alerts_and_events(&mut s, r);
    s.push_str(&swarm::status_lines(&r.services, &r.nodes));
    for l in &r.loops {
        let _ = writeln!(s, "loop {}", crate::loop_view::one_line(l));
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

/// One row per service: state, health, uptime, restarts, memory against its limit.
fn services_table(s: &mut String, services: &[ServiceStatus]) {
    let w = services
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
    for x in services {
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
}

/// The daemon's active alerts and its last five events.
fn alerts_and_events(s: &mut String, r: &StatusReport) {
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
}
