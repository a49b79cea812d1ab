//! `homebase nodes` (swarm mode): each node's role, readiness, labels and tasks. Forming
//! the swarm is setup's (`setup/swarm.rs`), a release's upload to the workers the
//! release's (`release/stack.rs`), a stack's status status's (`status/swarm.rs`).

use std::fmt::Write as _;

use anyhow::Result;
use homebase_proto::NodeStatus;

use crate::cli::{Global, NodesArgs};
use crate::exit::{Exit, coded};
use crate::host::stack::read_cluster;
use crate::project::{self, Link};
use crate::ui::{self, BAD, BOLD, DIM, GOOD, WARN, paint};

pub fn nodes(global: &Global, args: &NodesArgs) -> Result<Exit> {
    let project = project::load(global)?;
    let link = Link::new(&project.config);
    if !project.swarm() {
        return Err(coded(
            Exit::BadInput,
            "this project runs on one host (project.mode = \"single\"); `homebase nodes` is for swarm mode: set mode = \"swarm\" and list the hosts in [nodes]",
        ));
    }
    let session = link.open_session()?;
    let (mut nodes, _) = read_cluster(&session, &project.config.project.name)?;
    // configured nodes that are not in the swarm
    for name in project.config.nodes.keys() {
        if !nodes.iter().any(|n| &n.name == name) {
            nodes.push(NodeStatus {
                name: name.clone(),
                state: "not joined".into(),
                ..Default::default()
            });
        }
    }
    let all_ready = nodes.iter().all(|n| n.state == "ready");
    if args.json {
        ui::out(&(serde_json::to_string_pretty(&nodes)? + "\n"))?;
    } else {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}",
            paint(
                BOLD,
                format!(
                    "{:<12} {:<10} {:<8} {:>9}  {:<24} RUNS",
                    "NODE", "STATE", "ROLE", "MEMORY", "LABELS"
                )
            )
        );
        for n in &nodes {
            let state = format!("{:<10}", n.state);
            let state = match n.state.as_str() {
                "ready" => paint(GOOD, state),
                "down" | "not joined" => paint(BAD, state),
                _ => paint(WARN, state),
            };
            let role = if n.leader {
                "leader".to_string()
            } else {
                n.role.clone()
            };
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                s,
                "{:<12} {state} {:<8} {:>9}  {:<24} {}",
                n.name,
                role,
                homebase_stack::Bytes(n.memory_bytes).to_string(),
                labels.join(","),
                paint(DIM, n.tasks.join(", "))
            );
        }
        if !all_ready {
            let _ = writeln!(s, "{}", paint(BAD, "not every node is ready"));
        }
        ui::out(&s)?;
    }
    Ok(if all_ready { Exit::Ok } else { Exit::Refused })
}
