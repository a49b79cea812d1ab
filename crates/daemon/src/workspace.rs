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
use homebase_stack::loops::Workspace;

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

/// Walks `dir` without following symlinks (a link counts as a file of its own).
pub fn scan(dir: &Path) -> Option<Files> {
    std::fs::read_dir(dir).ok()?;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            // DirEntry::metadata does not traverse symlinks (lstat)
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != ".git" {
                    stack.push(path);
                }
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            let mtime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            out.insert(rel, (meta.len(), mtime));
            if out.len() > 200_000 {
                return Some(out);
            }
        }
    }
    Some(out)
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

/// A small regular file inside `root`, read only when neither it nor `.git` is a symlink.
fn read_plain(root: &Path, rel: &str) -> Option<String> {
    let git = root.join(".git");
    if !std::fs::symlink_metadata(&git).ok()?.is_dir() {
        return None;
    }
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit HEAD points at, read from `.git/HEAD`, the loose ref or `packed-refs`;
/// `None` when the workspace is not a plain checkout (or HEAD is unborn).
pub fn head(root: &Path) -> Option<String> {
    let text = read_plain(root, ".git/HEAD")?;
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
    if let Some(id) = read_plain(root, &format!(".git/{name}")) {
        let id = id.trim();
        return is_object_id(id).then(|| id.to_string());
    }
    let packed = read_plain(root, ".git/packed-refs")?;
    packed.lines().find_map(|l| {
        let (id, r) = l.split_once(' ')?;
        (r.trim() == name && is_object_id(id)).then(|| id.to_string())
    })
}

/// The script the sealed helper runs: the diffstat against the commit before the
/// iteration, then the number of new commits. `-c` settings keep git from starting
/// helpers even in the helper (they could only touch the helper itself).
const DIFFSTAT_SCRIPT: &str = r#"g() { git -c safe.directory='*' -c core.fsmonitor=false -c core.hooksPath=/dev/null -c diff.external= "$@"; }
g diff --no-ext-diff --no-textconv --shortstat "$1" || exit 1
echo @@
g rev-list --count "$1..HEAD""#;

/// `N files changed, …` against the commit before the iteration (its commits included),
/// with the number of new commits, computed by git in a sealed container of the loop's
/// image (which has git when the agent uses it). `None` when it cannot be had.
pub async fn diffstat(
    engine: &Engine,
    ws: &Workspace,
    image: &str,
    user: Option<&str>,
    label: &str,
    before: &str,
) -> Option<String> {
    let Workspace::Path(p) = ws else { return None };
    if !is_object_id(before) {
        return None;
    }
    let spec = RunSpec {
        name: format!(
            "hb-gitstat-{}-{}",
            label.replace('/', "-"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
        image: image.to_string(),
        cmd: vec![
            "-c".into(),
            DIFFSTAT_SCRIPT.into(),
            "sh".into(),
            before.to_string(),
        ],
        env: vec!["HOME=/tmp".into(), "GIT_CONFIG_NOSYSTEM=1".into()],
        workdir: "/workspace".into(),
        workspace: Source::Bind(p.clone()),
        memory: 256 << 20,
        oom_score_adj: 1000,
        user: user.map(str::to_string),
        labels: HashMap::from([(LOOP_LABEL.to_string(), label.to_string())]),
        entrypoint: Some(vec!["sh".into()]),
        workspace_read_only: true,
        walls: Walls::sealed(),
    };
    let (exit, out) = match engine
        .run_to_end(&spec, Duration::from_secs(30), 64 * 1024)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("no diffstat for {label}: {e}");
            return None;
        }
    };
    if exit.exit_code != 0 {
        return None;
    }
    parse_diffstat(&String::from_utf8_lossy(&out))
}

/// `g`: git with every program it could start from the workspace's configuration off (the
/// helper is sealed anyway: this keeps the agent's hooks from running on our behalf).
pub const GIT_FN: &str = r#"g() { git -c safe.directory='*' -c core.fsmonitor=false -c core.hooksPath=/dev/null -c diff.external= -c protocol.allow=never -c protocol.file.allow=always -c user.name=homebase -c user.email=homebase@localhost -c commit.gpgSign=false "$@"; }
"#;

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

/// Whose git helper runs: the loop's workspace, image, user and label.
pub struct Helper<'a> {
    pub engine: &'a Engine,
    pub ws: &'a Workspace,
    pub image: &'a str,
    pub user: Option<&'a str>,
    pub label: &'a str,
}

impl Helper<'_> {
    /// Runs `script` (after [`GIT_FN`]) in a sealed helper of the loop's image with the
    /// workspace writable (it commits there) and `extra` mounted read-only; its exit code
    /// and output.
    async fn run(
        &self,
        script: &str,
        args: &[&str],
        extra: Vec<(String, String)>,
    ) -> Option<(i64, String)> {
        let Workspace::Path(p) = self.ws else {
            return None;
        };
        let mut cmd = vec!["-c".to_string(), format!("{GIT_FN}{script}"), "sh".into()];
        cmd.extend(args.iter().map(|a| a.to_string()));
        let mut walls = Walls::sealed();
        walls.read_only_mounts = extra;
        let spec = RunSpec {
            name: format!(
                "hb-git-{}-{}",
                self.label.replace('/', "-"),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            image: self.image.to_string(),
            cmd,
            env: vec!["HOME=/tmp".into(), "GIT_CONFIG_NOSYSTEM=1".into()],
            workdir: "/workspace".into(),
            workspace: Source::Bind(p.clone()),
            memory: 256 << 20,
            oom_score_adj: 1000,
            user: self.user.map(str::to_string),
            labels: HashMap::from([(LOOP_LABEL.to_string(), self.label.to_string())]),
            entrypoint: Some(vec!["sh".into()]),
            workspace_read_only: false,
            walls,
        };
        match self
            .engine
            .run_to_end(&spec, Duration::from_secs(60), 64 * 1024)
            .await
        {
            Ok((exit, out)) => Some((exit.exit_code, String::from_utf8_lossy(&out).to_string())),
            Err(e) => {
                tracing::warn!("git helper of {}: {e:#}", self.label);
                None
            }
        }
    }

    /// Commits what an iteration left uncommitted; the branch's HEAD after it.
    pub async fn commit(&self, message: &str) -> Option<String> {
        let (code, out) = self.run(COMMIT_SCRIPT, &[message], Vec::new()).await?;
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
        let (code, out) = self.run(MERGE_SCRIPT, &[], mount).await?;
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
