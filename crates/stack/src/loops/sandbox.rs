//! `loops.NAME.sandbox`: the walls of an iteration's container, hardened by default, and
//! the host paths no mount may reach.

use serde::Deserialize;

/// The capabilities an iteration keeps by default: enough for a root process in the image
/// to own, read and write its own files and switch users (package managers, `su`); nothing
/// that reaches the network stack, devices, the kernel or other processes' namespaces.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// Capabilities that would hand an agent the host (`sandbox.capabilities` refuses them).
const REFUSED_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_BOOT",
    "DAC_READ_SEARCH",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "BPF",
    "PERFMON",
    "NET_ADMIN",
    "SYSLOG",
];

/// `[loops.NAME.sandbox]`: what an iteration container may do. The agent in it runs with
/// every permission and reads untrusted text, so by default it gets no new privileges,
/// only [`DEFAULT_CAPABILITIES`], a pids limit, its own network namespace, and the
/// workspace as the only writable host path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Capabilities added to the default set (`NET_RAW`, `NET_BIND_SERVICE`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `false` lets setuid binaries in the image gain privileges (`sudo` inside).
    #[serde(default = "super::default_true")]
    pub no_new_privileges: bool,
    /// Most processes (and threads) at once; `0` for no limit.
    #[serde(default = "default_pids")]
    pub pids_limit: u32,
    /// `bridge` (default, the engine's NAT network), `none`, or a user network's name.
    /// `host` is refused: the agent would reach every port on the host.
    #[serde(default = "default_network")]
    pub network: String,
    /// Extra host paths, `SRC:DST`, always mounted read-only (credentials, a git config).
    #[serde(default)]
    pub mounts: Vec<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            capabilities: Vec::new(),
            no_new_privileges: true,
            pids_limit: default_pids(),
            network: default_network(),
            mounts: Vec::new(),
        }
    }
}

fn default_pids() -> u32 {
    1024
}
fn default_network() -> String {
    "bridge".into()
}

impl Sandbox {
    /// The capabilities the container keeps (default set plus the configured ones).
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        for c in &self.capabilities {
            let c = normalize_cap(c);
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    }

    /// Each extra mount as (host path, container path).
    pub fn mount_pairs(&self) -> Vec<(String, String)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let m = m.strip_suffix(":ro").unwrap_or(m);
                m.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect()
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), String> {
        for c in &self.capabilities {
            let n = normalize_cap(c);
            let valid = !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            if !valid {
                return Err(format!(
                    "loops.{name}.sandbox.capabilities: `{c}` is not a capability name (for example \"NET_RAW\")"
                ));
            }
            if REFUSED_CAPABILITIES.contains(&n.as_str()) {
                return Err(format!(
                    "loops.{name}.sandbox.capabilities: `{c}` would give the agent the host; \
                     run such work as a compose service you control instead of an agent loop"
                ));
            }
        }
        let net = self.network.trim();
        if net == "host" || net.starts_with("container:") {
            return Err(format!(
                "loops.{name}.sandbox.network = \"{net}\": an agent must not share the host's \
                 (or another container's) network; use \"bridge\" (default), \"none\" or a network's name"
            ));
        }
        if net.is_empty() {
            return Err(format!(
                "loops.{name}.sandbox.network is empty: leave it out for \"bridge\""
            ));
        }
        for m in &self.mounts {
            let spec = m.strip_suffix(":ro").unwrap_or(m);
            if m.ends_with(":rw") {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: extra mounts are read-only; the workspace is \
                     the only writable host path (put what the agent writes there)"
                ));
            }
            let Some((src, dst)) = spec.split_once(':') else {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: write it as \"HOST_PATH:CONTAINER_PATH\""
                ));
            };
            if !(src.starts_with('/') || src.starts_with("~/")) || !dst.starts_with('/') {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{m}`: the host path must be absolute or `~/…`, \
                     the container path absolute"
                ));
            }
            if let Some(why) = refused_mount(src, None, &[]) {
                return Err(format!(
                    "loops.{name}.sandbox.mounts: `{src}` {why}; mount only the files the agent needs"
                ));
            }
        }
        Ok(())
    }
}

/// `path` with `.` and `..` resolved by their names (no filesystem access), `~` kept as
/// the first component; `None` when `..` would climb above the root.
pub fn normalize_path(path: &str) -> Option<String> {
    let (lead, rest) = match path.strip_prefix('~') {
        Some(r) if r.is_empty() || r.starts_with('/') => ("~", r),
        _ => ("", path),
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(format!("{lead}/{}", parts.join("/")))
}

/// Directories under home that hold the keys to the host (ssh keys, homebase's token and
/// state, engine credentials and the VM with the engine).
const PRIVATE_UNDER_HOME: &[&str] = &[
    ".ssh",
    ".homebase",
    ".docker",
    ".colima",
    ".gnupg",
    ".aws",
    ".kube",
    ".config/gh",
];
/// System paths an agent must not see any part of.
const PRIVATE_SYSTEM: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/private/etc",
    "/private/var/run",
];

fn is_within(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

/// Why an extra read-only mount of `src` would hand the agent the host, or `None`.
/// Refused: a path that is, contains or lies inside `~/.ssh`, `~/.homebase`, `~/.docker`,
/// `~/.colima` (and the like), `/etc` and the system's virtual trees, the engine's data root
/// or socket (`private`: the daemon passes the real ones), any `.sock`; a path that is home
/// itself or contains it. `home`: the host's home when known (the daemon, after resolving
/// links); on the laptop `~` and `/home/USER`, `/Users/USER`, `/root` stand for it.
pub fn refused_mount(src: &str, home: Option<&str>, private: &[&str]) -> Option<String> {
    let Some(p) = normalize_path(src) else {
        return Some("climbs above the root with `..`".into());
    };
    let p = match (home, p.strip_prefix('~')) {
        (Some(h), Some(rest)) => format!("{}{rest}", h.trim_end_matches('/')),
        _ => p,
    };
    let p = p.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    // the homes this path may be: `~`, the host's, or the usual places of one
    let mut homes: Vec<String> = vec!["~".into()];
    if let Some(h) = home {
        homes.push(h.trim_end_matches('/').to_string());
    }
    let homeish = |d: &str| {
        homes.iter().any(|h| h == d)
            || d == "/root"
            || (d.split('/').filter(|c| !c.is_empty()).count() == 2
                && (d.starts_with("/home/") || d.starts_with("/Users/")))
    };
    if p == "/" || p == "~" || homeish(p) || ["/home", "/Users"].contains(&p) {
        return Some(
            "is a home directory or contains one (its keys and homebase's token with it)".into(),
        );
    }
    if let Some(h) = home
        && is_within(h.trim_end_matches('/'), p)
    {
        return Some("contains the home directory (its keys and homebase's token with it)".into());
    }
    if p.ends_with(".sock") || p.contains("docker.sock") {
        return Some("is a socket: an engine's socket is the host".into());
    }
    if comps.iter().any(|c| PRIVATE_UNDER_HOME.contains(c)) || p.contains("/.config/gh") {
        return Some(
            "is or lies in a directory of keys (ssh, homebase, the engine, its VM)".into(),
        );
    }
    for d in PRIVATE_SYSTEM
        .iter()
        .copied()
        .chain(private.iter().copied())
    {
        let d = d.trim_end_matches('/');
        if d.is_empty() {
            continue;
        }
        if is_within(p, d) || is_within(d, p) {
            return Some(format!(
                "is, contains or lies in `{d}` (the host's system or the engine)"
            ));
        }
    }
    // a directory holding a home's private directories: `/home/u/..` spelled otherwise
    for h in &homes {
        for d in PRIVATE_UNDER_HOME {
            if is_within(&format!("{h}/{d}"), p) {
                return Some(format!("contains `{h}/{d}`"));
            }
        }
    }
    None
}

fn normalize_cap(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
}
