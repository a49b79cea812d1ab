//! The project's files on the laptop: git's list in a checkout (else a walk less the root
//! `.dockerignore`), each read and named by its content.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::refs::{join, normalize};
use super::{Entry, Kind};
use crate::exit::{Exit, coded};

/// The project's files: git's list in a checkout, else a walk less `.dockerignore`.
pub(super) fn candidates(dir: &Path) -> Result<(Vec<String>, bool)> {
    let git = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            ".",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = git
        && out.status.success()
    {
        let list = out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        return Ok((list, true));
    }
    let ignore = dockerignore(dir, &dir.join(".dockerignore"))?;
    let mut out = Vec::new();
    walk(dir, "", &ignore, &mut out)?;
    Ok((out, false))
}

pub(super) fn walk(
    dir: &Path,
    rel: &str,
    ignore: &ignore::gitignore::Gitignore,
    out: &mut Vec<String>,
) -> Result<()> {
    let here = dir.join(rel);
    let read =
        std::fs::read_dir(&here).with_context(|| format!("cannot read `{}`", here.display()))?;
    for item in read {
        let item = item.with_context(|| format!("cannot read `{}`", here.display()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let path = join(rel, &name);
        let ty = item
            .file_type()
            .with_context(|| format!("cannot read `{}`", item.path().display()))?;
        if ignore
            .matched_path_or_any_parents(&path, ty.is_dir())
            .is_ignore()
        {
            continue;
        }
        if ty.is_dir() {
            walk(dir, &path, ignore, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// A `.dockerignore` as a matcher: each pattern anchored at its directory, as Docker reads
/// them (`foo` is `./foo`, not any `foo`), `!` exceptions kept.
pub(super) fn dockerignore(root: &Path, file: &Path) -> Result<ignore::gitignore::Gitignore> {
    let mut b = ignore::gitignore::GitignoreBuilder::new(root);
    if let Ok(text) = std::fs::read_to_string(file) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(p) => ("!", p.trim()),
                None => ("", line),
            };
            let pat = pat.trim_start_matches("./").trim_start_matches('/');
            b.add_line(None, &format!("{neg}/{pat}"))
                .with_context(|| format!("`{}`: bad pattern `{line}`", file.display()))?;
        }
    }
    b.build()
        .with_context(|| format!("cannot read `{}`", file.display()))
}

/// One file's entry (`None` for what is not a file: a submodule's directory, a file git
/// lists but that was deleted).
pub(super) fn entry(dir: &Path, path: &str, kind: Kind) -> Result<Option<Entry>> {
    if path.contains(['\n', '\r']) {
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{}` has a line break in its name, which the host's tools cannot carry; rename it",
                path.escape_debug()
            ),
        ));
    }
    let local = dir.join(path);
    let meta = match std::fs::symlink_metadata(&local) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read `{}`", local.display())));
        }
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&local)
            .with_context(|| format!("cannot read the symlink `{}`", local.display()))?;
        let t = target.to_string_lossy().into_owned();
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        if target.is_absolute() || normalize(&join(parent, &t)).is_none() {
            return Err(coded(
                Exit::BadInput,
                format!(
                    "the symlink `{path}` points out of the project (to `{t}`): homebase carries only the project's own files; copy what it points to into the project, or leave it out (.gitignore / .dockerignore)"
                ),
            ));
        }
        return Ok(Some(Entry {
            path: path.to_string(),
            kind: Kind::Link,
            object: hex(&Sha256::digest(t.as_bytes())),
            size: t.len() as u64,
            local,
        }));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let data =
        std::fs::read(&local).with_context(|| format!("cannot read `{}`", local.display()))?;
    let kind = match kind {
        Kind::Secret => Kind::Secret,
        _ if executable(&meta) => Kind::Exec,
        _ => Kind::File,
    };
    let hash = hex(&Sha256::digest(&data));
    let object = match kind {
        Kind::Exec => format!("{hash}.x"),
        Kind::Secret => format!("{hash}.s"),
        _ => hash,
    };
    Ok(Some(Entry {
        path: path.to_string(),
        kind,
        object,
        size: data.len() as u64,
        local,
    }))
}

#[cfg(unix)]
pub(super) fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
pub(super) fn executable(_: &std::fs::Metadata) -> bool {
    false
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
