//! The multiplexed master connection: its control socket, shared between commands or
//! owned by one session.

use super::RemoteError;
use super::SshTarget;
use crate::session::classify_connect_error;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

/// The master's control socket.
pub(crate) enum Control {
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
    pub(crate) fn socket(&self) -> &Path {
        match self {
            Control::Own { socket, .. } | Control::Shared(socket) => socket,
        }
    }
}

/// Where shared masters keep their sockets: `HOMEBASE_SSH_CONTROL_DIR`, else `hb-u<uid>`
/// under /tmp (short: socket paths are limited to ~100 bytes), made 0700 and refused
/// unless it is this user's own and private.
pub(crate) fn shared_control_dir() -> Option<PathBuf> {
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
pub(crate) fn shared_socket(t: &SshTarget) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &t.destination,
        t.port,
        &t.identity_file,
        &t.known_hosts_file,
        &t.hostname,
        &t.proxy_command,
        &t.host_key_alias,
    )
        .hash(&mut h);
    Some(shared_control_dir()?.join(format!("{:016x}", h.finish())))
}

/// Where a note of the warm connection on `socket` lives (keys are plain words).
pub(crate) fn note_path(socket: &Path, key: &str) -> Option<PathBuf> {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plain.then(|| socket.with_extension(key))
}

/// Sends a control command (`check`, `exit`) to the master on `socket`: a local exchange
/// over the socket, no network. True when the master answered.
pub(crate) fn control(t: &SshTarget, socket: &Path, op: &str) -> bool {
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
pub(crate) fn master_alive(t: &SshTarget, socket: &Path) -> bool {
    socket.exists() && control(t, socket, "check")
}

/// Starts a master on `socket` in the background, checking the host key.
pub(crate) fn start_master(t: &SshTarget, socket: &Path, persist: &str) -> Result<(), RemoteError> {
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
        let stderr = String::from_utf8_lossy(&out.stderr);
        let err = classify_connect_error(t, &stderr);
        // a jump host's own failure (its key changed, say) reaches a master only as
        // "Connection closed by UNKNOWN port 65535": one plain connection gets OpenSSH's
        // own reason
        if matches!(err, RemoteError::Unreachable { .. }) && stderr.contains("UNKNOWN port") {
            let plain = Command::new("ssh")
                .args(t.base_args())
                .arg(&t.destination)
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            if let Ok(plain) = plain
                && !plain.status.success()
            {
                return Err(classify_connect_error(
                    t,
                    &String::from_utf8_lossy(&plain.stderr),
                ));
            }
        }
        return Err(err);
    }
    Ok(())
}

pub(crate) fn exit_master(t: &SshTarget, socket: &Path) {
    control(t, socket, "exit");
}

/// Removes the empty control-socket directories that sessions of a killed homebase left
/// (their masters have ended and removed the sockets): only empty ones, an hour old.
pub(crate) fn sweep_empty_control_dirs(base: &Path) {
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
