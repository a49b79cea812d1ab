//! `homebase preflight`: run at home before leaving, it answers "will this keep working while
//! I am away?". Setup's own checks (what a power cut needs counts as a failure here), then
//! the way in from away tried for real on each way but the first, the relay's tunnel, the
//! daemon, the last backup (recent, and its checksums verified on the host), a test
//! message through every alert sink, the disk for the coming weeks' backups, and the loops'
//! spending limits. Exits non-zero when something would fail away from home.

use std::time::{Duration, Instant};

use anyhow::Result;
use homebase_remote::{Session, Target};

use super::Item;
use crate::cli::{Global, PreflightArgs};
use crate::daemon_client::DaemonClient;
use crate::exit::Exit;
use crate::host::preflight::Reads;
use crate::project::{self, Link, Project};

/// What setup only warns about but would fail away from home: after a power cut nobody is
/// there to log in, start Colima or wake the Mac.
const FAIL_AWAY: &[&str] = &[
    "power failure",
    "automatic login",
    "colima at login",
    "sleep",
    "boot without login",
    "service manager",
];

pub fn run(global: &Global, args: &PreflightArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    let check = crate::host::setup::Options {
        check: true,
        binary: None,
    };
    let (mut items, blocked) = crate::host::setup::checklist(&project, &link, &check)?;
    for i in items.iter_mut() {
        if FAIL_AWAY.contains(&i.name.as_str()) && i.state == "warning" {
            i.state = "missing".into();
        }
    }
    if !blocked && !project.swarm() {
        let session = link.open_session()?;
        ways(&mut items, &link);
        let daemon = DaemonClient::connect(&session, None).ok();
        let kept = crate::host::backup::manifests(&session, &project)?;
        let reads = crate::host::preflight::read(&session, &project, kept.last())?;
        backups(&mut items, &project, &kept, &reads);
        disk(&mut items, &kept, &reads, args.days);
        match &daemon {
            Some(d) => {
                alerts(&mut items, d);
                loops(&mut items, d, &project);
            }
            None => items.push(Item::new(
                "alerts",
                "missing",
                "the daemon does not answer, so no alert would go out",
                Some("homebase setup".into()),
            )),
        }
    }
    super::finish(&items, args.json, blocked)
}

/// Each way but the first (the LAN, at home) tried for real with a connection of its own:
/// the way that will be used from away.
fn ways(items: &mut Vec<Item>, link: &Link) {
    let ways = link.ways();
    if ways.len() < 2 {
        let first = ways.first().map(|w| w.to_string()).unwrap_or_default();
        let private = is_private(ways.first());
        items.push(Item::new(
            "away path",
            if private { "missing" } else { "warning" },
            if private {
                format!("the only way to the host is `{first}`, a home network address: it will not answer from away")
            } else {
                format!("the only way to the host is `{first}`; homebase cannot tell from here whether it answers from away")
            },
            Some("add a relay ([host.relay] ssh = \"me@relay.example.com\") or a tailnet name (host.also = [\"me@mini.tailnet.ts.net\"]), then homebase setup".into()),
        ));
        return;
    }
    // the relay's way is proven by setup's own `away path` item
    for way in &ways[1..] {
        let Target::Ssh(t) = way else { continue };
        if t.via.is_some() {
            continue;
        }
        let mut probe = t.clone();
        probe.persist = Duration::ZERO;
        let started = Instant::now();
        let name = format!("away: {}", t.destination);
        match Session::open(&Target::Ssh(probe)).and_then(|s| s.check("true")) {
            Ok(_) => items.push(Item::new(
                &name,
                "ok",
                format!(
                    "the host answers as {} ({} ms to connect)",
                    t.destination,
                    started.elapsed().as_millis()
                ),
                None,
            )),
            Err(e) => items.push(Item::new(
                &name,
                "missing",
                format!("the host does not answer this way: {e}"),
                Some("check that this name reaches the host from outside the home network (a tailnet name: is Tailscale up on both ends?)".into()),
            )),
        }
    }
}

/// Whether a target's host is a home network address (RFC 1918, `.local`, `.lan`, `.home`).
fn is_private(t: Option<&Target>) -> bool {
    let Some(Target::Ssh(t)) = t else {
        return false;
    };
    let host = t.hostname.clone().unwrap_or_else(|| {
        t.resolve()
            .map(|r| r.hostname)
            .unwrap_or_else(|| t.host_name().to_string())
    });
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return ip.is_private() || ip.is_link_local();
    }
    [".local", ".lan", ".home", ".internal"]
        .iter()
        .any(|s| host.ends_with(s))
}

/// The last backup: taken within the schedule, and every file's checksum as its manifest
/// says (read on the host now).
fn backups(
    items: &mut Vec<Item>,
    project: &Project,
    all: &[homebase_proto::BackupManifest],
    reads: &Reads,
) {
    if project.config.backup.schedule == "off" {
        items.push(Item::new(
            "backup",
            "warning",
            "backups are off (backup.schedule = \"off\"): nothing is kept while you are away",
            Some("set [backup] schedule = \"daily\" and deploy".into()),
        ));
        return;
    }
    let Some(last) = all.last() else {
        items.push(Item::new(
            "backup",
            "missing",
            "there is no backup on the host yet",
            Some("homebase backup now".into()),
        ));
        return;
    };
    let age = homebase_proto::clock::now_secs().saturating_sub(last.time);
    let damaged = reads.damaged.as_deref().unwrap_or_default();
    let hours = age / 3600;
    if !damaged.is_empty() {
        items.push(Item::new(
            "backup",
            "missing",
            format!(
                "the last backup {} does not match its checksums: {}",
                last.id,
                damaged.join(", ")
            ),
            Some("homebase backup now, then homebase preflight again".into()),
        ));
    } else if age > 26 * 3600 {
        items.push(Item::new(
            "backup",
            "missing",
            format!("the last backup {} is {hours} h old (the schedule is daily)", last.id),
            Some("homebase backup now; if the daily one did not run, see `homebase status` and the daemon's events".into()),
        ));
    } else {
        items.push(Item::new(
            "backup",
            "ok",
            format!(
                "{} ({hours} h old, {} files, checksums verified on the host)",
                last.id,
                last.files.len()
            ),
            None,
        ));
    }
}

/// Free space where the backups go, against what `days` more of them take at the rate of
/// the last ones (and one rebuild of the images).
fn disk(items: &mut Vec<Item>, all: &[homebase_proto::BackupManifest], reads: &Reads, days: u32) {
    let per_day: u64 = all
        .iter()
        .rev()
        .take(7)
        .map(|m| m.files.iter().map(|f| f.bytes).sum::<u64>())
        .max()
        .unwrap_or(0);
    let (free, images) = (reads.free, reads.images);
    let need = per_day * u64::from(days) + images;
    let Some(free) = free else {
        items.push(Item::new(
            "disk",
            "warning",
            "cannot read the free space of the host's home",
            None,
        ));
        return;
    };
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    if free < need {
        items.push(Item::new(
            "disk",
            "missing",
            format!(
                "{} free in the host's home; {days} days of backups at the recent size and a rebuild of the images need about {}",
                gib(free),
                gib(need)
            ),
            Some("free space on the host (docker image prune, fewer kept backups: [backup] keep_daily)".into()),
        ));
    } else {
        items.push(Item::new(
            "disk",
            "ok",
            format!(
                "{} free; {days} days of backups and a rebuild need about {}",
                gib(free),
                gib(need)
            ),
            None,
        ));
    }
}

/// A test message through every sink, and what each answered.
fn alerts(items: &mut Vec<Item>, daemon: &DaemonClient) {
    let answer = daemon
        .post("/api/alerts/test")
        .ok()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str::<Vec<homebase_proto::AlertTest>>(&body).ok());
    let Some(tests) = answer else {
        items.push(Item::new(
            "alerts",
            "missing",
            "the daemon did not send the test message (an older daemon?)",
            Some("homebase setup (installs this version's daemon)".into()),
        ));
        return;
    };
    let sinks: Vec<String> = tests.iter().flat_map(|t| t.sinks.clone()).collect();
    let failed: Vec<String> = tests.iter().flat_map(|t| t.failed.clone()).collect();
    if sinks.is_empty() {
        items.push(Item::new(
            "alerts",
            "missing",
            "no alert sink is configured: nothing would reach you while you are away",
            Some("add [alerts] ntfy = \"https://ntfy.sh/your-topic\" (or webhook, slack, discord) and deploy".into()),
        ));
    } else if !failed.is_empty() {
        items.push(Item::new(
            "alerts",
            "missing",
            format!("the test message did not go through: {}", failed.join("; ")),
            Some("check the sink's URL in [alerts] and that the host reaches it".into()),
        ));
    } else {
        items.push(Item::new(
            "alerts",
            "ok",
            format!(
                "a test message went to {} (check that it arrived)",
                sinks.join(", ")
            ),
            None,
        ));
    }
}

/// The loops: one held by a usage or spending limit now, or with no spending cap at all.
fn loops(items: &mut Vec<Item>, daemon: &DaemonClient, project: &Project) {
    let Ok(all) = daemon.get::<Vec<homebase_proto::LoopStatus>>("/api/loops") else {
        return;
    };
    let spend = &project.config.spend;
    for l in all
        .iter()
        .filter(|l| l.project == project.config.project.name)
    {
        let name = format!("loop {}", l.name);
        let cfg = project.config.loops.get(&l.name);
        let capped = cfg.is_some_and(|c| !c.caps().is_empty()) || !spend.caps().is_empty();
        if let Some(w) = l
            .waiting
            .as_deref()
            .filter(|w| w.contains("limit") || w.contains("cap"))
        {
            let until = l
                .wait_until
                .map(|t| format!(" until {}", homebase_proto::clock::rfc3339(t)))
                .unwrap_or_default();
            items.push(Item::new(
                &name,
                "warning",
                format!("held by its {w}{until}: {}", l.reason),
                Some(format!(
                    "homebase loop resume {} after raising the cap, or let it resume by itself",
                    l.name
                )),
            ));
        } else if !capped && cfg.is_some_and(|c| c.reads_result()) {
            items.push(Item::new(
                &name,
                "warning",
                "no spending cap: it runs unbounded while you are away",
                Some(format!(
                    "set max_cost_per_day under [loops.{}] (or [spend] for the project)",
                    l.name
                )),
            ));
        } else {
            items.push(Item::new(
                &name,
                "ok",
                format!("{}: {}", l.state, l.reason),
                None,
            ));
        }
    }
}
