//! Restoring a backup into the running services: checksums verified on the host first; a
//! volume's service stopped while its archive goes back and started again whatever
//! happens; in swarm mode the service scaled to 0 and its volume written on its node.

use anyhow::{Context, Result};
use homebase_remote::sh_quote;

use super::{BackupFile, Keepers, dir, find, pg_user_db};
use crate::exit::{Exit, coded};
use crate::link::Link;
use crate::project::Project;
use crate::{HostProject, PsEntry};

/// Restores backup `id` (of `only`, else every service in it) into the running services:
/// each file's checksum verified on the host that keeps it first; `restored` hears of each
/// file once it is back.
pub fn restore(
    project: &Project,
    link: &Link,
    id: &str,
    only: &[String],
    restored: &mut dyn FnMut(&BackupFile),
) -> Result<()> {
    for s in only {
        project.require_service(s)?;
    }
    let session = link.open_session()?;
    let host = HostProject::of(&session, project);
    let mut keepers = Keepers::new(project, link, &session);
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
        restored(f);
    }
    Ok(())
}

/// Swarm: a task's volume cannot be written under it, and a stopped task is replaced at
/// once. So the service is scaled to 0 on the manager, the archive unpacked into its
/// volume on the node through a container that is created and never started, and the
/// service scaled back (whatever happened in between).
fn restore_task_volume(
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
