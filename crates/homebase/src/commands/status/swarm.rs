//! `homebase status` of a stack (swarm mode), as a person reads it: each service's tasks
//! and the nodes that are down (read by `host::status::swarm`).

use std::fmt::Write as _;

use homebase_proto::{NodeStatus, ServiceStatus};

use crate::ui::{BAD, DIM, paint};

/// Lines for the human status: where each service runs, and nodes that are not ready.
pub fn status_lines(services: &[ServiceStatus], nodes: &[NodeStatus]) -> String {
    let mut s = String::new();
    for n in nodes.iter().filter(|n| n.state != "ready") {
        let _ = writeln!(
            s,
            "{} node {} is {} (its tasks are rescheduled where their constraints allow)",
            paint(BAD, "✗"),
            n.name,
            n.state
        );
    }
    for svc in services.iter().filter(|s| !s.nodes.is_empty()) {
        let _ = writeln!(
            s,
            "{}",
            paint(
                DIM,
                format!("{} runs on {}", svc.name, svc.nodes.join(", "))
            )
        );
    }
    s
}
