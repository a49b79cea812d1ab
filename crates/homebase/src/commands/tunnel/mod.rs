//! `homebase tunnel`: every published port of the stack on the laptop's loopback, through
//! one SSH connection that comes back by itself; `--check` probes each service through it;
//! `--install` keeps it running in the background; `ssh-config` for plain ssh users.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use homebase_proto::TunnelEvent;
use homebase_remote::Forward;
use homebase_remote::{RemoteError, Session, SshTarget, Target, TunnelMaster};

mod check;

use check::check;

use crate::cli::{Global, SshConfigArgs, TunnelArgs};
use crate::daemon_client;
use crate::exit::{Exit, coded};
use crate::project::{self, Link, Project};
use crate::tunnel::{self, ServiceForward, TunnelState};
use crate::ui::{self, BAD, GOOD, WARN, paint};

/// Round trips above this are flagged: the plan's target for every service.
const SLOW: Duration = Duration::from_millis(100);

/// How often a swarm tunnel looks whether Swarm moved a service to another node.
const FOLLOW: Duration = Duration::from_secs(10);

fn ssh_target(link: &Link) -> Result<SshTarget> {
    match link.target() {
        Target::Ssh(t) => Ok(t),
        Target::Local => Err(coded(
            Exit::BadInput,
            "host.ssh is `local`: the services already listen on this machine, there is nothing to tunnel",
        )),
    }
}

pub fn run(global: &Global, args: &TunnelArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    if args.install {
        return install(&project, &link);
    }
    if args.check {
        return check(&project, &link, args.json);
    }
    foreground(&project, &link, args.json)
}

fn fw(forwards: &[ServiceForward]) -> Vec<Forward> {
    forwards.iter().map(ServiceForward::forward).collect()
}

/// Where the daemon listens, as its endpoint file on the host says (`None`: no daemon).
fn daemon_endpoint(session: &Session) -> Option<String> {
    let out = session
        .run(&format!(
            "cat {} 2>/dev/null",
            homebase_proto::layout::sh_daemon_file(homebase_proto::layout::ENDPOINT)
        ))
        .ok()?;
    let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    daemon_client::endpoint_port(&endpoint)?;
    daemon_client::remember_endpoint(session, &endpoint);
    Some(endpoint)
}

/// The forward to a daemon endpoint (`127.0.0.1:PORT`, as the host wrote it: only its port
/// is taken, the forward always goes to the host's loopback).
fn daemon_forward_at(endpoint: &str) -> Option<ServiceForward> {
    let port = daemon_client::endpoint_port(endpoint)?;
    Some(ServiceForward {
        service: "homebase-daemon".into(),
        local_port: port,
        remote_host: "127.0.0.1".into(),
        remote_port: port,
        remapped_from: None,
        probe: Some(crate::probe::Probe::Http("/".into())),
    })
}

/// The daemon's API, when the daemon runs on the host: read from its endpoint file.
fn daemon_forward(session: &Session) -> Option<ServiceForward> {
    daemon_forward_at(&daemon_endpoint(session)?)
}

/// In swarm mode a port is published on the node that runs the task: forward to that
/// node's address through the manager. A service with no running task stays on the
/// manager's loopback (its probe then says it is not there).
fn place(project: &Project, session: &Session, forwards: &mut [ServiceForward]) -> Result<()> {
    if !project.swarm() {
        return Ok(());
    }
    let at = crate::host::stack::placements(session, &project.config.project.name)?;
    for f in forwards.iter_mut() {
        if let Some(p) = at.get(&f.service) {
            f.remote_host = p.address.clone();
        }
    }
    Ok(())
}

fn wanted(project: &Project, link: &Link) -> Result<Vec<ServiceForward>> {
    let mut f = tunnel::wanted_forwards(project);
    // One short connection: where the daemon listens, and (swarm) where each service runs.
    match link.open_session() {
        Ok(session) => {
            place(project, &session, &mut f)?;
            f.extend(daemon_forward(&session));
        }
        Err(e) if project.swarm() => return Err(e),
        Err(_) => {} // the tunnel itself reports an unreachable host, and retries
    }
    if f.is_empty() {
        return Err(coded(
            Exit::BadInput,
            "the stack publishes no TCP ports, so there is nothing to forward; publish a port (`ports: [\"127.0.0.1:5432:5432\"]`) to reach a service",
        ));
    }
    Ok(f)
}

/// Swarm mode: the forwards again, when Swarm has moved a service to another node since.
/// Asks over one SSH connection kept for the purpose (opened again after a failure), so
/// that looking every few seconds costs the host no new login.
fn moved(
    project: &Project,
    link: &Link,
    looker: &mut Option<Session>,
    forwards: &[ServiceForward],
) -> Option<Vec<ServiceForward>> {
    if looker.is_none() {
        *looker = link.open_session().ok();
    }
    let mut now = forwards.to_vec();
    if place(project, looker.as_ref()?, &mut now).is_err() {
        *looker = None;
        return None;
    }
    let changed = now
        .iter()
        .zip(forwards)
        .any(|(a, b)| a.remote_host != b.remote_host);
    changed.then_some(now)
}

struct Line {
    json: bool,
    terminal: bool,
}

impl Line {
    fn event(&self, event: TunnelEvent, human: &str) {
        if self.json {
            crate::say!("{}", serde_json::to_string(&event).unwrap_or_default());
            let _ = std::io::stdout().flush();
        } else if self.terminal {
            let mut err = anstream::stderr();
            let _ = write!(err, "\r\x1b[2K{human}");
            let _ = err.flush();
        } else {
            crate::esay!("{}", anstream::adapter::strip_str(human));
        }
    }
}

/// With several ways to the host, the one that answers now (so that a tunnel whose way died
/// moves to another); with one way, that one.
fn current_way(link: &Link, now: &SshTarget, line: &Line) -> SshTarget {
    let ways = link.ways();
    if ways.len() < 2 {
        return now.clone();
    }
    // a probe on each way, closed with it: the tunnel's own connection follows
    let probes: Vec<Target> = ways
        .iter()
        .map(|w| match w {
            Target::Ssh(t) => {
                let mut t = t.clone();
                t.persist = Duration::ZERO;
                Target::Ssh(t)
            }
            Target::Local => Target::Local,
        })
        .collect();
    let Ok((_, i)) = homebase_remote::open_first(&probes) else {
        return now.clone();
    };
    let Some(Target::Ssh(way)) = ways.get(i) else {
        return now.clone();
    };
    if way.describe() != now.describe() {
        line.event(
            TunnelEvent::Way {
                via: way.describe(),
            },
            &format!(
                "{}: reaching the host as {}\n",
                paint(WARN, "notice"),
                way.describe()
            ),
        );
    }
    way.clone()
}

/// This project's tunnel lock to `destination`, or the error that one already runs.
fn tunnel_lock(name: &str, destination: &str) -> Result<tunnel::TunnelLock> {
    match tunnel::lock(name, destination)? {
        Ok(lock) => Ok(lock),
        Err(state) => {
            let pid = state
                .map(|s| format!(" (pid {})", s.pid))
                .unwrap_or_default();
            Err(coded(
                Exit::Locked,
                format!(
                    "a tunnel for `{name}` to {destination} is already running{pid}; `homebase tunnel --check` probes it"
                ),
            ))
        }
    }
}

/// Says which wanted local ports were taken and where each service is instead.
fn announce_remapped(line: &Line, forwards: &[ServiceForward]) {
    for f in forwards.iter().filter(|f| f.remapped_from.is_some()) {
        let from = f.remapped_from.unwrap_or_default();
        let msg = format!(
            "local port {from} is taken; `{}` is on 127.0.0.1:{} instead",
            f.service, f.local_port
        );
        line.event(
            TunnelEvent::Remapped {
                service: f.service.clone(),
                from,
                to: f.local_port,
            },
            &format!("{}: {msg}\n", paint(WARN, "notice")),
        );
    }
}

/// Says which services Swarm moved to another node (`now` against `before`).
fn announce_moved(line: &Line, now: &[ServiceForward], before: &[ServiceForward]) {
    for (a, b) in now.iter().zip(before) {
        if a.remote_host != b.remote_host {
            line.event(
                TunnelEvent::Moved {
                    service: a.service.clone(),
                    from: b.remote_host.clone(),
                    to: a.remote_host.clone(),
                },
                &format!(
                    "{}: `{}` moved from {} to {}; reconnecting\n",
                    paint(WARN, "notice"),
                    a.service,
                    b.remote_host,
                    a.remote_host
                ),
            );
        }
    }
}

fn foreground(project: &Project, link: &Link, json: bool) -> Result<Exit> {
    let mut t = ssh_target(link)?;
    let name = &project.config.project.name;
    let lock = tunnel_lock(name, &t.destination)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the ctrl-c handler")?;
    }
    let line = Line {
        json,
        terminal: !json && std::io::stderr().is_terminal(),
    };
    let mut forwards = wanted(project, link)?;
    // swarm mode: the connection that looks where services run
    let mut looker: Option<Session> = None;
    let mut backoff = Duration::from_millis(200);
    let mut reconnects = 0u32;
    while !stop.load(Ordering::Relaxed) {
        tunnel::remap_taken(&mut forwards)?;
        announce_remapped(&line, &forwards);
        t = current_way(link, &t, &line);
        let mut master = TunnelMaster::start(&t, &fw(&forwards))?;
        let up_at = Instant::now();
        if master.wait_ready(&t, &stop) {
            let moved_to = hold(
                project,
                link,
                &t,
                &lock,
                &line,
                &mut master,
                &forwards,
                &stop,
                &mut looker,
                reconnects,
            )?;
            if let Some(now) = moved_to {
                announce_moved(&line, &now, &forwards);
                forwards = now;
                master.unshare(&t);
                master.stop();
                continue;
            }
        }
        master.unshare(&t);
        if stop.load(Ordering::Relaxed) {
            master.stop();
            break;
        }
        master.stop();
        let err = t.explain_exit(&master.stderr());
        if matches!(
            err,
            RemoteError::HostKeyUnknown { .. }
                | RemoteError::HostKeyChanged { .. }
                | RemoteError::AuthFailed { .. }
        ) {
            let _ = std::fs::remove_file(&lock.state_path);
            return Err(err.into());
        }
        if up_at.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        line.event(
            TunnelEvent::Down {
                reason: err.to_string(),
                retry_ms: backoff.as_millis() as u64,
            },
            &format!(
                "{} tunnel down: {err}; retrying in {:.1}s",
                paint(BAD, "○"),
                backoff.as_secs_f64()
            ),
        );
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Quick retries while the host may just be restarting its sshd, slower after.
        let cap = if reconnects < 10 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        backoff = (backoff * 2).min(cap);
        reconnects += 1;
        if project.swarm()
            && let Some(now) = moved(project, link, &mut looker, &forwards)
        {
            forwards = now;
        }
    }
    let _ = std::fs::remove_file(&lock.state_path);
    if !json && line.terminal {
        crate::esay!();
    }
    Ok(Exit::Ok)
}

/// The tunnel is up: its state written, the warm connection shared, then held while its
/// master runs; in swarm mode, `Some` with the forwards as they are now when Swarm moved a
/// service to another node.
#[allow(clippy::too_many_arguments)]
fn hold(
    project: &Project,
    link: &Link,
    t: &SshTarget,
    lock: &tunnel::TunnelLock,
    line: &Line,
    master: &mut TunnelMaster,
    forwards: &[ServiceForward],
    stop: &AtomicBool,
    looker: &mut Option<Session>,
    reconnects: u32,
) -> Result<Option<Vec<ServiceForward>>> {
    // every other command of this host rides on the tunnel's connection
    master.share(t);
    let state = TunnelState {
        pid: std::process::id(),
        host: t.destination.clone(),
        forwards: forwards.to_vec(),
    };
    std::fs::write(&lock.state_path, serde_json::to_vec(&state)?)
        .with_context(|| format!("cannot write `{}`", lock.state_path.display()))?;
    let list: Vec<String> = forwards
        .iter()
        .map(|f| format!("{} {}", f.service, f.local_port))
        .collect();
    line.event(
        TunnelEvent::Up {
            ssh_pid: master.pid(),
            reconnects,
            forwards: forwards.iter().map(ServiceForward::shown).collect(),
        },
        &format!(
            "{} tunnel to {} up: {} · reconnects {reconnects}",
            paint(GOOD, "●"),
            t.destination,
            list.join(", ")
        ),
    );
    let mut looked = Instant::now();
    let mut moved_to = None;
    while !stop.load(Ordering::Relaxed) && master.running() {
        std::thread::sleep(Duration::from_millis(100));
        // Swarm may move a service to another node: follow it.
        if project.swarm() && looked.elapsed() >= FOLLOW {
            looked = Instant::now();
            moved_to = moved(project, link, looker, forwards);
            if moved_to.is_some() {
                break;
            }
        }
    }
    Ok(moved_to)
}

fn install(project: &Project, link: &Link) -> Result<Exit> {
    let t = ssh_target(link)?;
    let name = &project.config.project.name;
    let exe = std::env::current_exe().context("cannot find the homebase executable")?;
    let args = vec![
        exe.display().to_string(),
        "-C".into(),
        project.root.display().to_string(),
        "tunnel".into(),
    ];
    fn service<'a>(
        label: &'a str,
        args: &'a [String],
        log: &'a str,
    ) -> crate::host::service_files::Service<'a> {
        crate::host::service_files::Service {
            description: label,
            label,
            args,
            after: "network-online.target",
            log,
        }
    }
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .context("HOME is not set")?;
    if cfg!(target_os = "macos") {
        let dir = home.join("Library/LaunchAgents");
        let path = dir.join(format!("{}.plist", tunnel::launchd_label(name)));
        let log = tunnel::state_dir().join(format!("tunnel-{name}.log"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::write(
            &path,
            crate::host::service_files::launchd_plist(&service(
                &tunnel::launchd_label(name),
                &args,
                &log.display().to_string(),
            ))?,
        )
        .with_context(|| format!("cannot write `{}`", path.display()))?;
        crate::esay!(
            "wrote {}\nstart it now and at every login with:\n  launchctl load -w {}",
            path.display(),
            path.display()
        );
    } else {
        let dir = home.join(".config/systemd/user");
        let unit = format!("homebase-tunnel-{name}.service");
        let path = dir.join(&unit);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::write(
            &path,
            crate::host::service_files::systemd_unit(&service(
                &format!("homebase tunnel for {name}"),
                &args,
                "",
            )),
        )
        .with_context(|| format!("cannot write `{}`", path.display()))?;
        crate::esay!(
            "wrote {}\nstart it now and at every login with:\n  systemctl --user daemon-reload && systemctl --user enable --now {unit}",
            path.display()
        );
    }
    crate::esay!(
        "it forwards the stack's ports from {} to this machine's 127.0.0.1",
        t.destination
    );
    Ok(Exit::Ok)
}

pub fn ssh_config(global: &Global, args: &SshConfigArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    let t = ssh_target(&link)?;
    let forwards: Vec<_> = wanted(&project, &link)?
        .iter()
        .map(ServiceForward::forward)
        .collect();
    let alias = args
        .alias
        .clone()
        .unwrap_or_else(|| format!("homebase-{}", project.config.project.name));
    ui::out(&format!(
        "# homebase: the `{}` stack's ports; use with `ssh -N {alias}`\n{}",
        project.config.project.name,
        t.ssh_config_block(&alias, &forwards)
    ))?;
    Ok(Exit::Ok)
}
