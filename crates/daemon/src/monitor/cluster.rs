//! A swarm manager's view: nodes down and services short of their tasks, as alerts.

use crate::projects::Project;
use crate::shared::Shared;
use homebase_engine::Engine;
use std::sync::Arc;

/// On a swarm manager: every node's state and what runs there; alerts naming a node that is
/// down and each service of a watched stack that runs fewer tasks than it wants (with the
/// node it was on, or why it is pending).
pub(super) async fn cluster(
    engine: &Engine,
    shared: &Arc<Shared>,
    projects: &[Project],
) -> Vec<homebase_proto::NodeStatus> {
    if !engine.swarm_manager().await {
        return Vec::new();
    }
    let (nodes, (services, tasks)) = match (engine.swarm_nodes().await, engine.stacks().await) {
        (Ok(n), Ok(s)) => (n, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("{e:#}");
            return Vec::new();
        }
    };
    for p in projects
        .iter()
        .filter(|p| services.iter().any(|s| s.project == p.name))
    {
        node_alerts(shared, &p.name, &nodes, &tasks).await;
        for s in services.iter().filter(|s| s.project == p.name) {
            service_alert(shared, &p.name, s, &nodes, &tasks).await;
        }
    }
    nodes
        .iter()
        .map(|n| homebase_proto::NodeStatus {
            name: n.name.clone(),
            id: n.id.clone(),
            role: if n.manager { "manager" } else { "worker" }.into(),
            state: n.state.clone(),
            address: n.address.clone(),
            tasks: {
                let mut t: Vec<String> = tasks
                    .iter()
                    .filter(|t| t.node_id == n.id && t.state == "running")
                    .map(|t| format!("{}/{}", t.project, t.service))
                    .collect();
                t.sort();
                t
            },
            ..Default::default()
        })
        .collect()
}

/// `node_down:NAME` of `project` for each node that is not ready (with what it ran), resolved
/// for each that is.
async fn node_alerts(
    shared: &Arc<Shared>,
    project: &str,
    nodes: &[homebase_engine::swarm::SwarmNode],
    tasks: &[homebase_engine::swarm::SwarmTask],
) {
    for n in nodes {
        if n.state == "ready" {
            shared
                .resolve(
                    project,
                    "",
                    &format!("node_down:{}", n.name),
                    &format!("node {} is ready again", n.name),
                )
                .await;
        } else {
            let on: Vec<String> = tasks
                .iter()
                .filter(|t| t.project == project && t.node_id == n.id)
                .map(|t| t.service.clone())
                .collect();
            shared
                .alert(
                    project,
                    "",
                    &format!("node_down:{}", n.name),
                    &format!(
                        "node {} ({}) is {}{}",
                        n.name,
                        n.address,
                        n.state,
                        if on.is_empty() {
                            String::new()
                        } else {
                            format!("; it ran {}", on.join(", "))
                        }
                    ),
                )
                .await;
        }
    }
}

/// `down` of a service that runs fewer tasks (on ready nodes) than it wants, with why each
/// missing task is not running; resolved once it runs them all.
async fn service_alert(
    shared: &Arc<Shared>,
    project: &str,
    s: &homebase_engine::swarm::StackService,
    nodes: &[homebase_engine::swarm::SwarmNode],
    tasks: &[homebase_engine::swarm::SwarmTask],
) {
    let name_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.chars().take(12).collect())
    };
    let mine: Vec<_> = tasks
        .iter()
        .filter(|t| t.project == project && t.service == s.service)
        .collect();
    // a task on a node that is down is not running, whatever its last report said
    let ready = |id: &str| nodes.iter().any(|n| n.id == id && n.state == "ready");
    let running = mine
        .iter()
        .filter(|t| t.state == "running" && ready(&t.node_id))
        .count() as u64;
    let Some(desired) = s.desired else { return };
    if running >= desired {
        shared
            .resolve(
                project,
                &s.service,
                "down",
                &format!("{running} of {desired} tasks running"),
            )
            .await;
        return;
    }
    let why: Vec<String> = mine
        .iter()
        .filter(|t| t.state != "running" || !ready(&t.node_id))
        .map(|t| {
            let node = if t.node_id.is_empty() {
                "no node".to_string()
            } else {
                let n = name_of(&t.node_id);
                let down = nodes
                    .iter()
                    .any(|x| x.id == t.node_id && x.state != "ready");
                if down {
                    format!("node {n}, which is down")
                } else {
                    format!("node {n}")
                }
            };
            format!(
                "{} on {node}{}",
                t.state,
                if t.error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.error)
                }
            )
        })
        .collect();
    shared
        .alert(
            project,
            &s.service,
            "down",
            &format!(
                "{running} of {desired} tasks running{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            ),
        )
        .await;
}
