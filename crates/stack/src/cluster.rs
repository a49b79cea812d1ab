//! The plan for a swarm: Swarm does the placing; homebase proves before a deploy that a
//! placement exists, and explains when none does. Every task's memory reservation must fit
//! on a node whose labels satisfy the service's constraints, within that node's budget
//! (memory × target), and all of them together on the cluster.
//!
//! The check places tasks largest first, each on the eligible node with the most room left
//! (Swarm's spread); when that finds a placement one exists, and the failure it reports
//! names the task, its reservation, and each node's room and labels.

use indexmap::IndexMap;

use crate::config::Config;
use crate::plan::Plan;
use crate::units::Bytes;

pub use homebase_proto::NODE_LABEL;

/// A placement constraint, as Swarm writes it: `node.labels.role == db`, `node.role != manager`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub field: String,
    pub equal: bool,
    pub value: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let (field, equal, value) = if let Some((f, v)) = s.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = s.split_once("!=") {
            (f, false, v)
        } else {
            return Err(format!(
                "`{s}` is not a constraint: write `node.labels.KEY == VALUE` (or `!=`)"
            ));
        };
        let field = field.trim().to_string();
        let value = value.trim().to_string();
        let known = field.starts_with("node.labels.")
            || field.starts_with("engine.labels.")
            || matches!(
                field.as_str(),
                "node.role"
                    | "node.hostname"
                    | "node.id"
                    | "node.platform.os"
                    | "node.platform.arch"
            );
        if !known || value.is_empty() {
            return Err(format!(
                "`{s}`: use node.labels.KEY, node.role, node.hostname, node.id or node.platform.os/arch, then == or != and a value"
            ));
        }
        Ok(Constraint {
            field,
            equal,
            value,
        })
    }

    /// Whether a node satisfies it; `None` when homebase cannot know (hostname, id, engine
    /// labels, platform: Swarm decides).
    pub fn holds(&self, node: &NodeCap) -> Option<bool> {
        let actual = if let Some(key) = self.field.strip_prefix("node.labels.") {
            node.labels.get(key).cloned().unwrap_or_default()
        } else if self.field == "node.role" {
            if node.manager { "manager" } else { "worker" }.to_string()
        } else {
            return None;
        };
        Some((actual == self.value) == self.equal)
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.field,
            if self.equal { "==" } else { "!=" },
            self.value
        )
    }
}

/// A node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCap {
    pub name: String,
    pub memory: Bytes,
    /// Labels from the config, plus `homebase.node = NAME`.
    pub labels: IndexMap<String, String>,
    pub manager: bool,
}

/// Where the check put each task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFit {
    pub name: String,
    pub budget: Bytes,
    pub reserved: Bytes,
    /// `service` or `service.2` (replica), and `loop:NAME`.
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    pub nodes: Vec<NodeFit>,
    pub budget: Bytes,
    pub reserved: Bytes,
    pub problems: Vec<String>,
}

impl ClusterPlan {
    pub fn fits(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The constraints of a service: its `placement` and its `node` pin.
pub fn constraints(config: &Config, service: &str) -> Vec<Constraint> {
    let Some(s) = config.services.get(service) else {
        return Vec::new();
    };
    let mut out: Vec<Constraint> = s
        .placement
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    if let Some(node) = &s.node {
        out.push(Constraint {
            field: format!("node.labels.{NODE_LABEL}"),
            equal: true,
            value: node.clone(),
        });
    }
    out
}

/// The nodes of the config with the memory each has (`memory` resolves `detect`).
pub fn nodes(config: &Config, memory: impl Fn(&str) -> Bytes) -> Vec<NodeCap> {
    let manager = config.manager().map(|(n, _)| n.clone());
    config
        .nodes
        .iter()
        .map(|(name, n)| {
            let mut labels = n.labels.clone();
            labels.insert(NODE_LABEL.into(), name.clone());
            NodeCap {
                name: name.clone(),
                memory: memory(name),
                labels,
                manager: manager.as_deref() == Some(name.as_str()),
            }
        })
        .collect()
}

pub fn place(plan: &Plan, config: &Config, nodes: &[NodeCap]) -> ClusterPlan {
    let mut tasks = tasks(plan, config);
    // Largest first; ties in config order.
    tasks.sort_by_key(|t| std::cmp::Reverse(t.reserve));
    let target = config.budget.target;
    let mut fits: Vec<NodeFit> = nodes
        .iter()
        .map(|n| NodeFit {
            name: n.name.clone(),
            budget: Bytes((n.memory.0 as f64 * target) as u64),
            reserved: Bytes(0),
            tasks: Vec::new(),
        })
        .collect();
    let mut problems = Vec::new();
    let budget = Bytes(fits.iter().map(|f| f.budget.0).fold(0, u64::saturating_add));
    let total: Bytes = Bytes(
        tasks
            .iter()
            .map(|t| t.reserve.0)
            .fold(0, u64::saturating_add),
    );
    if total > budget {
        problems.push(format!(
            "the stack reserves {total}, more than the cluster's budget of {budget} ({} nodes × {:.0}% of their memory); lower reservations (`sustained`) or add a node",
            nodes.len(),
            target * 100.0
        ));
    }
    for t in &tasks {
        let eligible: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| t.constraints.iter().all(|c| c.holds(n) != Some(false)))
            .map(|(i, _)| i)
            .collect();
        if eligible.is_empty() {
            problems.push(no_node(t, nodes));
            continue;
        }
        let best = eligible
            .iter()
            .copied()
            .filter(|i| fits[*i].reserved.0.saturating_add(t.reserve.0) <= fits[*i].budget.0)
            .max_by_key(|i| fits[*i].budget.0.saturating_sub(fits[*i].reserved.0));
        match best {
            Some(i) => {
                fits[i].reserved = Bytes(fits[i].reserved.0.saturating_add(t.reserve.0));
                fits[i].tasks.push(t.name.clone());
            }
            None => {
                problems.push(no_room(t, &eligible, &fits));
            }
        }
    }
    ClusterPlan {
        nodes: fits,
        budget,
        reserved: total,
        problems,
    }
}

/// One task to place: a replica of a service, or a loop's iteration.
struct Task {
    name: String,
    service: String,
    reserve: Bytes,
    constraints: Vec<Constraint>,
}

/// The tasks of the plan: each replica of each service, and each loop (on the manager).
fn tasks(plan: &Plan, config: &Config) -> Vec<Task> {
    let mut tasks = Vec::new();
    for s in &plan.services {
        let replicas = config
            .services
            .get(&s.name)
            .and_then(|c| c.replicas)
            .unwrap_or(1);
        let reserve = s.reservation.or(s.limit).unwrap_or_default();
        for r in 1..=replicas {
            tasks.push(Task {
                name: if replicas > 1 {
                    format!("{}.{r}", s.name)
                } else {
                    s.name.clone()
                },
                service: s.name.clone(),
                reserve,
                constraints: constraints(config, &s.name),
            });
        }
    }
    // Loops run on the manager, one iteration at a time.
    for l in &plan.loops {
        tasks.push(Task {
            name: format!("loop:{}", l.name),
            service: format!("loop:{}", l.name),
            reserve: l.memory,
            constraints: vec![Constraint {
                field: "node.role".into(),
                equal: true,
                value: "manager".into(),
            }],
        });
    }
    tasks
}

/// Why task `t` has no eligible node: its constraints, and every node's role and labels.
fn no_node(t: &Task, nodes: &[NodeCap]) -> String {
    let cons: Vec<String> = t.constraints.iter().map(|c| format!("`{c}`")).collect();
    let have: Vec<String> = nodes
        .iter()
        .map(|n| {
            let labels: Vec<String> = n
                .labels
                .iter()
                .filter(|(k, _)| *k != NODE_LABEL)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(
                "{} ({}{})",
                n.name,
                if n.manager { "manager" } else { "worker" },
                if labels.is_empty() {
                    String::new()
                } else {
                    format!(", {}", labels.join(", "))
                }
            )
        })
        .collect();
    format!(
        "service `{}`: no node satisfies {}; the nodes are {}; change the constraint or a node's labels in [nodes]",
        t.service,
        cons.join(" and "),
        have.join("; ")
    )
}

/// Why task `t` fits on none of its eligible nodes: the room each has, and the fix.
fn no_room(t: &Task, eligible: &[usize], fits: &[NodeFit]) -> String {
    let room: Vec<String> = eligible
        .iter()
        .map(|i| {
            let f = &fits[*i];
            format!(
                "{} has {} left of {}",
                f.name,
                Bytes(f.budget.0.saturating_sub(f.reserved.0)),
                f.budget
            )
        })
        .collect();
    let largest = eligible
        .iter()
        .map(|i| fits[*i].budget)
        .max()
        .unwrap_or_default();
    let fix = if t.reserve > largest {
        format!(
            "it is larger than any eligible node's whole budget ({largest}): lower its `sustained`, or give it a bigger node"
        )
    } else {
        "lower some reservations, loosen its constraints, or add a node".to_string()
    };
    format!(
        "service `{}` (task `{}`) reserves {} and fits on no eligible node: {}; {fix}",
        t.service,
        t.name,
        t.reserve,
        room.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compose::{ComposeProject, LoadOptions};

    fn setup(toml: &str, compose: &str) -> (Config, Plan) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
        let config = Config::parse(Path::new("homebase.toml"), toml, &Default::default()).unwrap();
        let project = ComposeProject::load(&LoadOptions {
            files: vec![dir.path().join("compose.yml")],
            ..Default::default()
        })
        .unwrap();
        let plan = Plan::new(&config, &project, Bytes::gib(3.0)).unwrap();
        (config, plan)
    }

    const COMPOSE: &str = "services:\n  db: {image: postgres:17}\n  api: {image: busybox}\n  worker: {image: busybox}\n";
    const NODES: &str = "[project]\nname = \"c\"\nmode = \"swarm\"\n[nodes.a]\nssh = \"u@10.0.0.1\"\nmemory = \"1GiB\"\nlabels = { role = \"db\" }\n[nodes.b]\nssh = \"u@10.0.0.2\"\nmemory = \"1GiB\"\n[nodes.c]\nssh = \"u@10.0.0.3\"\nmemory = \"1GiB\"\n";

    #[test]
    fn a_stack_larger_than_any_node_fits_the_cluster() {
        let toml = format!(
            "{NODES}[services.db]\nmemory = \"600MiB\"\nplacement = [\"node.labels.role == db\"]\n[services.api]\nmemory = \"600MiB\"\n[services.worker]\nmemory = \"600MiB\"\n"
        );
        let (config, plan) = setup(&toml, COMPOSE);
        let nodes = nodes(&config, |_| Bytes::gib(1.0));
        let c = place(&plan, &config, &nodes);
        assert!(c.fits(), "{:?}", c.problems);
        assert_eq!(c.nodes[0].tasks, ["db"]);
        assert_eq!(c.nodes.iter().filter(|n| n.tasks.len() == 1).count(), 3);
    }

    #[test]
    fn no_placement_is_explained() {
        // 900 MiB fits no 1 GiB node at 80%
        let toml = format!(
            "{NODES}[services.db]\nmemory = \"900MiB\"\n[services.api]\nmemory = \"16MiB\"\n[services.worker]\nmemory = \"16MiB\"\n"
        );
        let (config, plan) = setup(&toml, COMPOSE);
        let c = place(&plan, &config, &nodes(&config, |_| Bytes::gib(1.0)));
        assert!(!c.fits());
        assert!(
            c.problems[0]
                .contains("service `db` (task `db`) reserves 900 MiB and fits on no eligible node")
                && c.problems[0].contains("larger than any eligible node's whole budget"),
            "{:?}",
            c.problems
        );
        // constraints no node satisfies
        let toml = format!(
            "{NODES}[services.db]\nmemory = \"100MiB\"\nplacement = [\"node.labels.disk == ssd\"]\n[services.api]\nmemory = \"16MiB\"\nnode = \"b\"\n[services.worker]\nmemory = \"16MiB\"\n"
        );
        let (config, plan) = setup(&toml, COMPOSE);
        let c = place(&plan, &config, &nodes(&config, |_| Bytes::gib(1.0)));
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert!(
            c.problems[0].contains("no node satisfies `node.labels.disk == ssd`")
                && c.problems[0].contains("a (manager, role=db)"),
            "{:?}",
            c.problems
        );
        assert_eq!(c.nodes[1].tasks, ["api"]);
        // replicas count, and more than the cluster has
        let toml = format!(
            "{NODES}[services.db]\nmemory = \"100MiB\"\n[services.api]\nmemory = \"500MiB\"\nreplicas = 5\n[services.worker]\nmemory = \"16MiB\"\n"
        );
        let (config, plan) = setup(&toml, COMPOSE);
        let c = place(&plan, &config, &nodes(&config, |_| Bytes::gib(1.0)));
        assert!(
            c.problems[0].contains("more than the cluster's budget"),
            "{:?}",
            c.problems
        );
    }

    #[test]
    fn constraints_parse_and_hold() {
        let c = Constraint::parse("node.labels.role == db").unwrap();
        let n = NodeCap {
            name: "a".into(),
            memory: Bytes(0),
            labels: [("role".to_string(), "db".to_string())]
                .into_iter()
                .collect(),
            manager: false,
        };
        assert_eq!(c.holds(&n), Some(true));
        assert_eq!(
            Constraint::parse("node.role!=manager").unwrap().holds(&n),
            Some(true)
        );
        assert_eq!(
            Constraint::parse("node.hostname == x").unwrap().holds(&n),
            None
        );
        assert!(Constraint::parse("role = db").is_err());
        assert!(Constraint::parse("color == red").is_err());
    }

    #[test]
    fn swarm_config_is_checked() {
        let e = Config::parse(
            Path::new("h.toml"),
            "[project]\nname = \"c\"\nmode = \"swarm\"\n",
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("needs at least one [nodes.NAME]"),
            "{e}"
        );
        let e = Config::parse(
            Path::new("h.toml"),
            &format!("{NODES}[services.db]\nnode = \"d\"\n"),
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("services.db.node = `d` is not in [nodes]"),
            "{e}"
        );
        let e = Config::parse(
            Path::new("h.toml"),
            &format!("{NODES}[services.db]\nplacement = [\"role = db\"]\n"),
            &Default::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("services.db.placement"), "{e}");
        let e = Config::parse(
            Path::new("h.toml"),
            "[project]\nname = \"c\"\n[nodes.a]\nssh = \"x\"\n",
            &Default::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("add mode = \"swarm\""), "{e}");
        let c = Config::parse(Path::new("h.toml"), NODES, &Default::default()).unwrap();
        assert_eq!(c.manager().unwrap().0, "a");
        assert_eq!(c.nodes["b"].address(), "10.0.0.2");
    }
}
