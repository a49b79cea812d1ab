//! The status of a stack (swarm mode): each service's tasks against its replicas, the
//! nodes they run on, their memory against their limits, and the nodes that are down.

use std::collections::BTreeMap;

use anyhow::Result;
use homebase_proto::{NodeStatus, ServiceStatus};
use homebase_remote::sh_quote;

use crate::HostProject;
use crate::link::Link;
use crate::project::Project;
use crate::stack::{Task, read_cluster};

/// What a service's task containers use on their nodes, summed over its tasks.
#[derive(Default)]
struct Usage {
    memory: u64,
    limit: u64,
    /// The latest start among its tasks (the shortest uptime).
    started: Option<u64>,
    /// The worst health among its tasks: unhealthy, starting, healthy, or none.
    health: Option<String>,
}

/// Orders health reports from worst to best, for picking a service's worst task.
fn health_rank(h: &str) -> u8 {
    match h {
        "unhealthy" => 0,
        "starting" => 1,
        "healthy" => 2,
        _ => 3,
    }
}

/// Memory, limit and start of every task container of the stack, read on each ready node
/// in parallel (one SSH connection each); a node that cannot be reached is left out.
fn task_usage(project: &Project, link: &Link, nodes: &[NodeStatus]) -> BTreeMap<String, Usage> {
    let name = &project.config.project.name;
    let script = format!(
        "ids=$(docker ps -q --filter {f}); [ -n \"$ids\" ] || exit 0; \
         docker inspect -f '{{{{.Name}}}} {{{{index .Config.Labels \"com.docker.swarm.service.name\"}}}} {{{{.HostConfig.Memory}}}} {{{{.State.StartedAt}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}none{{{{end}}}}' $ids; echo @@HB@@; \
         docker stats --no-stream --format '{{{{.Name}}}} {{{{.MemUsage}}}}' $ids",
        f = sh_quote(&format!("label=com.docker.stack.namespace={name}"))
    );
    let ready = |n: &str| nodes.iter().any(|s| s.name == n && s.state == "ready");
    let outputs = project.per_node(ready, |name, _| {
        link.node_session(name)
            .ok()
            .and_then(|s| s.check(&script).ok())
            .unwrap_or_default()
    });
    let prefix = format!("{name}_");
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for (_, text) in outputs {
        let (inspect, stats) = text.split_once("@@HB@@").unwrap_or((&text, ""));
        for line in inspect.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [cname, service, limit, started, health] = f[..] else {
                continue;
            };
            let Some(service) = service.strip_prefix(&prefix) else {
                continue;
            };
            let used = stats
                .lines()
                .find(|l| {
                    Some(l.split_whitespace().next().unwrap_or("")) == cname.strip_prefix('/')
                })
                .and_then(|l| l.split_once(' '))
                .and_then(|(_, u)| crate::mem_used(u))
                .unwrap_or(0);
            let u = out.entry(service.to_string()).or_default();
            u.memory += used;
            u.limit += limit.parse::<u64>().unwrap_or(0);
            let started = homebase_proto::clock::parse_rfc3339(started);
            u.started = u.started.max(started);
            if u.health
                .as_deref()
                .is_none_or(|h| health_rank(health) < health_rank(h))
            {
                u.health = Some(health.to_string());
            }
        }
    }
    out
}

/// `homebase status` for a stack: per service, its running tasks against its replicas, the
/// nodes they run on, and their memory against their limits; every node down is named.
pub fn status_services(
    project: &Project,
    link: &Link,
    host: &HostProject,
    planned: &[String],
) -> Result<(Vec<ServiceStatus>, Vec<NodeStatus>)> {
    let (nodes, tasks) = read_cluster(host.session, &host.project)?;
    let usage = task_usage(project, link, &nodes);
    let now = homebase_proto::clock::now_secs();
    let ps = host.ps()?;
    let mut out = Vec::new();
    for name in planned {
        let mine: Vec<&Task> = tasks.iter().filter(|t| &t.service == name).collect();
        // a task on a node that is down is not running, whatever it last reported
        let ready = |node: &str| nodes.iter().any(|n| n.name == node && n.state == "ready");
        let running: Vec<&&Task> = mine
            .iter()
            .filter(|t| t.state == "running" && ready(&t.node))
            .collect();
        let entry = ps.iter().find(|p| &p.service == name);
        let desired: usize = entry.and_then(|p| p.desired).unwrap_or(1);
        let state = match entry {
            None => "missing".to_string(),
            Some(_) if running.len() >= desired && desired > 0 => "running".to_string(),
            Some(_) if !running.is_empty() => "degraded".to_string(),
            Some(_) => mine
                .iter()
                .find(|t| t.state != "running")
                .map(|t| t.state.clone())
                .unwrap_or_else(|| "down".into()),
        };
        let u = usage.get(name);
        let mut where_: Vec<String> = running.iter().map(|t| t.node.clone()).collect();
        where_.sort();
        let errors: Vec<String> = mine
            .iter()
            .filter(|t| !t.error.is_empty())
            .map(|t| t.error.clone())
            .collect();
        out.push(ServiceStatus {
            name: name.clone(),
            state,
            health: if errors.is_empty() {
                u.and_then(|u| u.health.clone())
                    .unwrap_or_else(|| "none".into())
            } else {
                errors.join("; ")
            },
            uptime_secs: u
                .and_then(|u| u.started)
                .filter(|_| !running.is_empty())
                .map(|t| now.saturating_sub(t)),
            restarts: 0,
            memory_bytes: u.map(|u| u.memory),
            limit_bytes: u.map(|u| u.limit).filter(|l| *l > 0),
            container: entry.map(|p| p.name.clone()),
            nodes: where_,
        });
    }
    Ok((out, nodes))
}
