//! What a host has, read in one round trip for `homebase setup` and `preflight`: the OS,
//! the engine, Compose and buildx, memory, power settings, the installed binary,
//! Tailscale.

use anyhow::Result;
use homebase_proto::layout;
use homebase_remote::Session;

use crate::FIND_COMPOSE;

/// What the host says of Tailscale (read with setup's other facts, in the same round
/// trip): the app installed, a system daemon set to start at boot, and the host's own
/// tailnet name (empty when Tailscale is not up).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tailscale {
    pub app: bool,
    pub daemon_at_boot: bool,
    pub name: String,
}

/// The host's facts, read in one round trip.
pub struct Facts {
    pub os: String,
    pub arch: String,
    pub docker: Option<String>,
    pub compose: Option<String>,
    pub mem_total: Option<u64>,
    pub colima_memory_gib: Option<f64>,
    pub sleep: Option<String>,
    /// `brew services` state of Colima (`started` when it starts at login).
    pub colima_login: Option<String>,
    pub systemctl: bool,
    pub binary_sha: Option<String>,
    pub home: String,
    pub user: String,
    /// `docker compose` itself works (not only the plugin binary found by path).
    pub compose_registered: bool,
    /// The Compose plugin's path when `docker` does not find it by itself.
    pub compose_plugin: Option<String>,
    /// `docker buildx version` (BuildKit's builder, for services with `build:`).
    pub buildx: Option<String>,
    /// A buildx plugin sits beside the Compose plugin homebase found by path.
    pub buildx_beside: bool,
    /// `~/.docker/config.json` as it is (empty when absent).
    pub docker_config: String,
    /// `pmset -g`'s `autorestart` (restart after a power failure).
    pub autorestart: Option<String>,
    /// The login window's automatic login user (empty when none).
    pub autologin: Option<String>,
    pub filevault_on: bool,
    /// `launchctl print` knows the daemon's agent (it is loaded).
    pub agent_loaded: bool,
    /// The engine keeps containers running while it restarts (`live-restore`).
    pub live_restore: Option<bool>,
    /// Tailscale on the host (nothing when it has none).
    pub tailscale: Tailscale,
}

/// What the facts script prints, one `key=value` a line (FIND_COMPOSE goes in front).
pub const FACTS: &str = r#"
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

pub fn facts(session: &Session) -> Result<Facts> {
    let script = format!(
        "c=\"{FIND_COMPOSE}\"\n{}",
        FACTS.replace("@BIN@", &layout::sh_bin())
    );
    Ok(parse(&session.check(&script)?))
}

/// The facts script's `key=value` lines; a key it did not print is unknown (`None`, or
/// false for a yes/no).
fn parse(out: &str) -> Facts {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Facts {
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
        tailscale: Tailscale {
            app: get("ts_app").is_some(),
            daemon_at_boot: get("ts_boot").is_some(),
            name: get("ts_name").unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// The facts script's answer on a Mac Mini with Colima (recorded from the Mac-like test
    /// host, with the values a real Mini prints for pmset, the login window and Tailscale).
    const MAC: &str = "os=Darwin\narch=arm64\nhome=/Users/me\nuser=me\nuid=501\n\
        docker=27.3.1\ncompose=2.29.7\ncompose_plugin=/opt/homebrew/lib/docker/cli-plugins/docker-compose\n\
        buildx_beside=yes\nbuildx=v0.17.1\nmem=12541607936\nlive_restore=true\ncolima=12\n\
        sleep=0\nautorestart=1\ncolima_login=started\nautologin=me\nagent_loaded=yes\n\
        binary=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\
        docker_config={\"cliPluginsExtraDirs\":[\"/opt/homebrew/lib/docker/cli-plugins\"]}\n\
        ts_app=yes\nts_name=mini.tail1234.ts.net\n";

    #[test]
    fn a_macs_facts_read_as_what_it_has() {
        let f = parse(MAC);
        assert_eq!((f.os.as_str(), f.arch.as_str()), ("Darwin", "arm64"));
        assert_eq!(f.docker.as_deref(), Some("27.3.1"));
        assert!(!f.compose_registered && f.compose_plugin.is_some() && f.buildx_beside);
        assert_eq!(f.mem_total, Some(12_541_607_936));
        assert_eq!(f.colima_memory_gib, Some(12.0));
        assert_eq!(f.live_restore, Some(true));
        assert_eq!(f.autorestart.as_deref(), Some("1"));
        assert_eq!(f.autologin.as_deref(), Some("me"));
        assert!(f.agent_loaded && !f.filevault_on && !f.systemctl);
        assert!(f.docker_config.contains("cliPluginsExtraDirs"));
        assert!(f.tailscale.app && !f.tailscale.daemon_at_boot);
        assert_eq!(f.tailscale.name, "mini.tail1234.ts.net");
    }

    #[test]
    fn what_the_host_did_not_print_is_unknown() {
        // a Linux host with no engine running: empty values are no value
        let f =
            parse("os=Linux\narch=x86_64\nhome=/home/me\nuser=me\ndocker=\nmem=\nsystemctl=yes\n");
        assert_eq!(f.docker, None);
        assert_eq!(f.mem_total, None);
        assert!(f.systemctl);
        assert_eq!((f.sleep, f.live_restore, f.binary_sha), (None, None, None));
        assert!(!f.tailscale.app && f.tailscale.name.is_empty());
        // Colima's memory in bytes (newer Colima) reads as GiB too
        assert_eq!(parse("colima=8589934592\n").colima_memory_gib, Some(8.0));
        // no home printed: `~`
        assert_eq!(parse("").home, "~");
    }
}
