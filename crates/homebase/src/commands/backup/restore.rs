//! Pulling a backup to the laptop (verified against its manifest, private, kept out of git).

use std::path::PathBuf;

use anyhow::{Context, Result};
use homebase_remote::sh_quote;
use sha2::{Digest, Sha256};

use crate::exit::{Exit, coded};
use crate::host::HostProject;
use crate::host::backup::{Keepers, dir, find, list_all};
use crate::project::{Link, Project};
use crate::ui;

pub(super) fn pull(
    project: &Project,
    link: &Link,
    id: Option<&str>,
    to: Option<PathBuf>,
    json: bool,
) -> Result<Exit> {
    let session = link.open_session()?;
    let mut keepers = Keepers::new(project, link, &session);
    let m = match id {
        Some(id) => find(&mut keepers, id)?,
        None => list_all(&mut keepers)?.pop().ok_or_else(|| {
            coded(
                Exit::BadInput,
                "no backups on the host yet: `homebase backup now`",
            )
        })?,
    };
    let default_root = to.is_none();
    let root = to.unwrap_or_else(|| project.root.join(".homebase-backups"));
    // ids and names were checked when the manifest was read (Manifest::check)
    let dest = root.join(&project.config.project.name).join(&m.id);
    create_private_dir(&dest)?;
    if default_root {
        ignore_in_git(&project.root, ".homebase-backups/");
    }
    for f in &m.files {
        let there = keepers.of(f)?;
        let out = there
            .command(
                &format!(
                    "cat {}/{}/{}",
                    dir(&HostProject::of(there, project)),
                    sh_quote(&m.id),
                    sh_quote(&f.file)
                ),
                false,
            )
            .output()
            .with_context(|| format!("cannot run ssh to {}", there.host()))?;
        anyhow::ensure!(
            out.status.success(),
            "cannot read `{}` of backup {} on {}",
            f.file,
            m.id,
            there.host()
        );
        let sum: String = Sha256::digest(&out.stdout)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if sum != f.sha256 {
            return Err(coded(
                Exit::Unreachable,
                format!(
                    "`{}` arrived with checksum {sum}, the manifest says {}; nothing kept, try again",
                    f.file, f.sha256
                ),
            ));
        }
        write_private(&dest.join(&f.file), &out.stdout)?;
    }
    write_private(&dest.join("manifest.json"), &serde_json::to_vec_pretty(&m)?)?;
    if json {
        ui::out(
            &(serde_json::to_string_pretty(&homebase_proto::BackupPulled {
                id: m.id.clone(),
                to: dest.display().to_string(),
                files: m.files.len(),
                verified: true,
            })? + "\n"),
        )?;
    } else {
        crate::esay!(
            "pulled backup {} ({} files, checksums verified) to {}",
            m.id,
            m.files.len(),
            dest.display()
        );
    }
    Ok(Exit::Ok)
}

/// Creates `dir` and its parents, the last levels 0700 (backups hold the databases).
pub(super) fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("cannot create `{}`", dir.display()))
}

/// Writes a file readable by its owner only, replacing what was there.
pub(super) fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o
        .open(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make `{}` private", path.display()))?;
    }
    f.write_all(data)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Adds `pattern` to the `.gitignore` beside `root` when `root` is in a git checkout and
/// the file does not list it yet, so pulled backups are never committed.
pub(super) fn ignore_in_git(root: &std::path::Path, pattern: &str) {
    let in_git = root.ancestors().any(|d| d.join(".git").exists());
    if !in_git {
        return;
    }
    let path = root.join(".gitignore");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.trim() == pattern || l.trim() == pattern.trim_end_matches('/'))
    {
        return;
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    if let Err(e) = std::fs::write(&path, format!("{text}{sep}{pattern}\n")) {
        ui::warn(&format!(
            "cannot add {pattern} to `{}`: {e}",
            path.display()
        ));
    } else {
        crate::esay!("added {pattern} to {}", path.display());
    }
}
