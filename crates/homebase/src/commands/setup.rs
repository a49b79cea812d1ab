//! `homebase setup [--check]`: makes a bare host ready, idempotently, over SSH: checks the OS,
//! the Docker engine and Compose (with the install hint for that OS), on macOS Colima's memory
//! and sleep, creates homebase's directories, installs this very binary when the host's OS and
//! architecture match, installs the daemon as a service that starts at boot (systemd user unit
//! on Linux, launchd agent on macOS), and verifies the daemon answers. Running it again
//! changes nothing and says so.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use homebase_proto::layout;
use homebase_remote::Session;
use homebase_stack::Bytes;
use homebase_stack::config::HostMemory;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::{Global, SetupArgs};
use crate::exit::Exit;
use crate::host::FIND_COMPOSE;
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
    user: String,
    /// `docker compose` itself works (not only the plugin binary found by path).
    compose_registered: bool,
    /// The Compose plugin's path when `docker` does not find it by itself.
    compose_plugin: Option<String>,
    /// `~/.docker/config.json` as it is (empty when absent).
    docker_config: String,
    /// `pmset -g`'s `autorestart` (restart after a power failure).
    autorestart: Option<String>,
    /// The login window's automatic login user (empty when none).
    autologin: Option<String>,
    filevault_on: bool,
    /// `launchctl print` knows the daemon's agent (it is loaded).
    agent_loaded: bool,
}

/// What the facts script prints, one `key=value` a line (FIND_COMPOSE goes in front).
const FACTS: &str = r#"
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "home=$HOME"; echo "user=$(id -un)"; echo "uid=$(id -u)"
echo "docker=$(docker version --format '{{.Server.Version}}' 2>/dev/null)"
if docker compose version >/dev/null 2>&1; then echo "compose_registered=yes"; fi
echo "compose=$($c version --short 2>/dev/null)"; case "$c" in /*) echo "compose_plugin=$c";; esac
echo "mem=$(docker info --format '{{.MemTotal}}' 2>/dev/null)"
if command -v colima >/dev/null 2>&1; then echo "colima=$(colima list -j 2>/dev/null | sed -n 's/.*"memory":\([0-9]*\).*/\1/p' | head -1)"; fi
if command -v pmset >/dev/null 2>&1; then pmset -g | awk '$1 == "sleep" {print "sleep=" $2} $1 == "autorestart" {print "autorestart=" $2}'; fi
if command -v brew >/dev/null 2>&1; then echo "colima_login=$(brew services list 2>/dev/null | awk '$1 == "colima" {print $2}')"; fi
if command -v defaults >/dev/null 2>&1; then echo "autologin=$(defaults read /Library/Preferences/com.apple.loginwindow autoLoginUser 2>/dev/null)"; fi
if command -v fdesetup >/dev/null 2>&1 && fdesetup status 2>/dev/null | grep -q 'is On'; then echo "filevault=on"; fi
if command -v launchctl >/dev/null 2>&1 && launchctl print "gui/$(id -u)/dev.homebase.daemon" >/dev/null 2>&1; then echo "agent_loaded=yes"; fi
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then echo "systemctl=yes"; fi
b=@BIN@; if [ -f "$b" ]; then echo "binary=$( (sha256sum "$b" 2>/dev/null || shasum -a 256 "$b") | cut -d' ' -f1)"; fi
if [ -f "$HOME/.docker/config.json" ]; then printf 'docker_config='; tr -d '\n' < "$HOME/.docker/config.json"; echo; fi
"#;

fn facts(session: &Session) -> Result<Facts> {
    let script = format!(
        "c=\"{FIND_COMPOSE}\"\n{}",
        FACTS.replace("@BIN@", &layout::sh_bin())
    );
    let out = session.check(&script)?;
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
        user: get("user").unwrap_or_default(),
        compose_registered: get("compose_registered").is_some(),
        compose_plugin: get("compose_plugin"),
        docker_config: get("docker_config").unwrap_or_default(),
        autorestart: get("autorestart"),
        autologin: get("autologin"),
        filevault_on: get("filevault").is_some(),
        agent_loaded: get("agent_loaded").is_some(),
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
    if let (Some(_), false, Some(plugin)) = (&f.compose, f.compose_registered, &f.compose_plugin) {
        items.push(item(
            "compose plugin",
            "warning",
            format!(
                "`docker compose` does not find the plugin at {plugin} (homebase runs it directly; `docker compose` in your shell fails)"
            ),
            Some(format!(
                "homebase setup adds {} to cliPluginsExtraDirs in ~/.docker/config.json",
                plugin_dir(plugin)
            )),
        ));
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
        power_items(f, &mut items);
    }
    (items, blocking)
}

/// What decides whether the stack comes back by itself after a power cut on a Mac: the
/// Mac restarts, logs its user in (LaunchAgents and `brew services` start only then), and
/// does not go to sleep.
fn power_items(f: &Facts, items: &mut Vec<Item>) {
    {
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
    match f.autorestart.as_deref() {
        Some("1") => items.push(item(
            "power failure",
            "ok",
            "the Mac starts again by itself after a power failure",
            None,
        )),
        _ => items.push(item(
            "power failure",
            "warning",
            "after a power failure the Mac stays off until someone presses its button",
            Some("sudo pmset -a autorestart 1".into()),
        )),
    }
    let user = if f.user.is_empty() {
        "you"
    } else {
        f.user.as_str()
    };
    if f.autologin.as_deref() == Some(f.user.as_str()) && !f.user.is_empty() && !f.filevault_on {
        items.push(item(
            "automatic login",
            "ok",
            format!("{user} is logged in at startup, so the daemon and Colima start"),
            None,
        ));
    } else {
        let why = if f.filevault_on {
            "; FileVault is on, which rules out automatic login"
        } else {
            ""
        };
        let fix = if f.filevault_on {
            format!(
                "sudo fdesetup disable, then System Settings → Users & Groups → Automatically log in as {user} (or: sudo sysadminctl -autologin set -userName {user} -password -)"
            )
        } else {
            format!(
                "System Settings → Users & Groups → Automatically log in as {user} (or: sudo sysadminctl -autologin set -userName {user} -password -)"
            )
        };
        items.push(item(
            "automatic login",
            "warning",
            format!(
                "after a restart the Mac waits at the login window: the daemon (a LaunchAgent) and Colima (brew services) start only when {user} logs in{why}"
            ),
            Some(fix),
        ));
    }
}

/// The directory of a plugin binary (`…/cli-plugins`).
fn plugin_dir(plugin: &str) -> &str {
    plugin.rsplit_once('/').map(|(d, _)| d).unwrap_or(plugin)
}

/// `~/.docker/config.json` with `dir` added to `cliPluginsExtraDirs`; `None` when it is
/// there already or the file is not a JSON object (left alone).
fn with_plugin_dir(config: &str, dir: &str) -> Option<String> {
    let mut v: serde_json::Value = if config.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(config).ok()?
    };
    let obj = v.as_object_mut()?;
    let dirs = obj
        .entry("cliPluginsExtraDirs")
        .or_insert_with(|| serde_json::json!([]));
    let list = dirs.as_array_mut()?;
    if list.iter().any(|d| d.as_str() == Some(dir)) {
        return None;
    }
    list.push(dir.into());
    serde_json::to_string_pretty(&v).ok().map(|t| t + "\n")
}

/// A host's checklist, and whether something on it blocks the rest.
type Checklist = (Vec<Item>, bool);

/// This homebase executable, read and hashed once per run: what `setup` installs.
struct Binary {
    bytes: Vec<u8>,
    sha256: String,
}

impl Binary {
    /// `--binary FILE`, or this executable.
    fn for_host(file: Option<&std::path::Path>) -> Result<Binary> {
        let exe = match file {
            Some(f) => f.to_path_buf(),
            None => std::env::current_exe().context("cannot find this homebase executable")?,
        };
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
    let binary = Binary::for_host(args.binary.as_deref())?;
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
            let session = project
                .node_session(name)
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

    let root = layout::root(std::path::Path::new(&f.home));
    let bin = root.join(layout::BIN).to_string_lossy().to_string();
    // The binary.
    let (ours, sha) = (&binary.bytes, &binary.sha256);
    let mut binary_changed = false;
    if !same_platform(&f) && args.binary.is_none() {
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
                "build homebase for the host (cargo build --release there, or cross-compile) and run `homebase setup --binary PATH`".to_string()
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
            &format!(
                "set -e; mkdir -p \"$(dirname {b})\" {d}; t=\"{bin}.tmp.$$\"; cat > \"$t\"; chmod 755 \"$t\"; mv \"$t\" \"{bin}\"",
                b = layout::sh_bin(),
                d = layout::sh_daemon()
            ),
            ours,
        )?;
        binary_changed = true;
        items.push(item(
            "homebase binary",
            "changed",
            format!("installed {bin}"),
            None,
        ));
    }

    // Colima at login, as `brew services` does it (a LaunchAgent of the user's).
    if let Some(i) = items.iter_mut().find(|i| i.name == "colima at login")
        && i.state == "warning"
        && !args.check
    {
        session
            .check("brew services start colima >/dev/null")
            .context("`brew services start colima` failed on the host")?;
        *i = item(
            "colima at login",
            "changed",
            "brew services starts Colima at login now",
            None,
        );
    }

    // Homebrew's Compose plugin, registered with the docker CLI (as its caveat says).
    if let Some(i) = items.iter_mut().find(|i| i.name == "compose plugin")
        && !args.check
        && let Some(plugin) = &f.compose_plugin
    {
        let dir = plugin_dir(plugin).to_string();
        match with_plugin_dir(&f.docker_config, &dir) {
            Some(text) => {
                session.check_with_input(
                    "set -e; mkdir -p \"$HOME/.docker\"; t=\"$HOME/.docker/config.json.tmp.$$\"; cat > \"$t\"; mv \"$t\" \"$HOME/.docker/config.json\"",
                    text.as_bytes(),
                )?;
                *i = item(
                    "compose plugin",
                    "changed",
                    format!("added {dir} to cliPluginsExtraDirs in ~/.docker/config.json"),
                    None,
                );
            }
            None => {
                i.fix = Some(format!(
                    "~/.docker/config.json is not a JSON object homebase can edit: add \"cliPluginsExtraDirs\": [\"{dir}\"] to it"
                ));
            }
        }
    }

    // The service definition.
    let argv = vec![bin.clone(), "daemon".to_string()];
    let log = layout::daemon_dir(&root)
        .join(layout::DAEMON_LOG)
        .to_string_lossy()
        .to_string();
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
                "uid=$(id -u); launchctl bootout \"gui/$uid/dev.homebase.daemon\" 2>/dev/null; launchctl bootstrap \"gui/$uid\" {p}",
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
    let unchanged = current.stdout == content;
    if unchanged && !args.check && mac && (!f.agent_loaded || binary_changed) {
        // the agent is unchanged: load it when launchd does not know it, restart it on a
        // new binary
        let (how, script) = if f.agent_loaded {
            (
                "restarted with the new binary",
                "launchctl kickstart -k \"gui/$(id -u)/dev.homebase.daemon\"".to_string(),
            )
        } else {
            (
                "loaded into launchd",
                format!(
                    "launchctl bootstrap \"gui/$(id -u)\" {}",
                    homebase_remote::sh_quote(&path)
                ),
            )
        };
        session.check(&script)?;
        if let Some(i) = items.iter_mut().rev().find(|i| i.name == "daemon service") {
            *i = item("daemon service", "changed", format!("launchd: {how}"), None);
        }
    } else if unchanged && !args.check && f.systemctl && binary_changed {
        session.check("systemctl --user restart homebase-daemon.service")?;
        if let Some(i) = items.iter_mut().rev().find(|i| i.name == "daemon service") {
            *i = item(
                "daemon service",
                "changed",
                "systemd: restarted with the new binary",
                None,
            );
        }
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
        // the token goes to curl on stdin (printf is a builtin), never on a command line
        "for i in $(seq 30); do e=$(cat {e} 2>/dev/null) && t=$(cat {t} 2>/dev/null) && printf 'header = \"Authorization: Bearer %s\"\\n' \"$t\" | curl -sf --config - \"http://$e/api/status\" >/dev/null 2>&1 && echo up && exit 0; sleep {}; done; echo down",
        if args.check { "0" } else { "0.5" },
        e = layout::sh_daemon_file(layout::ENDPOINT),
        t = layout::sh_daemon_file(layout::TOKEN),
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
            user: "me".into(),
            compose_registered: compose.is_some(),
            compose_plugin: None,
            docker_config: String::new(),
            autorestart: None,
            autologin: None,
            filevault_on: os == "Darwin",
            agent_loaded: false,
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
    fn a_mac_is_told_what_a_power_cut_needs() {
        let mut f = facts("Darwin", Some("2.29.7"));
        let (items, _) = check_host(&f, HostMemory::Detect, "mini");
        let get = |items: &[Item], n: &str| items.iter().find(|i| i.name == n).cloned().unwrap();
        assert_eq!(
            get(&items, "power failure").fix.as_deref(),
            Some("sudo pmset -a autorestart 1")
        );
        let login = get(&items, "automatic login");
        assert_eq!(login.state, "warning");
        assert!(login.detail.contains("FileVault is on"), "{}", login.detail);
        assert!(login.fix.unwrap().starts_with("sudo fdesetup disable"));
        f.filevault_on = false;
        f.autologin = Some("me".into());
        f.autorestart = Some("1".into());
        f.sleep = Some("0".into());
        let (items, _) = check_host(&f, HostMemory::Detect, "mini");
        for n in ["power failure", "automatic login", "sleep"] {
            assert_eq!(get(&items, n).state, "ok", "{n}");
        }
        // Homebrew's plugin found only by path
        f.compose_registered = false;
        f.compose_plugin = Some("/opt/homebrew/lib/docker/cli-plugins/docker-compose".into());
        let (items, blocked) = check_host(&f, HostMemory::Detect, "mini");
        assert!(!blocked);
        assert!(
            get(&items, "compose plugin")
                .fix
                .unwrap()
                .contains("/opt/homebrew/lib/docker/cli-plugins")
        );
    }

    #[test]
    fn the_plugin_dir_is_added_once_and_other_settings_kept() {
        let d = "/opt/homebrew/lib/docker/cli-plugins";
        let t = with_plugin_dir("{\"currentContext\": \"colima\"}", d).unwrap();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["currentContext"], "colima");
        assert_eq!(v["cliPluginsExtraDirs"][0], d);
        assert_eq!(with_plugin_dir(&t, d), None);
        assert!(with_plugin_dir("", d).unwrap().contains(d));
        assert_eq!(with_plugin_dir("not json", d), None);
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
