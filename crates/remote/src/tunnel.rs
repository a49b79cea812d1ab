//! Local forwards to the host, held open by a master of their own.

use super::RemoteError;
use super::SshTarget;
use crate::master::{master_alive, shared_socket};
use crate::session::classify_connect_error;
use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

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
        self.config_block(self.resolve().as_ref(), alias, forwards)
    }

    /// The block for `resolved` (what `ssh -G` says of this target: an alias of the user's
    /// ~/.ssh/config is not applied to another alias's `HostName`, so the real host, port,
    /// user, identity, known-hosts file and `ProxyJump` are written out).
    pub fn config_block(
        &self,
        resolved: Option<&crate::Resolved>,
        alias: &str,
        forwards: &[Forward],
    ) -> String {
        let (user, host) = match self.destination.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h.to_string()),
            None => (None, self.destination.clone()),
        };
        let host = resolved.map_or(host, |r| r.hostname.clone());
        let user = resolved.and_then(|r| r.user.clone()).or(user);
        let port = resolved.map(|r| r.port).or(self.port).filter(|p| *p != 22);
        let mut s = format!("Host {alias}\n  HostName {host}\n");
        if let Some(u) = user {
            s.push_str(&format!("  User {u}\n"));
        }
        if let Some(p) = port {
            s.push_str(&format!("  Port {p}\n"));
        }
        let home = std::env::var("HOME").unwrap_or_default();
        let identities: Vec<String> = match (&self.identity_file, resolved) {
            (Some(i), _) => vec![i.display().to_string()],
            // the files ssh would try that exist (its defaults are listed whether or not)
            (None, Some(r)) => r
                .identity_files
                .iter()
                .filter(|f| {
                    let path = f
                        .strip_prefix("~/")
                        .map_or(f.to_string(), |rest| format!("{home}/{rest}"));
                    std::path::Path::new(&path).exists()
                })
                .cloned()
                .collect(),
            (None, None) => Vec::new(),
        };
        for i in &identities {
            s.push_str(&format!("  IdentityFile {i}\n"));
        }
        if !identities.is_empty() {
            s.push_str("  IdentitiesOnly yes\n");
        }
        let known = self
            .known_hosts_file
            .as_ref()
            .map(|k| k.display().to_string())
            .or_else(|| resolved.and_then(|r| r.known_hosts.first().cloned()));
        if let Some(k) = known {
            s.push_str(&format!("  UserKnownHostsFile {k}\n"));
        }
        if let Some(r) = resolved {
            if let Some(j) = &r.proxy_jump {
                s.push_str(&format!("  ProxyJump {j}\n"));
            }
            if let Some(a) = &r.host_key_alias {
                s.push_str(&format!("  HostKeyAlias {a}\n"));
            }
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
