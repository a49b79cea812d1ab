//! Backups on the host: PostgreSQL by `pg_dump -Fc` inside its container, other named
//! volumes as archives taken with the service paused, a manifest with SHA-256 checksums,
//! retention (newest per day for N days, per week for M weeks). Taken by `backup now`, by
//! deploy before it changes a database, by the daemon's schedule; listed by `backup ls`
//! and preflight.
//!
//! Host layout: `~/.homebase/<project>/backups/<id>/{manifest.json, <files>}`, written into a
//! temp dir and renamed into place, mode 0600.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use homebase_remote::{Session, sh_quote};
use homebase_stack::kinds::Kind;

use crate::HostProject;
use crate::exit::{Exit, coded};
use crate::link::Link;
use crate::project::Project;
use homebase_proto::clock::days_from_civil;
use homebase_proto::clock::now_secs;

mod restore;
mod take;

pub use restore::restore;

pub use take::{Item, new_id, take, take_here, take_on};

pub use homebase_proto::{BackupFile, BackupManifest as Manifest};

/// A manifest of this project, taken now.
pub fn new_manifest(project: &Project, id: String, files: Vec<BackupFile>) -> Manifest {
    Manifest {
        id,
        project: project.config.project.name.clone(),
        time: now_secs(),
        files,
    }
}

pub fn dir(host: &HostProject) -> String {
    format!("{}/backups", host.dir())
}

/// What to back up: PostgreSQL services by dump, every other service with named volumes by archive.
pub fn plan(project: &Project, only: &[String]) -> Result<Vec<(String, Kind, Vec<String>)>> {
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

pub fn pg_user_db(project: &Project, service: &str) -> (String, String) {
    let env = &project.compose.services[service].environment;
    let get = |k: &str| env.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let user = get("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
    let db = get("POSTGRES_DB").unwrap_or_else(|| user.clone());
    (user, db)
}

/// An SSH session to a node of the swarm, by its name in [nodes].
pub fn node_session(project: &Project, link: &Link, node: &str) -> Result<Session> {
    project.config.nodes.get(node).ok_or_else(|| {
        coded(
            Exit::BadInput,
            format!(
                "node `{node}` is not in [nodes] of homebase.toml; add it to reach its backups"
            ),
        )
    })?;
    link.node_session(node)
        .with_context(|| format!("cannot reach node {node}, which keeps these backups"))
}

/// The project's backups on its host, oldest first (single-host mode).
pub fn manifests(session: &Session, project: &Project) -> Result<Vec<Manifest>> {
    list(&HostProject::of(session, project))
}

pub fn list(host: &HostProject) -> Result<Vec<Manifest>> {
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
                    crate::report::warn(&format!(
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

/// Every backup: the host's, or in swarm mode every node's parts merged by id. A node that
/// cannot be reached is named, and its parts left out.
pub fn list_all(keepers: &mut Keepers) -> Result<Vec<Manifest>> {
    let project = keepers.project;
    if !project.swarm() {
        return list(&HostProject::of(keepers.host, project));
    }
    let mut all: Vec<Manifest> = Vec::new();
    for node in project.config.nodes.keys() {
        let parts = match keepers.node(node) {
            Ok(session) => list(&HostProject::of(session, project))?,
            Err(e) => {
                crate::report::warn(&format!("{e:#}; its backups are not listed"));
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

pub fn find(keepers: &mut Keepers, id: &str) -> Result<Manifest> {
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
pub struct Keepers<'p> {
    project: &'p Project,
    link: &'p Link,
    host: &'p Session,
    nodes: std::collections::HashMap<String, Session>,
}

impl<'p> Keepers<'p> {
    pub fn new(project: &'p Project, link: &'p Link, host: &'p Session) -> Self {
        Keepers {
            project,
            link,
            host,
            nodes: Default::default(),
        }
    }

    /// The session to where `f` is kept: its node, or the host.
    pub fn of(&mut self, f: &BackupFile) -> Result<&Session> {
        match &f.node {
            Some(node) => self.node(node),
            None => Ok(self.host),
        }
    }

    /// The session to a node, opened on first use.
    pub fn node(&mut self, node: &str) -> Result<&Session> {
        if !self.nodes.contains_key(node) {
            let s = node_session(self.project, self.link, node)?;
            self.nodes.insert(node.to_string(), s);
        }
        self.nodes
            .get(node)
            .ok_or_else(|| anyhow::anyhow!("no session to node {node}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `list_script`'s answer as a host prints it: a directory's name, a tab, its manifest.
    #[test]
    fn the_listed_manifests_that_check_out_are_kept_by_id() {
        let session =
            homebase_remote::Session::open(&homebase_remote::Target::Local).expect("local session");
        let host = HostProject::new(&session, "p");
        let sha = "a".repeat(64);
        let manifest = |id: &str, project: &str| {
            format!(
                r#"{{"id":"{id}","project":"{project}","time":1,"files":[{{"service":"db","kind":"pg_dump","file":"db.pgdump","bytes":3,"sha256":"{sha}"}}]}}"#
            )
        };
        let out = [
            format!(
                "20261124T030000Z-0002\t{}",
                manifest("20261124T030000Z-0002", "p")
            ),
            format!(
                "20261123T030000Z-0001\t{}",
                manifest("20261123T030000Z-0001", "p")
            ),
            // renamed on the host: its id is not its directory's
            format!(
                "20261122T030000Z-0000\t{}",
                manifest("20261101T030000Z-0000", "p")
            ),
            // another project's
            format!(
                "20261121T030000Z-0000\t{}",
                manifest("20261121T030000Z-0000", "q")
            ),
            "20261120T030000Z-0000\tnot json".to_string(),
            "no tab".to_string(),
        ]
        .join("\n");
        let ids: Vec<String> = parse_list(&host, &out).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["20261123T030000Z-0001", "20261124T030000Z-0002"]);
    }

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
