//! `homebase backup now|ls|restore|pull`: PostgreSQL by `pg_dump -Fc` inside its container,
//! other named volumes as archives taken with the service paused, a manifest with SHA-256
//! checksums, retention (newest per day for N days, per week for M weeks), and copies on the
//! laptop verified against the manifest.
//!
//! Host layout: `~/.homebase/<project>/backups/<id>/{manifest.json, <files>}`, written into a
//! temp dir and renamed into place, mode 0600.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use homebase_remote::{Session, Target, sh_quote};
use homebase_stack::kinds::Kind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::{BackupArgs, BackupCommand, Global};
use crate::commands::swarm;
use crate::exit::{Exit, coded};
use crate::host::{HostProject, PsEntry, now_secs};
use crate::project::{self, Project};
use crate::ui;
use homebase_proto::clock::{days_from_civil, utc_stamp};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub project: String,
    pub time: u64,
    pub files: Vec<BackupFile>,
}

impl Manifest {
    /// A manifest read from the host is only believed when its id is its directory's name,
    /// it is this project's, and every name in it is a plain file name: it decides paths
    /// on the laptop and words in scripts on the host.
    fn check(&self, dir_name: &str, project: &str) -> Result<(), String> {
        if !homebase_proto::is_safe_name(&self.id) || self.id != dir_name {
            return Err(format!(
                "its manifest's id `{}` is not its directory's name",
                self.id.escape_debug()
            ));
        }
        if self.project != project {
            return Err(format!(
                "its manifest names another project (`{}`)",
                self.project.escape_debug()
            ));
        }
        for f in &self.files {
            let service_ok = homebase_proto::is_safe_name(&f.service);
            let node_ok = f.node.as_deref().is_none_or(homebase_proto::is_safe_name);
            if !homebase_proto::is_safe_name(&f.file) || !service_ok || !node_ok {
                return Err(format!(
                    "its manifest lists an unsafe file name `{}`",
                    f.file.escape_debug()
                ));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("`{}` has no valid SHA-256", f.file.escape_debug()));
            }
        }
        Ok(())
    }

    fn new(project: &Project, id: String, files: Vec<BackupFile>) -> Self {
        Manifest {
            id,
            project: project.config.project.name.clone(),
            time: now_secs(),
            files,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq)]
pub struct BackupFile {
    pub service: String,
    /// `pg_dump` or `volume`.
    pub kind: String,
    /// For `volume`: the path in the container it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// Swarm mode: the node that ran the service and keeps this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

pub fn run(global: &Global, args: &BackupArgs) -> Result<Exit> {
    let project = project::load(global)?;
    match &args.command {
        BackupCommand::Now {
            services,
            this_node,
            scheduled,
        } => {
            if *scheduled && this_node.is_none() && plan(&project, services)?.is_empty() {
                // nothing worth a backup in this stack: say so, as an empty backup
                ui::out(
                    &(serde_json::to_string_pretty(
                        &serde_json::json!({"backup": {"files": []}, "pruned": []}),
                    )? + "\n"),
                )?;
                return Ok(Exit::Ok);
            }
            now(&project, services, this_node.as_deref(), args.json)
        }
        BackupCommand::Ls => ls(&project, args.json),
        BackupCommand::Restore { id, services } => restore(&project, id, services),
        BackupCommand::Pull { id, to } => pull(&project, id.as_deref(), to.clone(), args.json),
    }
}

fn dir(host: &HostProject) -> String {
    format!("{}/backups", host.dir())
}

/// What to back up: PostgreSQL services by dump, every other service with named volumes by archive.
fn plan(project: &Project, only: &[String]) -> Result<Vec<(String, Kind, Vec<String>)>> {
    for s in only {
        project.require_service(s)?;
    }
    Ok(project
        .compose
        .services
        .iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .filter_map(|(name, svc)| {
            let kind = Kind::of(svc.image_repo().as_deref());
            let paths: Vec<String> = svc.named_volumes.iter().map(|(_, t)| t.clone()).collect();
            (kind == Kind::Postgres || !paths.is_empty()).then(|| (name.clone(), kind, paths))
        })
        .collect())
}

fn pg_user_db(project: &Project, service: &str) -> (String, String) {
    let env = &project.compose.services[service].environment;
    let get = |k: &str| env.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let user = get("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
    let db = get("POSTGRES_DB").unwrap_or_else(|| user.clone());
    (user, db)
}

fn now(project: &Project, only: &[String], this_node: Option<&str>, json: bool) -> Result<Exit> {
    let (session, manifest, pruned) = match this_node {
        Some(node) => {
            let session = Session::open(&Target::Local)?;
            let (m, p) = take_here(project, &HostProject::of(&session, project), node, only)?;
            (session, m, p)
        }
        None => {
            let session = project.open_session()?;
            let (m, p) = take(project, &HostProject::of(&session, project), only)?;
            (session, m, p)
        }
    };
    if json {
        ui::out(
            &(serde_json::to_string_pretty(
                &serde_json::json!({"backup": manifest, "pruned": pruned}),
            )? + "\n"),
        )?;
    } else {
        for f in &manifest.files {
            eprintln!(
                "{} {} → {} ({} bytes, sha256 {})",
                f.service,
                f.kind,
                f.file,
                f.bytes,
                &f.sha256[..12.min(f.sha256.len())]
            );
        }
        let pruned = if pruned.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", pruned.join(", "))
        };
        let mut nodes: Vec<&str> = manifest
            .files
            .iter()
            .filter_map(|f| f.node.as_deref())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let kept = if nodes.is_empty() {
            session.host()
        } else {
            format!("node {}", nodes.join(", node "))
        };
        eprintln!("backup {} kept on {kept}{pruned}", manifest.id);
    }
    Ok(Exit::Ok)
}

/// A shell line that sets `c` to the service's container on the host it runs on: by name
/// from `docker compose ps`, or in swarm mode the node's running task of the service.
/// Shell that sets `$c` to the running container of `service` on this engine, or fails
/// the script naming it.
fn locate(host: &HostProject, service: &str) -> String {
    if host.swarm {
        return swarm::locate_task(&host.project, service);
    }
    format!(
        "c=$(docker ps --filter {p} --filter {s} --filter status=running --format '{{{{.Names}}}}' | head -n 1); [ -n \"$c\" ] || {{ echo {msg} >&2; exit 125; }}",
        p = sh_quote(&format!(
            "label=com.docker.compose.project={}",
            host.project
        )),
        s = sh_quote(&format!("label=com.docker.compose.service={service}")),
        msg = sh_quote(&format!(
            "service `{service}` is not running on this host; deploy it first"
        )),
    )
}

type Item = (String, Kind, Vec<String>);

/// Takes a backup of `only` (or of everything worth one) on the host, then prunes by
/// retention; returns the manifest and the ids pruned. Used by `backup now`, by deploy
/// before it changes a database, and by the daemon's schedule. In swarm mode each
/// service's part is taken and kept on the node that runs it, under the same id.
pub fn take(
    project: &Project,
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
    if host.swarm {
        let mut at = swarm::placements(host.session, &host.project)?;
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
            let session = node_session(project, &node)?;
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
    Ok((Manifest::new(project, id, files), pruned))
}

/// A backup's id: its UTC time (retention reads the day from it; ids sort by time) and four
/// hex digits of this process and instant, so that two backups in the same second (a
/// deploy's and the daily one) never share an id or a temp directory.
fn new_id() -> String {
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
fn take_here(
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
    Ok((Manifest::new(project, id, files), pruned))
}

/// An SSH session to a node of the swarm, by its name in [nodes].
fn node_session(project: &Project, node: &str) -> Result<Session> {
    project.config.nodes.get(node).ok_or_else(|| {
        coded(
            Exit::BadInput,
            format!(
                "node `{node}` is not in [nodes] of homebase.toml; add it to reach its backups"
            ),
        )
    })?;
    project
        .node_session(node)
        .with_context(|| format!("cannot reach node {node}, which keeps these backups"))
}

/// One host's part of a backup: dumps and archives into a temp dir, a manifest of them,
/// then renamed into place: two commands (the dumps; the manifest, the rename and a list
/// of the host's backups for retention). Returns the files and that list.
fn take_on(
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
        let _ = writeln!(script, "{}", locate(host, service));
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
    let mut files = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [service, kind, path, bytes, sha, file] = f[..] {
            files.push(BackupFile {
                service: service.into(),
                kind: kind.into(),
                path: (path != "-").then(|| path.to_string()),
                file: file.into(),
                bytes: bytes.parse().unwrap_or(0),
                sha256: sha.into(),
                node: node.map(str::to_string),
            });
        }
    }
    let part = Manifest::new(project, id.to_string(), files.clone());
    let text = serde_json::to_string_pretty(&part)?;
    let target = format!("{}/{id}", dir(host));
    let out = session.check(&format!(
        "umask 077; printf '%s' {text} > {tmp}/manifest.json; if [ -e {target} ]; then rm -rf {tmp}; echo 'a backup with this id exists; try again in a second' >&2; exit 1; fi; mv {tmp} {target}; {list}",
        text = sh_quote(&text),
        list = list_script(host)
    ))?;
    Ok((files, parse_list(host, &out)))
}

/// Every backup: the host's, or in swarm mode every node's parts merged by id. A node that
/// cannot be reached is named, and its parts left out.
fn list_all(keepers: &mut Keepers) -> Result<Vec<Manifest>> {
    let project = keepers.project;
    if !project.swarm() {
        return list(&HostProject::of(keepers.host, project));
    }
    let mut all: Vec<Manifest> = Vec::new();
    for node in project.config.nodes.keys() {
        let parts = match keepers.node(node) {
            Ok(session) => list(&HostProject::of(session, project))?,
            Err(e) => {
                eprintln!("warning: {e:#}; its backups are not listed");
                continue;
            }
        };
        for part in parts {
            match all.iter_mut().find(|m| m.id == part.id) {
                Some(m) => {
                    m.time = m.time.min(part.time);
                    m.files.extend(part.files);
                }
                None => all.push(part),
            }
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

fn list(host: &HostProject) -> Result<Vec<Manifest>> {
    let out = host.session.check(&list_script(host))?;
    Ok(parse_list(host, &out))
}

/// Shell that prints each backup on the host: its directory's name, a tab, its manifest.
fn list_script(host: &HostProject) -> String {
    format!(
        "for m in {}/*/manifest.json; do [ -f \"$m\" ] || continue; d=${{m%/manifest.json}}; printf '%s\\t' \"${{d##*/}}\"; tr -d '\\n' < \"$m\"; echo; done; true",
        dir(host)
    )
}

/// [`list_script`]'s output: the manifests that check out, by id (one that does not is
/// named and skipped).
fn parse_list(host: &HostProject, out: &str) -> Vec<Manifest> {
    let mut v: Vec<Manifest> = out
        .lines()
        .filter_map(|l| {
            let (dir_name, json) = l.split_once('\t')?;
            let m: Manifest = serde_json::from_str(json).ok()?;
            match m.check(dir_name, &host.project) {
                Ok(()) => Some(m),
                Err(why) => {
                    ui::warn(&format!(
                        "skipping backup `{}` on {}: {why}",
                        dir_name.escape_debug(),
                        host.session.host()
                    ));
                    None
                }
            }
        })
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

pub fn retain(ids: &[String], daily: u32, weekly: u32) -> BTreeSet<String> {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    sorted.reverse();
    let day = |id: &str| id.get(..8).unwrap_or("").to_string();
    let week = |id: &str| -> i64 {
        let (y, m, d) = (
            id.get(..4).and_then(|x| x.parse().ok()),
            id.get(4..6).and_then(|x| x.parse().ok()),
            id.get(6..8).and_then(|x| x.parse().ok()),
        );
        let (Some(y), Some(m), Some(d)) = (y, m, d) else {
            return 0;
        };
        days_from_civil(y, m, d).div_euclid(7)
    };
    let mut keep = BTreeSet::new();
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    // every backup of the newest day is kept: a manual backup never prunes the daily one
    // taken a minute before, nor the other way round
    if let Some(newest) = sorted.first().map(|id| day(id)) {
        keep.extend(
            sorted
                .iter()
                .filter(|id| day(id) == newest)
                .map(|id| id.to_string()),
        );
    }
    for id in sorted {
        let (dk, wk) = (day(id), week(id));
        if !days.contains(&dk) && days.len() < daily as usize {
            days.push(dk.clone());
            keep.insert(id.clone());
        }
        if !weeks.contains(&wk) && weeks.len() < weekly as usize {
            weeks.push(wk);
            keep.insert(id.clone());
        }
    }
    keep
}

/// Removes the backups of `listed` (the host's) that retention does not keep; returns
/// their ids.
fn prune(host: &HostProject, project: &Project, listed: &[Manifest]) -> Result<Vec<String>> {
    let ids: Vec<String> = listed.iter().map(|m| m.id.clone()).collect();
    let keep = retain(
        &ids,
        project.config.backup.keep_daily,
        project.config.backup.keep_weekly,
    );
    let gone: Vec<String> = ids.into_iter().filter(|id| !keep.contains(id)).collect();
    if !gone.is_empty() {
        let paths: Vec<String> = gone
            .iter()
            .map(|id| format!("{}/{}", dir(host), sh_quote(id)))
            .collect();
        host.session.check(&format!("rm -rf {}", paths.join(" ")))?;
    }
    Ok(gone)
}

fn ls(project: &Project, json: bool) -> Result<Exit> {
    let session = project.open_session()?;
    let all = list_all(&mut Keepers::new(project, &session))?;
    if json {
        ui::out(&(serde_json::to_string_pretty(&all)? + "\n"))?;
    } else {
        let mut s = String::new();
        for m in &all {
            let total: u64 = m.files.iter().map(|f| f.bytes).sum();
            let what: Vec<String> = m
                .files
                .iter()
                .map(|f| match &f.node {
                    Some(n) => format!("{} ({} on {n})", f.service, f.kind),
                    None => format!("{} ({})", f.service, f.kind),
                })
                .collect();
            let _ = writeln!(s, "{}  {:>12} bytes  {}", m.id, total, what.join(", "));
        }
        if all.is_empty() {
            s.push_str("no backups yet: `homebase backup now`\n");
        }
        ui::out(&s)?;
    }
    Ok(Exit::Ok)
}

fn find(keepers: &mut Keepers, id: &str) -> Result<Manifest> {
    if !homebase_proto::is_safe_name(id) {
        return Err(coded(
            Exit::BadInput,
            format!(
                "`{}` is not a backup id; `homebase backup ls` lists them",
                id.escape_debug()
            ),
        ));
    }
    let all = list_all(keepers)?;
    all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        coded(
            Exit::BadInput,
            format!(
                "no backup `{id}` on {}; the backups are: {}",
                keepers.host.host(),
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            ),
        )
    })
}

/// Sessions to the nodes that keep a backup's files, opened once each.
struct Keepers<'p> {
    project: &'p Project,
    host: &'p Session,
    nodes: std::collections::HashMap<String, Session>,
}

impl<'p> Keepers<'p> {
    fn new(project: &'p Project, host: &'p Session) -> Self {
        Keepers {
            project,
            host,
            nodes: Default::default(),
        }
    }

    /// The session to where `f` is kept: its node, or the host.
    fn of(&mut self, f: &BackupFile) -> Result<&Session> {
        match &f.node {
            Some(node) => self.node(node),
            None => Ok(self.host),
        }
    }

    /// The session to a node, opened on first use.
    fn node(&mut self, node: &str) -> Result<&Session> {
        if !self.nodes.contains_key(node) {
            let s = node_session(self.project, node)?;
            self.nodes.insert(node.to_string(), s);
        }
        self.nodes
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("no session to node {node}"))
    }
}

fn restore(project: &Project, id: &str, only: &[String]) -> Result<Exit> {
    for s in only {
        project.require_service(s)?;
    }
    let session = project.open_session()?;
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
        let loc = if host.swarm {
            locate(&there, &f.service)
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
            _ if host.swarm => restore_task_volume(&host, &ps, &there, f, &format!("{check}; {loc}"), &file, &parent),
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
        eprintln!("restored {} of `{}` from backup {id}", f.kind, f.service);
    }
    Ok(Exit::Ok)
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

fn pull(project: &Project, id: Option<&str>, to: Option<PathBuf>, json: bool) -> Result<Exit> {
    let session = project.open_session()?;
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
            &(serde_json::to_string_pretty(
                &serde_json::json!({"id": m.id, "to": dest, "files": m.files.len(), "verified": true}),
            )? + "\n"),
        )?;
    } else {
        eprintln!(
            "pulled backup {} ({} files, checksums verified) to {}",
            m.id,
            m.files.len(),
            dest.display()
        );
    }
    Ok(Exit::Ok)
}

/// Creates `dir` and its parents, the last levels 0700 (backups hold the databases).
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("cannot create `{}`", dir.display()))
}

/// Writes a file readable by its owner only, replacing what was there.
fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
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
fn ignore_in_git(root: &std::path::Path, pattern: &str) {
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
        eprintln!("added {pattern} to {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_newest_per_day_and_week() {
        let ids: Vec<String> = [
            "20261123T030000Z",
            "20261123T120000Z", // same day: newest kept
            "20261122T030000Z",
            "20261121T030000Z",
            "20261116T030000Z",
            "20261109T030000Z",
            "20261001T030000Z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let keep = retain(&ids, 2, 3);
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        // the newest day whole (23rd 03:00 and 12:00); days: 23rd, 22nd; weeks: this week's
        // newest (23rd 12:00), the 16th's week, the 9th's week
        assert_eq!(
            keep,
            [
                "20261109T030000Z",
                "20261116T030000Z",
                "20261122T030000Z",
                "20261123T030000Z",
                "20261123T120000Z"
            ]
        );
        // keep_daily = 1: a manual backup beside today's daily one prunes neither; the
        // older day goes
        let ids: Vec<String> = ["20261123T030000Z", "20261123T030130Z", "20261122T030000Z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let keep = retain(&ids, 1, 0);
        assert_eq!(keep.len(), 2, "{keep:?}");
        assert!(!keep.contains("20261122T030000Z"));
    }
}
