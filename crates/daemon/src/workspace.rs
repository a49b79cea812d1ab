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
