//! `homebase tunnel --check`: every service probed through the running tunnel, or through
//! forwards on the warm connection for the time of the check.

use std::time::Duration;

use anyhow::Result;
use homebase_proto::{TunnelCheck, TunnelCheckService};
use homebase_remote::Session;

use super::{SLOW, daemon_endpoint, daemon_forward_at, place, ssh_target};
use crate::daemon_client;
use crate::exit::{Exit, coded};
use crate::probe::probe;
use crate::project::{Link, Project};
use crate::tunnel::{self, ServiceForward};
use crate::ui::{self, BAD, BOLD, GOOD, WARN, paint};

/// Probes every forward at once: the check takes one probe's time, not their sum.
fn probe_all(wanted: &[ServiceForward]) -> Vec<crate::probe::ProbeResult> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .iter()
            .map(|f| {
                scope.spawn(move || {
                    let p = f.probe.clone().unwrap_or(crate::probe::Probe::Tcp);
                    probe(f.local_port, &p, 5)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or(crate::probe::ProbeResult {
                    ok: false,
                    rtt: Duration::ZERO,
                    detail: "the probe failed".into(),
                })
            })
            .collect()
    })
}

/// The check on the warm connection: forwards for the time of the check, probed while the
/// host is asked where its daemon listens now. The daemon is probed where the connection
/// last saw it, with the others; only when it has moved (or was never seen) is it probed
/// again where it is now: two round trips in all, four the first time.
fn check_on_session(
    s: &Session,
    mut wanted: Vec<ServiceForward>,
) -> Result<(Vec<ServiceForward>, Vec<crate::probe::ProbeResult>)> {
    let remembered = s
        .note(daemon_client::DAEMON_NOTE)
        .and_then(|e| daemon_forward_at(&e));
    wanted.extend(remembered.clone());
    for w in wanted.iter_mut() {
        w.local_port = s.forward_local(&w.remote_host, w.remote_port)?;
    }
    let (mut results, now_at) = std::thread::scope(|scope| {
        let asked = scope.spawn(|| daemon_endpoint(s).and_then(|e| daemon_forward_at(&e)));
        let results = probe_all(&wanted);
        (results, asked.join().ok().flatten())
    });
    let cancel = |w: &ServiceForward| s.cancel_forward(w.local_port, &w.remote_host, w.remote_port);
    let same =
        matches!((&now_at, &remembered), (Some(n), Some(r)) if n.remote_port == r.remote_port);
    if !same {
        // the remembered endpoint is stale (or there was none): its row goes
        if remembered.is_some()
            && let Some(w) = wanted.pop()
        {
            results.pop();
            cancel(&w);
        }
        if let Some(mut f) = now_at {
            f.local_port = s.forward_local(&f.remote_host, f.remote_port)?;
            results.extend(probe_all(std::slice::from_ref(&f)));
            wanted.push(f);
        }
    }
    for w in &wanted {
        cancel(w);
    }
    Ok((wanted, results))
}

pub(super) fn check(project: &Project, link: &Link, json: bool) -> Result<Exit> {
    let t = ssh_target(link)?;
    let running = tunnel::running(&project.config.project.name, &t.destination);
    let mut session = None;
    let (mode, wanted) = match &running {
        Some(state) => {
            // the running tunnel knows where each forward is: nothing to ask the host
            let mut wanted = tunnel::wanted_forwards(project);
            for w in wanted.iter_mut() {
                if let Some(s) = state.forwards.iter().find(|s| s.service == w.service) {
                    w.local_port = s.local_port;
                    w.remote_host = s.remote_host.clone();
                }
            }
            wanted.extend(
                state
                    .forwards
                    .iter()
                    .filter(|s| s.service == "homebase-daemon")
                    .map(|s| ServiceForward {
                        probe: Some(crate::probe::Probe::Http("/".into())),
                        ..s.clone()
                    }),
            );
            (format!("running tunnel (pid {})", state.pid), wanted)
        }
        None => {
            // forwards on the warm connection for the time of the check
            let s = link.open_session()?;
            let mut wanted = tunnel::wanted_forwards(project);
            place(project, &s, &mut wanted)?;
            session = Some(s);
            (
                "the warm connection (no tunnel is running)".to_string(),
                wanted,
            )
        }
    };
    let (wanted, results) = match &session {
        None => {
            let results = probe_all(&wanted);
            (wanted, results)
        }
        Some(s) => check_on_session(s, wanted)?,
    };
    if wanted.is_empty() {
        return Err(coded(
            Exit::BadInput,
            "the stack publishes no TCP ports, so there is nothing to probe; publish a port (`ports: [\"127.0.0.1:5432:5432\"]`) to reach a service",
        ));
    }
    let services: Vec<TunnelCheckService> = wanted
        .iter()
        .zip(results)
        .map(|(f, r)| TunnelCheckService {
            service: f.service.clone(),
            local_port: f.local_port,
            remote_host: f.remote_host.clone(),
            remote_port: f.remote_port,
            probe: f
                .probe
                .clone()
                .unwrap_or(crate::probe::Probe::Tcp)
                .name()
                .to_string(),
            ok: r.ok,
            rtt_ms: r.rtt.as_secs_f64() * 1000.0,
            slow: r.rtt > SLOW,
            detail: r.detail,
        })
        .collect();
    let report = TunnelCheck {
        host: t.destination.clone(),
        via: mode,
        ok: services.iter().all(|s| s.ok),
        services,
    };
    if json {
        ui::out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        ui::out(&check_table(&report))?;
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Refused })
}

/// `tunnel --check` for a person: one line per service, slow and failed answers coloured.
fn check_table(report: &TunnelCheck) -> String {
    let mut s = format!(
        "{} to {} via {}\n",
        paint(BOLD, "tunnel check"),
        report.host,
        report.via
    );
    s.push_str(&paint(
        BOLD,
        format!(
            "{:<16} {:>6} {:>21}  {:<16} {:>9}  {}\n",
            "SERVICE", "LOCAL", "REMOTE", "PROBE", "RTT", "ANSWER"
        ),
    ));
    for r in &report.services {
        let rtt = format!("{:>7.1}ms", r.rtt_ms);
        let rtt = if !r.ok {
            paint(BAD, rtt)
        } else if r.slow {
            paint(WARN, format!("{rtt} (over 100 ms)"))
        } else {
            paint(GOOD, rtt)
        };
        s.push_str(&format!(
            "{:<16} {:>6} {:>21}  {:<16} {rtt}  {}\n",
            r.service,
            r.local_port,
            // where the host forwards it: its loopback, or (swarm) another node
            if r.remote_host == "127.0.0.1" {
                r.remote_port.to_string()
            } else {
                format!("{}:{}", r.remote_host, r.remote_port)
            },
            r.probe,
            r.detail
        ));
    }
    s
}
