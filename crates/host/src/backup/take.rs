//! Taking a backup: the dumps and archives on the host that runs each service, the
//! manifest, the rename into place, retention.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use homebase_remote::sh_quote;
use homebase_stack::kinds::Kind;

use super::{
    BackupFile, Manifest, dir, list_script, node_session, parse_list, pg_user_db, plan, prune,
};
use crate::HostProject;
use crate::exit::{Exit, coded};
use crate::link::Link;
use crate::project::Project;
use homebase_proto::clock::now_secs;
use homebase_proto::clock::utc_stamp;

pub type Item = (String, Kind, Vec<String>);

/// Takes a backup of `only` (or of everything worth one) on the host, then prunes by
/// retention; returns the manifest and the ids pruned. Used by `backup now`, by deploy
/// before it changes a database, and by the daemon's schedule. In swarm mode each
/// service's part is taken and kept on the node that runs it, under the same id.
pub fn take(
    project: &Project,
    link: &Link,
    host: &HostProject,
    only: &[String],
) -> Result<(Manifest, Vec<String>)> {
    let items = plan(project, only)?;
    if items.is_empty() {
        return Err(coded(
            Exit::BadInput,
            "nothing to back up: no PostgreSQL service and no named volume in the stack",
        ));
    }
    let id = new_id();
    let mut files = Vec::new();
    let mut pruned = Vec::new();
    if host.is_stack() {
        let mut at = crate::stack::placements(host.session, &host.project)?;
        let mut by_node: std::collections::BTreeMap<String, Vec<Item>> = Default::default();
        for item in items {
            let node = at.remove(&item.0).map(|p| p.node).ok_or_else(
                || {
                    coded(
                        Exit::Refused,
                        format!(
                            "service `{}` has no running task on a ready node; `homebase status` shows why",
                            item.0
                        ),
                    )
                },
            )?;
            by_node.entry(node).or_default().push(item);
        }
        for (node, items) in by_node {
            let session = node_session(project, link, &node)?;
            let there = HostProject::of(&session, project);
            let (part, on_node) = take_on(project, &there, &id, &items, Some(&node))?;
            files.extend(part);
            pruned.extend(prune(&there, project, &on_node)?);
        }
    } else {
        let (part, on_host) = take_on(project, host, &id, &items, None)?;
        files = part;
        pruned = prune(host, project, &on_host)?;
    }
    pruned.sort();
    pruned.dedup();
    Ok((super::new_manifest(project, id, files), pruned))
}

/// A backup's id: its UTC time (retention reads the day from it; ids sort by time) and four
/// hex digits of this process and instant, so that two backups in the same second (a
/// deploy's and the daily one) never share an id or a temp directory.
pub fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{salt:04x}", utc_stamp(now_secs()))
}

/// Swarm mode, on a node (its daemon's schedule): the part of a backup for the services
/// whose tasks run on this engine, kept here. Nothing running here is an empty part, not
/// an error, and writes nothing.
pub fn take_here(
    project: &Project,
    host: &HostProject,
    node: &str,
    only: &[String],
) -> Result<(Manifest, Vec<String>)> {
    let here = host.session.check(&format!(
        "docker ps --filter {} --format '{{{{.Label \"com.docker.swarm.service.name\"}}}}'",
        sh_quote(&format!(
            "label=com.docker.stack.namespace={}",
            host.project
        ))
    ))?;
    let prefix = format!("{}_", host.project);
    let here: Vec<&str> = here
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .collect();
    let items: Vec<Item> = plan(project, only)?
        .into_iter()
        .filter(|(s, _, _)| here.contains(&s.as_str()))
        .collect();
    let id = new_id();
    let (files, pruned) = if items.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let (part, on_host) = take_on(project, host, &id, &items, Some(node))?;
        let pruned = prune(host, project, &on_host)?;
        (part, pruned)
    };
    Ok((super::new_manifest(project, id, files), pruned))
}

/// One host's part of a backup: dumps and archives into a temp dir, a manifest of them,
/// then renamed into place: two commands (the dumps; the manifest, the rename and a list
/// of the host's backups for retention). Returns the files and that list.
pub fn take_on(
    project: &Project,
    host: &HostProject,
    id: &str,
    items: &[Item],
    node: Option<&str>,
) -> Result<(Vec<BackupFile>, Vec<Manifest>)> {
    let session = host.session;
    let tmp = format!("{}/.tmp-{id}", dir(host));
    let mut script = format!("set -e; umask 077; mkdir -p {tmp}; cd {tmp}\n");
    // checksum that works on Linux (sha256sum) and macOS (shasum)
    script.push_str(
        "sum() { (sha256sum \"$1\" 2>/dev/null || shasum -a 256 \"$1\") | cut -d' ' -f1; }\n",
    );
    script
        .push_str("emit() { echo \"$1 $2 $3 $(wc -c < \"$4\" | tr -d ' ') $(sum \"$4\") $4\"; }\n");
    for (service, kind, paths) in items {
        let _ = writeln!(script, "{}", host.locate(service));
        if *kind == Kind::Postgres {
            let (user, db) = pg_user_db(project, service);
            let _ = writeln!(
                script,
                "docker exec \"$c\" pg_dump -Fc -U {} {} > {service}.pgdump\nemit {service} pg_dump - {service}.pgdump",
                sh_quote(&user),
                sh_quote(&db)
            );
        } else {
            // paused while archived, so the files are consistent; unpaused whatever happens
            let _ = writeln!(
                script,
                "docker pause \"$c\" >/dev/null; trap 'docker unpause \"$c\" >/dev/null 2>&1' EXIT"
            );
            for (i, path) in paths.iter().enumerate() {
                let f = format!("{service}-{i}.tar.gz");
                // a failed copy must fail the backup: no pipefail in every sh, so the
                // copy's status is kept in a file
                let _ = writeln!(
                    script,
                    "rm -f .cp-failed; {{ docker cp \"$c\":{} - || echo $? > .cp-failed; }} | gzip > {f}\n\
                     if [ -e .cp-failed ]; then echo \"cannot archive {} of {service}\" >&2; exit 1; fi\n\
                     emit {service} volume {} {f}",
                    sh_quote(path),
                    path.escape_debug(),
                    sh_quote(path)
                );
            }
            let _ = writeln!(script, "docker unpause \"$c\" >/dev/null; trap - EXIT");
        }
    }
    let out = session
        .check(&script)
        .with_context(|| format!("backup on {} failed; nothing was kept", session.host()));
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = session.run(&format!("rm -rf {tmp}"));
            return Err(e);
        }
    };
    let files = parse_emitted(&out, node);
    let part = super::new_manifest(project, id.to_string(), files.clone());
    let text = serde_json::to_string_pretty(&part)?;
    let target = format!("{}/{id}", dir(host));
    let out = session.check(&format!(
        "umask 077; printf '%s' {text} > {tmp}/manifest.json; if [ -e {target} ]; then rm -rf {tmp}; echo 'a backup with this id exists; try again in a second' >&2; exit 1; fi; mv {tmp} {target}; {list}",
        text = sh_quote(&text),
        list = list_script(host)
    ))?;
    Ok((files, parse_list(host, &out)))
}

/// The dump script's `emit` lines (`service kind path bytes sha256 file`, `-` for no path):
/// one file each; a line of another shape (a tool's chatter) is no file.
fn parse_emitted(out: &str, node: Option<&str>) -> Vec<BackupFile> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [service, kind, path, bytes, sha, file] = f[..] else {
                return None;
            };
            Some(BackupFile {
                service: service.into(),
                kind: kind.into(),
                path: (path != "-").then(|| path.to_string()),
                file: file.into(),
                bytes: bytes.parse().ok()?,
                sha256: sha.into(),
                node: node.map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_emitted;

    #[test]
    fn the_dump_scripts_lines_read_as_files() {
        let out = concat!(
            "db pg_dump - 7340 9f86d081884c7d65 db.pgdump\n",
            "notes volume /data 2048 2c26b46b68ffc68f notes-0.tar.gz\n",
            "pg_dump: warning: something\n",
        );
        let files = parse_emitted(out, Some("mini"));
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, None);
        assert_eq!(
            (files[0].bytes, files[0].file.as_str()),
            (7340, "db.pgdump")
        );
        assert_eq!(files[1].path.as_deref(), Some("/data"));
        assert_eq!(files[1].node.as_deref(), Some("mini"));
        // a size that is not a number is no file
        assert!(parse_emitted("db pg_dump - big 9f86 db.pgdump\n", None).is_empty());
    }
}
