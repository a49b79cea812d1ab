//! A project's status on one host, read in one round trip: the daemon's snapshot of the
//! current release when it has one, else the engine's view (`docker inspect`, `docker
//! stats`); the daemon's alerts, events and loops beside it.

use anyhow::{Context, Result};
use homebase_proto::clock::{now_secs, parse_rfc3339};
use homebase_proto::{ServiceSnap, ServiceStatus, Snapshot, StatusReport};
use homebase_remote::sh_quote;
use serde_json::Value;

use crate::HostProject;

pub mod swarm;

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
    let state = homebase_proto::text::printable(&s.state);
    let running = state == "running";
    ServiceStatus {
        name: name.to_string(),
        health: homebase_proto::text::printable(&s.health),
        uptime_secs: running
            .then(|| parse_rfc3339(&s.started_at))
            .flatten()
            .map(|t| now.saturating_sub(t)),
        restarts: s.restarts,
        memory_bytes: running.then_some(s.memory_bytes),
        limit_bytes: Some(s.limit_bytes)
            .filter(|m| *m > 0 && (host_memory == 0 || *m < host_memory)),
        container: Some(homebase_proto::text::printable(&s.container)).filter(|c| !c.is_empty()),
        nodes: Vec::new(),
        state,
    }
}

/// Per service state, health, uptime, restarts, memory and limit, and the daemon's alerts,
/// events and loops, in one round trip. Memory is the daemon's last sample (at most its
/// interval old) when it runs, else (or with `fresh`) a `docker stats` sample (~2 s). Leaves
/// `daemon` empty when the daemon must be asked through a forward (no curl on the host).
pub fn collect(
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
    let inspect = if from_daemon {
        Vec::new()
    } else {
        read_inspect(first, host)?
    };
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
    // the daemon's answers that did not read as what it sends: named in the report
    let mut unread = Vec::new();
    if let on_host::Answer::Running { bodies, .. } = &answer
        && let Some(snap) = read_body::<Snapshot>(&bodies[0], &asks[0], &mut unread)
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
    let services: Vec<ServiceStatus> = planned
        .iter()
        .map(|name| match from_daemon {
            true => status_from_snapshot(name, daemon_services.get(name), now, host_memory),
            false => status_from_engine(name, &inspect, &stats, &sampled, now),
        })
        .collect();
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
            report.daemon = running_line(&endpoint, sample_age, from_daemon, fresh);
            let events = read_body(&bodies[1], &asks[1], &mut unread).unwrap_or_default();
            let loops = read_body(&bodies[2], &asks[2], &mut unread).unwrap_or_default();
            if !unread.is_empty() {
                report.daemon += &format!(
                    "; its answer to {} did not read, left out",
                    unread.join(", ")
                );
            }
            daemon_fill(&mut report, snapshot, events, loops);
        }
        on_host::Answer::NotAnswering { endpoint } => {
            report.daemon = format!(
                "not answering at {}; showing the engine's view",
                homebase_proto::text::printable(&endpoint)
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
/// daemon's snapshot is of the current release (see [`collect`]).
/// How a running daemon is shown: where, and how old the view taken from it is.
fn running_line(endpoint: &str, sample_age: Option<i64>, from_daemon: bool, fresh: bool) -> String {
    // (read from a file of the host's: shown as text)
    let endpoint = homebase_proto::text::printable(endpoint);
    match sample_age {
        Some(age) if from_daemon => format!("running at {endpoint} (its view of {age} s ago)"),
        Some(age) if !fresh => format!("running at {endpoint} (memory sampled {age} s ago)"),
        _ => format!("running at {endpoint}"),
    }
}

/// The containers as `docker inspect` describes them: an answer that does not read is
/// said, not shown as a stack with no containers.
fn read_inspect(answer: &str, host: &HostProject) -> Result<Vec<Value>> {
    serde_json::from_str(answer).with_context(|| {
        format!(
            "the containers' state from {} (`docker inspect`) does not read as JSON",
            host.session.host()
        )
    })
}

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
        .and_then(crate::mem_used)
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
/// One of the daemon's answers read as `T`; one that does not read (an older or newer
/// daemon, a cut answer) is named in `unread`, never taken silently for an empty one.
fn read_body<T: serde::de::DeserializeOwned>(
    body: &str,
    ask: &str,
    unread: &mut Vec<String>,
) -> Option<T> {
    match serde_json::from_str(body) {
        Ok(t) => Some(t),
        Err(e) => {
            unread.push(format!("{} ({e})", ask.split('?').next().unwrap_or(ask)));
            None
        }
    }
}

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
pub fn daemon_view(host: &HostProject, dir: Option<&str>, report: &mut StatusReport) {
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
