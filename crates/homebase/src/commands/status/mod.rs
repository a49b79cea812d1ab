//! `homebase status`: each service's state, health, uptime, restarts, memory and limit,
//! with the daemon's alerts, events and loops, in one round trip (from the daemon's view
//! when it runs and has seen the current release).

mod swarm;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use homebase_proto::{ServiceStatus, StatusReport};
use homebase_stack::Bytes;

use crate::cli::{Global, StatusArgs};
use crate::exit::Exit;
use crate::host::HostProject;
use crate::project::{self, Link};
use crate::ui::{self, BAD, BOLD, GOOD, WARN, paint};
use homebase_proto::clock::human_duration;
use homebase_proto::clock::now_secs;

pub fn status(global: &Global, args: &StatusArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    let session = link.open_session()?;
    let host = HostProject::of(&session, &project);
    let planned: Vec<String> = project.compose.services.keys().cloned().collect();
    let mut report = if project.swarm() {
        let (services, nodes) =
            crate::host::status::swarm::status_services(&project, &link, &host, &planned)?;
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
        crate::host::status::collect(&host, planned, global.daemon_dir.as_deref(), args.fresh)?
    };
    if report.daemon.is_empty() {
        crate::host::status::daemon_view(&host, global.daemon_dir.as_deref(), &mut report);
    }
    if let homebase_remote::Target::Ssh(t) = link.target()
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
