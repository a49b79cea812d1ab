//! Making the host ready: directories, this binary, the daemon as a service that starts at
//! boot, and its answer.

use super::Item;
use super::Options;
use super::checks::{Facts, check_host, facts, plugin_dir, same_platform, with_plugin_dir};
use anyhow::{Context, Result};
use homebase_proto::layout;
use homebase_remote::Session;
use homebase_stack::config::HostMemory;
use sha2::Digest;
use sha2::Sha256;

pub(super) fn daemon_service<'a>(
    args: &'a [String],
    log: &'a str,
) -> crate::service_files::Service<'a> {
    crate::service_files::Service {
        description: "homebase daemon: stats, self-healing, memory governor, alerts, dashboard",
        label: "dev.homebase.daemon",
        args,
        after: "docker.service network-online.target",
        log,
    }
}

/// A host's checklist, and whether something on it blocks the rest.
pub(super) type Checklist = (Vec<Item>, bool);

/// This homebase executable, read and hashed once per run: what `setup` installs.
pub(super) struct Binary {
    pub(super) bytes: Vec<u8>,
    pub(super) sha256: String,
}

impl Binary {
    /// `--binary FILE`, or this executable.
    pub(super) fn for_host(file: Option<&std::path::Path>) -> Result<Binary> {
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

/// One host made ready: returns its checklist and whether something blocks the rest.
pub(super) fn host(
    session: &Session,
    memory: HostMemory,
    args: &Options,
    binary: &Binary,
    swarm: bool,
    ways: &[String],
) -> Result<Checklist> {
    let f = facts(session)?;
    let (mut items, blocking) = check_host(&f, memory, &session.host());
    if blocking {
        return Ok((items, true));
    }
    if !swarm {
        items.extend(super::tailnet::items(&f.tailscale, &f.user, ways));
    }
    super::live_restore::make_it_so(&mut items, session, &f, args, swarm)?;

    let root = layout::root(std::path::Path::new(&f.home));
    let bin = root.join(layout::BIN).to_string_lossy().to_string();
    let binary_changed = install_binary(&mut items, session, &f, args, binary, &bin)?;
    colima_at_login(&mut items, session, args)?;
    compose_plugin(&mut items, session, &f, args)?;
    install_service(&mut items, session, &f, args, &root, &bin, binary_changed)?;
    daemon_answers(&mut items, session, args, &bin)?;
    Ok((items, false))
}

/// The homebase binary on the host: this one, or the one `--binary` names, unless the host
/// already has it; true when it was installed now.
fn install_binary(
    items: &mut Vec<Item>,
    session: &Session,
    f: &Facts,
    args: &Options,
    binary: &Binary,
    bin: &str,
) -> Result<bool> {
    let (ours, sha) = (&binary.bytes, &binary.sha256);
    let mut binary_changed = false;
    if !same_platform(f) && args.binary.is_none() {
        items.push(Item::new(
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
        items.push(Item::new(
            "homebase binary",
            "ok",
            format!("{bin} is this version"),
            None,
        ));
    } else if args.check {
        items.push(Item::new(
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
        items.push(Item::new(
            "homebase binary",
            "changed",
            format!("installed {bin}"),
            None,
        ));
    }

    Ok(binary_changed)
}

/// Colima at login, as `brew services` does it (a LaunchAgent of the user's).
fn colima_at_login(items: &mut [Item], session: &Session, args: &Options) -> Result<()> {
    if let Some(i) = items.iter_mut().find(|i| i.name == "colima at login")
        && i.state == "warning"
        && !args.check
    {
        session
            .check("brew services start colima >/dev/null")
            .context("`brew services start colima` failed on the host")?;
        *i = Item::new(
            "colima at login",
            "changed",
            "brew services starts Colima at login now",
            None,
        );
    }

    Ok(())
}

/// Homebrew's Compose plugin, registered with the docker CLI (as its caveat says).
fn compose_plugin(items: &mut [Item], session: &Session, f: &Facts, args: &Options) -> Result<()> {
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
                *i = Item::new(
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

    Ok(())
}

/// The daemon as a service that starts at boot (a launchd agent, a systemd user unit),
/// (re)started when it or the binary changed.
#[allow(clippy::too_many_arguments)]
fn install_service(
    items: &mut Vec<Item>,
    session: &Session,
    f: &Facts,
    args: &Options,
    root: &std::path::Path,
    bin: &str,
    binary_changed: bool,
) -> Result<()> {
    let mac = f.os == "Darwin";
    let argv = vec![bin.to_string(), "daemon".to_string()];
    let log = layout::daemon_dir(root)
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
        items.push(Item::new(
            "daemon service",
            "ok",
            format!("{manager}: {path}"),
            None,
        ));
    } else if args.check {
        items.push(Item::new(
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
        items.push(Item::new(
            "daemon service",
            "changed",
            format!("{manager}: wrote {path}"),
            None,
        ));
    }
    let unchanged = current.stdout == content;
    if unchanged && !args.check {
        reload(items, session, f, &path, binary_changed)?;
    }
    if !mac && !f.systemctl {
        items.push(Item::new(
            "service manager",
            "warning",
            "no systemd user instance here, so nothing starts the daemon at boot",
            Some(format!(
                "run `{bin} daemon` under your init system (ExecStart of {path})"
            )),
        ));
    } else if !mac {
        items.push(Item::new(
            "boot without login",
            "warning",
            "a systemd user unit starts at boot only with lingering",
            Some("sudo loginctl enable-linger $USER".into()),
        ));
    }

    Ok(())
}

/// An unchanged service file: its daemon loaded when launchd does not know it, restarted on
/// a new binary.
fn reload(
    items: &mut [Item],
    session: &Session,
    f: &Facts,
    path: &str,
    binary_changed: bool,
) -> Result<()> {
    let mac = f.os == "Darwin";
    if mac && (!f.agent_loaded || binary_changed) {
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
                    homebase_remote::sh_quote(path)
                ),
            )
        };
        session.check(&script)?;
        if let Some(i) = items.iter_mut().rev().find(|i| i.name == "daemon service") {
            *i = Item::new("daemon service", "changed", format!("launchd: {how}"), None);
        }
    } else if f.systemctl && binary_changed {
        session.check("systemctl --user restart homebase-daemon.service")?;
        if let Some(i) = items.iter_mut().rev().find(|i| i.name == "daemon service") {
            *i = Item::new(
                "daemon service",
                "changed",
                "systemd: restarted with the new binary",
                None,
            );
        }
    }
    Ok(())
}

/// The daemon answers on its loopback API with its token (waiting for it a little after
/// a start).
fn daemon_answers(
    items: &mut Vec<Item>,
    session: &Session,
    args: &Options,
    bin: &str,
) -> Result<()> {
    let up = crate::daemon_client::answers(session, !args.check)?;
    items.push(Item::new(
        "daemon",
        if up { "ok" } else { "missing" },
        if up {
            "answers on its loopback API with the token".to_string()
        } else {
            "does not answer".to_string()
        },
        (!up).then(|| format!("start it: {bin} daemon (see the service item)")),
    ));
    Ok(())
}
