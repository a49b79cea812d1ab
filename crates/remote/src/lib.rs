//! The transport to the host: the system OpenSSH client, through one multiplexed master
//! connection per command run, so that `~/.ssh/config`, ssh-agent, ProxyJump and known_hosts
//! work as users expect. Host keys are always checked.
//!
//! Invariant: this is the only crate that knows about OpenSSH. A `local` target runs the same
//! shell scripts on this machine, so every caller is written once for both.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// Where commands run.
#[derive(Debug, Clone)]
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
    pub connect_timeout: Duration,
    /// Keep-alive: a dead link is noticed after interval × count.
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
    /// How long the master outlives a command for the next one (`ControlPersist`), in a
    /// private directory; zero: a master per session, closed with it.
    pub persist: Duration,
}

impl SshTarget {
    pub fn new(destination: impl Into<String>) -> SshTarget {
        SshTarget {
            destination: destination.into(),
            port: None,
            identity_file: None,
            known_hosts_file: None,
            connect_timeout: Duration::from_secs(10),
            // a dead link is noticed within about 9-12 s (measured in the tunnel test)
            keepalive_interval: Duration::from_secs(3),
            keepalive_count: 3,
            persist: Duration::from_secs(300),
        }
    }

    /// The host name as the user wrote it, for messages.
    pub fn host_name(&self) -> &str {
        self.destination
            .rsplit('@')
            .next()
            .unwrap_or(&self.destination)
    }

    /// Options shared by the master and every command: checking, timeouts, keep-alive.
    pub fn base_args(&self) -> Vec<String> {
        let mut a = vec![
            "-o".into(),
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
        ];
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
        a
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

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "the host key of `{host}` is not known{}; homebase never accepts an unknown key. If it is your host, check the fingerprint and add it: ssh-keyscan{} {host} >> {}",
        fingerprint.as_ref().map(|f| format!(" (it offers {f})")).unwrap_or_default(),
        port.map(|p| format!(" -p {p}")).unwrap_or_default(),
        known_hosts.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.ssh/known_hosts".into())
    )]
    HostKeyUnknown {
        host: String,
        port: Option<u16>,
        fingerprint: Option<String>,
        known_hosts: Option<PathBuf>,
    },
    #[error(
        "the host key of `{host}` has CHANGED since it was recorded{}: this may be an attack, or a reinstalled host. If you know why, remove the old key with `ssh-keygen -R {host}` and add the new one",
        fingerprint.as_ref().map(|f| format!(" (it now offers {f})")).unwrap_or_default()
    )]
    HostKeyChanged {
        host: String,
        fingerprint: Option<String>,
    },
    #[error(
        "`{host}` refused the SSH key for `{destination}`: check the user name and identity_file, or install the key with `ssh-copy-id {destination}`"
    )]
    AuthFailed { host: String, destination: String },
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

/// A connection to the host.
pub struct Session {
    target: Target,
    control: Option<Control>,
}

/// The master's control socket.
enum Control {
    /// This session's own master, closed with it (the directory is removed too).
    Own {
        socket: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// A master shared by the commands of a few minutes, in the user's private directory;
    /// it ends by itself once idle for `SshTarget::persist`.
    Shared(PathBuf),
}

impl Control {
    fn socket(&self) -> &Path {
        match self {
            Control::Own { socket, .. } | Control::Shared(socket) => socket,
        }
    }
}

/// Where shared masters keep their sockets: `HOMEBASE_SSH_CONTROL_DIR`, else `hb-u<uid>`
/// under /tmp (short: socket paths are limited to ~100 bytes), made 0700 and refused
/// unless it is this user's own and private.
fn shared_control_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let base = if Path::new("/tmp").is_dir() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    // this process's uid, as the owner of a file it creates
    let uid = tempfile::tempfile_in(&base).ok()?.metadata().ok()?.uid();
    let dir = match std::env::var_os("HOMEBASE_SSH_CONTROL_DIR") {
        Some(d) => PathBuf::from(d),
        None => base.join(format!("hb-u{uid}")),
    };
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// The shared socket of a target: one per destination, port, key and known_hosts.
fn shared_socket(t: &SshTarget) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &t.destination,
        t.port,
        &t.identity_file,
        &t.known_hosts_file,
    )
        .hash(&mut h);
    Some(shared_control_dir()?.join(format!("{:016x}", h.finish())))
}

/// Where a note of the warm connection on `socket` lives (keys are plain words).
fn note_path(socket: &Path, key: &str) -> Option<PathBuf> {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plain.then(|| socket.with_extension(key))
}

/// Sends a control command (`check`, `exit`) to the master on `socket`: a local exchange
/// over the socket, no network. True when the master answered.
fn control(t: &SshTarget, socket: &Path, op: &str) -> bool {
    Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", op])
        .arg(&t.destination)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a master answers on `socket`.
fn master_alive(t: &SshTarget, socket: &Path) -> bool {
    socket.exists() && control(t, socket, "check")
}

/// What every script starts with. A non-interactive SSH command reads no login files, and
/// on macOS it gets `PATH=/usr/bin:/bin:/usr/sbin:/sbin` (launchd gives its agents the
/// same), so the places where Homebrew (Apple silicon, then Intel), Docker Desktop and Rancher
/// Desktop install their tools are appended after the user's own PATH, when they exist.
pub const PATH_PRELUDE: &str = "for d in /opt/homebrew/bin /usr/local/bin /Applications/Docker.app/Contents/Resources/bin \"$HOME/.docker/bin\" \"$HOME/.rd/bin\"; do case \":$PATH:\" in *\":$d:\"*) ;; *) [ -d \"$d\" ] && PATH=\"$PATH:$d\";; esac; done; export PATH\n";

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

/// A script whose output is read line by line while it runs ([`Session::stream`]). Its
/// stdin stays open until the stream is closed or dropped, so a script may keep running as
/// long as this process lives (and no longer: when this process dies, stdin closes).
pub struct Stream {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<Vec<u8>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    host: String,
    command: String,
    ssh: bool,
}

/// What [`Stream::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One line of output, without its newline, and its length in bytes with the newline.
    Line(String, usize),
    /// The last bytes of the output, which did not end with a newline.
    Partial(String),
    /// Nothing within the wait.
    Idle,
    /// The output ended.
    End,
}

impl Stream {
    /// The next line, waiting at most `wait`.
    pub fn next(&mut self, wait: Duration) -> Next {
        match self.lines.recv_timeout(wait) {
            Ok(raw) => match raw.strip_suffix(b"\n") {
                Some(line) => Next::Line(String::from_utf8_lossy(line).into_owned(), raw.len()),
                None => Next::Partial(String::from_utf8_lossy(&raw).into_owned()),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Idle,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::End,
        }
    }

    /// Waits for the script to end (after its output ended): its status, or the lost
    /// connection when ssh itself failed.
    pub fn finish(mut self) -> Result<std::process::ExitStatus, RemoteError> {
        self.stdin.take();
        let status = self.child.wait().map_err(|source| RemoteError::Spawn {
            host: self.host.clone(),
            program: "ssh".into(),
            source,
        })?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).to_string();
        if self.ssh && status.code() == Some(255) {
            return Err(RemoteError::Lost {
                host: self.host.clone(),
                detail: stderr.trim().to_string(),
            });
        }
        if !status.success() {
            return Err(RemoteError::Command {
                host: self.host.clone(),
                command: self.command.clone(),
                status: status.to_string(),
                stderr,
            });
        }
        Ok(status)
    }

    /// Sends `data` to the script's stdin and closes it (the script sees end of input).
    pub fn send_input(&mut self, data: &[u8]) -> Result<(), RemoteError> {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take()
            && !data.is_empty()
        {
            // (not an io::Error in the chain: a broken pipe to ssh is a lost connection, not
            // the quiet end of this process's own output)
            stdin.write_all(data).map_err(|e| RemoteError::Lost {
                host: self.host.clone(),
                detail: format!("while sending the input of `{}`: {e}", self.command),
            })?;
        }
        Ok(())
    }

    /// Ends the script: closes its stdin (the host sees end of input once the client is
    /// gone) and stops the client without waiting for a round trip.
    pub fn close(mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
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

/// Starts a master on `socket` in the background, checking the host key.
fn start_master(t: &SshTarget, socket: &Path, persist: &str) -> Result<(), RemoteError> {
    let out = Command::new("ssh")
        .args(t.base_args())
        .args(["-M", "-S"])
        .arg(socket)
        .args(["-o", &format!("ControlPersist={persist}"), "-f", "-N"])
        .arg(&t.destination)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| RemoteError::Spawn {
            host: t.destination.clone(),
            program: "ssh".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(classify_connect_error(
            t,
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(())
}

fn exit_master(t: &SshTarget, socket: &Path) {
    control(t, socket, "exit");
}

/// Removes the empty control-socket directories that sessions of a killed homebase left
/// (their masters have ended and removed the sockets): only empty ones, an hour old.
fn sweep_empty_control_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old && e.file_name().to_string_lossy().starts_with("hb-") {
            // fails, as it should, on a directory that is not empty or not ours
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

enum Waited {
    Late,
    Io(std::io::Error),
}

/// Waits for a child whose stdout and stderr are piped (read on their own threads so that
/// neither pipe fills), killing it at `deadline`.
fn wait_until(mut child: std::process::Child, deadline: Duration) -> Result<Output, Waited> {
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

fn first_line(script: &str) -> String {
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

fn classify_connect_error(t: &SshTarget, stderr: &str) -> RemoteError {
    let host = t.host_name().to_string();
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        let fingerprint = stderr
            .lines()
            .find(|l| l.contains("SHA256:"))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("SHA256:")))
            .map(|s| s.trim_end_matches('.').to_string());
        return RemoteError::HostKeyChanged { host, fingerprint };
    }
    if stderr.contains("Host key verification failed") || stderr.contains("host key is known") {
        return RemoteError::HostKeyUnknown {
            fingerprint: offered_fingerprint(t),
            port: t.port,
            known_hosts: t.known_hosts_file.clone(),
            host,
        };
    }
    if stderr.contains("Permission denied") {
        return RemoteError::AuthFailed {
            host,
            destination: t.destination.clone(),
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

/// The fingerprint the host offers, read with ssh-keyscan (for the message only; never trusted).
fn offered_fingerprint(t: &SshTarget) -> Option<String> {
    let mut scan = Command::new("ssh-keyscan");
    scan.args(["-T", "5", "-t", "ed25519"]);
    if let Some(p) = t.port {
        scan.args(["-p", &p.to_string()]);
    }
    let keys = scan
        .arg(t.host_name())
        .stderr(Stdio::null())
        .output()
        .ok()?;
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

/// A local forward: `127.0.0.1:local_port` on the laptop to `remote_host:remote_port` as
/// seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
}

impl Forward {
    pub fn to_ssh_arg(&self) -> String {
        format!(
            "127.0.0.1:{}:{}:{}",
            self.local_port, self.remote_host, self.remote_port
        )
    }
}

impl SshTarget {
    /// An ssh master that carries `forwards` and exits when any of them cannot be
    /// bound, or when keep-alive finds the link dead (interval × count).
    pub fn tunnel_command(&self, forwards: &[Forward], control: &Path) -> Command {
        let mut c = Command::new("ssh");
        // Not `-N`: OpenSSH sets TCP_NODELAY on its connection only for interactive sessions,
        // and without it every small request through a forward waits ~40 ms for a delayed
        // ACK (44 ms median against 1 ms, measured in bench/tunnel.sh). A session with a
        // forced tty running an idle loop makes the connection interactive.
        c.args(self.base_args())
            .args(["-tt", "-n", "-M", "-S"])
            .arg(control)
            .args(["-o", "ControlPersist=no", "-o", "ExitOnForwardFailure=yes"]);
        for f in forwards {
            c.arg("-L").arg(f.to_ssh_arg());
        }
        c.arg(&self.destination)
            .arg("while sleep 86400; do :; done");
        c
    }

    /// Classifies why a tunnel's ssh exited, from its stderr.
    pub fn explain_exit(&self, stderr: &str) -> RemoteError {
        classify_connect_error(self, stderr)
    }

    /// A `Host` block for `~/.ssh/config` with these forwards.
    pub fn ssh_config_block(&self, alias: &str, forwards: &[Forward]) -> String {
        let (user, host) = match self.destination.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, self.destination.as_str()),
        };
        let mut s = format!("Host {alias}\n  HostName {host}\n");
        if let Some(u) = user {
            s.push_str(&format!("  User {u}\n"));
        }
        if let Some(p) = self.port {
            s.push_str(&format!("  Port {p}\n"));
        }
        if let Some(i) = &self.identity_file {
            s.push_str(&format!(
                "  IdentityFile {}\n  IdentitiesOnly yes\n",
                i.display()
            ));
        }
        if let Some(k) = &self.known_hosts_file {
            s.push_str(&format!("  UserKnownHostsFile {}\n", k.display()));
        }
        s.push_str(&format!(
            "  StrictHostKeyChecking yes\n  ServerAliveInterval {}\n  ServerAliveCountMax {}\n  ExitOnForwardFailure yes\n",
            self.keepalive_interval.as_secs().max(1),
            self.keepalive_count
        ));
        for f in forwards {
            s.push_str(&format!(
                "  LocalForward 127.0.0.1:{} {}:{}\n",
                f.local_port, f.remote_host, f.remote_port
            ));
        }
        s
    }
}

/// An `ssh -N -M` carrying forwards (`homebase tunnel`), with its stderr collected.
pub struct TunnelMaster {
    child: Child,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl TunnelMaster {
    /// Makes this (ready) tunnel the warm connection of its target: the target's shared
    /// socket becomes a link to the tunnel's own, so every other command reuses the tunnel's
    /// connection with no handshake. Nothing when a warm master already answers there or
    /// `persist` is off. [`TunnelMaster::unshare`] (or the tunnel's end: the link then
    /// points nowhere and the next command replaces it) undoes it.
    pub fn share(&self, t: &SshTarget) -> bool {
        if t.persist.is_zero() {
            return false;
        }
        let Some(shared) = shared_socket(t) else {
            return false;
        };
        if master_alive(t, &shared) {
            return false;
        }
        let _ = std::fs::remove_file(&shared);
        std::os::unix::fs::symlink(&self.socket, &shared).is_ok()
    }

    /// Removes the link [`TunnelMaster::share`] made, if it still points here.
    pub fn unshare(&self, t: &SshTarget) {
        if let Some(shared) = shared_socket(t)
            && std::fs::read_link(&shared).is_ok_and(|l| l == self.socket)
        {
            let _ = std::fs::remove_file(&shared);
        }
    }

    pub fn start(t: &SshTarget, fw: &[Forward]) -> Result<TunnelMaster, RemoteError> {
        let spawn_err = |source| RemoteError::Spawn {
            host: t.destination.clone(),
            program: "ssh".into(),
            source,
        };
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("hbt-")
            .tempdir_in(base)
            .map_err(spawn_err)?;
        let socket = dir.path().join("c");
        let mut child = t
            .tunnel_command(fw, &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = pipe.read_to_string(&mut buf);
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&buf);
                }
            });
        }
        Ok(TunnelMaster {
            child,
            stderr,
            _dir: dir,
            socket,
        })
    }

    /// Waits until the master answers on its control socket (forwards are bound by then).
    pub fn wait_ready(&mut self, t: &SshTarget, stop: &AtomicBool) -> bool {
        let deadline = Instant::now() + t.connect_timeout + Duration::from_secs(5);
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            if !self.running() {
                return false;
            }
            let ok = std::process::Command::new("ssh")
                .arg("-S")
                .arg(&self.socket)
                .args(["-O", "check"])
                .arg(&t.destination)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// What ssh printed (after it exited: why).
    pub fn stderr(&mut self) -> String {
        // give the reader thread a moment to collect what ssh printed before exiting
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ssh process is still there.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for TunnelMaster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
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
