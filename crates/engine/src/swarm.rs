//! Swarm, as a manager's engine sees it: the nodes and the tasks of the stacks. Swarm
//! schedules and restarts; the daemon only reads this to report and alert.

use std::collections::HashMap;

use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};

use crate::{Engine, EngineError};

/// The label Swarm's stacks carry (`docker stack deploy`).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";
pub use homebase_proto::NODE_LABEL;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmNode {
    pub id: String,
    /// Its `homebase.node` label, else its hostname.
    pub name: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    pub manager: bool,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackService {
    pub project: String,
    /// Without the `<project>_` prefix.
    pub service: String,
    /// Replicas wanted (`None` for a global service).
    pub desired: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmTask {
    pub project: String,
    pub service: String,
    pub node_id: String,
    /// `running`, `pending`, `failed`, …
    pub state: String,
    pub desired_state: String,
    pub error: String,
}

impl Engine {
    /// Whether this engine is a swarm manager (only managers can list nodes and tasks).
    pub async fn swarm_manager(&self) -> bool {
        self.docker
            .info()
            .await
            .ok()
            .and_then(|i| i.swarm)
            .and_then(|s| s.control_available)
            .unwrap_or(false)
    }

    pub async fn swarm_nodes(&self) -> Result<Vec<SwarmNode>, EngineError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(self.call("list swarm nodes"))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let labels = spec.labels.unwrap_or_default();
                let hostname = n.description.and_then(|d| d.hostname).unwrap_or_default();
                let status = n.status.unwrap_or_default();
                SwarmNode {
                    id: n.id.unwrap_or_default(),
                    name: labels.get(NODE_LABEL).cloned().unwrap_or(hostname),
                    state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                    manager: n.manager_status.is_some(),
                    address: status.addr.unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Every service of every stack, and every task that is meant to run.
    pub async fn stacks(&self) -> Result<(Vec<StackService>, Vec<SwarmTask>), EngineError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![STACK_LABEL.to_string()]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(self.call("list swarm services"))?;
        let mut by_id: HashMap<String, (String, String)> = HashMap::new();
        let mut out = Vec::new();
        for s in services {
            let spec = s.spec.unwrap_or_default();
            let labels = spec.labels.unwrap_or_default();
            let project = labels.get(STACK_LABEL).cloned().unwrap_or_default();
            let name = spec.name.unwrap_or_default();
            let service = name
                .strip_prefix(&format!("{project}_"))
                .unwrap_or(&name)
                .to_string();
            let desired = spec
                .mode
                .and_then(|m| m.replicated)
                .map(|r| r.replicas.unwrap_or(1).max(0) as u64);
            by_id.insert(s.id.unwrap_or_default(), (project.clone(), service.clone()));
            out.push(StackService {
                project,
                service,
                desired,
            });
        }
        let mut tfilters = HashMap::new();
        tfilters.insert("desired-state".to_string(), vec!["running".to_string()]);
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(tfilters),
            }))
            .await
            .map_err(self.call("list swarm tasks"))?;
        let tasks = tasks
            .into_iter()
            .filter_map(|t| {
                let (project, service) = by_id.get(t.service_id.as_deref()?)?.clone();
                let status = t.status.unwrap_or_default();
                Some(SwarmTask {
                    project,
                    service,
                    node_id: t.node_id.unwrap_or_default(),
                    state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                    desired_state: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
                    error: status.err.unwrap_or_default(),
                })
            })
            .collect();
        Ok((out, tasks))
    }
}
