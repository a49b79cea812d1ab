//! What the daemon learns about a loop's workspace, which the agent in the iteration
//! container can write: file sizes and times, the checkout's HEAD, and a diffstat.
//!
//! **Invariant:** nothing here runs a program on the host against the workspace, and
//! nothing follows a link out of it. Git reads configuration (`core.fsmonitor`, diff and
//! filter drivers, hooks) from the workspace's `.git`, which the agent controls, so git runs
//! only in a sealed throwaway container ([`Walls::sealed`]: no network, no capability, the
//! workspace read-only). HEAD is read here from plain files, with symlinks refused.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use homebase_engine::Engine;
use homebase_engine::run::{LOOP_LABEL, RunSpec, Source, Walls};
use homebase_proto::layout;
use homebase_stack::loops::Workspace;

pub mod walk;

/// Sizes and mtimes (ns) of every file, by relative path.
pub type Files = BTreeMap<String, (u64, i64)>;

/// Files of the workspace (relative path → size, mtime in ns), `.git` left out; `None`
/// when the daemon cannot see the workspace (a volume inside a VM).
pub async fn snapshot_files(engine: &Engine, ws: &Workspace) -> Option<Files> {
    let dir = match ws {
        Workspace::Path(p) => PathBuf::from(p),
        Workspace::Volume(v) => PathBuf::from(engine.volume_path(v).await?),
    };
    tokio::task::spawn_blocking(move || scan(&dir))
        .await
        .ok()
        .flatten()
}

/// Walks `dir` without following symlinks (a link counts as a file of its own), every
/// directory opened with `O_NOFOLLOW` below the root; `.git` left out.
pub fn scan(dir: &Path) -> Option<Files> {
    let root = walk::open_root(dir)?;
    let mut out = BTreeMap::new();
    walk::walk(&root, &[".git"], 200_001, |e| {
        out.insert(e.rel, (e.size, e.mtime_ns));
    });
    Some(out)
}

/// The user an iteration runs as when the loop names none: never root. The owner of the
/// workspace (`uid:gid`) when that is not root, so what the agent writes stays the host
/// user's; a workspace owned by root (a fresh named volume, a daemon running as root) is
/// handed to [`FALLBACK_USER`] first, in a one-off container of the loop's image.
pub const FALLBACK_USER: &str = "1000:1000";

/// Who the iterations of a loop run as: `configured` when set (`root` included: the loop
/// asked for it), else a non-root owner of the workspace. `Err` says why the workspace
/// could not be prepared.
pub async fn run_as(
    engine: &Engine,
    ws: &Workspace,
    configured: Option<&str>,
    image: &str,
    label: &str,
) -> Result<String, String> {
    if let Some(u) = configured {
        return Ok(u.to_string());
    }
    let dir = match ws {
        Workspace::Path(p) => Some(PathBuf::from(p)),
        Workspace::Volume(v) => engine.volume_path(v).await.map(PathBuf::from),
    };
    if let Some(dir) = dir
        && let Ok(meta) = std::fs::metadata(&dir)
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != 0 {
            return Ok(format!("{}:{}", meta.uid(), meta.gid()));
        }
    }
    // root's, or out of the daemon's sight (a volume inside a VM): ask the engine, and give
    // a root-owned workspace to the fallback user
    let script = format!(
        "u=$(stat -c %u:%g /workspace) || exit 3; case $u in 0:*) chown -R {FALLBACK_USER} /workspace || exit 4; echo @@owner {FALLBACK_USER} ;; *) echo \"@@owner $u\" ;; esac"
    );
    let spec = root_one_off(
        ws,
        image,
        label,
        "hb-owner",
        &["CHOWN", "DAC_OVERRIDE", "FOWNER"],
        script,
    );
    let (exit, out) = engine
        .run_to_end(&spec, Duration::from_secs(120), 4096)
        .await
        .map_err(|e| format!("cannot find who owns the workspace: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    let owner = out
        .lines()
        .find_map(|l| l.strip_prefix("@@owner "))
        .map(str::trim)
        .filter(|o| {
            o.split(':').count() == 2 && o.bytes().all(|b| b.is_ascii_digit() || b == b':')
        });
    match owner {
        Some(o) if exit.exit_code == 0 => Ok(o.to_string()),
        _ => Err(format!(
            "cannot find who owns the workspace (exit {}); the loop's image needs `sh`, `stat` and `chown`, or set loops.NAME.user",
            exit.exit_code
        )),
    }
}

/// The user a git helper runs as: `user` when numeric (`uid` or `uid:gid`), else the owner
/// of the workspace: the helper's image knows none of the names of the loop's image.
pub fn helper_user(user: &str, ws: &Workspace) -> Option<String> {
    if user.bytes().all(|b| b.is_ascii_digit() || b == b':') && !user.is_empty() {
        return Some(user.to_string());
    }
    let Workspace::Path(p) = ws else { return None };
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(format!("{}:{}", m.uid(), m.gid()))
}

/// Whether `user` (as `docker run --user` takes it) is root.
pub fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or(user);
    name == "root" || name == "0"
}

/// After an iteration that ran as root: clears the setuid and setgid bits of every file in
/// the workspace (Docker cannot mount a bind workspace `nosuid`, and a root-owned setuid
/// binary there would run as root for any user of the host). The paths it cleared.
pub async fn strip_setuid(
    engine: &Engine,
    ws: &Workspace,
    image: &str,
    label: &str,
) -> Vec<String> {
    let script =
        "find /workspace -xdev -type f -perm /6000 -print -exec chmod ug-s {} + 2>/dev/null; true";
    let spec = root_one_off(
        ws,
        image,
        label,
        "hb-nosuid",
        &["FOWNER", "DAC_OVERRIDE"],
        script.into(),
    );
    match engine
        .run_to_end(&spec, Duration::from_secs(300), 64 * 1024)
        .await
    {
        Ok((_, out)) => String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.strip_prefix("/workspace/"))
            .take(20)
            .map(str::to_string)
            .collect(),
        Err(e) => {
            tracing::warn!("cannot clear setuid bits in the workspace of {label}: {e}");
            Vec::new()
        }
    }
}

/// A sealed one-off container of the loop's image as root, with only `caps`, running `sh -c
/// script` against the workspace (taking it over for the owner, clearing setuid bits).
fn root_one_off(
    ws: &Workspace,
    image: &str,
    label: &str,
    prefix: &str,
    caps: &[&str],
    script: String,
) -> RunSpec {
    let mut walls = Walls::sealed();
    walls.capabilities = caps.iter().map(|c| c.to_string()).collect();
    RunSpec {
        name: format!("{prefix}-{}-{}", label.replace('/', "-"), unique()),
        image: image.to_string(),
        cmd: vec!["-c".into(), script],
        env: Vec::new(),
        workdir: "/workspace".into(),
        workspace: match ws {
            Workspace::Path(p) => Source::Bind(p.clone()),
            Workspace::Volume(v) => Source::Volume(v.clone()),
        },
        memory: 128 << 20,
        oom_score_adj: 1000,
        user: Some("0:0".into()),
        labels: HashMap::from([(LOOP_LABEL.to_string(), label.to_string())]),
        entrypoint: Some(vec!["sh".into()]),
        workspace_read_only: false,
        walls,
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn count_changes(a: &Files, b: &Files) -> i64 {
    let changed_or_removed = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count();
    let added = b.keys().filter(|k| !a.contains_key(*k)).count();
    (changed_or_removed + added) as i64
}

pub fn fingerprint_of(files: &Files) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    format!("{:016x}-{}", h.finish(), files.len())
}

pub async fn fingerprint(engine: &Engine, ws: &Workspace) -> Option<String> {
    snapshot_files(engine, ws).await.map(|f| fingerprint_of(&f))
}

/// A small regular file under the workspace's `.git`, every component opened without
/// following a link (a `refs` directory swapped for a link out of the workspace ends the
/// read).
fn read_git(root: &std::os::fd::OwnedFd, rel: &str) -> Option<String> {
    walk::read_small(root, &format!(".git/{rel}"), 1 << 20)
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit HEAD points at, read from `.git/HEAD`, the loose ref or `packed-refs`;
/// `None` when the workspace is not a plain checkout (or HEAD is unborn).
pub fn head(root: &Path) -> Option<String> {
    let root = walk::open_root(root)?;
    let text = read_git(&root, "HEAD")?;
    let text = text.trim();
    if is_object_id(text) {
        return Some(text.to_string());
    }
    let name = text.strip_prefix("ref: ")?.trim();
    let safe = name.starts_with("refs/")
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if !safe {
        return None;
    }
    if let Some(id) = read_git(&root, name) {
        let id = id.trim();
        return is_object_id(id).then(|| id.to_string());
    }
    let packed = read_git(&root, "packed-refs")?;
    packed.lines().find_map(|l| {
        let (id, r) = l.split_once(' ')?;
        (r.trim() == name && is_object_id(id)).then(|| id.to_string())
    })
}

/// The script the sealed helper runs: the diffstat against the commit before the
/// iteration (`$1`), then the number of new commits.
const DIFFSTAT_SCRIPT: &str = r#"g diff --no-ext-diff --no-textconv --shortstat "$1" || exit 1
echo @@
g rev-list --count "$1..HEAD""#;

use homebase_proto::layout::{GIT_ENV, GIT_FN};

/// `N files changed, …` against the commit before the iteration (its commits included),
/// with the number of new commits, computed in a sealed helper with the workspace
/// read-only. `None` when it cannot be had.
pub async fn diffstat(
    engine: &Engine,
    ws: &Workspace,
    owner: Option<&str>,
    label: &str,
    before: &str,
) -> Option<String> {
    if !is_object_id(before) {
        return None;
    }
    let helper = Helper {
        engine,
        ws,
        user: owner,
        label,
    };
    let (code, out) = helper
        .run(DIFFSTAT_SCRIPT, &[before], Vec::new(), true)
        .await?;
    if code != 0 {
        return None;
    }
    parse_diffstat(&out)
}

/// After an iteration of a `workspace = "git"` loop: commits what the agent left
/// uncommitted (`$1` the message), then prints HEAD.
const COMMIT_SCRIPT: &str = r#"g add -A . && { g diff --cached --quiet || g commit -q --no-verify -m "$1"; } || exit 1
echo "@@head $(g rev-parse HEAD)""#;

/// Before an iteration: merges the deployed commit of the project's repository (mounted
/// read-only at /hb-repo) into the loop's branch; prints `@@merged ID`, `@@uptodate`, or
/// the conflicting files (`@@conflict PATH`) after aborting the merge.
const MERGE_SCRIPT: &str = r#"g fetch -q --no-tags /hb-repo refs/heads/deployed || exit 3
if g merge-base --is-ancestor FETCH_HEAD HEAD; then echo @@uptodate; exit 0; fi
if g merge -q --no-edit --no-verify -m "homebase: merge the deployed commit $(g rev-parse --short FETCH_HEAD)" FETCH_HEAD >/dev/null 2>&1; then
  echo "@@merged $(g rev-parse HEAD)"
else
  g diff --name-only --diff-filter=U | sed 's/^/@@conflict /'
  g merge --abort
  exit 2
fi"#;

/// What a merge of the deployed commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The branch already had it.
    UpToDate,
    /// Merged; the new HEAD.
    Merged(String),
    /// A conflict (the merge aborted): the files.
    Conflict(Vec<String>),
}

/// Whose git helper runs: the loop's workspace, the user that owns it, and the label.
pub struct Helper<'a> {
    pub engine: &'a Engine,
    pub ws: &'a Workspace,
    pub user: Option<&'a str>,
    pub label: &'a str,
}

impl Helper<'_> {
    /// Runs `script` (after [`GIT_FN`]) in a sealed container of homebase's own git image
    /// ([`layout::GIT_HELPER_IMAGE`], never the loop's) with the workspace writable unless
    /// `read_only`, and `extra` mounted read-only; its exit code and output. `None` when
    /// the image is missing, the helper could not run, or it refused the workspace.
    async fn run(
        &self,
        script: &str,
        args: &[&str],
        extra: Vec<(String, String)>,
        read_only: bool,
    ) -> Option<(i64, String)> {
        let Workspace::Path(p) = self.ws else {
            return None;
        };
        if !self.engine.has_image(layout::GIT_HELPER_IMAGE).await {
            // a diffstat is best-effort; commits and merges are what a deploy builds it for
            if !read_only {
                tracing::warn!(
                    "no git helper for {}: {} is not on the host (a deploy builds it)",
                    self.label,
                    layout::GIT_HELPER_IMAGE
                );
            }
            return None;
        }
        let mut cmd = vec!["-c".to_string(), format!("{GIT_FN}{script}"), "sh".into()];
        cmd.extend(args.iter().map(|a| a.to_string()));
        let mut walls = Walls::sealed();
        walls.read_only_mounts = extra;
        let spec = RunSpec {
            name: format!("hb-git-{}-{}", self.label.replace('/', "-"), unique()),
            image: layout::GIT_HELPER_IMAGE.to_string(),
            cmd,
            env: GIT_ENV.iter().map(|e| e.to_string()).collect(),
            workdir: "/workspace".into(),
            workspace: Source::Bind(p.clone()),
            memory: 256 << 20,
            oom_score_adj: 1000,
            user: self.user.map(str::to_string),
            labels: HashMap::from([(LOOP_LABEL.to_string(), self.label.to_string())]),
            entrypoint: Some(vec!["sh".into()]),
            workspace_read_only: read_only,
            walls,
        };
        match self
            .engine
            .run_to_end(&spec, Duration::from_secs(60), 64 * 1024)
            .await
        {
            Ok((exit, out)) => {
                let out = String::from_utf8_lossy(&out).to_string();
                if let Some(why) = out.lines().find_map(|l| l.strip_prefix("@@refused ")) {
                    tracing::warn!("git helper of {} refused: {why}", self.label);
                    return None;
                }
                Some((exit.exit_code, out))
            }
            Err(e) => {
                tracing::warn!("git helper of {}: {e:#}", self.label);
                None
            }
        }
    }

    /// Commits what an iteration left uncommitted; the branch's HEAD after it.
    pub async fn commit(&self, message: &str) -> Option<String> {
        let (code, out) = self
            .run(COMMIT_SCRIPT, &[message], Vec::new(), false)
            .await?;
        if code != 0 {
            tracing::warn!(
                "commit in the workspace of {} failed: {}",
                self.label,
                out.trim()
            );
            return None;
        }
        out.lines()
            .find_map(|l| l.strip_prefix("@@head "))
            .map(str::trim)
            .filter(|h| is_object_id(h))
            .map(str::to_string)
    }

    /// Merges the deployed commit of `repo` (homebase's own bare repository) into the
    /// loop's branch; `None` when the helper could not run.
    pub async fn merge_deployed(&self, repo: &Path) -> Option<Merged> {
        let mount = vec![(repo.to_string_lossy().into_owned(), "/hb-repo".to_string())];
        let (code, out) = self.run(MERGE_SCRIPT, &[], mount, false).await?;
        parse_merge(code, &out)
    }
}

fn parse_merge(code: i64, out: &str) -> Option<Merged> {
    if out.lines().any(|l| l == "@@uptodate") {
        return Some(Merged::UpToDate);
    }
    if let Some(h) = out
        .lines()
        .find_map(|l| l.strip_prefix("@@merged "))
        .map(str::trim)
        .filter(|h| is_object_id(h))
    {
        return Some(Merged::Merged(h.to_string()));
    }
    if code == 2 {
        // names the agent could have chosen: bounded, shown escaped by the CLI
        let files: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("@@conflict "))
            .take(20)
            .map(|f| f.chars().take(200).collect())
            .collect();
        return Some(Merged::Conflict(files));
    }
    None
}

/// The deployed commit of homebase's repository of a project (`repo.git`), read from plain
/// files (homebase writes them; a loop never mounts them writable).
pub fn deployed(repo: &Path) -> Option<String> {
    let read = |rel: &str| std::fs::read_to_string(repo.join(rel)).ok();
    read("refs/heads/deployed")
        .map(|s| s.trim().to_string())
        .filter(|s| is_object_id(s))
        .or_else(|| {
            read("packed-refs")?.lines().find_map(|l| {
                let (id, r) = l.split_once(' ')?;
                (r.trim() == "refs/heads/deployed" && is_object_id(id)).then(|| id.to_string())
            })
        })
}

fn parse_diffstat(out: &str) -> Option<String> {
    let (stat, commits) = out.split_once("@@")?;
    let stat = stat.trim();
    let stat = if stat.is_empty() {
        "no changes".to_string()
    } else {
        stat.chars().take(200).collect()
    };
    Some(match commits.trim() {
        "0" | "" => stat,
        "1" => format!("{stat}; 1 new commit"),
        c if c.bytes().all(|b| b.is_ascii_digit()) => format!("{stat}; {c} new commits"),
        _ => stat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_changes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        let before = scan(dir.path()).unwrap();
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(count_changes(&before, &scan(dir.path()).unwrap()), 0);
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/b"), "2").unwrap();
        std::fs::write(dir.path().join("a"), "11").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "yy").unwrap();
        let after = scan(dir.path()).unwrap();
        assert_eq!(count_changes(&before, &after), 2);
        assert_ne!(fingerprint_of(&before), fingerprint_of(&after));
        assert!(scan(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn links_out_of_the_workspace_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let files = scan(dir.path()).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["out"]);
    }

    #[test]
    fn head_is_read_from_plain_files_only() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head(dir.path()), None, "unborn branch");
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack\n{id} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(head(dir.path()).as_deref(), Some(id));
        std::fs::write(git.join("refs/heads/main"), format!("{id}\n")).unwrap();
        assert_eq!(head(dir.path()).as_deref(), Some(id));
        std::fs::write(git.join("HEAD"), "ref: refs/../../../etc/passwd\n").unwrap();
        assert_eq!(head(dir.path()), None);
        std::fs::remove_file(git.join("HEAD")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", git.join("HEAD")).unwrap();
        assert_eq!(head(dir.path()), None, "a symlinked HEAD is refused");
        std::fs::write(dir.path().join("x"), "").unwrap();
        assert_eq!(head(&dir.path().join("x")), None);
    }

    /// The review's attack: `.git/refs/tags` (and each other path the reader takes) swapped
    /// for a link to the daemon's directory, HEAD naming the token as a ref. Every read ends
    /// at the link instead of returning the token as a commit.
    #[test]
    fn a_linked_git_directory_never_leads_out_of_the_workspace() {
        use std::os::unix::fs::symlink;
        let token = "ab".repeat(32);
        let daemon = tempfile::tempdir().unwrap();
        std::fs::write(daemon.path().join("token"), &token).unwrap();
        std::fs::create_dir_all(daemon.path().join("refs/heads")).unwrap();
        std::fs::write(daemon.path().join("refs/heads/main"), &token).unwrap();
        std::fs::write(
            daemon.path().join("packed-refs"),
            format!("{token} refs/heads/main\n"),
        )
        .unwrap();
        std::fs::write(daemon.path().join("HEAD"), &token).unwrap();
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join(".git/refs/heads")).unwrap();
            std::fs::create_dir_all(dir.path().join(".git/refs/tags")).unwrap();
            dir
        };
        // refs/tags → the daemon's directory, HEAD → refs/tags/token
        let ws = fresh();
        let git = ws.path().join(".git");
        std::fs::remove_dir(git.join("refs/tags")).unwrap();
        symlink(daemon.path(), git.join("refs/tags")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/tags/token\n").unwrap();
        assert_eq!(head(ws.path()), None);
        // refs/heads linked
        let ws = fresh();
        let git = ws.path().join(".git");
        std::fs::remove_dir_all(git.join("refs/heads")).unwrap();
        symlink(daemon.path().join("refs/heads"), git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head(ws.path()), None);
        // refs itself linked
        let ws = fresh();
        let git = ws.path().join(".git");
        std::fs::remove_dir_all(git.join("refs")).unwrap();
        symlink(daemon.path().join("refs"), git.join("refs")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head(ws.path()), None);
        // packed-refs linked
        let ws = fresh();
        let git = ws.path().join(".git");
        symlink(daemon.path().join("packed-refs"), git.join("packed-refs")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head(ws.path()), None);
        // HEAD linked, and .git itself
        let ws = fresh();
        symlink(daemon.path().join("HEAD"), ws.path().join(".git/HEAD")).unwrap();
        assert_eq!(head(ws.path()), None);
        let ws = tempfile::tempdir().unwrap();
        symlink(daemon.path(), ws.path().join(".git")).unwrap();
        assert_eq!(head(ws.path()), None);
        // and a scan does not descend through a linked directory
        let ws = fresh();
        symlink(daemon.path(), ws.path().join("d")).unwrap();
        assert_eq!(scan(ws.path()).unwrap().keys().collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn merges_are_read_from_the_helper_strictly() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(parse_merge(0, "@@uptodate\n"), Some(Merged::UpToDate));
        assert_eq!(
            parse_merge(0, &format!("noise\n@@merged {id}\n")),
            Some(Merged::Merged(id.into()))
        );
        assert_eq!(parse_merge(0, "@@merged not-an-id\n"), None);
        assert_eq!(
            parse_merge(2, "@@conflict PROMPT.md\n@@conflict prd.json\n"),
            Some(Merged::Conflict(vec![
                "PROMPT.md".into(),
                "prd.json".into()
            ]))
        );
        assert_eq!(parse_merge(3, "fatal: x\n"), None);
    }

    #[test]
    fn diffstats_are_read_and_bounded() {
        assert_eq!(
            parse_diffstat(" 2 files changed, 3 insertions(+)\n@@\n1\n").as_deref(),
            Some("2 files changed, 3 insertions(+); 1 new commit")
        );
        assert_eq!(parse_diffstat("\n@@\n0\n").as_deref(), Some("no changes"));
        assert_eq!(
            parse_diffstat(" 1 file changed\n@@\n3").as_deref(),
            Some("1 file changed; 3 new commits")
        );
        assert_eq!(parse_diffstat("garbage"), None);
    }
}
