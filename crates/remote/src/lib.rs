//! The transport to the host: the system OpenSSH client, through one multiplexed master
//! connection per command run, so that `~/.ssh/config`, ssh-agent, ProxyJump and known_hosts
//! work as users expect. Host keys are always checked.
//!
//! Invariant: this is the only crate that knows about OpenSSH. A `local` target runs the same
//! shell scripts on this machine, so every caller is written once for both.

use std::path::PathBuf;
use std::time::Duration;

/// Where commands run.
#[derive(Debug, Clone)]
// a few targets per command: their size does not matter, and a box would only add noise
// to every match
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// This machine's engine, no SSH.
    Local,
    Ssh(SshTarget),
}

#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Anything `ssh` accepts: `user@host`, an `~/.ssh/config` alias.
    pub destination: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// An OpenSSH configuration file in place of ~/.ssh/config (`-F`).
    pub config_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Keep-alive: a dead link is noticed after interval × count.
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
    /// How long the master outlives a command for the next one (`ControlPersist`), in a
    /// private directory; zero: a master per session, closed with it.
    pub persist: Duration,
    /// The address to connect to in place of the destination's (`Hostname`): the relay's
    /// loopback for a way through a relay.
    pub hostname: Option<String>,
    /// How to reach `hostname` (`ProxyCommand`): through the relay.
    pub proxy_command: Option<String>,
    /// The name the host's key is checked under (`HostKeyAlias`): every way to one host
    /// checks the same recorded key.
    pub host_key_alias: Option<String>,
    /// What this way is, for messages (`through the relay me@vps`); `None` for the first.
    pub via: Option<String>,
}

impl SshTarget {
    pub fn new(destination: impl Into<String>) -> SshTarget {
        SshTarget {
            destination: destination.into(),
            port: None,
            identity_file: None,
            known_hosts_file: None,
            config_file: None,
            connect_timeout: Duration::from_secs(10),
            // a dead link is noticed within about 9-12 s (measured in the tunnel test)
            keepalive_interval: Duration::from_secs(3),
            keepalive_count: 3,
            persist: Duration::from_secs(300),
            hostname: None,
            proxy_command: None,
            host_key_alias: None,
            via: None,
        }
    }

    /// This way, for messages: the destination, and how it is reached when not directly.
    pub fn describe(&self) -> String {
        match &self.via {
            Some(v) => format!("{} ({v})", self.destination),
            None => self.destination.clone(),
        }
    }

    /// The host name as the user wrote it, for messages.
    pub fn host_name(&self) -> &str {
        self.destination
            .rsplit('@')
            .next()
            .unwrap_or(&self.destination)
    }

    /// What OpenSSH makes of this target (`ssh -G`: the user's ~/.ssh/config applied):
    /// the real host name, port, user, identity and known-hosts files, `ProxyJump` and
    /// `HostKeyAlias`. `None` when ssh cannot say.
    pub fn resolve(&self) -> Option<Resolved> {
        let out = std::process::Command::new("ssh")
            .args(self.base_args())
            .arg("-G")
            .arg(&self.destination)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(Resolved::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Options shared by the master and every command: checking, timeouts, keep-alive.
    pub fn base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if let Some(f) = &self.config_file {
            a.push("-F".into());
            a.push(f.display().to_string());
        }
        a.extend([
            "-o".to_string(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)),
            "-o".into(),
            format!(
                "ServerAliveInterval={}",
                self.keepalive_interval.as_secs().max(1)
            ),
            "-o".into(),
            format!("ServerAliveCountMax={}", self.keepalive_count),
        ]);
        if let Some(p) = self.port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        if let Some(i) = &self.identity_file {
            a.push("-i".into());
            a.push(i.display().to_string());
            a.push("-o".into());
            a.push("IdentitiesOnly=yes".into());
        }
        if let Some(k) = &self.known_hosts_file {
            a.push("-o".into());
            a.push(format!("UserKnownHostsFile={}", k.display()));
        }
        for (key, value) in [
            ("Hostname", &self.hostname),
            ("ProxyCommand", &self.proxy_command),
            ("HostKeyAlias", &self.host_key_alias),
        ] {
            if let Some(v) = value {
                a.push("-o".into());
                a.push(format!("{key}={v}"));
            }
        }
        a
    }

    /// The command that carries a connection to `%h:%p` through this target (`ssh -W`), for
    /// another target's `ProxyCommand`: every option of this one, quoted for the shell.
    pub fn proxy_command(&self) -> String {
        let mut words: Vec<String> = vec!["ssh".into()];
        words.extend(self.base_args());
        words.extend(["-W".into(), "%h:%p".into(), self.destination.clone()]);
        words
            .iter()
            .map(|w| {
                if w == "%h:%p" {
                    w.clone()
                } else {
                    // ssh expands `%` tokens in a ProxyCommand: a literal one is `%%`
                    sh_quote(w).replace('%', "%%")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<SshTarget> for Target {
    fn from(t: SshTarget) -> Target {
        Target::Ssh(t)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local => f.write_str("local"),
            Target::Ssh(s) => f.write_str(&s.destination),
        }
    }
}

/// A target as OpenSSH resolves it (`ssh -G`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub hostname: String,
    pub port: u16,
    pub user: Option<String>,
    /// Every `identityfile` ssh would try, `~` as written.
    pub identity_files: Vec<String>,
    /// The user's known-hosts files, the first being where a new key goes.
    pub known_hosts: Vec<String>,
    pub proxy_jump: Option<String>,
    pub host_key_alias: Option<String>,
}

impl Resolved {
    pub fn parse(text: &str) -> Resolved {
        let mut r = Resolved {
            port: 22,
            ..Default::default()
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let v = v.trim().to_string();
            match k {
                "hostname" => r.hostname = v,
                "port" => r.port = v.parse().unwrap_or(22),
                "user" => r.user = Some(v),
                "identityfile" => r.identity_files.push(v),
                "userknownhostsfile" => {
                    r.known_hosts = v.split_whitespace().map(str::to_string).collect()
                }
                "proxyjump" if v != "none" => r.proxy_jump = Some(v),
                "hostkeyalias" if v != "none" => r.host_key_alias = Some(v),
                _ => {}
            }
        }
        r
    }

    /// How the host's key is named in a known-hosts file: `HostKeyAlias`, or the host name,
    /// bracketed with the port when it is not 22.
    pub fn known_hosts_entry(&self) -> String {
        match (&self.host_key_alias, self.port) {
            (Some(a), _) => a.clone(),
            (None, 22) => self.hostname.clone(),
            (None, p) => format!("[{}]:{p}", self.hostname),
        }
    }

    /// The known-hosts file a new key goes to.
    pub fn known_hosts_file(&self) -> String {
        self.known_hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "~/.ssh/known_hosts".into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "the host key of `{host}` is not known{}; homebase never accepts an unknown key. If it is your host, check the fingerprint and add it: {add}",
        fingerprint.as_ref().map(|f| format!(" (it offers {f})")).unwrap_or_default(),
    )]
    HostKeyUnknown {
        host: String,
        fingerprint: Option<String>,
        /// The command that records the key (built from `ssh -G`).
        add: String,
    },
    #[error(
        "the host key of `{host}` has CHANGED since it was recorded{}: this may be an attack, or a reinstalled host. If you know why, remove the old key with `{remove}` and add the new one",
        fingerprint.as_ref().map(|f| format!(" (it now offers {f})")).unwrap_or_default()
    )]
    HostKeyChanged {
        host: String,
        fingerprint: Option<String>,
        /// The command that removes the recorded key (built from `ssh -G`).
        remove: String,
    },
    #[error(
        "`{host}` refused the SSH key for `{destination}`: check the user name and identity_file, or install the key with `ssh-copy-id {destination}`"
    )]
    AuthFailed { host: String, destination: String },
    #[error(
        "the host name `{host}` does not resolve ({detail}): check `[host] ssh` in homebase.toml and any `Host {host}` block in ~/.ssh/config (`ssh -G {host}` shows what OpenSSH makes of it)"
    )]
    Unresolved { host: String, detail: String },
    #[error(
        "cannot reach `{host}` over SSH within {timeout_secs}s: {detail}; is the host on and its sshd running?"
    )]
    Unreachable {
        host: String,
        timeout_secs: u64,
        detail: String,
    },
    #[error("on `{host}`: `{command}` failed ({status}){}", if stderr.trim().is_empty() { String::new() } else { format!(": {}", stderr.trim()) })]
    Command {
        host: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{program}` for `{host}`")]
    Spawn {
        host: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the SSH connection to `{host}` was lost: {detail}")]
    Lost { host: String, detail: String },
    #[error(
        "on `{host}`: `{command}` did not finish within {secs}s (a hung engine or a stalled link?); it was stopped"
    )]
    Timeout {
        host: String,
        command: String,
        secs: u64,
    },
}

impl RemoteError {
    /// A command that failed because the host's Docker engine did not answer (the CLI's own
    /// words for a socket with nobody behind it): the host failed, not the request.
    pub fn engine_unreachable(&self) -> bool {
        let RemoteError::Command { stderr, .. } = self else {
            return false;
        };
        [
            "Cannot connect to the Docker daemon",
            "Is the docker daemon running?",
            "error during connect",
        ]
        .iter()
        .any(|m| stderr.contains(m))
    }
}

/// How long one script may run before it is stopped, unless the caller says otherwise:
/// nothing may hang forever (with a deploy lock held, say). `HOMEBASE_STEP_TIMEOUT_SECS`
/// overrides it.
pub const STEP_DEADLINE: Duration = Duration::from_secs(600);

/// The deadline of one step: [`STEP_DEADLINE`], or `HOMEBASE_STEP_TIMEOUT_SECS`.
pub fn default_deadline() -> Duration {
    std::env::var("HOMEBASE_STEP_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(STEP_DEADLINE)
}

mod master;
mod session;
mod stream;
mod tunnel;
mod ways;

pub use session::*;
pub use stream::*;
pub use tunnel::*;
pub use ways::*;

/// What every script starts with. A non-interactive SSH command reads no login files, and
/// on macOS it gets `PATH=/usr/bin:/bin:/usr/sbin:/sbin` (launchd gives its agents the
/// same), so the places where Homebrew (Apple silicon, then Intel), Docker Desktop and Rancher
/// Desktop install their tools are appended after the user's own PATH, when they exist.
pub const PATH_PRELUDE: &str = "umask 077; for d in /opt/homebrew/bin /usr/local/bin /Applications/Docker.app/Contents/Resources/bin \"$HOME/.docker/bin\" \"$HOME/.rd/bin\"; do case \":$PATH:\" in *\":$d:\"*) ;; *) [ -d \"$d\" ] && PATH=\"$PATH:$d\";; esac; done; export PATH\n";

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_openssh_resolves_names_the_known_hosts_entry() {
        let r = super::Resolved::parse(
            "user hb8\nhostname 10.233.8.2\nport 2222\nidentityfile ~/.ssh/id_ed25519\nidentityfile ~/.ssh/id_rsa\nuserknownhostsfile /tmp/kh ~/.ssh/known_hosts2\nproxyjump none\nhostkeyalias none\n",
        );
        assert_eq!(r.hostname, "10.233.8.2");
        assert_eq!(r.user.as_deref(), Some("hb8"));
        assert_eq!(r.identity_files.len(), 2);
        assert_eq!(r.proxy_jump, None);
        assert_eq!(r.known_hosts_entry(), "[10.233.8.2]:2222");
        assert_eq!(r.known_hosts_file(), "/tmp/kh");
        let r = super::Resolved::parse(
            "hostname mini.lan\nport 22\nproxyjump relay\nhostkeyalias mini\n",
        );
        assert_eq!(r.known_hosts_entry(), "mini");
        assert_eq!(r.proxy_jump.as_deref(), Some("relay"));
        assert_eq!(r.known_hosts_file(), "~/.ssh/known_hosts");
    }

    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(sh_quote("plain-word_1.2"), "plain-word_1.2");
        assert_eq!(sh_quote("two words"), "'two words'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn local_target_runs_scripts_here() {
        let s = Session::open(&Target::Local).unwrap();
        assert_eq!(s.check("echo hi; echo there >&2").unwrap(), "hi\n");
        let e = s.check("echo boom >&2; exit 3").unwrap_err();
        assert!(
            e.to_string().contains("`echo boom >&2; exit 3` failed"),
            "{e}"
        );
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(s.check_with_input("cat", b"piped").unwrap(), "piped");
    }
}
