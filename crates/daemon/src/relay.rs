//! The way in from anywhere: a reverse SSH tunnel from this host to a relay (any SSH server
//! both the laptop and the host reach), so that the laptop reaches this host's sshd through
//! the relay's loopback while no port at home is open.
//!
//! `homebase setup` writes the settings (`daemon/relay.json`), the host's key for the relay
//! and the relay's host key (`relay/`). This task keeps `ssh -R` running: back within two
//! seconds of a failure, the relay's host key always checked (`StrictHostKeyChecking`, the
//! key the laptop knows), a dead link noticed by keep-alives within about 15 s. A relay that
//! still holds the port for a session that died unseen (a power cut, a changed address) is
//! told to end it: each tunnel's session writes its sshd's pid on the relay, and a refused
//! forward ends that process (only an sshd of this account) before the next attempt. Its
//! state goes to `daemon/relay-state.json`; down for more than [`ALERT_AFTER`] is a
//! `relay_down` alert to every project, resolved when the tunnel is back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use homebase_proto::clock::now_secs;
use homebase_proto::layout;
use homebase_proto::relay::{RelaySettings, RelayState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Down (or never up) this long: an alert.
const ALERT_AFTER: Duration = Duration::from_secs(20);
/// The longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often the settings file is looked at.
const SETTINGS_EVERY: Duration = Duration::from_secs(2);
/// What the relay side prints once the forward is in place.
const UP_MARK: &str = "homebase-relay-up";

/// The files the tunnel needs, under homebase's directory on this host.
struct Files {
    settings: PathBuf,
    state: PathBuf,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Files {
    fn new(home: &Path, state_dir: &Path) -> Files {
        let relay = home.join(layout::RELAY_DIR);
        Files {
            settings: state_dir.join(layout::RELAY_SETTINGS),
            state: state_dir.join(layout::RELAY_STATE),
            key: relay.join("id_ed25519"),
            known_hosts: relay.join("known_hosts"),
        }
    }

    fn settings(&self) -> Option<RelaySettings> {
        let text = std::fs::read_to_string(&self.settings).ok()?;
        match serde_json::from_str::<RelaySettings>(&text) {
            // the destination becomes an argument of ssh: never an option
            Ok(s) if s.plain_destination() => Some(s),
            Ok(s) => {
                tracing::warn!(
                    "ignoring `{}`: the destination {:?} is not `user@host`",
                    self.settings.display(),
                    s.destination
                );
                None
            }
            Err(e) => {
                tracing::warn!("ignoring `{}`: {e}", self.settings.display());
                None
            }
        }
    }
}

/// The ssh options of every connection to the relay: this host's own key and the relay's
/// key as the laptop knows it, nothing from the user's ssh configuration.
fn ssh_args(f: &Files, s: &RelaySettings) -> Vec<String> {
    let mut a: Vec<String> = vec!["-F".into(), "/dev/null".into()];
    for o in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".into(),
        format!("UserKnownHostsFile={}", f.known_hosts.display()),
        format!("HostKeyAlias={}", layout::RELAY_KEY_ALIAS),
        "IdentitiesOnly=yes".into(),
        format!("IdentityFile={}", f.key.display()),
        "ConnectTimeout=5".into(),
        "ServerAliveInterval=5".into(),
        "ServerAliveCountMax=2".into(),
        "ControlMaster=no".into(),
        "ControlPath=none".into(),
        "LogLevel=ERROR".into(),
    ] {
        a.push("-o".into());
        a.push(o);
    }
    a.extend(["-p".into(), s.port.to_string(), "-T".into()]);
    a
}

/// The pid file of a tunnel's session on the relay (in the relay account's home).
fn pid_file(s: &RelaySettings) -> String {
    format!(".homebase-relay-{}.pid", s.listen_port)
}

/// The command the tunnel's session runs on the relay: notes its sshd's pid, says the
/// forward is up, then waits (as long as the connection lives).
fn tunnel_command(s: &RelaySettings) -> String {
    format!(
        "exec sh -c 'echo $PPID > {p}; echo {UP_MARK}; while sleep 3600; do :; done'",
        p = pid_file(s)
    )
}

/// Ends the session that still holds the port on the relay: the pid it noted, when that
/// is an sshd of this account.
fn end_stale_command(s: &RelaySettings) -> String {
    format!(
        "exec sh -c 'p=$(cat {p} 2>/dev/null) || exit 0; case $(ps -o comm= -p \"$p\" 2>/dev/null) in sshd*) kill \"$p\";; esac; rm -f {p}'",
        p = pid_file(s)
    )
}

/// The task: keeps the tunnel up while settings exist, until `cancel`.
pub async fn run(shared: Arc<Shared>, state_dir: PathBuf, cancel: CancellationToken) {
    let files = Files::new(&shared.home, &state_dir);
    let mut state = RelayState::default();
    let mut failing_since: Option<std::time::Instant> = None;
    let mut alerted = false;
    let mut retry = Duration::from_millis(500);
    loop {
        let Some(settings) = files.settings() else {
            if state.state != "off" && std::fs::remove_file(&files.state).is_ok() {
                tracing::info!("relay settings removed: no tunnel");
            }
            state.state = "off".into();
            if sleep_or_cancel(SETTINGS_EVERY, &cancel).await {
                return;
            }
            continue;
        };
        if state.state != "down" {
            // while down, the state stays `down` (with the last reason) until it is up
            set(&files, &mut state, &settings, "connecting", "");
        }
        let outcome = tunnel_once(&files, &settings, &mut state, &shared, &cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        let was_up = matches!(outcome, Outcome::Ended { was_up: true, .. });
        if was_up {
            // it was up: the next failure starts a new count
            failing_since = None;
            retry = Duration::from_millis(500);
            alerted = false;
        }
        let error = match outcome {
            Outcome::SettingsChanged => continue,
            Outcome::Ended { error, .. } => error,
        };
        if error.contains("remote port forwarding failed") {
            // the relay still holds the port for a session that died unseen
            end_stale(&files, &settings).await;
            retry = Duration::from_millis(200);
        }
        set(&files, &mut state, &settings, "down", &error);
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        if !alerted && since.elapsed() >= ALERT_AFTER {
            alerted = true;
            alert_all(
                &shared,
                true,
                &format!(
                    "the reverse tunnel to the relay {} is down: {}; the laptop cannot reach this host from away until it is back",
                    settings.destination,
                    if error.is_empty() { "no reason given" } else { &error }
                ),
            )
            .await;
        }
        if sleep_or_cancel(retry, &cancel).await {
            return;
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

enum Outcome {
    /// The settings file changed: start again with the new ones.
    SettingsChanged,
    /// ssh ended; `error` is its last line of complaint.
    Ended { was_up: bool, error: String },
}

/// One run of `ssh -R` until it ends, the settings change or `cancel`.
async fn tunnel_once(
    files: &Files,
    s: &RelaySettings,
    state: &mut RelayState,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) -> Outcome {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(ssh_args(files, s))
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!(
            "127.0.0.1:{}:127.0.0.1:{}",
            s.listen_port, s.to_port
        ))
        .arg(&s.destination)
        .arg(tunnel_command(s))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Ended {
                was_up: false,
                error: format!("cannot run ssh: {e}"),
            };
        }
    };
    let mut lines = child.stdout.take().map(|o| BufReader::new(o).lines());
    let mut stderr = child.stderr.take();
    let mut was_up = false;
    let mut tick = tokio::time::interval(SETTINGS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = child.kill().await;
                return Outcome::Ended { was_up, error: String::new() };
            }
            _ = tick.tick() => {
                if files.settings().as_ref() != Some(s) {
                    let _ = child.kill().await;
                    return Outcome::SettingsChanged;
                }
            }
            line = async {
                match lines.as_mut() {
                    Some(l) => l.next_line().await,
                    None => std::future::pending().await,
                }
            } => {
                match line {
                    Ok(Some(l)) if l.trim() == UP_MARK && !was_up => {
                        was_up = true;
                        state.connects += 1;
                        set(files, state, s, "up", "");
                        tracing::info!("reverse tunnel up: {}:{} on the relay {}", "127.0.0.1", s.listen_port, s.destination);
                        alert_all(shared, false, &format!("the reverse tunnel to the relay {} is up", s.destination)).await;
                    }
                    Ok(Some(_)) => {}
                    // stdout closed: ssh is ending
                    _ => lines = None,
                }
            }
            status = child.wait() => {
                let mut err = String::new();
                if let Some(e) = stderr.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_millis(200), e.read_to_string(&mut err)).await;
                }
                let error = last_complaint(&err, status.ok());
                tracing::info!("reverse tunnel to {} ended: {error}", s.destination);
                return Outcome::Ended { was_up, error };
            }
        }
    }
}

/// ssh's last meaningful stderr line, or the exit status.
fn last_complaint(stderr: &str, status: Option<std::process::ExitStatus>) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_else(|| match status {
            Some(s) => format!("ssh ended ({s})"),
            None => "ssh ended".into(),
        })
}

/// Ends the relay's stale session for this port (best effort, 10 s at most).
async fn end_stale(files: &Files, s: &RelaySettings) {
    let run = tokio::process::Command::new("ssh")
        .args(ssh_args(files, s))
        .arg(&s.destination)
        .arg(end_stale_command(s))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(st)) if st.success() => {
            tracing::info!("ended the relay's stale session on port {}", s.listen_port);
        }
        other => tracing::warn!("could not end the relay's stale session: {other:?}"),
    }
}

/// Records a state change in the state file (when it changed).
fn set(files: &Files, state: &mut RelayState, s: &RelaySettings, to: &str, error: &str) {
    if state.state == to
        && state.error == error
        && state.destination == s.destination
        && state.listen_port == s.listen_port
    {
        return;
    }
    if state.state != to {
        state.since = now_secs();
    }
    state.state = to.into();
    state.error = error.into();
    state.destination = s.destination.clone();
    state.listen_port = s.listen_port;
    let write = || -> std::io::Result<()> {
        let tmp = files.state.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())?;
        std::fs::rename(&tmp, &files.state)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot write `{}`: {e}", files.state.display());
    }
}

/// The relay's alert to every project (`firing`), or its resolution.
async fn alert_all(shared: &Arc<Shared>, firing: bool, message: &str) {
    let mem_total = shared.snapshot.read().await.mem_total;
    let (projects, _) = shared.projects(mem_total);
    for p in projects {
        if firing {
            shared.alert(&p.name, "", "relay_down", message).await;
        } else if shared
            .alerts
            .lock()
            .await
            .is_active(&p.name, "", "relay_down")
        {
            shared.resolve(&p.name, "", "relay_down", message).await;
        } else {
            shared.event(&p.name, "", "relay_up", message).await;
        }
    }
}

/// Sleeps, or returns true at `cancel`.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RelaySettings {
        RelaySettings {
            destination: "me@relay.example.com".into(),
            port: 22,
            listen_port: 2222,
            to_port: 22,
        }
    }

    #[test]
    fn the_tunnel_checks_the_relays_key_and_ignores_the_users_config() {
        let f = Files::new(Path::new("/Users/me/.homebase"), Path::new("/d"));
        let a = ssh_args(&f, &settings()).join(" ");
        assert!(a.starts_with("-F /dev/null "), "{a}");
        for o in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/Users/me/.homebase/relay/known_hosts",
            "HostKeyAlias=homebase-relay",
            "IdentityFile=/Users/me/.homebase/relay/id_ed25519",
            "BatchMode=yes",
        ] {
            assert!(a.contains(o), "{o} missing from {a}");
        }
    }

    #[test]
    fn only_an_sshd_of_the_account_is_ended_on_the_relay() {
        let c = end_stale_command(&settings());
        assert!(c.contains(".homebase-relay-2222.pid"), "{c}");
        assert!(c.contains("sshd*) kill"), "{c}");
        assert!(tunnel_command(&settings()).contains("echo $PPID > .homebase-relay-2222.pid"));
    }

    #[test]
    fn the_last_complaint_is_sshs_last_line() {
        assert_eq!(
            last_complaint(
                "Warning: x\nError: remote port forwarding failed for listen port 2222\n\n",
                None
            ),
            "Error: remote port forwarding failed for listen port 2222"
        );
        assert_eq!(last_complaint("", None), "ssh ended");
    }
}
