//! `homebase backup now|ls|restore|pull`: the backup protocol is `host::backup`; here the
//! flags, the reports, restores and copies on the laptop verified against the manifest.

use std::fmt::Write as _;

use anyhow::Result;
use homebase_remote::{Session, Target};

use crate::cli::{BackupArgs, BackupCommand, Global};
use crate::exit::Exit;
use crate::host::HostProject;
use crate::host::backup::{Keepers, list_all, plan, take, take_here};
use crate::project::{self, Link, Project};
use crate::ui;

mod restore;

use restore::pull;

pub fn run(global: &Global, args: &BackupArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    match &args.command {
        BackupCommand::Now {
            services,
            this_node,
            scheduled,
        } => {
            if *scheduled && this_node.is_none() && plan(&project, services)?.is_empty() {
                // nothing worth a backup in this stack: say so, as an empty backup
                ui::out(
                    &(serde_json::to_string_pretty(&homebase_proto::BackupReport::default())?
                        + "\n"),
                )?;
                return Ok(Exit::Ok);
            }
            now(&project, &link, services, this_node.as_deref(), args.json)
        }
        BackupCommand::Ls => ls(&project, &link, args.json),
        BackupCommand::Restore { id, services } => {
            crate::host::backup::restore(&project, &link, id, services, &mut |f| {
                crate::esay!("restored {} of `{}` from backup {id}", f.kind, f.service);
            })?;
            Ok(Exit::Ok)
        }
        BackupCommand::Pull { id, to } => {
            pull(&project, &link, id.as_deref(), to.clone(), args.json)
        }
    }
}

fn now(
    project: &Project,
    link: &Link,
    only: &[String],
    this_node: Option<&str>,
    json: bool,
) -> Result<Exit> {
    let (session, manifest, pruned) = match this_node {
        Some(node) => {
            let session = Session::open(&Target::Local)?;
            let (m, p) = take_here(project, &HostProject::of(&session, project), node, only)?;
            (session, m, p)
        }
        None => {
            let session = link.open_session()?;
            let (m, p) = take(project, link, &HostProject::of(&session, project), only)?;
            (session, m, p)
        }
    };
    if json {
        ui::out(
            &(serde_json::to_string_pretty(&homebase_proto::BackupReport {
                backup: manifest.clone(),
                pruned: pruned.clone(),
            })? + "\n"),
        )?;
    } else {
        for f in &manifest.files {
            crate::esay!(
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
        crate::esay!("backup {} kept on {kept}{pruned}", manifest.id);
    }
    Ok(Exit::Ok)
}

fn ls(project: &Project, link: &Link, json: bool) -> Result<Exit> {
    let session = link.open_session()?;
    let all = list_all(&mut Keepers::new(project, link, &session))?;
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
