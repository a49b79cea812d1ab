//! What the host has (one script), and the checklist read from it: OS, engine, Compose,
//! memory, power.

use super::Item;
pub(super) use crate::facts::{Facts, facts};
use homebase_stack::Bytes;
use homebase_stack::config::HostMemory;

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
