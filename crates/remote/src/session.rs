//! A connection to the host, and the commands it runs.

use super::PATH_PRELUDE;
use super::RemoteError;
use super::SshTarget;
use super::Target;
use super::default_deadline;
use super::sh_quote;
use crate::master::{
    Control, exit_master, master_alive, note_path, shared_socket, start_master,
    sweep_empty_control_dirs,
};
use crate::stream::Stream;
use std::io::{Read, Write};
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;

/// A connection to the host.
pub struct Session {
    pub(crate) target: Target,
    pub(crate) control: Option<Control>,
}

impl Session {
    /// Opens the master connection (or nothing, for `local`), checking the host key; with
    /// `persist`, reuses a master an earlier command left open (no handshake at all).
    pub fn open(target: &Target) -> Result<Session, RemoteError> {
        let Target::Ssh(t) = target else {
            return Ok(Session {
                target: target.clone(),
                control: None,
            });
        };
        let shared = (!t.persist.is_zero()).then(|| shared_socket(t)).flatten();
        if let Some(socket) = shared {
            if master_alive(t, &socket) {
                return Ok(Session {
                    target: target.clone(),
                    control: Some(Control::Shared(socket)),
                });
            }
            // a socket whose master is gone
            let _ = std::fs::remove_file(&socket);
            start_master(t, &socket, &format!("{}s", t.persist.as_secs().max(1)))?;
            if master_alive(t, &socket) {
                return Ok(Session {
                    target: target.clone(),
                    control: Some(Control::Shared(socket)),
                });
            }
            // another command won the race to the socket: use a master of our own
        }
        // Short path: control sockets are limited to ~100 bytes (macOS temp dirs are long).
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("hb-")
            .tempdir_in(&base)
            .map_err(|source| RemoteError::Spawn {
                host: t.destination.clone(),
                program: "mktemp".into(),
                source,
            })?;
        sweep_empty_control_dirs(&base);
        let socket = dir.path().join("c");
        // The master ends with the session (`-O exit`); should this process be killed, it
        // ends by itself a minute after its last command (and removes its socket).
        start_master(t, &socket, "60")?;
        Ok(Session {
            target: target.clone(),
            control: Some(Control::Own { socket, _dir: dir }),
        })
    }

    /// A note about the host kept beside the warm connection (the daemon's endpoint, say),
    /// so that a later command can use it without asking first; `None` without a warm
    /// connection or the note. Callers check what a note says before they rely on it.
    pub fn note(&self, key: &str) -> Option<String> {
        let Some(Control::Shared(socket)) = &self.control else {
            return None;
        };
        let text = std::fs::read_to_string(note_path(socket, key)?).ok()?;
        Some(text.trim().to_string())
    }

    /// Keeps a note (see [`Session::note`]); best effort, and only with a warm connection.
    pub fn set_note(&self, key: &str, value: &str) {
        if let Some(Control::Shared(socket)) = &self.control
            && let Some(path) = note_path(socket, key)
        {
            let _ = std::fs::write(path, value);
        }
    }

    /// Ends a shared master now (the next command opens a new connection).
    pub fn close_shared(&self) {
        if let (Target::Ssh(t), Some(Control::Shared(socket))) = (&self.target, &self.control) {
            exit_master(t, socket);
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn host(&self) -> String {
        self.target.to_string()
    }

    /// A `Command` that runs `script` with `sh -c` on the host (through the master).
    pub fn command(&self, script: &str, tty: bool) -> Command {
        match (&self.target, &self.control) {
            (Target::Ssh(t), Some(control)) => {
                let socket = control.socket();
                let mut c = Command::new("ssh");
                c.args(t.base_args())
                    .arg("-S")
                    .arg(socket)
                    .args(["-o", "ControlMaster=no"]);
                if tty {
                    c.arg("-t");
                }
                c.arg(&t.destination).arg("--").arg(format!(
                    "sh -c {}",
                    sh_quote(&format!("{PATH_PRELUDE}{script}"))
                ));
                c
            }
            _ => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("{PATH_PRELUDE}{script}"));
                c
            }
        }
    }

    /// Starts `script` with stdin, stdout and stderr piped; `own_group`: in a process group
    /// of its own (a Ctrl-C on the terminal does not reach it).
    fn spawn_piped(&self, script: &str, own_group: bool) -> Result<Child, RemoteError> {
        use std::os::unix::process::CommandExt;
        let mut c = self.command(script, false);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            c.process_group(0);
        }
        c.spawn().map_err(|source| RemoteError::Spawn {
            host: self.host(),
            program: "ssh".into(),
            source,
        })
    }

    /// Runs a script, feeding `input` on stdin; returns its output whatever the status.
    /// Stopped after the default step deadline.
    pub fn run_with_input(&self, script: &str, input: &[u8]) -> Result<Output, RemoteError> {
        self.run_with_deadline(script, input, default_deadline())
    }

    /// As `run_with_input`, stopped (and an error naming the command) after `deadline`.
    pub fn run_with_deadline(
        &self,
        script: &str,
        input: &[u8],
        deadline: Duration,
    ) -> Result<Output, RemoteError> {
        let mut child = self.spawn_piped(script, false)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A closed pipe shows up as the command's failure below.
            let _ = stdin.write_all(input);
        }
        let out = wait_until(child, deadline).map_err(|e| match e {
            Waited::Late => RemoteError::Timeout {
                host: self.host(),
                command: first_line(script),
                secs: deadline.as_secs(),
            },
            Waited::Io(source) => RemoteError::Spawn {
                host: self.host(),
                program: "ssh".into(),
                source,
            },
        })?;
        // ssh exits 255 when the connection itself failed.
        if out.status.code() == Some(255) && matches!(self.target, Target::Ssh(_)) {
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if stderr.contains("Control socket")
                || stderr.contains("mux_client")
                || stderr.contains("Connection")
                || stderr.contains("Broken pipe")
                || stderr.trim().is_empty()
            {
                return Err(RemoteError::Lost {
                    host: self.host(),
                    detail: stderr.trim().to_string(),
                });
            }
        }
        Ok(out)
    }

    pub fn run(&self, script: &str) -> Result<Output, RemoteError> {
        self.run_with_input(script, b"")
    }

    /// Runs a script and returns stdout; a non-zero exit is an error naming the command.
    pub fn check(&self, script: &str) -> Result<String, RemoteError> {
        self.check_with_input(script, b"")
    }

    pub fn check_with_input(&self, script: &str, input: &[u8]) -> Result<String, RemoteError> {
        let out = self.run_with_input(script, input)?;
        if !out.status.success() {
            return Err(RemoteError::Command {
                host: self.host(),
                command: first_line(script),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Forwards a free local port to `remote` (`127.0.0.1:7780` as the host sees it) through
    /// the master; returns the local port. Local target: the address itself is reachable.
    pub fn forward_local(&self, remote_host: &str, remote_port: u16) -> Result<u16, RemoteError> {
        let (Target::Ssh(t), Some(control)) = (&self.target, &self.control) else {
            return Ok(remote_port);
        };
        let socket = control.socket();
        // OpenSSH takes no port 0 for -L: pick a free one (the window for a race is tiny).
        let local = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|source| RemoteError::Spawn {
                host: self.host(),
                program: "bind 127.0.0.1:0".into(),
                source,
            })?;
        let spec = format!("127.0.0.1:{local}:{remote_host}:{remote_port}");
        let out = Command::new("ssh")
            .arg("-S")
            .arg(socket)
            .args(["-O", "forward", "-L", &spec])
            .arg(&t.destination)
            .output()
            .map_err(|source| RemoteError::Spawn {
                host: self.host(),
                program: "ssh".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(RemoteError::Command {
                host: self.host(),
                command: format!("ssh -O forward -L {spec}"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            });
        }
        Ok(local)
    }

    /// Cancels a forward [`Session::forward_local`] made (best effort: the master may be
    /// gone).
    pub fn cancel_forward(&self, local: u16, remote_host: &str, remote_port: u16) {
        if let (Target::Ssh(t), Some(control)) = (&self.target, &self.control) {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(control.socket())
                .args([
                    "-O",
                    "cancel",
                    "-L",
                    &format!("127.0.0.1:{local}:{remote_host}:{remote_port}"),
                ])
                .arg(&t.destination)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Session {
    /// Starts `script` and streams its stdout line by line. The client runs in its own
    /// process group, so a Ctrl-C on the terminal reaches this process alone, which decides.
    pub fn stream(&self, script: &str) -> Result<Stream, RemoteError> {
        let mut child = self.spawn_piped(script, true)?;
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let Some(out) = stdout else { return };
            let mut reader = std::io::BufReader::new(out);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let err = child.stderr.take();
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut e) = err {
                let _ = e.read_to_end(&mut buf);
            }
            buf
        });
        Ok(Stream {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            host: self.host(),
            command: first_line(script),
            ssh: matches!(self.target, Target::Ssh(_)),
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Target::Ssh(t), Some(Control::Own { socket, .. })) = (&self.target, &self.control) {
            exit_master(t, socket);
        }
    }
}

pub(crate) enum Waited {
    Late,
    Io(std::io::Error),
}

/// Waits for a child whose stdout and stderr are piped (read on their own threads so that
/// neither pipe fills), killing it at `deadline`.
pub(crate) fn wait_until(
    mut child: std::process::Child,
    deadline: Duration,
) -> Result<Output, Waited> {
    use std::io::Read;
    fn drain(p: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        match child.try_wait().map_err(Waited::Io)? {
            Some(status) => break status,
            None if std::time::Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Waited::Late);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

pub(crate) fn first_line(script: &str) -> String {
    let line = script.trim().lines().next().unwrap_or("").trim();
    if line.len() > 120 {
        format!(
            "{}…",
            &line[..line
                .char_indices()
                .nth(117)
                .map(|(i, _)| i)
                .unwrap_or(line.len())]
        )
    } else {
        line.to_string()
    }
}

pub(crate) fn classify_connect_error(t: &SshTarget, stderr: &str) -> RemoteError {
    let host = t.host_name().to_string();
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        let fingerprint = stderr
            .lines()
            .find(|l| l.contains("SHA256:"))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("SHA256:")))
            .map(|s| s.trim_end_matches('.').to_string());
        // the entry and the file as OpenSSH names them (an alias, a port, a custom file, a
        // jump host's key rather than the target's): from its own words when it gives them
        let r = t.resolve().unwrap_or_else(|| fallback(t));
        let changed_for = stderr.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Host key for ")
                .and_then(|rest| rest.split_once(" has changed"))
                .map(|(h, _)| h.to_string())
        });
        let file = stderr
            .lines()
            .find_map(|l| l.split_once("Offending ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_once(" key in ").map(|(_, f)| f.trim()))
            .map(|f| f.rsplit_once(':').map_or(f, |(path, _)| path).to_string())
            .unwrap_or_else(|| r.known_hosts_file());
        let entry = changed_for.clone().unwrap_or_else(|| r.known_hosts_entry());
        let remove = format!("ssh-keygen -R {} -f {file}", crate::sh_quote(&entry));
        let host = match changed_for {
            Some(h) if h != r.known_hosts_entry() && h != r.hostname => {
                format!("{h}` (a jump host on the way to `{host}")
            }
            _ => host,
        };
        return RemoteError::HostKeyChanged {
            host,
            fingerprint,
            remove,
        };
    }
    if stderr.contains("Host key verification failed") || stderr.contains("host key is known") {
        let r = t.resolve().unwrap_or_else(|| fallback(t));
        let add = match &r.proxy_jump {
            // ssh-keyscan cannot go through a jump host: let ssh record it, once checked
            Some(_) => format!(
                "ssh -o StrictHostKeyChecking=accept-new {} true (it records the key in {})",
                crate::sh_quote(&t.destination),
                r.known_hosts_file()
            ),
            None => format!(
                "ssh-keyscan{} {} >> {}",
                if r.port == 22 {
                    String::new()
                } else {
                    format!(" -p {}", r.port)
                },
                crate::sh_quote(&r.hostname),
                r.known_hosts_file()
            ),
        };
        let fingerprint = r
            .proxy_jump
            .is_none()
            .then(|| offered_fingerprint(&r))
            .flatten();
        return RemoteError::HostKeyUnknown {
            fingerprint,
            add,
            host,
        };
    }
    if stderr.contains("Permission denied") {
        return RemoteError::AuthFailed {
            host,
            destination: t.destination.clone(),
        };
    }
    if let Some(line) = stderr.lines().find(|l| {
        l.contains("Could not resolve hostname")
            || l.contains("nodename nor servname provided")
            || l.contains("Name or service not known")
            || l.contains("Temporary failure in name resolution")
    }) {
        return RemoteError::Unresolved {
            host,
            detail: line.trim().trim_start_matches("ssh: ").to_string(),
        };
    }
    if stderr.contains("not responding") {
        let window = t.keepalive_interval.as_secs() * u64::from(t.keepalive_count);
        return RemoteError::Lost {
            host,
            detail: format!(
                "no answer to keep-alive for {window} s (the link or the host is down)"
            ),
        };
    }
    let detail = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning"))
        .unwrap_or("ssh failed without a message")
        .to_string();
    RemoteError::Unreachable {
        host,
        timeout_secs: t.connect_timeout.as_secs(),
        detail,
    }
}

/// What the target is when `ssh -G` cannot say: its own settings.
fn fallback(t: &SshTarget) -> crate::Resolved {
    crate::Resolved {
        hostname: t.host_name().to_string(),
        port: t.port.unwrap_or(22),
        known_hosts: t
            .known_hosts_file
            .iter()
            .map(|k| k.display().to_string())
            .collect(),
        ..Default::default()
    }
}

/// The fingerprint the host offers, read with ssh-keyscan at the host name and port OpenSSH
/// resolved (for the message only; never trusted).
pub(crate) fn offered_fingerprint(r: &crate::Resolved) -> Option<String> {
    let mut scan = Command::new("ssh-keyscan");
    scan.args(["-T", "5", "-t", "ed25519"]);
    if r.port != 22 {
        scan.args(["-p", &r.port.to_string()]);
    }
    let keys = scan.arg(&r.hostname).stderr(Stdio::null()).output().ok()?;
    if keys.stdout.is_empty() {
        return None;
    }
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(&keys.stdout).ok()?;
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .map(|s| format!("ED25519 {s}"))
}
