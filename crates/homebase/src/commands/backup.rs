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
use homebase_remote::sh_quote;
use homebase_stack::kinds::Kind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cli::{BackupArgs, BackupCommand, Global};
use crate::commands::deploy::{civil_from_days, utc_stamp};
use crate::exit::{Exit, coded};
use crate::host::{HostProject, now_secs};
use crate::project::{self, Project};
use crate::ui;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub project: String,
    pub time: u64,
    pub files: Vec<BackupFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

pub fn run(global: &Global, args: &BackupArgs) -> Result<Exit> {
    let project = project::load(global)?;
    match &args.command {
        BackupCommand::Now { services } => now(&project, services, args.json),
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

fn now(project: &Project, only: &[String], json: bool) -> Result<Exit> {
    let session = project.open_session()?;
    let host = HostProject::of(&session, project);
    let (manifest, pruned) = take(project, &host, only)?;
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
        eprintln!("backup {} kept on {}{pruned}", manifest.id, session.host());
    }
    Ok(Exit::Ok)
}

/// Takes a backup of `only` (or of everything worth one) on the host, then prunes by
/// retention; returns the manifest and the ids pruned. Used by `backup now`, by deploy
/// before it changes a database, and by the daemon's schedule.
pub fn take(
    project: &Project,
    host: &HostProject,
    only: &[String],
) -> Result<(Manifest, Vec<String>)> {
    let session = host.session;
    let items = plan(project, only)?;
    if items.is_empty() {
        return Err(coded(
            Exit::BadInput,
            "nothing to back up: no PostgreSQL service and no named volume in the stack",
        ));
    }
    let ps = host.ps()?;
    let id = utc_stamp(now_secs());
    let tmp = format!("{}/.tmp-{id}", dir(host));
    let mut script = format!("set -e; umask 077; mkdir -p {tmp}; cd {tmp}\n");
    // checksum that works on Linux (sha256sum) and macOS (shasum)
    script.push_str(
        "sum() { (sha256sum \"$1\" 2>/dev/null || shasum -a 256 \"$1\") | cut -d' ' -f1; }\n",
    );
    script
        .push_str("emit() { echo \"$1 $2 $3 $(wc -c < \"$4\" | tr -d ' ') $(sum \"$4\") $4\"; }\n");
    for (service, kind, paths) in &items {
        let Some(c) = ps
            .iter()
            .find(|p| p.service == *service && p.state == "running")
        else {
            return Err(coded(
                Exit::Refused,
                format!(
                    "service `{service}` is not running on {}; deploy it first",
                    session.host()
                ),
            ));
        };
        let c = sh_quote(&c.name);
        if *kind == Kind::Postgres {
            let (user, db) = pg_user_db(project, service);
            let _ = writeln!(
                script,
                "docker exec {c} pg_dump -Fc -U {} {} > {service}.pgdump\nemit {service} pg_dump - {service}.pgdump",
                sh_quote(&user),
                sh_quote(&db)
            );
        } else {
            // paused while archived, so the files are consistent; unpaused whatever happens
            let _ = writeln!(
                script,
                "docker pause {c} >/dev/null; trap 'docker unpause {c} >/dev/null 2>&1' EXIT"
            );
            for (i, path) in paths.iter().enumerate() {
                let f = format!("{service}-{i}.tar.gz");
                let _ = writeln!(
                    script,
                    "docker cp {c}:{} - | gzip > {f}\nemit {service} volume {} {f}",
                    sh_quote(path),
                    sh_quote(path)
                );
            }
            let _ = writeln!(script, "docker unpause {c} >/dev/null; trap - EXIT");
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
            });
        }
    }
    let manifest = Manifest {
        id: id.clone(),
        project: project.config.project.name.clone(),
        time: now_secs(),
        files,
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    let target = format!("{}/{id}", dir(host));
    session.check_with_input(
        &format!("umask 077; cat > {tmp}/manifest.json; if [ -e {target} ]; then rm -rf {tmp}; echo 'a backup with this id exists; try again in a second' >&2; exit 1; fi; mv {tmp} {target}"),
        text.as_bytes(),
    )?;
    let pruned = prune(host, project)?;
    Ok((manifest, pruned))
}

fn list(host: &HostProject) -> Result<Vec<Manifest>> {
    let out = host.session.check(&format!(
        "for m in {}/*/manifest.json; do [ -f \"$m\" ] && tr -d '\\n' < \"$m\" && echo; done; true",
        dir(host)
    ))?;
    let mut v: Vec<Manifest> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(v)
}

/// The ids to keep: the newest of each of the last `daily` days and `weekly` weeks.
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

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    debug_assert_eq!(civil_from_days(days).0, if m <= 2 { y + 1 } else { y });
    days
}

fn prune(host: &HostProject, project: &Project) -> Result<Vec<String>> {
    let ids: Vec<String> = list(host)?.into_iter().map(|m| m.id).collect();
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
    let host = HostProject::of(&session, project);
    let all = list(&host)?;
    if json {
        ui::out(&(serde_json::to_string_pretty(&all)? + "\n"))?;
    } else {
        let mut s = String::new();
        for m in &all {
            let total: u64 = m.files.iter().map(|f| f.bytes).sum();
            let what: Vec<String> = m
                .files
                .iter()
                .map(|f| format!("{} ({})", f.service, f.kind))
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

fn find(host: &HostProject, id: &str) -> Result<Manifest> {
    let all = list(host)?;
    all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
        coded(
            Exit::BadInput,
            format!(
                "no backup `{id}` on {}; the backups are: {}",
                host.session.host(),
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            ),
        )
    })
}

fn restore(project: &Project, id: &str, only: &[String]) -> Result<Exit> {
    for s in only {
        project.require_service(s)?;
    }
    let session = project.open_session()?;
    let host = HostProject::of(&session, project);
    let m = find(&host, id)?;
    let ps = host.ps()?;
    let base = format!("{}/{}", dir(&host), sh_quote(id));
    for f in m
        .files
        .iter()
        .filter(|f| only.is_empty() || only.contains(&f.service))
    {
        let Some(c) = ps.iter().find(|p| p.service == f.service) else {
            return Err(coded(
                Exit::Refused,
                format!(
                    "service `{}` has no container on {}; deploy first, then restore",
                    f.service,
                    session.host()
                ),
            ));
        };
        let c = sh_quote(&c.name);
        let file = format!("{base}/{}", sh_quote(&f.file));
        // verify the checksum on the host before touching anything
        let check = format!(
            "s=$( (sha256sum {file} 2>/dev/null || shasum -a 256 {file}) | cut -d' ' -f1); [ \"$s\" = {} ] || {{ echo \"checksum mismatch for {}\" >&2; exit 1; }}",
            sh_quote(&f.sha256),
            f.file
        );
        let script = match f.kind.as_str() {
            "pg_dump" => {
                let (user, db) = pg_user_db(project, &f.service);
                format!(
                    "set -e; {check}; for i in $(seq 60); do docker exec {c} pg_isready -U {u} >/dev/null 2>&1 && break; sleep 0.5; done; docker exec -i {c} pg_restore --clean --if-exists --no-owner -U {u} -d {d} < {file}",
                    u = sh_quote(&user),
                    d = sh_quote(&db)
                )
            }
            _ => {
                let path = f.path.clone().unwrap_or_default();
                let parent = std::path::Path::new(&path)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                format!(
                    "set -e; {check}; docker stop {c} >/dev/null; gunzip -c {file} | docker cp - {c}:{}; docker start {c} >/dev/null",
                    sh_quote(&parent)
                )
            }
        };
        session.check(&script).with_context(|| {
            format!(
                "restoring `{}` of service `{}` from backup {id}",
                f.file, f.service
            )
        })?;
        eprintln!("restored {} of `{}` from backup {id}", f.kind, f.service);
    }
    Ok(Exit::Ok)
}

fn pull(project: &Project, id: Option<&str>, to: Option<PathBuf>, json: bool) -> Result<Exit> {
    let session = project.open_session()?;
    let host = HostProject::of(&session, project);
    let m = match id {
        Some(id) => find(&host, id)?,
        None => list(&host)?.pop().ok_or_else(|| {
            coded(
                Exit::BadInput,
                "no backups on the host yet: `homebase backup now`",
            )
        })?,
    };
    let dest = to
        .unwrap_or_else(|| project.root.join(".homebase-backups"))
        .join(&m.project)
        .join(&m.id);
    std::fs::create_dir_all(&dest)
        .with_context(|| format!("cannot create `{}`", dest.display()))?;
    for f in &m.files {
        let out = session
            .command(
                &format!(
                    "cat {}/{}/{}",
                    dir(&host),
                    sh_quote(&m.id),
                    sh_quote(&f.file)
                ),
                false,
            )
            .output()
            .context("cannot run ssh")?;
        anyhow::ensure!(
            out.status.success(),
            "cannot read `{}` of backup {} on {}",
            f.file,
            m.id,
            session.host()
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
        let path = dest.join(&f.file);
        std::fs::write(&path, &out.stdout)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    std::fs::write(dest.join("manifest.json"), serde_json::to_vec_pretty(&m)?)
        .with_context(|| format!("cannot write `{}`", dest.display()))?;
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
        // days: 23rd (12:00), 22nd; weeks: this week's newest (23rd 12:00), the 16th's week, the 9th's week
        assert_eq!(
            keep,
            [
                "20261109T030000Z",
                "20261116T030000Z",
                "20261122T030000Z",
                "20261123T120000Z"
            ]
        );
    }
}
