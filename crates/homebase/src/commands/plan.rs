//! `homebase plan`: the memory plan and its verdict.

use std::fmt::Write as _;

use anyhow::Result;
use homebase_proto::{PlanReport, ServicePlan, Totals};
use homebase_stack::{Bytes, Plan};

use crate::cli::{Global, PlanArgs};
use crate::exit::Exit;
use crate::project;
use crate::ui::{self, BAD, BOLD, DIM, GOOD, paint};

pub fn run(global: &Global, args: &PlanArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = project::Link::new(&project.config);
    let (host_memory, source) = project.host_memory(&link, args.host_memory.as_deref())?;
    let plan = project.plan(host_memory)?;
    let cluster = project.cluster_plan(&link, &plan)?;
    let fits = plan.fits() && cluster.as_ref().is_none_or(|c| c.fits());
    let files = project.source()?;
    if args.json {
        let mut r = report(&plan, &source);
        r.files = (!files.entries.is_empty()).then(|| homebase_proto::FilesPlan {
            files: files.entries.len() as u64,
            bytes: files.bytes(),
            from_git: files.from_git,
            builds: files
                .builds
                .iter()
                .map(|b| homebase_proto::BuildPlan {
                    service: b.service.clone(),
                    image: b.image.clone(),
                })
                .collect(),
        });
        if let Some(c) = &cluster {
            r.fits = fits;
            r.problems.extend(c.problems.iter().cloned());
            r.cluster = Some(
                c.nodes
                    .iter()
                    .map(|n| homebase_proto::NodePlan {
                        name: n.name.clone(),
                        budget_bytes: n.budget.0,
                        reserved_bytes: n.reserved.0,
                        tasks: n.tasks.clone(),
                    })
                    .collect(),
            );
        }
        ui::out(&(serde_json::to_string_pretty(&r)? + "\n"))?;
    } else {
        let mut text = human(&plan, &source);
        if let Some(c) = &cluster {
            text.push_str(&cluster_text(c));
        }
        text.push_str(&files_text(&files));
        ui::out(&text)?;
    }
    Ok(if fits { Exit::Ok } else { Exit::Refused })
}

/// What a deploy carries of the project's own files, and what the host builds.
fn files_text(files: &crate::source::Source) -> String {
    if files.entries.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\nProject files: {} files, {} carried to the host ({}; only what the host lacks crosses)\n",
        files.entries.len(),
        Bytes(files.bytes()),
        if files.from_git {
            "git's tracked and unignored files"
        } else {
            "everything less .dockerignore"
        }
    );
    for b in &files.builds {
        let _ = writeln!(
            s,
            "  built on the host: {:<12} {}",
            b.service,
            paint(DIM, &b.image)
        );
    }
    for w in &files.warnings {
        let _ = writeln!(s, "  ! {w}");
    }
    s
}

fn cluster_text(c: &homebase_stack::cluster::ClusterPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{}",
        paint(
            BOLD,
            format!(
                "Swarm: {} reserved of {} across {} nodes (a placement Swarm can find)",
                c.reserved,
                c.budget,
                c.nodes.len()
            )
        )
    );
    for n in &c.nodes {
        let _ = writeln!(
            s,
            "  {:<12} {:>10} of {:>10}  {}",
            n.name,
            n.reserved.to_string(),
            n.budget.to_string(),
            paint(DIM, n.tasks.join(", "))
        );
    }
    if c.fits() {
        let _ = writeln!(s, "{} every task has a node", paint(GOOD, "✓ places:"));
    } else {
        let _ = writeln!(s, "{} no placement:", paint(BAD, "✗ does not place:"));
        for p in &c.problems {
            let _ = writeln!(s, "  - {p}");
        }
    }
    s
}

pub fn report(plan: &Plan, host_memory_source: &str) -> PlanReport {
    PlanReport {
        project: plan.project.clone(),
        services: plan
            .services
            .iter()
            .map(|s| ServicePlan {
                name: s.name.clone(),
                image: s.image.clone(),
                kind: s.kind.as_str().into(),
                limit_bytes: s.limit.map(|b| b.0),
                limit_source: s.limit_source.as_ref().map(|s| s.describe()),
                reservation_bytes: s.reservation.map(|b| b.0),
                reservation_source: s.reservation_source.as_ref().map(|s| s.describe()),
                priority: s.priority.as_str().into(),
                priority_source: s.priority_source.describe(),
            })
            .collect(),
        inactive: plan.inactive.clone(),
        loops: plan
            .loops
            .iter()
            .map(|l| homebase_proto::LoopPlan {
                name: l.name.clone(),
                image: l.image.clone(),
                limit_bytes: l.memory.0,
                priority: l.priority.as_str().into(),
            })
            .collect(),
        totals: Totals {
            sustained_bytes: plan.sustained.0,
            peak_bytes: plan.peak.0,
        },
        host_memory_bytes: plan.host_memory.0,
        host_memory_source: host_memory_source.into(),
        target: plan.target,
        budget_bytes: plan.budget.0,
        headroom_bytes: plan.headroom() as i64,
        fits: plan.fits(),
        problems: plan.problems.iter().map(|p| p.explain()).collect(),
        cluster: None,
        files: None,
    }
}

fn opt(b: Option<Bytes>) -> String {
    b.map(|b| b.to_string()).unwrap_or_else(|| "none".into())
}

pub fn human(plan: &Plan, host_memory_source: &str) -> String {
    let mut s = String::new();
    let w = plan
        .services
        .iter()
        .map(|s| s.name.len())
        .chain(plan.loops.iter().map(|l| l.name.len() + 5))
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        s,
        "{}",
        paint(BOLD, format!("Memory plan for `{}`", plan.project))
    );
    let _ = writeln!(
        s,
        "{}",
        paint(
            BOLD,
            format!(
                "{:<w$}  {:>10}  {:>10}  {:<8}  {}",
                "SERVICE", "LIMIT", "RESERVED", "PRIORITY", "FROM"
            )
        )
    );
    for p in &plan.services {
        let from = format!(
            "limit: {}; reserved: {}; priority: {}",
            p.limit_source
                .as_ref()
                .map(|s| s.describe())
                .unwrap_or_else(|| "missing".into()),
            p.reservation_source
                .as_ref()
                .map(|s| s.describe())
                .unwrap_or_else(|| "missing".into()),
            p.priority_source.describe()
        );
        let limit = format!("{:>10}", opt(p.limit));
        let limit = if p.limit.is_none() {
            paint(BAD, limit)
        } else {
            limit
        };
        let _ = writeln!(
            s,
            "{:<w$}  {limit}  {:>10}  {:<8}  {}",
            p.name,
            opt(p.reservation),
            p.priority.as_str(),
            paint(DIM, from)
        );
    }
    for l in &plan.loops {
        let _ = writeln!(
            s,
            "{:<w$}  {:>10}  {:>10}  {:<8}  {}",
            format!("loop:{}", l.name),
            l.memory.to_string(),
            l.memory.to_string(),
            l.priority.as_str(),
            paint(DIM, "homebase.toml [loops]: one iteration at a time")
        );
    }
    if !plan.inactive.is_empty() {
        let _ = writeln!(
            s,
            "{}",
            paint(
                DIM,
                format!("left out by profiles: {}", plan.inactive.join(", "))
            )
        );
    }
    let pct = |b: Bytes| 100.0 * b.0 as f64 / plan.host_memory.0.max(1) as f64;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "sustained  {:>10}  ({:.0}% of host, sum of reservations)",
        plan.sustained.to_string(),
        pct(plan.sustained)
    );
    let _ = writeln!(
        s,
        "peak       {:>10}  ({:.0}% of host, sum of limits)",
        plan.peak.to_string(),
        pct(plan.peak)
    );
    let _ = writeln!(
        s,
        "budget     {:>10}  ({:.0}% of {} host memory, from {host_memory_source})",
        plan.budget.to_string(),
        plan.target * 100.0,
        plan.host_memory
    );
    let head = plan.headroom();
    let head_text = if head >= 0 {
        Bytes(head as u64).to_string()
    } else {
        format!("-{}", Bytes((-head) as u64))
    };
    let _ = writeln!(s, "headroom   {head_text:>10}");
    let _ = writeln!(s);
    if plan.fits() {
        let _ = writeln!(s, "{} the stack fits its budget", paint(GOOD, "✓ fits:"));
    } else {
        let _ = writeln!(s, "{} the stack is refused:", paint(BAD, "✗ does not fit:"));
        for p in &plan.problems {
            let _ = writeln!(s, "  - {}", p.explain());
        }
    }
    s
}
