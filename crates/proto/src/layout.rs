//! Where homebase keeps things on a host, defined once for the CLI (whose scripts run
//! there), the daemon (which runs there) and the tests:
//!
//! ```text
//! ~/.homebase/
//!   bin/homebase                 the binary `homebase setup` installs
//!   daemon/                      the daemon's own: endpoint, token, state.db, daemon.log,
//!                                relay.json (the way in from anywhere) and relay-state.json
//!   relay/                       the host's key for the relay, and the relay's known host key
//!   <project>/
//!     current                    the id of the release that runs
//!     releases/<id>/             a bundle: compose.yml, homebase.toml, hash, env files
//!     releases.jsonl             the release log, one `ReleaseEntry` a line
//!     lock                       a symlink naming the deploy or rollback that holds it
//!     job/                       the detached release job: run.sh, log, pid, done
//!     backups/<id>/              manifest.json and the dump files
//!     loops/<name>/              output.log, and the default workspace/ (with
//!                                `workspace = "git"`: a checkout on branch homebase/<name>)
//!     objects/<sha256>[.x|.s]    the project's own files, each once by content
//!     tree/                      those files laid out: Compose's project directory
//!     tree.files, tree.paths, tree.stamp   what tree/ was laid out from, and when
//!     stage/, stage.files        hard links to the objects that builds read
//!     set-aside/<release>/       host edits of synced files a deploy moved aside
//!     build.<pid>/               a swarm node's build in progress (its upload's job files)
//!     repo.git                   the project's repository as deployed (`refs/heads/deployed`)
//! ```
//!
//! The `*_dir` functions give paths under a home directory (the daemon's side); the `sh_*`
//! functions give the same places as shell words for scripts, where `$HOME` is the host's.
//! A project's name is a safe name (`is_safe_name`) before it gets here.

use std::path::{Path, PathBuf};

/// homebase's directory under a home.
pub const ROOT: &str = ".homebase";
/// The daemon's directory, under [`ROOT`].
pub const DAEMON: &str = "daemon";
/// The binary `homebase setup` installs, under [`ROOT`].
pub const BIN: &str = "bin/homebase";

/// In a project's directory: the current release's id.
pub const CURRENT: &str = "current";
/// In a project's directory: the releases.
pub const RELEASES: &str = "releases";
/// In a project's directory: the release log.
pub const RELEASE_LOG: &str = "releases.jsonl";
/// In a project's directory: the backups.
pub const BACKUPS: &str = "backups";
/// In a project's directory: the loops' files.
pub const LOOPS: &str = "loops";
/// In a loop's directory: its output.
pub const LOOP_OUTPUT: &str = "output.log";

/// In the daemon's directory: where it listens (`127.0.0.1:PORT`).
pub const ENDPOINT: &str = "endpoint";
/// In the daemon's directory: its API token.
pub const TOKEN: &str = "token";
/// In the daemon's directory: its log when a service manager runs it.
pub const DAEMON_LOG: &str = "daemon.log";

/// In the daemon's directory: the relay the daemon keeps a reverse tunnel to.
pub const RELAY_SETTINGS: &str = "relay.json";
/// In the daemon's directory: the tunnel's state as the daemon last saw it.
pub const RELAY_STATE: &str = "relay-state.json";
/// Under [`ROOT`]: the host's key for the relay (`id_ed25519`) and the relay's host key
/// (`known_hosts`, under the name [`RELAY_KEY_ALIAS`]).
pub const RELAY_DIR: &str = "relay";
/// The name the relay's host key goes by in `relay/known_hosts` (`HostKeyAlias`).
pub const RELAY_KEY_ALIAS: &str = "homebase-relay";

/// The image homebase runs git in against a loop's workspace (commits, merges, diffstats):
/// homebase's own, never the loop's, so nothing the agent built or configured runs there.
/// A deploy with a `workspace = "git"` loop builds it on the host when it is missing, from
/// [`GIT_HELPER_DOCKERFILE`].
pub const GIT_HELPER_IMAGE: &str = "homebase/git:1";
/// How [`GIT_HELPER_IMAGE`] is built (it needs the registry once).
pub const GIT_HELPER_DOCKERFILE: &str = "FROM alpine:3.21\nRUN apk add --no-cache git\n";

/// `g`: git with every program it could start from the workspace's configuration off
/// (hooks, fsmonitor, diff and filter drivers, ssh, credential and askpass helpers, the
/// editor, automatic maintenance), and then a refusal of a partial clone: a promisor remote
/// would make git fetch missing objects by itself (and with them run a transport the agent
/// chose). The helper is sealed anyway: this keeps the agent's configuration from running
/// anything on homebase's behalf even inside it.
pub const GIT_FN: &str = r#"g() { git -c safe.directory='*' -c core.fsmonitor=false -c core.hooksPath=/dev/null -c diff.external= -c core.sshCommand=false -c core.askPass=false -c credential.helper= -c core.editor=false -c sequence.editor=false -c gc.auto=0 -c maintenance.auto=false -c protocol.allow=never -c protocol.file.allow=always -c user.name=homebase -c user.email=homebase@localhost -c commit.gpgSign=false "$@"; }
if g config --get extensions.partialclone >/dev/null 2>&1 || g config --get-regexp '^remote\..*\.(promisor|partialclonefilter)$' >/dev/null 2>&1; then
  echo "@@refused the workspace's git configuration makes a partial clone (extensions.partialClone or a promisor remote)"; exit 4
fi
"#;

/// The environment of every git helper: no system or global configuration, no lazy fetch,
/// no replace objects, no prompt.
pub const GIT_ENV: &[&str] = &[
    "HOME=/tmp",
    "GIT_CONFIG_NOSYSTEM=1",
    "GIT_CONFIG_GLOBAL=/dev/null",
    "GIT_NO_LAZY_FETCH=1",
    "GIT_NO_REPLACE_OBJECTS=1",
    "GIT_TERMINAL_PROMPT=0",
    "GIT_ATTR_NOSYSTEM=1",
    "GIT_PROTOCOL_FROM_USER=0",
];

/// `~/.homebase` under `home`.
pub fn root(home: &Path) -> PathBuf {
    home.join(ROOT)
}

/// A project's directory under homebase's directory `root`.
pub fn project_dir(root: &Path, project: &str) -> PathBuf {
    root.join(project)
}

/// A loop's directory under homebase's directory `root`.
pub fn loop_dir(root: &Path, project: &str, name: &str) -> PathBuf {
    project_dir(root, project).join(LOOPS).join(name)
}

/// The daemon's directory under homebase's directory `root`.
pub fn daemon_dir(root: &Path) -> PathBuf {
    root.join(DAEMON)
}

/// A loop's default workspace, as configuration spells it (`~` for the host user's home).
pub fn default_workspace(project: &str, name: &str) -> String {
    format!("~/{ROOT}/{project}/{LOOPS}/{name}/workspace")
}

/// A path under homebase's directory as a message shows it: `~/.homebase/daemon/token`.
pub fn shown(parts: &[&str]) -> String {
    let mut out = format!("~/{ROOT}");
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// homebase's directory, as a shell word.
pub fn sh_root() -> String {
    format!("\"$HOME/{ROOT}\"")
}

/// A project's directory as a shell word; `quoted` is the project's name already quoted
/// for the shell.
pub fn sh_project(quoted: &str) -> String {
    format!("\"$HOME/{ROOT}/\"{quoted}")
}

/// The daemon's directory, as a shell word.
pub fn sh_daemon() -> String {
    format!("\"$HOME/{ROOT}/{DAEMON}\"")
}

/// A file in the daemon's directory, as a shell word.
pub fn sh_daemon_file(file: &str) -> String {
    format!("\"$HOME/{ROOT}/{DAEMON}/{file}\"")
}

/// A file in the relay's directory, as a shell word.
pub fn sh_relay_file(file: &str) -> String {
    format!("\"$HOME/{ROOT}/{RELAY_DIR}/{file}\"")
}

/// The installed binary, as a shell word.
pub fn sh_bin() -> String {
    format!("\"$HOME/{ROOT}/{BIN}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_name_the_same_places() {
        let home = Path::new("/Users/me");
        let root = root(home);
        assert_eq!(root, Path::new("/Users/me/.homebase"));
        assert_eq!(
            loop_dir(&root, "p", "ralph").join(LOOP_OUTPUT),
            Path::new("/Users/me/.homebase/p/loops/ralph/output.log")
        );
        assert_eq!(
            daemon_dir(&root).join(TOKEN),
            Path::new("/Users/me/.homebase/daemon/token")
        );
        // the shell forms, as a POSIX shell expands them with HOME=/Users/me
        let expand = |w: String| w.replace("$HOME", "/Users/me").replace(['"', '\''], "");
        assert_eq!(
            expand(sh_project("'p'")),
            project_dir(&root, "p").to_string_lossy()
        );
        assert_eq!(expand(sh_daemon()), daemon_dir(&root).to_string_lossy());
        assert_eq!(
            expand(sh_daemon_file(ENDPOINT)),
            "/Users/me/.homebase/daemon/endpoint"
        );
        assert_eq!(expand(sh_bin()), "/Users/me/.homebase/bin/homebase");
        assert_eq!(expand(sh_root()), root.to_string_lossy());
        assert_eq!(
            default_workspace("p", "ralph"),
            "~/.homebase/p/loops/ralph/workspace"
        );
    }
}
