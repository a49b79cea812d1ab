//! Making a host ready (`homebase setup`), idempotently, over SSH: the host's facts
//! checked against what homebase needs ([`checks`]), the directories, this binary and the
//! daemon as a service that starts at boot ([`install`]), the engine's live-restore
//! ([`live_restore`]), the way in from anywhere ([`relay`], [`tailnet`]), and a swarm's
//! forming ([`swarm`]). Each part returns checklist items; nothing here prints.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::link::Link;
use crate::project::Project;

mod checks;
mod install;
mod live_restore;
pub mod relay;
mod swarm;
mod tailnet;

use install::{Binary, host};

/// One item of the checklist (`homebase_proto::CheckItem`).
pub use homebase_proto::CheckItem as Item;

/// What `setup` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only check and report; change nothing (`--check`).
    pub check: bool,
    /// The homebase executable to install on the host (`--binary`), else this one.
    pub binary: Option<PathBuf>,
}

/// The host (every node, in swarm mode) made ready, or only checked with `--check`: the
/// checklist, and whether something blocks the rest.
pub fn checklist(project: &Project, link: &Link, args: &Options) -> Result<(Vec<Item>, bool)> {
    let binary = Binary::for_host(args.binary.as_deref())?;
    if !project.swarm() {
        let session = link.open_session()?;
        let h = &project.config.host;
        let ways: Vec<String> = std::iter::once(h.ssh.clone())
            .chain(h.also.iter().cloned())
            .collect();
        let (mut items, blocked) = host(
            &session,
            project.config.budget.host_memory,
            args,
            &binary,
            false,
            &ways,
        )?;
        if !blocked {
            relay::make_it_so(&mut items, &session, project, link, args)?;
        }
        return Ok((items, blocked));
    }
    // Swarm: every node as a host (in parallel, one SSH connection each), then the cluster.
    let mut items = Vec::new();
    let mut blocked = false;
    let results = project.per_node(
        |_| true,
        |name, n| {
            let session = link
                .node_session(name)
                .with_context(|| format!("cannot reach node {name}"))?;
            host(&session, n.memory, args, &binary, true, &[])
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
        items.extend(swarm::form(project, link, args.check)?);
    }
    Ok((items, blocked))
}

#[cfg(test)]
mod tests {
    use super::checks::{Facts, check_host, version_at_least, with_plugin_dir};
    use super::*;
    use homebase_stack::Bytes;
    use homebase_stack::config::HostMemory;

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
            buildx: Some("v0.13.1".into()),
            buildx_beside: false,
            docker_config: String::new(),
            autorestart: None,
            autologin: None,
            filevault_on: os == "Darwin",
            agent_loaded: false,
            live_restore: Some(false),
            tailscale: Default::default(),
        }
    }

    #[test]
    fn live_restore_off_is_a_warning_with_the_fix_for_each_engine() {
        for (os, fix) in [
            ("Darwin", "colima.yaml"),
            ("Linux", "/etc/docker/daemon.json"),
        ] {
            let (items, blocked) =
                check_host(&facts(os, Some("2.29.0")), HostMemory::Detect, "mini");
            assert!(!blocked);
            let l = items.iter().find(|i| i.name == "live restore").unwrap();
            assert_eq!(l.state, "warning");
            assert!(l.fix.as_deref().unwrap_or("").contains(fix), "{:?}", l.fix);
        }
        let mut on = facts("Linux", Some("2.29.0"));
        on.live_restore = Some(true);
        let (items, _) = check_host(&on, HostMemory::Detect, "mini");
        assert_eq!(
            items
                .iter()
                .find(|i| i.name == "live restore")
                .unwrap()
                .state,
            "ok"
        );
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
