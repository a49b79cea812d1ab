//! What the host has (one script), and the checklist read from it: OS, engine, Compose,
//! memory, power.

use super::Item;
use crate::host::FIND_COMPOSE;
use anyhow::Result;
use homebase_proto::layout;
use homebase_remote::Session;
use homebase_stack::Bytes;
use homebase_stack::config::HostMemory;

/// The host's facts, read in one round trip.
pub(super) struct Facts {
    pub(super) os: String,
    pub(super) arch: String,
    pub(super) docker: Option<String>,
    pub(super) compose: Option<String>,
    pub(super) mem_total: Option<u64>,
    pub(super) colima_memory_gib: Option<f64>,
    pub(super) sleep: Option<String>,
    /// `brew services` state of Colima (`started` when it starts at login).
    pub(super) colima_login: Option<String>,
    pub(super) systemctl: bool,
    pub(super) binary_sha: Option<String>,
    pub(super) home: String,
    pub(super) user: String,
    /// `docker compose` itself works (not only the plugin binary found by path).
    pub(super) compose_registered: bool,
    /// The Compose plugin's path when `docker` does not find it by itself.
    pub(super) compose_plugin: Option<String>,
    /// `docker buildx version` (BuildKit's builder, for services with `build:`).
    pub(super) buildx: Option<String>,
    /// A buildx plugin sits beside the Compose plugin homebase found by path.
    pub(super) buildx_beside: bool,
    /// `~/.docker/config.json` as it is (empty when absent).
    pub(super) docker_config: String,
    /// `pmset -g`'s `autorestart` (restart after a power failure).
    pub(super) autorestart: Option<String>,
    /// The login window's automatic login user (empty when none).
    pub(super) autologin: Option<String>,
    pub(super) filevault_on: bool,
    /// `launchctl print` knows the daemon's agent (it is loaded).
    pub(super) agent_loaded: bool,
    /// The engine keeps containers running while it restarts (`live-restore`).
    pub(super) live_restore: Option<bool>,
    /// Tailscale on the host (nothing when it has none).
    pub(super) tailscale: super::tailnet::Tailscale,
}

/// What the facts script prints, one `key=value` a line (FIND_COMPOSE goes in front).
pub(super) const FACTS: &str = r#"
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "home=$HOME"; echo "user=$(id -un)"; echo "uid=$(id -u)"
echo "docker=$(docker version --format '{{.Server.Version}}' 2>/dev/null)"
if docker compose version >/dev/null 2>&1; then echo "compose_registered=yes"; fi
echo "compose=$($c version --short 2>/dev/null)"; case "$c" in /*) echo "compose_plugin=$c"; [ -x "${c%/*}/docker-buildx" ] && echo "buildx_beside=yes";; esac
echo "buildx=$(docker buildx version 2>/dev/null | awk '{print $2}')"
echo "mem=$(docker info --format '{{.MemTotal}}' 2>/dev/null)"
echo "live_restore=$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)"
if command -v colima >/dev/null 2>&1; then echo "colima=$(colima list -j 2>/dev/null | sed -n 's/.*"memory":\([0-9]*\).*/\1/p' | head -1)"; fi
if command -v pmset >/dev/null 2>&1; then pmset -g | awk '$1 == "sleep" {print "sleep=" $2} $1 == "autorestart" {print "autorestart=" $2}'; fi
if command -v brew >/dev/null 2>&1; then echo "colima_login=$(brew services list 2>/dev/null | awk '$1 == "colima" {print $2}')"; fi
if command -v defaults >/dev/null 2>&1; then echo "autologin=$(defaults read /Library/Preferences/com.apple.loginwindow autoLoginUser 2>/dev/null)"; fi
if command -v fdesetup >/dev/null 2>&1 && fdesetup status 2>/dev/null | grep -q 'is On'; then echo "filevault=on"; fi
if command -v launchctl >/dev/null 2>&1 && launchctl print "gui/$(id -u)/dev.homebase.daemon" >/dev/null 2>&1; then echo "agent_loaded=yes"; fi
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then echo "systemctl=yes"; fi
b=@BIN@; if [ -f "$b" ]; then echo "binary=$( (sha256sum "$b" 2>/dev/null || shasum -a 256 "$b") | cut -d' ' -f1)"; fi
if [ -f "$HOME/.docker/config.json" ]; then printf 'docker_config='; tr -d '\n' < "$HOME/.docker/config.json"; echo; fi
[ -d /Applications/Tailscale.app ] && echo "ts_app=yes"
for f in /Library/LaunchDaemons/com.tailscale.tailscaled.plist /Library/LaunchDaemons/homebrew.mxcl.tailscale.plist; do [ -f "$f" ] && echo "ts_boot=yes"; done
command -v systemctl >/dev/null 2>&1 && systemctl is-enabled tailscaled >/dev/null 2>&1 && echo "ts_boot=yes"
ts=$(command -v tailscale 2>/dev/null || { [ -x /Applications/Tailscale.app/Contents/MacOS/Tailscale ] && echo /Applications/Tailscale.app/Contents/MacOS/Tailscale; })
[ -n "$ts" ] && n=$("$ts" status --json 2>/dev/null | sed -n 's/.*"DNSName": *"\([^"]*\)".*/\1/p' | head -1) && echo "ts_name=${n%.}"
true
"#;

pub(super) fn facts(session: &Session) -> Result<Facts> {
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
        buildx: get("buildx"),
        buildx_beside: get("buildx_beside").is_some(),
        docker_config: get("docker_config").unwrap_or_default(),
        autorestart: get("autorestart"),
        autologin: get("autologin"),
        filevault_on: get("filevault").is_some(),
        agent_loaded: get("agent_loaded").is_some(),
        live_restore: get("live_restore").map(|v| v == "true"),
        tailscale: super::tailnet::Tailscale {
            app: get("ts_app").is_some(),
            daemon_at_boot: get("ts_boot").is_some(),
            name: get("ts_name").unwrap_or_default(),
        },
    })
}

pub(super) fn version_at_least(v: &str, min: (u32, u32)) -> bool {
    let mut it = v
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= min
}

/// The host's OS and architecture match this binary's, so it can run there as is.
pub(super) fn same_platform(f: &Facts) -> bool {
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

/// What the host's facts say about Docker, Compose, memory and (on a Mac) Colima and sleep;
/// the flag is true when setup cannot go on.
pub(super) fn check_host(f: &Facts, host_memory: HostMemory, host: &str) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let mut blocking = false;
    let mac = f.os == "Darwin";

    items.push(Item::new(
        "host",
        "ok",
        format!("{} {} reached at {}", f.os, f.arch, host),
        None,
    ));
    blocking |= engine_items(f, mac, &mut items);
    if let (Some(_), false, Some(plugin)) = (&f.compose, f.compose_registered, &f.compose_plugin) {
        items.push(Item::new(
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
    items.push(buildx_item(f, mac));
    items.push(live_restore_item(f, mac));
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
        items.push(Item::new(
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
        items.push(Item::new(
            "colima",
            "ok",
            format!("VM with {gib:.0} GiB"),
            None,
        ));
        let at_login = f.colima_login.as_deref() == Some("started");
        items.push(Item::new(
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

/// The engine and Compose, each with the install hint for this OS; true when one is missing
/// or too old (nothing else can be checked or done then).
fn engine_items(f: &Facts, mac: bool, items: &mut Vec<Item>) -> bool {
    let mut blocking = false;
    let docker_hint = if mac {
        "brew install colima docker docker-compose && colima start --cpu 4 --memory 14 --disk 100"
            .to_string()
    } else {
        "install Docker Engine (Debian/Ubuntu: sudo apt-get install docker.io) and add your user to the docker group".to_string()
    };
    match &f.docker {
        Some(v) if version_at_least(v, (20, 10)) => items.push(Item::new(
            "docker engine",
            "ok",
            format!("version {v}"),
            None,
        )),
        Some(v) => {
            blocking = true;
            items.push(Item::new(
                "docker engine",
                "missing",
                format!("version {v} is too old (20.10 or newer)"),
                Some(docker_hint.clone()),
            ));
        }
        None => {
            blocking = true;
            items.push(Item::new(
                "docker engine",
                "missing",
                "`docker version` cannot reach an engine",
                Some(docker_hint.clone()),
            ));
        }
    }
    match &f.compose {
        Some(v) if version_at_least(v, (2, 17)) => items.push(Item::new(
            "docker compose",
            "ok",
            format!("version {v}"),
            None,
        )),
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
            items.push(Item::new("docker compose", "missing", detail, Some(fix)));
        }
    }
    blocking
}

/// What decides whether the stack comes back by itself after a power cut on a Mac: the
/// Mac restarts, logs its user in (LaunchAgents and `brew services` start only then), and
/// does not go to sleep.
pub(super) fn power_items(f: &Facts, items: &mut Vec<Item>) {
    {
        match f.sleep.as_deref() {
            Some("0") => items.push(Item::new("sleep", "ok", "system sleep is off", None)),
            other => items.push(Item::new(
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
        Some("1") => items.push(Item::new(
            "power failure",
            "ok",
            "the Mac starts again by itself after a power failure",
            None,
        )),
        _ => items.push(Item::new(
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
        items.push(Item::new(
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
        items.push(Item::new(
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
/// Docker's `live-restore`: with it, a restart of the engine (an update, a crash of dockerd)
/// leaves the containers running; without it every service goes down with the engine.
fn live_restore_item(f: &Facts, mac: bool) -> Item {
    match f.live_restore {
        Some(true) => Item::new(
            "live restore",
            "ok",
            "containers keep running while the engine restarts",
            None,
        ),
        Some(false) => Item::new(
            "live restore",
            "warning",
            "a restart of the engine stops every container until it is back (live-restore is off)",
            Some(if mac {
                "add `live-restore: true` under `docker:` in ~/.colima/default/colima.yaml, then `colima restart`".into()
            } else {
                "add \"live-restore\": true to /etc/docker/daemon.json, then `sudo systemctl reload docker`".into()
            }),
        ),
        None => Item::new(
            "live restore",
            "warning",
            "the engine did not say whether live-restore is on",
            None,
        ),
    }
}

/// BuildKit's buildx plugin, which newer Compose versions build `build:` services with.
fn buildx_item(f: &Facts, mac: bool) -> Item {
    match (&f.buildx, &f.compose_plugin) {
        (Some(v), _) => Item::new("docker buildx", "ok", format!("version {v}"), None),
        (None, Some(plugin)) if f.buildx_beside && !f.compose_registered => Item::new(
            "docker buildx",
            "warning",
            format!(
                "the buildx plugin beside {plugin} is not found by `docker` (images of `build:` services are built on this host)"
            ),
            Some(format!(
                "homebase setup adds {} to cliPluginsExtraDirs in ~/.docker/config.json",
                plugin_dir(plugin)
            )),
        ),
        _ => Item::new(
            "docker buildx",
            "warning",
            "BuildKit's buildx plugin is missing: services with `build:` are built on this host, and newer Compose versions build only through it",
            Some(if mac {
                "brew install docker-buildx".into()
            } else {
                "sudo apt-get install docker-buildx (or docker-buildx-plugin from Docker's repository)".into()
            }),
        ),
    }
}

pub(super) fn plugin_dir(plugin: &str) -> &str {
    plugin.rsplit_once('/').map(|(d, _)| d).unwrap_or(plugin)
}

/// `~/.docker/config.json` with `dir` added to `cliPluginsExtraDirs`; `None` when it is
/// there already or the file is not a JSON object (left alone).
pub(super) fn with_plugin_dir(config: &str, dir: &str) -> Option<String> {
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
