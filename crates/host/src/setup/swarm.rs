//! Forming the swarm (`homebase setup` in swarm mode): the manager initialised, the other
//! nodes joined with tokens fetched over SSH, each node's labels (`homebase.node = NAME` and
//! `[nodes.NAME].labels`) applied. Idempotent.

use anyhow::{Context, Result};
use homebase_remote::{Session, sh_quote};
use homebase_stack::cluster::NODE_LABEL;
use homebase_stack::config::NodeSection;
use serde_json::Value;

use super::Item;
use crate::link::Link;
use crate::project::Project;

/// `docker info`'s view of a node's swarm membership.
struct Membership {
    state: String,
    node_id: String,
    manager: bool,
}

fn membership(session: &Session) -> Result<Membership> {
    let out = session.check(
        "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}} {{.Swarm.ControlAvailable}}'",
    )?;
    let mut f = out.split_whitespace();
    Ok(Membership {
        state: f.next().unwrap_or("").to_string(),
        node_id: f.next().unwrap_or("").to_string(),
        manager: f.next() == Some("true"),
    })
}

/// Initialises the manager, joins the others with tokens fetched over SSH, and applies node
/// labels (`homebase.node = NAME` and `[nodes.NAME].labels`). Idempotent.
pub fn form(project: &Project, link: &Link, check: bool) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let Some((mname, mnode)) = project.config.manager() else {
        return Ok(items);
    };
    let manager = link.node_session(mname)?;
    let mut m = membership(&manager)?;
    match m.state.as_str() {
        "active" if m.manager => items.push(Item::new(
            "swarm manager",
            "ok",
            format!("{mname} manages the swarm"),
            None,
        )),
        "active" => items.push(Item::new(
            "swarm manager",
            "missing",
            format!("{mname} is a worker of another swarm"),
            Some(format!(
                "on {mname}: `docker swarm leave`, then `homebase setup` (or make that swarm's manager the manager in [nodes])"
            )),
        )),
        _ if check => items.push(Item::new(
            "swarm manager",
            "missing",
            format!("{mname} is not in a swarm"),
            Some("homebase setup".into()),
        )),
        _ => {
            manager
                .check(&format!(
                    "docker swarm init --advertise-addr {}",
                    sh_quote(&mnode.address())
                ))
                .with_context(|| format!("cannot initialise the swarm on {mname}"))?;
            m = membership(&manager)?;
            items.push(Item::new(
                "swarm manager",
                "changed",
                format!("initialised the swarm on {mname} ({})", mnode.address()),
                None,
            ));
        }
    }
    if !m.manager {
        return Ok(items);
    }
    let members: Vec<String> = manager
        .check("docker node ls --format '{{.ID}}'")?
        .lines()
        .map(str::to_string)
        .collect();
    let mut ids = vec![(mname.clone(), m.node_id.clone())];
    for (name, n) in project.config.nodes.iter().filter(|(k, _)| *k != mname) {
        let s = link.node_session(name)?;
        if let Some(id) = join(&mut items, &manager, &members, mnode, name, n, &s, check)? {
            ids.push((name.clone(), id));
        }
    }
    // Labels, read and written on the manager.
    for (name, id) in &ids {
        if let Some(n) = project.config.nodes.get(name) {
            labels(&mut items, &manager, name, n, id, check)?;
        }
    }
    Ok(items)
}

/// A node other than the manager in the swarm: joined (unless `check`) when it is in none;
/// its node id when it is in this swarm.
#[allow(clippy::too_many_arguments)]
fn join(
    items: &mut Vec<Item>,
    manager: &Session,
    members: &[String],
    mnode: &NodeSection,
    name: &str,
    n: &NodeSection,
    s: &Session,
    check: bool,
) -> Result<Option<String>> {
    let w = membership(s)?;
    if w.state == "active" && members.contains(&w.node_id) {
        items.push(Item::new(
            &format!("swarm node {name}"),
            "ok",
            format!("{name} is in the swarm"),
            None,
        ));
        return Ok(Some(w.node_id));
    } else if w.state == "active" {
        items.push(Item::new(
            &format!("swarm node {name}"),
            "missing",
            format!("{name} is in another swarm"),
            Some(format!(
                "on {name}: `docker swarm leave --force`, then `homebase setup`"
            )),
        ));
    } else if check {
        items.push(Item::new(
            &format!("swarm node {name}"),
            "missing",
            format!("{name} is not in the swarm"),
            Some("homebase setup".into()),
        ));
    } else {
        let token = manager.check("docker swarm join-token -q worker")?;
        // the token goes on stdin: a failing command is quoted in the error, which
        // must not carry the key to the cluster
        s.check_with_input(
            &format!(
                "read -r t; docker swarm join --token \"$t\" --advertise-addr {} {}:2377",
                sh_quote(&n.address()),
                sh_quote(&mnode.address())
            ),
            format!("{}\n", token.trim()).as_bytes(),
        )
        .with_context(|| format!("{name} cannot join the swarm at {}", mnode.address()))?;
        let w = membership(s)?;
        items.push(Item::new(
            &format!("swarm node {name}"),
            "changed",
            format!("{name} joined the swarm"),
            None,
        ));
        return Ok(Some(w.node_id));
    }
    Ok(None)
}

/// A node's labels (`homebase.node = NAME` and `[nodes.NAME].labels`), set on the manager
/// unless `check`.
fn labels(
    items: &mut Vec<Item>,
    manager: &Session,
    name: &str,
    n: &NodeSection,
    id: &str,
    check: bool,
) -> Result<()> {
    let current: Value = serde_json::from_str(
        manager
            .check(&format!(
                "docker node inspect --format '{{{{json .Spec.Labels}}}}' {}",
                sh_quote(id)
            ))?
            .trim(),
    )
    .unwrap_or(Value::Null);
    let mut wanted = n.labels.clone();
    wanted.insert(NODE_LABEL.into(), name.to_string());
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| current[k.as_str()].as_str() != Some(v.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if missing.is_empty() {
        items.push(Item::new(
            &format!("labels of {name}"),
            "ok",
            wanted
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            None,
        ));
    } else if check {
        items.push(Item::new(
            &format!("labels of {name}"),
            "missing",
            format!("not set: {}", missing.join(", ")),
            Some("homebase setup".into()),
        ));
    } else {
        let adds: Vec<String> = missing
            .iter()
            .map(|l| format!("--label-add {}", sh_quote(l)))
            .collect();
        manager.check(&format!(
            "docker node update {} {} >/dev/null",
            adds.join(" "),
            sh_quote(id)
        ))?;
        items.push(Item::new(
            &format!("labels of {name}"),
            "changed",
            format!("set {}", missing.join(", ")),
            None,
        ));
    }
    Ok(())
}
