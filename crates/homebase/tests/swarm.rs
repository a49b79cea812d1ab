//! Swarm mode on three real test hosts (5, 6 and 7: this test's alone, since it forms a
//! swarm and stops an engine): `homebase setup` forms the cluster and labels the nodes, the
//! plan proves a placement for a stack larger than any one host, deploy runs it through
//! `docker stack deploy` on the manager, a stopped node's stateless tasks move while the
//! pinned database stays (reported down, the alert naming the node), and everything is
//! healthy again once the node is back. A stack that fits no node is refused by plan; a
//! single-mode project still deploys to a swarm node.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{ChildStdout, Output};
use std::time::{Duration, Instant};

use homebase_testkit::{
    Daemon, Host, Hosts, TestProject, hosts, testhost, unique_name, unique_port,
};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

const COMPOSE: &str = r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw}
    volumes: [pgdata:/var/lib/postgresql/data]
    ports: ["5432:5432"]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo ok > /tmp/ok && exec httpd -f -p 8080 -h /tmp"]
    healthcheck: {test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/ok"], interval: 1s, retries: 3}
    ports: ["8080:8080"]
    stop_signal: SIGKILL
  worker:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
  notes:
    build: ./notes
    volumes: [notes:/data]
    stop_signal: SIGKILL
volumes:
  pgdata: {}
  notes: {}
"#;

/// Leaves the swarm on every node, stops the daemons and removes the project, however the
/// test ends.
struct Cluster<'a> {
    hosts: &'a Hosts,
    nodes: Vec<&'a Host>,
    project: String,
    daemons: Vec<Daemon<'a>>,
}

impl Cluster<'_> {
    fn reset(&self) {
        for h in &self.nodes {
            let _ = self.hosts.ssh(
                h,
                &format!(
                    "docker stack rm {p} >/dev/null 2>&1; docker swarm leave --force >/dev/null 2>&1; pkill -f 'homebase daemon' ; rm -rf ~/.homebase/{p} ~/.homebase/daemon; true",
                    p = self.project
                ),
            );
        }
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        testhost(&["start-dockerd", "6"], &[]);
        self.reset();
        for h in &self.nodes {
            let _ = self
                .hosts
                .ssh(h, "docker volume prune -f >/dev/null 2>&1; true");
        }
    }
}

/// Laptop ports for the tunnel: this test's own.
struct Ports {
    db: u16,
    api: u16,
}

fn toml(project: &str, hosts: &Hosts, api_memory: &str, api_node: &str, ports: &Ports) -> String {
    let node = |n: u32, extra: &str| {
        let h = hosts.host(n);
        format!(
            "[nodes.n{n}]\nssh = \"{}@{}\"\nmemory = \"1GiB\"\n{extra}\n",
            h.user, h.address
        )
    };
    format!(
        "[project]\nname = \"{project}\"\nmode = \"swarm\"\n\n[host]\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout_secs = 5\n\n[budget]\ntarget = 0.8\n\n{}{}{}\
         [services.db]\nmemory = \"600MiB\"\nnode = \"n6\"\nlocal_port = {}\n[services.api]\nmemory = \"{api_memory}\"\nnode = \"{api_node}\"\nlocal_port = {}\nhealth_path = \"/ok\"\n[services.worker]\nmemory = \"100MiB\"\nreplicas = 3\n[services.notes]\nmemory = \"16MiB\"\nnode = \"n7\"\n[daemon]\ninterval_ms = 500\n[backup]\nat_hour = 0\n",
        hosts.key.display(),
        hosts.known_hosts.display(),
        node(5, ""),
        node(6, "labels = { disk = \"ssd\" }"),
        node(7, ""),
        ports.db,
        ports.api,
    )
}

fn next_event(lines: &mut Lines<BufReader<ChildStdout>>, kind: &str) -> Value {
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("tunnel ended before `{kind}`"))
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == kind {
            return v;
        }
    }
}

fn forward<'v>(up: &'v Value, service: &str) -> &'v Value {
    up["forwards"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["service"] == service))
        .unwrap_or(&Value::Null)
}

/// The body of an HTTP GET on the laptop's loopback (through a tunnel), with a bearer token.
fn http_get_with(port: u16, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Signs in with a one-time code (as the dashboard page does) and GETs `path` with the
/// session it was given (the page's `Authorization: Session` header).
fn http_get_signed_in(port: u16, path: &str, code: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/session HTTP/1.0\r\nHost: localhost\r\nX-Homebase-Login: {code}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        !answer.to_ascii_lowercase().contains("set-cookie"),
        "a session cookie: {answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let session = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["session"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no session from the code: {answer}"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Session {session}\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn http_get(port: u16, path: &str) -> String {
    http_get_with(port, path, None)
}

/// Ends a `homebase tunnel` or `dash` the way ctrl-c does (SIGTERM), so that it closes its
/// SSH master; SIGKILL only if it has not gone after 5 s.
fn stop(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOMEBASE_COLOR", "never")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "homebase {args:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn status(dir: &Path) -> Value {
    let o = run(dir, &["status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn service<'v>(s: &'v Value, name: &str) -> &'v Value {
    s["services"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Polls `homebase status --json` until `pred` holds; panics with the last status.
fn wait_status(dir: &Path, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = status(dir);
        if pred(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    panic!("timed out waiting for {what}; last status:\n{last:#}");
}

#[test]
fn a_stack_larger_than_any_host_runs_on_a_three_node_swarm() {
    let hosts = hosts();
    let (h5, h6, h7) = (hosts.host(5), hosts.host(6), hosts.host(7));
    let project = unique_name("swarm");
    let mut cluster = Cluster {
        hosts: &hosts,
        nodes: vec![h5, h6, h7],
        project: project.clone(),
        daemons: Vec::new(),
    };
    cluster.reset();
    let t0 = Instant::now();
    eprintln!(
        "[{:>6.1}s] The daemon on every node, in its default place (as `homebase",
        t0.elapsed().as_secs_f64()
    );
    // The daemon on every node, in its default place (as `homebase setup` leaves it).
    for h in [h5, h6, h7] {
        let d = Daemon {
            bin: bin().to_path_buf(),
            hosts: &hosts,
            host: h,
            state: "$HOME/.homebase/daemon".into(),
            port: unique_port(),
            project: project.clone(),
        };
        hosts.ssh_ok(h, "mkdir -p ~/.homebase/daemon");
        d.start();
        cluster.daemons.push(d);
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports {
        db: unique_port(),
        api: unique_port(),
    };
    std::fs::write(dir.path().join("compose.yml"), COMPOSE).unwrap();
    // `notes` is the user's own code: built on the nodes from this directory, no registry
    std::fs::create_dir_all(dir.path().join("notes")).unwrap();
    std::fs::write(
        dir.path().join("notes/Dockerfile"),
        "FROM hb/busybox:latest\nCOPY note.txt /note.txt\nCMD [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes/note.txt"), "built on the node\n").unwrap();
    std::fs::write(
        dir.path().join("homebase.toml"),
        toml(&project, &hosts, "600MiB", "n7", &ports),
    )
    .unwrap();

    eprintln!(
        "[{:>6.1}s] Forming the cluster, then again",
        t0.elapsed().as_secs_f64()
    );
    // Forming the cluster, then again: nothing to change.
    let o = run(dir.path(), &["setup", "--json"]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let changed: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "changed")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for want in [
        "swarm manager",
        "swarm node n6",
        "swarm node n7",
        "labels of n6",
    ] {
        assert!(changed.contains(&want), "{want} not changed: {report:#}");
    }
    let again: Value = serde_json::from_str(&ok(dir.path(), &["setup", "--json"])).unwrap();
    let swarm_changes: Vec<&Value> = again["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["state"] == "changed"
                && (i["name"].as_str().unwrap().starts_with("swarm")
                    || i["name"].as_str().unwrap().starts_with("labels"))
        })
        .collect();
    assert!(swarm_changes.is_empty(), "{again:#}");
    eprintln!(
        "[{:>6.1}s] Faster failure detection for the test (the default heartbeat",
        t0.elapsed().as_secs_f64()
    );
    // Faster failure detection for the test (the default heartbeat is 5 s).
    hosts.ssh_ok(
        h5,
        "docker swarm update --dispatcher-heartbeat 1s >/dev/null",
    );

    let nodes: Vec<Value> = serde_json::from_str(&ok(dir.path(), &["nodes", "--json"])).unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["state"] == "ready"), "{nodes:#?}");
    let n6 = nodes.iter().find(|n| n["name"] == "n6").unwrap();
    assert_eq!(n6["labels"]["disk"], "ssd");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "manager").count(), 1);

    eprintln!("[{:>6.1}s] The plan", t0.elapsed().as_secs_f64());
    // The plan: 1.5 GiB reserved, more than any node's 819 MiB budget, placed on three.
    let plan: Value = serde_json::from_str(&ok(dir.path(), &["plan", "--json"])).unwrap();
    assert_eq!(plan["fits"], true, "{plan:#}");
    let cluster_plan = plan["cluster"].as_array().unwrap();
    assert!(
        cluster_plan
            .iter()
            .all(|n| n["reserved_bytes"].as_u64().unwrap() <= n["budget_bytes"].as_u64().unwrap())
    );
    let n6_plan = cluster_plan.iter().find(|n| n["name"] == "n6").unwrap();
    assert!(
        n6_plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "db")
    );

    eprintln!("[{:>6.1}s] Deploy", t0.elapsed().as_secs_f64());
    // Deploy: every service healthy, spread over the three nodes.
    ok(dir.path(), &["deploy", "--timeout", "120"]);
    let s = status(dir.path());
    assert_eq!(s["healthy"], true, "{s:#}");
    // the built service runs on worker n7 from the image built there
    let note = hosts.ssh_ok(
        h7,
        &format!(
            "c=$(docker ps -q --filter label=com.docker.swarm.service.name={project}_notes | head -1); docker inspect -f '{{{{.Config.Image}}}}' $c; docker exec $c cat /note.txt"
        ),
    );
    assert!(
        note.starts_with(&format!("homebase/{project}-notes:"))
            && note.contains("built on the node"),
        "{note}"
    );
    assert_eq!(service(&s, "db")["nodes"], serde_json::json!(["n6"]));
    eprintln!(
        "[{:>6.1}s] memory is read on every node",
        t0.elapsed().as_secs_f64()
    );
    // memory is read on every node: the database's on n6, the workers' summed over three
    assert!(
        service(&s, "db")["memory_bytes"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert_eq!(service(&s, "db")["limit_bytes"], 600u64 << 20, "{s:#}");
    assert_eq!(service(&s, "db")["health"], "healthy", "{s:#}");
    assert_eq!(
        service(&s, "worker")["limit_bytes"],
        3 * (100u64 << 20),
        "{s:#}"
    );
    assert!(
        service(&s, "worker")["uptime_secs"].as_u64().is_some(),
        "{s:#}"
    );
    let workers = service(&s, "worker")["nodes"].as_array().unwrap().clone();
    assert_eq!(workers.len(), 3, "{s:#}");
    let mut used: Vec<String> = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| {
            x["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
        })
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used, ["n5", "n6", "n7"], "{s:#}");
    eprintln!(
        "[{:>6.1}s] The same release again is a no-op; the release log has both",
        t0.elapsed().as_secs_f64()
    );
    // The same release again is a no-op; the release log has both.
    let again = ok(dir.path(), &["deploy", "--json"]);
    assert!(again.contains("up-to-date"), "{again}");

    eprintln!(
        "[{:>6.1}s] exec runs in the task, on the node Swarm chose (db is on wor",
        t0.elapsed().as_secs_f64()
    );
    // The daily backup (at_hour = 0: due at once): every node's daemon takes the part of
    // the tasks it runs.
    for (d, want) in [
        (&cluster.daemons[1], "node n6's part"),
        (&cluster.daemons[2], "node n7's part"),
        (
            &cluster.daemons[0],
            "nothing of the stack to back up on node n5",
        ),
    ] {
        d.wait_event(want, |e| {
            e["kind"] == "backup" && e["message"].as_str().unwrap_or("").contains(want)
        });
    }

    // exec runs in the task, on the node Swarm chose (db is on worker n6).
    let o = run(
        dir.path(),
        &[
            "exec",
            "db",
            "--",
            "sh",
            "-c",
            "pg_isready -h 127.0.0.1 -U postgres && hostname",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("accepting connections"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    eprintln!(
        "[{:>6.1}s] Any node's dashboard",
        t0.elapsed().as_secs_f64()
    );
    // Any node's dashboard: n6's daemon watches the database that runs there.
    let mut dash = std::process::Command::new(bin())
        .arg("-C")
        .arg(dir.path())
        .args([
            "dash",
            "--node",
            "n6",
            "--no-browser",
            "--print-url",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(dash.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let opened: Value = serde_json::from_str(&first).unwrap();
    let (url, code) = opened["url"]
        .as_str()
        .unwrap()
        .split_once("#login=")
        .unwrap();
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let snap: Value = serde_json::from_str(&http_get_signed_in(port, "/api/status", code)).unwrap();
    let here: Vec<&str> = snap["projects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["services"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(here.contains(&"db"), "{snap:#}");
    stop(&mut dash);
    let o = run(dir.path(), &["dash", "--node", "n9", "--no-browser"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no node `n9`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    eprintln!(
        "[{:>6.1}s] Tunnels reach services on every node through the manager's S",
        t0.elapsed().as_secs_f64()
    );
    // Tunnels reach services on every node through the manager's SSH.
    let state = tempfile::tempdir().unwrap();
    let check = std::process::Command::new(bin())
        .arg("-C")
        .arg(dir.path())
        .args(["tunnel", "--check", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(check.status.success(), "{report:#}");
    let probed = |name: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        probed("db")["remote_host"],
        h6.address.as_str(),
        "{report:#}"
    );
    assert_eq!(probed("db")["probe"], "postgres");
    assert_eq!(
        probed("api")["remote_host"],
        h7.address.as_str(),
        "{report:#}"
    );

    eprintln!(
        "[{:>6.1}s] A running tunnel follows a service Swarm moves",
        t0.elapsed().as_secs_f64()
    );
    // A running tunnel follows a service Swarm moves: api from n7 to n5.
    let mut tunnel = std::process::Command::new(bin())
        .arg("-C")
        .arg(dir.path())
        .args(["tunnel", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tunnel.stdout.take().unwrap()).lines();
    let up = next_event(&mut lines, "up");
    assert_eq!(
        forward(&up, "api")["remote_host"],
        h7.address.as_str(),
        "{up:#}"
    );
    assert_eq!(http_get(ports.api, "/ok"), "ok");
    std::fs::write(
        dir.path().join("homebase.toml"),
        toml(&project, &hosts, "600MiB", "n5", &ports),
    )
    .unwrap();
    ok(dir.path(), &["deploy", "--timeout", "120"]);
    let moved = next_event(&mut lines, "moved");
    assert_eq!(moved["service"], "api");
    assert_eq!(moved["to"], h5.address.as_str(), "{moved:#}");
    next_event(&mut lines, "up");
    assert_eq!(http_get(ports.api, "/ok"), "ok");
    stop(&mut tunnel);

    eprintln!("[{:>6.1}s] Backups", t0.elapsed().as_secs_f64());
    // Backups: each part taken and kept on the node that runs its service, restored there.
    let psql = |sql: &str| {
        ok(
            dir.path(),
            &["exec", "db", "--", "psql", "-U", "postgres", "-tAc", sql],
        )
    };
    psql("CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 500)");
    ok(
        dir.path(),
        &["exec", "notes", "--", "sh", "-c", "echo kept > /data/a"],
    );
    let taken: Value = serde_json::from_str(&ok(dir.path(), &["backup", "now", "--json"])).unwrap();
    let id = taken["backup"]["id"].as_str().unwrap().to_string();
    let files = taken["backup"]["files"].as_array().unwrap();
    let part = |service: &str| files.iter().find(|f| f["service"] == service).unwrap();
    assert_eq!(part("db")["node"], "n6", "{taken:#}");
    assert_eq!(part("db")["kind"], "pg_dump");
    assert_eq!(part("notes")["node"], "n7", "{taken:#}");
    hosts.ssh_ok(
        h6,
        &format!("test -s ~/.homebase/{project}/backups/{id}/db.pgdump"),
    );
    psql("DROP TABLE kept");
    ok(dir.path(), &["exec", "notes", "--", "rm", "/data/a"]);
    ok(dir.path(), &["backup", "restore", &id]);
    assert_eq!(psql("SELECT count(*) FROM kept").trim(), "500");
    assert_eq!(
        ok(dir.path(), &["exec", "notes", "--", "cat", "/data/a"]).trim(),
        "kept"
    );
    let listed: Value = serde_json::from_str(&ok(dir.path(), &["backup", "ls", "--json"])).unwrap();
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["files"].as_array().unwrap().len(), 2, "{listed:#}");
    let pulled = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "backup",
            "pull",
            &id,
            "--to",
            pulled.path().to_str().unwrap(),
        ],
    );
    assert!(
        pulled
            .path()
            .join(&project)
            .join(&id)
            .join("db.pgdump")
            .exists()
    );
    assert!(
        pulled
            .path()
            .join(&project)
            .join(&id)
            .join("notes-0.tar.gz")
            .exists()
    );

    eprintln!(
        "[{:>6.1}s] A deploy that changes the database backs it up first, on its",
        t0.elapsed().as_secs_f64()
    );
    // A deploy that changes the database backs it up first, on its node.
    let config = toml(&project, &hosts, "600MiB", "n5", &ports);
    let changed = config.replace(
        "memory = \"600MiB\"\nnode = \"n6\"",
        "memory = \"580MiB\"\nnode = \"n6\"",
    );
    assert_ne!(changed, config);
    std::fs::write(dir.path().join("homebase.toml"), &changed).unwrap();
    let o = run(dir.path(), &["deploy", "--timeout", "120"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("taken before the change"),
        "{err}"
    );
    assert_eq!(psql("SELECT count(*) FROM kept").trim(), "500");

    // A release whose api never becomes healthy: Swarm rolls the update back, homebase the
    // release; the previous release stays current and healthy.
    let before: Value = serde_json::from_str(&ok(dir.path(), &["releases", "--json"])).unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        COMPOSE.replace(
            "\"wget\", \"-qO-\", \"http://127.0.0.1:8080/ok\"",
            "\"false\"",
        ),
    )
    .unwrap();
    let o = run(dir.path(), &["deploy", "--timeout", "90"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rolled back to release"), "{err}");
    std::fs::write(dir.path().join("compose.yml"), COMPOSE).unwrap();
    let after: Value = serde_json::from_str(&ok(dir.path(), &["releases", "--json"])).unwrap();
    assert_eq!(after["current"], before["current"], "{after:#}");
    assert_eq!(
        after["releases"].as_array().unwrap().last().unwrap()["outcome"],
        "rolled-back"
    );
    let s = wait_status(dir.path(), "healthy after the rollback", 60, |s| {
        s["healthy"] == true
    });
    assert_eq!(service(&s, "api")["nodes"], serde_json::json!(["n5"]));

    eprintln!("[{:>6.1}s] n6's engine stops", t0.elapsed().as_secs_f64());
    // n6's engine stops: its worker task moves, the pinned database waits for its node.
    testhost(&["stop-dockerd", "6"], &[]);
    let s = wait_status(
        dir.path(),
        "worker rescheduled and db reported down",
        120,
        |s| {
            let w = service(s, "worker")["nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let moved = w.len() == 3 && !w.iter().any(|n| n == "n6");
            moved && service(s, "db")["state"] != "running"
        },
    );
    assert_eq!(s["healthy"], false);
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "n6" && n["state"] == "down"),
        "{s:#}"
    );
    eprintln!(
        "[{:>6.1}s] The manager's daemon names the node",
        t0.elapsed().as_secs_f64()
    );
    // The manager's daemon names the node.
    let d5 = &cluster.daemons[0];
    d5.wait_event("an alert naming n6", |e| {
        e["kind"] == "alert_firing" && e["message"].as_str().unwrap_or("").contains("node n6")
    });
    d5.wait_event("db reported down", |e| {
        e["kind"] == "alert_firing"
            && e["service"] == "db"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("0 of 1 tasks running")
    });

    eprintln!(
        "[{:>6.1}s] The manager's dashboard data",
        t0.elapsed().as_secs_f64()
    );
    // The manager's dashboard data: every node, n6 down, and what runs where.
    let (_, snap) = d5.api("/api/status");
    let snap: Value = serde_json::from_str(&snap).unwrap();
    let nodes = snap["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{snap:#}");
    assert!(
        nodes
            .iter()
            .any(|n| n["name"] == "n6" && n["state"] == "down"),
        "{snap:#}"
    );
    assert!(
        nodes.iter().any(|n| n["name"] == "n5"
            && n["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().unwrap().ends_with("/worker"))),
        "{snap:#}"
    );

    eprintln!("[{:>6.1}s] n6 is back", t0.elapsed().as_secs_f64());
    // n6 is back: everything healthy again, the database on its node.
    testhost(&["start-dockerd", "6"], &[]);
    let s = wait_status(dir.path(), "healthy again", 150, |s| s["healthy"] == true);
    assert_eq!(service(&s, "db")["nodes"], serde_json::json!(["n6"]));
    let rows = ok(dir.path(), &["releases", "--json"]);
    assert!(rows.contains("\"deployed\""), "{rows}");

    eprintln!(
        "[{:>6.1}s] A stack whose api fits no node's budget is refused by plan, ",
        t0.elapsed().as_secs_f64()
    );
    // A stack whose api fits no node's budget is refused by plan, with the reason.
    let refused = tempfile::tempdir().unwrap();
    std::fs::write(refused.path().join("compose.yml"), COMPOSE).unwrap();
    std::fs::create_dir_all(refused.path().join("notes")).unwrap();
    for f in ["Dockerfile", "note.txt"] {
        std::fs::copy(
            dir.path().join("notes").join(f),
            refused.path().join("notes").join(f),
        )
        .unwrap();
    }
    std::fs::write(
        refused.path().join("homebase.toml"),
        toml(&project, &hosts, "900MiB", "n7", &ports),
    )
    .unwrap();
    let o = run(refused.path(), &["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("service `api` (task `api`) reserves 900 MiB and fits on no eligible node")
            && text.contains("larger than any eligible node's whole budget"),
        "{text}"
    );
    let o = run(refused.path(), &["deploy"]);
    assert_eq!(o.status.code(), Some(1));

    eprintln!(
        "[{:>6.1}s] Back to single mode with one host",
        t0.elapsed().as_secs_f64()
    );
    // Back to single mode with one host: compose on a swarm node still deploys.
    let single = TestProject::new(
        &hosts,
        h7,
        bin(),
        "single",
        "services:\n  web:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n",
        "[services.web]\nmemory = \"16MiB\"\n",
    );
    single.ok(&["deploy"]);
    assert_eq!(single.state("web"), "running");
}
