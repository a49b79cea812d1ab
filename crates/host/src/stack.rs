//! The stack half of the host protocol: a swarm stack deployed from the manager, and the
//! manager's view of the cluster (nodes, tasks, where each service runs).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use homebase_proto::NodeStatus;
use homebase_remote::{Session, sh_quote};
use homebase_stack::cluster::NODE_LABEL;
use serde_json::Value;

use super::{HostProject, PsEntry};

/// `docker stack deploy` of a release on the manager, then waits until every service runs
/// all its replicas (healthy, where it has a healthcheck: Swarm counts a task as running
/// only then) and no update is in progress, two checks in a row half a second apart. A service whose update
/// Swarm rolled back fails the gate at once.
pub(super) fn up(host: &HostProject, id: &str, timeout: Duration) -> Result<(bool, String)> {
    let p = sh_quote(&host.project);
    let script = format!(
        r#"cd {d}/releases/{id} || exit 1
docker stack deploy -c compose.yml --prune --resolve-image never {p} 2>&1 | grep -v 'detach' || true
end=$(( $(date +%s) + {t} )); good=0
while :; do
  busy=0
  for s in $(docker stack services -q {p}); do
    st=$(docker service inspect -f '{{{{if .UpdateStatus}}}}{{{{.UpdateStatus.State}}}}{{{{end}}}}' $s)
    case "$st" in
      rollback_*|paused) echo "service $(docker service inspect -f '{{{{.Spec.Name}}}}' $s): update $st"; docker service ps --no-trunc --format '{{{{.Name}}}} {{{{.CurrentState}}}} {{{{.Error}}}}' $s | head -5; exit 1 ;;
      updating) busy=1 ;;
    esac
  done
  short=$(docker stack services {p} --format '{{{{.Replicas}}}}' | awk '{{split($1,a,"/"); if (a[1]!=a[2]) n++}} END {{print n+0}}')
  if [ "$short" = 0 ] && [ $busy = 0 ]; then good=$((good+1)); else good=0; fi
  [ $good -ge 2 ] && exit 0
  if [ $(date +%s) -ge $end ]; then
    echo "not converged after {t} s:"; docker stack services {p}
    docker stack ps {p} --no-trunc --format '{{{{.Name}}}} {{{{.CurrentState}}}} {{{{.Error}}}}' | head -20
    exit 1
  fi
  sleep 0.5
done"#,
        d = host.dir(),
        t = timeout.as_secs().max(5)
    );
    let out = host.session.run(&script)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    ))
}

/// Removes the stack (volumes stay on their nodes).
pub(super) fn down(host: &HostProject) -> Result<()> {
    let p = sh_quote(&host.project);
    host.session.check(&format!(
        "docker stack rm {p} >/dev/null 2>&1 || true; for i in $(seq 30); do docker network ls -q --filter label=com.docker.stack.namespace={p} | grep -q . || break; sleep 1; done"
    ))?;
    Ok(())
}

/// One entry per service: `running` when all its replicas run.
pub(super) fn ps(host: &HostProject) -> Result<Vec<PsEntry>> {
    let out = host.session.check(&format!(
        "docker stack services {} --format '{{{{.Name}}}} {{{{.Replicas}}}}' 2>/dev/null || true",
        sh_quote(&host.project)
    ))?;
    Ok(parse_services(&out, &host.project))
}

/// `docker stack services --format '{{.Name}} {{.Replicas}}'` lines as one entry each.
fn parse_services(out: &str, project: &str) -> Vec<PsEntry> {
    let prefix = format!("{project}_");
    out.lines()
        .filter_map(|l| {
            let (name, replicas) = l.split_once(' ')?;
            let (running, desired) = replicas.split_whitespace().next()?.split_once('/')?;
            let ok = running == desired && desired != "0";
            Some(PsEntry {
                service: name.strip_prefix(&prefix).unwrap_or(name).to_string(),
                name: name.to_string(),
                state: if ok { "running" } else { "starting" }.into(),
                health: String::new(),
                desired: desired.parse().ok(),
            })
        })
        .collect()
}

/// Every node (state, role, labels, memory) and every running task, read on the manager.
pub fn read_cluster(session: &Session, project: &str) -> Result<(Vec<NodeStatus>, Vec<Task>)> {
    let script = format!(
        "docker node inspect $(docker node ls -q) --format '{{{{json .}}}}'; echo @@HB@@; \
         ids=$(docker stack ps -q --filter desired-state=running {p} 2>/dev/null); [ -n \"$ids\" ] && docker inspect --format '{{{{json .}}}}' $ids; echo @@HB@@; \
         docker stack services {p} --format '{{{{.ID}}}} {{{{.Name}}}}' 2>/dev/null; true",
        p = sh_quote(project)
    );
    let out = session.check(&script)?;
    Ok(parse_cluster(&out, project))
}

/// [`read_cluster`]'s answer: the nodes' `docker node inspect` lines, the running tasks'
/// `docker inspect` lines and the stack's services, each part ending in `@@HB@@`. Lines
/// that are not JSON are left out.
fn parse_cluster(out: &str, project: &str) -> (Vec<NodeStatus>, Vec<Task>) {
    let mut parts = out.split("@@HB@@\n");
    let mut nodes: Vec<NodeStatus> = Vec::new();
    let mut ids: Vec<(String, String)> = Vec::new();
    for line in parts.next().unwrap_or("").lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let labels: std::collections::BTreeMap<String, String> = v["Spec"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let id = v["ID"].as_str().unwrap_or("").to_string();
        let name = labels.get(NODE_LABEL).cloned().unwrap_or_else(|| {
            v["Description"]["Hostname"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        ids.push((id.clone(), name.clone()));
        nodes.push(NodeStatus {
            name,
            id,
            role: v["Spec"]["Role"].as_str().unwrap_or("").to_string(),
            leader: v["ManagerStatus"]["Leader"].as_bool().unwrap_or(false),
            state: v["Status"]["State"].as_str().unwrap_or("").to_string(),
            availability: v["Spec"]["Availability"].as_str().unwrap_or("").to_string(),
            address: v["Status"]["Addr"].as_str().unwrap_or("").to_string(),
            memory_bytes: v["Description"]["Resources"]["MemoryBytes"]
                .as_u64()
                .unwrap_or(0),
            labels: labels
                .into_iter()
                .filter(|(k, _)| k != NODE_LABEL)
                .collect(),
            tasks: Vec::new(),
        });
    }
    let task_lines = parts.next().unwrap_or("").to_string();
    let services: std::collections::HashMap<String, String> = parts
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, n)| {
            (
                id.to_string(),
                n.strip_prefix(&format!("{project}_"))
                    .unwrap_or(n)
                    .to_string(),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for line in task_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let sid = v["ServiceID"].as_str().unwrap_or("");
        let service = services
            .iter()
            .find(|(id, _)| sid.starts_with(id.as_str()))
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let node_id = v["NodeID"].as_str().unwrap_or("");
        let node = ids
            .iter()
            .find(|(id, _)| id == node_id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        tasks.push(Task {
            service,
            node,
            state: v["Status"]["State"].as_str().unwrap_or("").to_string(),
            error: v["Status"]["Err"].as_str().unwrap_or("").to_string(),
        });
    }
    for n in &mut nodes {
        n.tasks = tasks
            .iter()
            .filter(|t| t.node == n.name && t.state == "running")
            .map(|t| t.service.clone())
            .collect();
        n.tasks.sort();
    }
    (nodes, tasks)
}

/// Where a service runs: the first ready node (by name) with a running task of it, and that
/// node's address as the manager reaches it.
pub struct Placement {
    pub node: String,
    pub address: String,
}

/// Every running service's placement, from one read of the cluster on the manager. Host-mode
/// ports are published at `address`; a manager that reports no address of its own is the
/// host we are on (its loopback).
pub fn placements(session: &Session, project: &str) -> Result<BTreeMap<String, Placement>> {
    let (nodes, tasks) = read_cluster(session, project)?;
    let mut out = BTreeMap::new();
    let mut running: Vec<&Task> = tasks.iter().filter(|t| t.state == "running").collect();
    running.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
    for t in running {
        let Some(node) = nodes
            .iter()
            .find(|n| n.name == t.node && n.state == "ready")
        else {
            continue;
        };
        let address = match node.address.as_str() {
            "" | "0.0.0.0" => "127.0.0.1".to_string(),
            a => a.to_string(),
        };
        out.entry(t.service.clone()).or_insert(Placement {
            node: t.node.clone(),
            address,
        });
    }
    Ok(out)
}

/// A shell line, run on a node, that sets `c` to a running task container of `service`
/// there, or fails (exit 125) saying there is none.
pub fn locate_task(project: &str, service: &str) -> String {
    let filter = sh_quote(&format!(
        "label=com.docker.swarm.service.name={project}_{service}"
    ));
    format!(
        "c=$(docker ps -q --filter {filter} --filter status=running | head -n 1); [ -n \"$c\" ] || {{ echo {} >&2; exit 125; }}",
        sh_quote(&format!("no running task of {service} on this node"))
    )
}

pub struct Task {
    pub service: String,
    pub node: String,
    pub state: String,
    pub error: String,
}

/// The script that prints (or follows) a service's logs: every task's output, on whichever
/// node it runs, through the manager.
pub(super) fn logs(
    host: &HostProject,
    service: &str,
    tail: usize,
    since: &str,
    follow: bool,
) -> String {
    format!(
        "docker service logs --no-task-ids --tail {tail}{since}{} {}",
        if follow { " --follow" } else { "" },
        sh_quote(&format!("{}_{service}", host.project))
    )
}

/// Shell that forces an update of the service's tasks and waits for them to converge (Swarm
/// starts each new task once the old one stopped); prints as [`super::compose::restart`].
pub(super) fn restart(host: &HostProject, service: &str) -> String {
    format!(
        "err=$(docker service update --force --quiet --detach=false {n} 2>&1 >/dev/null) || {{ echo failed; printf '%s\\n' \"$err\"; exit 0; }}; echo \"restarted {n}\"; echo healthy",
        n = sh_quote(&format!("{}_{service}", host.project))
    )
}

#[cfg(test)]
mod tests {
    use super::{parse_cluster, parse_services};

    /// `docker node inspect`, `docker inspect` of the tasks and `docker stack services` as
    /// recorded on a manager (the fields homebase reads; the engine prints many more).
    const CLUSTER: &str = concat!(
        r#"{"ID":"n1abc","Spec":{"Labels":{"homebase.node":"mini","gpu":"no"},"Role":"manager","Availability":"active"},"Description":{"Hostname":"mini.local","Resources":{"MemoryBytes":17179869184}},"Status":{"State":"ready","Addr":"0.0.0.0"},"ManagerStatus":{"Leader":true}}"#,
        "\n",
        r#"{"ID":"n2def","Spec":{"Labels":{},"Role":"worker","Availability":"drain"},"Description":{"Hostname":"spare","Resources":{"MemoryBytes":8589934592}},"Status":{"State":"down","Addr":"10.0.0.3"}}"#,
        "\nnot json\n@@HB@@\n",
        r#"{"ServiceID":"s1xyz0123","NodeID":"n1abc","Status":{"State":"running","Err":""}}"#,
        "\n",
        r#"{"ServiceID":"s2uvw4567","NodeID":"n2def","Status":{"State":"rejected","Err":"no suitable node (insufficient memory)"}}"#,
        "\n@@HB@@\ns1xyz p_db\ns2uvw p_api\n",
    );

    #[test]
    fn a_recorded_cluster_reads_as_nodes_and_their_tasks() {
        let (nodes, tasks) = parse_cluster(CLUSTER, "p");
        assert_eq!(nodes.len(), 2);
        let mini = &nodes[0];
        // the node's name is its homebase label, not its hostname; the label is not shown
        assert_eq!(mini.name, "mini");
        assert_eq!((mini.role.as_str(), mini.leader), ("manager", true));
        assert_eq!(mini.memory_bytes, 17_179_869_184);
        assert_eq!(mini.labels.len(), 1);
        assert_eq!(mini.tasks, ["db"]);
        // no label: the hostname
        assert_eq!(nodes[1].name, "spare");
        assert_eq!(nodes[1].state, "down");
        assert!(nodes[1].tasks.is_empty());
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            (tasks[1].service.as_str(), tasks[1].node.as_str()),
            ("api", "spare")
        );
        assert!(tasks[1].error.contains("insufficient memory"));
        // an empty answer (no swarm) is no node
        let (nodes, tasks) = parse_cluster("", "p");
        assert!(nodes.is_empty() && tasks.is_empty());
    }

    #[test]
    fn stack_services_read_as_running_when_every_replica_runs() {
        let ps = parse_services("p_db 1/1\np_api 1/2\np_off 0/0\ngarbage\n", "p");
        let read: Vec<(&str, &str, Option<usize>)> = ps
            .iter()
            .map(|e| (e.service.as_str(), e.state.as_str(), e.desired))
            .collect();
        assert_eq!(
            read,
            [
                ("db", "running", Some(1)),
                ("api", "starting", Some(2)),
                ("off", "starting", Some(0))
            ]
        );
    }
}
