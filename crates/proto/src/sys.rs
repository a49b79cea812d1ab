//! The machine this runs on, as the CLI and the daemon both need it.

use std::path::{Path, PathBuf};

/// This machine's name (`hostname`), or `fallback` when it has none to give.
pub fn hostname(fallback: &str) -> String {
    std::process::Command::new("hostname")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// `~` and `~/x` as the shell reads them, against `$HOME` (ssh does this for its own
/// configuration, not for paths homebase passes it; the daemon, for paths in
/// homebase.toml). Anything else, or no `HOME`, is returned as it is.
pub fn expand_home(p: &Path) -> PathBuf {
    expand_with(p, std::env::var_os("HOME").as_deref().map(Path::new))
}

fn expand_with(p: &Path, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
}

/// The open-file limit homebase's long-running processes ask for (the daemon raises its own
/// soft limit to it at start; the LaunchAgent and the systemd unit set it): launchd's default
/// of 256 is a few hundred idle connections away from starving the daemon.
pub const NOFILE: u64 = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = Some(Path::new("/Users/me"));
        let e = |p: &str| expand_with(Path::new(p), home);
        assert_eq!(e("~/.ssh/id"), Path::new("/Users/me/.ssh/id"));
        assert_eq!(e("~"), Path::new("/Users/me"));
        assert_eq!(e("/etc/~/x"), Path::new("/etc/~/x"));
        assert_eq!(e("~other/x"), Path::new("~other/x"));
        assert_eq!(expand_with(Path::new("~/x"), None), Path::new("~/x"));
    }
}
