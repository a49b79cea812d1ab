//! Restoring a backup into the running services (checksums verified on the host first), and
//! pulling one to the laptop (verified against its manifest, private, kept out of git).

use std::path::PathBuf;

use anyhow::{Context, Result};
use homebase_remote::sh_quote;
use sha2::{Digest, Sha256};

use super::{Keepers, find, list_all};
use crate::exit::{Exit, coded};
use crate::host::backup::{BackupFile, dir, pg_user_db};
use crate::host::{HostProject, PsEntry};
use crate::project::Project;
use crate::ui;

pub(super) fn restore(project: &Project, id: &str, only: &[String]) -> Result<Exit> {
    for s in only {
        project.require_service(s)?;
    }
    let session = project.link.open_session()?;
    let host = HostProject::of(&session, project);
    let mut keepers = Keepers::new(project, &session);
    let m = find(&mut keepers, id)?;
    let ps = host.ps()?;
    for f in m
        .files
        .iter()
        .filter(|f| only.is_empty() || only.contains(&f.service))
    {
        let there = HostProject::of(keepers.of(f)?, project);
        let loc = if host.is_stack() {
            there.locate(&f.service)
        } else {
            let c = ps.iter().find(|p| p.service == f.service).ok_or_else(|| {
                coded(
                    Exit::Refused,
                    format!(
                        "service `{}` has no container on {}; deploy first, then restore",
                        f.service,
                        session.host()
                    ),
                )
            })?;
            format!("c={}", sh_quote(&c.name))
        };
        let file = format!("{}/{}/{}", dir(&there), sh_quote(id), sh_quote(&f.file));
        // verify the checksum on the host before touching anything
        let check = format!(
            "s=$( (sha256sum {file} 2>/dev/null || shasum -a 256 {file}) | cut -d' ' -f1); [ \"$s\" = {} ] || {{ echo {} >&2; exit 1; }}",
            sh_quote(&f.sha256),
            sh_quote(&format!("checksum mismatch for {}", f.file))
        );
        let path = f.path.clone().unwrap_or_default();
        let parent = std::path::Path::new(&path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let done = match f.kind.as_str() {
            "pg_dump" => {
                let (user, db) = pg_user_db(project, &f.service);
                there.session.check(&format!(
                    "set -e; {check}; {loc}; for i in $(seq 60); do docker exec \"$c\" pg_isready -U {u} >/dev/null 2>&1 && break; sleep 0.5; done; docker exec -i \"$c\" pg_restore --clean --if-exists --no-owner -U {u} -d {d} < {file}",
                    u = sh_quote(&user),
                    d = sh_quote(&db)
                ))
                .map(drop)
                .map_err(anyhow::Error::from)
            }
            _ if host.is_stack() => restore_task_volume(&host, &ps, &there, f, &format!("{check}; {loc}"), &file, &parent),
            _ => there.session.check(&format!(
                // the service is started again whatever happens, so that a failed restore
                // never leaves it down (the daemon would take it as stopped by hand)
                "set -e; {check}; {loc}; docker stop \"$c\" >/dev/null; trap 'docker start \"$c\" >/dev/null' EXIT; \
                 rm -f \"$HOME/.hb-unzip-failed-$$\"; {{ gunzip -c {file} || touch \"$HOME/.hb-unzip-failed-$$\"; }} | docker cp - \"$c\":{}; \
                 if [ -e \"$HOME/.hb-unzip-failed-$$\" ]; then rm -f \"$HOME/.hb-unzip-failed-$$\"; echo 'the archive is damaged' >&2; exit 1; fi",
                sh_quote(&parent)
            ))
            .map(drop)
            .map_err(anyhow::Error::from),
        };
        done.with_context(|| {
            format!(
                "restoring `{}` of service `{}` from backup {id}",
                f.file, f.service
            )
        })?;
        crate::esay!("restored {} of `{}` from backup {id}", f.kind, f.service);
    }
    Ok(Exit::Ok)
}

/// Swarm: a task's volume cannot be written under it, and a stopped task is replaced at
/// once. So the service is scaled to 0 on the manager, the archive unpacked into its
/// volume on the node through a container that is created and never started, and the
/// service scaled back (whatever happened in between).
pub(super) fn restore_task_volume(
    manager: &HostProject,
    ps: &[PsEntry],
    there: &HostProject,
    f: &BackupFile,
    check_and_locate: &str,
    file: &str,
    parent: &str,
) -> Result<()> {
    let path = f.path.clone().unwrap_or_default();
    let template = format!(
        "{{{{range .Mounts}}}}{{{{if eq .Destination {}}}}}{{{{.Name}}}}{{{{end}}}}{{{{end}}}} {{{{.Config.Image}}}}",
        serde_json::to_string(&path)?
    );
    let found = there.session.check(&format!(
        "set -e; {check_and_locate}; docker inspect -f {} \"$c\"",
        sh_quote(&template)
    ))?;
    let (volume, image) = found.trim().split_once(' ').unwrap_or(("", ""));
    if volume.is_empty() || image.is_empty() {
        return Err(coded(
            Exit::Refused,
            format!(
                "service `{}` has no volume at {path} on node {}; its backup cannot go back there",
                f.service,
                f.node.as_deref().unwrap_or("?")
            ),
        ));
    }
    let service = sh_quote(&format!("{}_{}", manager.project, f.service));
    let replicas = ps
        .iter()
        .find(|p| p.service == f.service)
        .and_then(|p| p.desired)
        .unwrap_or(1);
    manager
        .session
        .check(&format!("docker service scale {service}=0 >/dev/null"))?;
    let unpack = there.session.check(&format!(
        "set -e; for i in $(seq 60); do docker ps -q --filter label=com.docker.swarm.service.name={service} | grep -q . || break; sleep 0.5; done; \
         t=$(docker create -v {v}:{p} {img} true); trap 'docker rm -f \"$t\" >/dev/null 2>&1' EXIT; \
         gunzip -c {file} | docker cp - \"$t\":{parent}",
        v = sh_quote(volume),
        p = sh_quote(&path),
        img = sh_quote(image),
        parent = sh_quote(parent),
    ));
    let back = manager.session.check(&format!(
        "docker service scale {service}={replicas} >/dev/null"
    ));
    unpack?;
    back?;
    Ok(())
}

pub(super) fn pull(
    project: &Project,
    id: Option<&str>,
    to: Option<PathBuf>,
    json: bool,
) -> Result<Exit> {
    let session = project.link.open_session()?;
    let mut keepers = Keepers::new(project, &session);
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
