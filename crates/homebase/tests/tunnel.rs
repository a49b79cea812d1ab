//! `homebase tunnel` against a real host: a real psql query through the forward, the tunnel
//! coming back by itself after its SSH connection is killed and after the host's sshd
//! restarts, a taken local port remapped, and no second tunnel for the same host.
//! Uses test host 3 alone, since it restarts that host's sshd.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Lines};
use std::net::TcpListener;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};

use homebase_testkit::{TestProject, hosts, testhost, unique_port};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

fn next_event(lines: &mut Lines<BufReader<ChildStdout>>, kind: &str) -> serde_json::Value {
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("tunnel ended before `{kind}`"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == kind {
            return v;
        }
    }
}

fn local_port(up: &serde_json::Value, service: &str) -> u16 {
    up["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["service"] == service)
        .unwrap()["local_port"]
        .as_u64()
        .unwrap() as u16
}

fn psql(port: u16) -> std::process::Output {
    Command::new("psql")
        .arg(format!(
            "postgresql://postgres:pw@127.0.0.1:{port}/postgres?connect_timeout=5"
        ))
        .args(["-tAc", "SELECT 40 + 2"])
        .output()
        .unwrap()
}

#[test]
fn tunnel_forwards_reconnects_and_remaps() {
    let hosts = hosts();
    let h = hosts.host(3);
    let (db_port, api_port) = (unique_port(), unique_port());
    let compose = format!(
        r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {{POSTGRES_PASSWORD: pw}}
    ports: ["127.0.0.1:{db_port}:5432"]
    healthcheck: {{test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}}
  api:
    image: hb/busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_signal: SIGKILL
    ports: ["127.0.0.1:{api_port}:8080"]
"#
    );
    let budget = "[services.db]\nmemory = \"512MiB\"\n[services.api]\nmemory = \"32MiB\"\nhealth_path = \"/index.html\"\n";
    let p = TestProject::new(&hosts, h, bin(), "tunnel", &compose, budget);
    p.ok(&["deploy"]);
    let state = tempfile::tempdir().unwrap();

    // (the tunnel's connection is to be the warm one)
    p.close_masters();
    // The db's port is taken on the laptop: the tunnel must remap it and say so.
    let squatter = TcpListener::bind(("127.0.0.1", db_port)).unwrap();
    let mut tunnel = p
        .cmd(&["tunnel", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tunnel.stdout.take().unwrap()).lines();
    let remapped = next_event(&mut lines, "remapped");
    assert_eq!(remapped["service"], "db");
    assert_eq!(remapped["from"], db_port);
    let up = next_event(&mut lines, "up");
    let local_db = local_port(&up, "db");
    assert_ne!(local_db, db_port);
    assert_eq!(local_port(&up, "api"), api_port);
    drop(squatter);

    // A real query through the tunnel.
    let out = psql(local_db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // No second tunnel for the same host.
    let second = p
        .cmd(&["tunnel"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // The running tunnel is every other command's warm connection: no new master, and
    // `--check` sends the host nothing but its probes.
    let env = [("HOMEBASE_STATE_DIR", state.path().to_str().unwrap())];
    assert_eq!(p.count_ssh(&["releases"], &env), (0, 1), "releases");
    assert_eq!(p.count_ssh(&["tunnel", "--check"], &env), (0, 0), "check");

    // --check probes each service through the running tunnel.
    let check = p
        .cmd(&["tunnel", "--check", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(
        report["via"]
            .as_str()
            .unwrap()
            .starts_with("running tunnel")
    );
    let db = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "db")
        .unwrap();
    assert_eq!(db["probe"], "postgres");
    assert_eq!(db["ok"], true);
    let api = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "api")
        .unwrap();
    assert_eq!(api["probe"], "http GET /index.html");
    assert!(
        api["detail"].as_str().unwrap().contains("HTTP 200"),
        "{api}"
    );

    // status shows the probes through the running tunnel.
    let status = p
        .cmd(&["status", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let t = status["tunnels"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{status}");
    assert!(t.iter().all(|t| t["ok"] == true), "{status}");

    // Kill the SSH connection: the tunnel comes back by itself and the next query works.
    let pid = up["ssh_pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    next_event(&mut lines, "down");
    let up2 = next_event(&mut lines, "up");
    assert_eq!(up2["reconnects"], 1);
    let out = psql(local_port(&up2, "db"));
    assert!(
        out.status.success(),
        "after the master was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restart the host's sshd (every session dropped): same.
    testhost(&["restart-sshd", "3"], &[("HB_SSHD_DOWN_SECS", "1")]);
    next_event(&mut lines, "down");
    let up3 = next_event(&mut lines, "up");
    let out = psql(local_port(&up3, "db"));
    assert!(
        out.status.success(),
        "after sshd restarted: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A dead link (the host's side of the session frozen: no RST, no answers) is noticed by
    // keep-alive (3 s × 3) and the tunnel comes back.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let froze = std::time::Instant::now();
    let stop = Command::new("pkill")
        .args(["-STOP", "-u", &h.user, "sshd"])
        .status()
        .unwrap();
    assert!(stop.success(), "no sshd session of {} to freeze", h.user);
    let down = next_event(&mut lines, "down");
    eprintln!(
        "BENCH dead link noticed after {} ms ({})",
        froze.elapsed().as_millis(),
        down["reason"]
    );
    let up4 = next_event(&mut lines, "up");
    Command::new("pkill")
        .args(["-CONT", "-u", &h.user, "sshd"])
        .status()
        .unwrap();
    let out = psql(local_port(&up4, "db"));
    assert!(
        out.status.success(),
        "after a dead link: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM ends it cleanly and removes its state.
    Command::new("kill")
        .arg(tunnel.id().to_string())
        .status()
        .unwrap();
    assert!(tunnel.wait().unwrap().success());
    assert_eq!(
        std::fs::read_dir(state.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        0
    );
}

#[test]
fn ssh_config_lists_a_forward_per_published_port() {
    let hosts = hosts();
    let compose = "services:\n  db:\n    image: postgres:17\n    ports: ['127.0.0.1:5432:5432']\n  neo4j:\n    image: neo4j:5\n    ports: ['7474:7474', '7687:7687']\n";
    let p = TestProject::new(
        &hosts,
        hosts.host(1),
        bin(),
        "sshcfg",
        compose,
        "[services.db]\nmemory = \"1GiB\"\n[services.neo4j]\nmemory = \"1GiB\"\nlocal_port = 17474\n",
    );
    let out = p.ok(&["ssh-config"]);
    assert!(
        out.contains(&format!("Host homebase-{}\n", p.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  HostName {}\n  User {}\n",
            hosts.host(1).address,
            hosts.host(1).user
        )),
        "{out}"
    );
    assert!(
        out.contains("  LocalForward 127.0.0.1:5432 127.0.0.1:5432\n"),
        "{out}"
    );
    assert!(
        out.contains("  LocalForward 127.0.0.1:17474 127.0.0.1:7474\n"),
        "{out}"
    );
    assert!(
        out.contains("  LocalForward 127.0.0.1:7687 127.0.0.1:7687\n"),
        "{out}"
    );
    assert!(out.contains("  StrictHostKeyChecking yes\n"), "{out}");
}
