//! `homebase setup [--check]`: makes a bare host ready, idempotently, over SSH: checks the OS,
//! the Docker engine and Compose (with the install hint for that OS), on macOS Colima's memory
//! and sleep, creates homebase's directories, installs this very binary when the host's OS and
//! architecture match, installs the daemon as a service that starts at boot (systemd user unit
//! on Linux, launchd agent on macOS), and verifies the daemon answers. Running it again
//! changes nothing and says so.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use homebase_remote::Session;
use homebase_stack::Bytes;
use homebase_stack::config::HostMemory;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::{Global, SetupArgs};
use crate::exit::Exit;
use crate::project;
use crate::ui::{self, BAD, GOOD, WARN, paint};

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: String,
    /// `ok`, `changed`, `missing`, `warning`.
    pub state: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

pub fn item(name: &str, state: &str, detail: impl Into<String>, fix: Option<String>) -> Item {
    Item {
        name: name.into(),
        state: state.into(),
        detail: detail.into(),
        fix,
    }
}

/// The host's facts, read in one round trip.
struct Facts {
    os: String,
    arch: String,
    docker: Option<String>,
    compose: Option<String>,
    mem_total: Option<u64>,
    colima_memory_gib: Option<f64>,
    sleep: Option<String>,
    /// `brew services` state of Colima (`started` when it starts at login).
    colima_login: Option<String>,
    systemctl: bool,
    binary_sha: Option<String>,
    home: String,
}

fn facts(session: &Session) -> Result<Facts> {
    let script = r#"
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "home=$HOME"
echo "docker=$(docker version --format '{{.Server.Version}}' 2>/dev/null)"
echo "compose=$(docker compose version --short 2>/dev/null)"
echo "mem=$(docker info --format '{{.MemTotal}}' 2>/dev/null)"
if command -v colima >/dev/null 2>&1; then echo "colima=$(colima list -j 2>/dev/null | sed -n 's/.*"memory":\([0-9]*\).*/\1/p' | head -1)"; fi
if command -v pmset >/dev/null 2>&1; then echo "sleep=$(pmset -g | awk '$1 == "sleep" {print $2}')"; fi
if command -v brew >/dev/null 2>&1; then echo "colima_login=$(brew services list 2>/dev/null | awk '$1 == "colima" {print $2}')"; fi
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then echo "systemctl=yes"; fi
b="$HOME/.homebase/bin/homebase"; if [ -f "$b" ]; then echo "binary=$( (sha256sum "$b" 2>/dev/null || shasum -a 256 "$b") | cut -d' ' -f1)"; fi
"#;
    let out = session.check(script)?;
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Ok(Facts {
        os: get("os").unwrap_or_default(),
        arch: get("arch").unwrap_or_default(),
        docker: get("docker"),
        compose: get("compose"),
        mem_total: get("mem").and_then(|m| m.parse().ok()),
        colima_memory_gib: get("colima").and_then(|m| m.parse::<f64>().ok()).map(|b| {
            if b > 1024.0 {
                b / (1u64 << 30) as f64
            } else {
                b
            }
        }),
        sleep: get("sleep"),
        colima_login: get("colima_login"),
        systemctl: get("systemctl").is_some(),
        binary_sha: get("binary"),
        home: get("home").unwrap_or_else(|| "~".into()),
    })
}

fn version_at_least(v: &str, min: (u32, u32)) -> bool {
    let mut it = v
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= min
}

/// The host's OS and architecture match this binary's, so it can run there as is.
fn same_platform(f: &Facts) -> bool {
    let os = match std::env::consts::OS {
        "macos" => "Darwin",
        "linux" => "Linux",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "aarch64" if os == "Darwin" => "arm64",
        other => other,
    };
    f.os == os && (f.arch == arch || (f.arch == "aarch64" && arch == "arm64"))
}

fn daemon_service<'a>(args: &'a [String], log: &'a str) -> crate::service_files::Service<'a> {
    crate::service_files::Service {
        description: "homebase daemon: stats, self-healing, memory governor, alerts, dashboard",
        label: "dev.homebase.daemon",
        args,
        after: "docker.service network-online.target",
        log,
    }
}

/// What the host's facts say about Docker, Compose, memory and (on a Mac) Colima and sleep;
/// the flag is true when setup cannot go on.
fn check_host(f: &Facts, host_memory: HostMemory, host: &str) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let mut blocking = false;
    let mac = f.os == "Darwin";

    items.push(item(
        "host",
        "ok",
        format!("{} {} reached at {}", f.os, f.arch, host),
        None,
    ));
    let docker_hint = if mac {
        "brew install colima docker docker-compose && colima start --cpu 4 --memory 14 --disk 100"
            .to_string()
    } else {
        "install Docker Engine (Debian/Ubuntu: sudo apt-get install docker.io) and add your user to the docker group".to_string()
    };
    match &f.docker {
        Some(v) if version_at_least(v, (20, 10)) => {
            items.push(item("docker engine", "ok", format!("version {v}"), None))
        }
        Some(v) => {
            blocking = true;
            items.push(item(
                "docker engine",
                "missing",
                format!("version {v} is too old (20.10 or newer)"),
                Some(docker_hint.clone()),
            ));
        }
        None => {
            blocking = true;
            items.push(item(
                "docker engine",
                "missing",
                "`docker version` cannot reach an engine",
                Some(docker_hint.clone()),
            ));
        }
    }
    match &f.compose {
        Some(v) if version_at_least(v, (2, 17)) => {
            items.push(item("docker compose", "ok", format!("version {v}"), None))
        }
        other => {
            blocking = true;
            let fix = if mac {
                "brew install docker-compose".to_string()
            } else {
                "install the Compose v2 plugin (Debian: sudo apt-get install docker-compose-plugin, or docker-compose from trixie)".to_string()
            };
            let detail = match other {
                Some(v) => format!("version {v} is too old (2.17 or newer)"),
                None => "the Compose v2 plugin is missing (`docker compose version` fails)".into(),
            };
            items.push(item("docker compose", "missing", detail, Some(fix)));
        }
    }
    // Memory: the engine (Colima's VM on a Mac) must hold the budgeted host memory.
    if let (HostMemory::Size(want), Some(have)) = (host_memory, f.mem_total) {
        let short = have + (256 << 20) < want.0;
        let fix = short.then(|| {
            if mac {
                format!(
                    "colima stop && colima start --memory {}",
                    want.0.div_ceil(1 << 30)
                )
            } else {
                format!(
                    "budget.host_memory = \"{}\" in homebase.toml, or give the host more memory",
                    Bytes(have).to_compose()
                )
            }
        });
        items.push(item(
            "engine memory",
            if short { "warning" } else { "ok" },
            format!(
                "the engine has {}, the budget assumes {}",
                Bytes(have),
                want
            ),
            fix,
        ));
    }
    if let Some(gib) = f.colima_memory_gib {
        items.push(item("colima", "ok", format!("VM with {gib:.0} GiB"), None));
        let at_login = f.colima_login.as_deref() == Some("started");
        items.push(item(
            "colima at login",
            if at_login { "ok" } else { "warning" },
            if at_login {
                "brew services starts Colima at login"
            } else {
                "Colima does not start at login, so Docker is gone after a reboot"
            },
            (!at_login).then(|| "brew services start colima".to_string()),
        ));
    }
    if mac {
        match f.sleep.as_deref() {
            Some("0") => items.push(item("sleep", "ok", "system sleep is off", None)),
            other => items.push(item(
                "sleep",
                "warning",
                format!(
                    "system sleep after {} minutes stops the agents",
                    other.unwrap_or("?")
                ),
                Some("sudo pmset -a sleep 0 disksleep 0".into()),
            )),
        }
    }
    (items, blocking)
}

/// A host's checklist, and whether something on it blocks the rest.
type Checklist = (Vec<Item>, bool);

/// This homebase executable, read and hashed once per run: what `setup` installs.
struct Binary {
    bytes: Vec<u8>,
    sha256: String,
}

impl Binary {
    fn current() -> Result<Binary> {
        let exe = std::env::current_exe().context("cannot find this homebase executable")?;
        let bytes =
            std::fs::read(&exe).with_context(|| format!("cannot read `{}`", exe.display()))?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Binary { bytes, sha256 })
    }
}

pub fn run(global: &Global, args: &SetupArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let binary = Binary::current()?;
    if !project.swarm() {
        let session = project.open_session()?;
        let (items, blocked) = host(&session, project.config.budget.host_memory, args, &binary)?;
        return finish(&items, args.json, blocked);
    }
    // Swarm: every node as a host (in parallel, one SSH connection each), then the cluster.
    let mut items = Vec::new();
    let mut blocked = false;
    let results = crate::commands::swarm::per_node(
        &project,
        |_| true,
        |name, n| {
            let session = Session::open(&project.node_target(n))
                .with_context(|| format!("cannot reach node {name}"))?;
            host(&session, n.memory, args, &binary)
        },
    );
    for (name, result) in results {
        let (node_items, node_blocked) = result?;
        blocked |= node_blocked;
        items.extend(node_items.into_iter().map(|mut i| {
            i.name = format!("{name}: {}", i.name);
            i
        }));
    }
    if !blocked {
        items.extend(crate::commands::swarm::form(&project, args.check)?);
    }
    finish(&items, args.json, blocked)
}

/// One host made ready: returns its checklist and whether something blocks the rest.
fn host(
    session: &Session,
    memory: HostMemory,
    args: &SetupArgs,
    binary: &Binary,
) -> Result<Checklist> {
    let f = facts(session)?;
    let mac = f.os == "Darwin";
    let (mut items, blocking) = check_host(&f, memory, &session.host());
    if blocking {
        return Ok((items, true));
    }

    let bin = format!("{}/.homebase/bin/homebase", f.home);
    // The binary.
    let (ours, sha) = (&binary.bytes, &binary.sha256);
    if !same_platform(&f) {
        items.push(item(
            "homebase binary",
            if f.binary_sha.is_some() {
                "ok"
            } else {
                "missing"
            },
            format!(
                "the host is {} {}, this binary is for {} {}",
                f.os,
                f.arch,
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
            f.binary_sha.is_none().then(|| {
                format!(
                    "build homebase for the host (cargo build --release there) and copy it to {bin}"
                )
            }),
        ));
    } else if f.binary_sha.as_deref() == Some(sha.as_str()) {
        items.push(item(
            "homebase binary",
            "ok",
            format!("{bin} is this version"),
            None,
        ));
    } else if args.check {
        items.push(item(
            "homebase binary",
            "missing",
            format!("{bin} is absent or another version"),
            Some("homebase setup".into()),
        ));
    } else {
        session.check_with_input(
            &format!("set -e; mkdir -p \"$HOME/.homebase/bin\" \"$HOME/.homebase/daemon\"; t=\"{bin}.tmp.$$\"; cat > \"$t\"; chmod 755 \"$t\"; mv \"$t\" \"{bin}\""),
            ours,
        )?;
        items.push(item(
            "homebase binary",
            "changed",
            format!("installed {bin}"),
            None,
        ));
    }

    // The service definition.
    let argv = vec![bin.clone(), "daemon".to_string()];
    let log = format!("{}/.homebase/daemon/daemon.log", f.home);
    let svc = daemon_service(&argv, &log);
    let (path, content, manager): (String, Vec<u8>, &str) = if mac {
        (
            format!("{}/Library/LaunchAgents/dev.homebase.daemon.plist", f.home),
            crate::service_files::launchd_plist(&svc)?,
            "launchd",
        )
    } else {
        (
            format!("{}/.config/systemd/user/homebase-daemon.service", f.home),
            crate::service_files::systemd_unit(&svc).into_bytes(),
            "systemd",
        )
    };
    let current = session.run(&format!(
        "cat {} 2>/dev/null",
        homebase_remote::sh_quote(&path)
    ))?;
    if current.stdout == content {
        items.push(item(
            "daemon service",
            "ok",
            format!("{manager}: {path}"),
            None,
        ));
    } else if args.check {
        items.push(item(
            "daemon service",
            "missing",
            format!("{manager}: {path} is absent or differs"),
            Some("homebase setup".into()),
        ));
    } else {
        let dir = std::path::Path::new(&path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        session.check_with_input(
            &format!(
                "mkdir -p {d} && cat > {p}",
                d = homebase_remote::sh_quote(&dir),
                p = homebase_remote::sh_quote(&path)
            ),
            &content,
        )?;
        let start = if mac {
            format!(
                "launchctl unload {p} 2>/dev/null; launchctl load -w {p}",
                p = homebase_remote::sh_quote(&path)
            )
        } else if f.systemctl {
            "systemctl --user daemon-reload && systemctl --user enable --now homebase-daemon.service && systemctl --user restart homebase-daemon.service".into()
        } else {
            String::new()
        };
        if !start.is_empty() {
            session.check(&start)?;
        }
        items.push(item(
            "daemon service",
            "changed",
            format!("{manager}: wrote {path}"),
            None,
        ));
    }
    if !mac && !f.systemctl {
        items.push(item(
            "service manager",
            "warning",
            "no systemd user instance here, so nothing starts the daemon at boot",
            Some(format!(
                "run `{bin} daemon` under your init system (ExecStart of {path})"
            )),
        ));
    } else if !mac {
        items.push(item(
            "boot without login",
            "warning",
            "a systemd user unit starts at boot only with lingering",
            Some("sudo loginctl enable-linger $USER".into()),
        ));
    }

    // The daemon answers.
    let answer = session.run(&format!(
        "for i in $(seq 30); do e=$(cat \"$HOME/.homebase/daemon/endpoint\" 2>/dev/null) && t=$(cat \"$HOME/.homebase/daemon/token\" 2>/dev/null) && {{ curl -sf -H \"Authorization: Bearer $t\" \"http://$e/api/status\" >/dev/null 2>&1 || wget -qO- --header \"Authorization: Bearer $t\" \"http://$e/api/status\" >/dev/null 2>&1; }} && echo up && exit 0; sleep {}; done; echo down",
        if args.check { "0" } else { "0.5" }
    ))?;
    let up = String::from_utf8_lossy(&answer.stdout).contains("up");
    items.push(item(
        "daemon",
        if up { "ok" } else { "missing" },
        if up {
            "answers on its loopback API with the token".to_string()
        } else {
            "does not answer".to_string()
        },
        (!up).then(|| format!("start it: {bin} daemon (see the service item)")),
    ));
    Ok((items, false))
}

fn finish(items: &[Item], json: bool, blocked: bool) -> Result<Exit> {
    let changed = items.iter().any(|i| i.state == "changed");
    let missing = items.iter().any(|i| i.state == "missing");
    if json {
        ui::out(
            &(serde_json::to_string_pretty(
                &serde_json::json!({"items": items, "changed": changed, "ready": !missing && !blocked}),
            )? + "\n"),
        )?;
    } else {
        let mut s = String::new();
        for i in items {
            let mark = match i.state.as_str() {
                "ok" => paint(GOOD, "✓"),
                "changed" => paint(GOOD, "+"),
                "warning" => paint(WARN, "!"),
                _ => paint(BAD, "✗"),
            };
            let _ = writeln!(s, "{mark} {:<18} {}", i.name, i.detail);
            if let Some(fix) = &i.fix {
                let _ = writeln!(s, "  {:<18} fix: {fix}", "");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            if missing || blocked {
                "not ready"
            } else if changed {
                "ready (changes made)"
            } else {
                "ready: nothing to change"
            }
        );
        ui::out(&s)?;
    }
    if blocked || missing {
        if !json {
            ui::error("the host is not ready; each ✗ above says how to fix it");
        }
        return Ok(Exit::Refused);
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(os: &str, compose: Option<&str>) -> Facts {
        Facts {
            os: os.into(),
            arch: "arm64".into(),
            docker: Some("27.3.1".into()),
            compose: compose.map(str::to_string),
            mem_total: Some(8 << 30),
            colima_memory_gib: (os == "Darwin").then_some(8.0),
            sleep: (os == "Darwin").then(|| "10".to_string()),
            colima_login: None,
            systemctl: false,
            binary_sha: None,
            home: "/Users/me".into(),
        }
    }

    #[test]
    fn a_missing_compose_plugin_blocks_with_the_fix() {
        let (items, blocked) = check_host(&facts("Linux", None), HostMemory::Detect, "mini");
        assert!(blocked);
        let c = items.iter().find(|i| i.name == "docker compose").unwrap();
        assert_eq!(c.state, "missing");
        assert!(c.detail.contains("plugin is missing"), "{}", c.detail);
        assert!(
            c.fix.as_deref().unwrap().contains("docker-compose"),
            "{:?}",
            c.fix
        );
    }

    #[test]
    fn a_mac_gets_the_colima_memory_and_sleep_fixes() {
        let (items, blocked) = check_host(
            &facts("Darwin", Some("2.29.7")),
            HostMemory::Size(Bytes(16 << 30)),
            "mini",
        );
        assert!(!blocked);
        let mem = items.iter().find(|i| i.name == "engine memory").unwrap();
        assert_eq!(mem.state, "warning");
        assert_eq!(
            mem.fix.as_deref(),
            Some("colima stop && colima start --memory 16")
        );
        let sleep = items.iter().find(|i| i.name == "sleep").unwrap();
        assert_eq!(
            sleep.fix.as_deref(),
            Some("sudo pmset -a sleep 0 disksleep 0")
        );
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("2.26.1-4", (2, 17)));
        assert!(!version_at_least("2.12.0", (2, 17)));
        assert!(version_at_least("v2.17.0", (2, 17)));
        assert!(version_at_least("28.2.2", (20, 10)));
        assert!(!version_at_least("19.03.1", (20, 10)));
    }
}
