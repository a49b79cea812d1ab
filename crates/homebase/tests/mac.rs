//! The whole journey on a host that behaves like a Mac Mini with Homebrew and Colima (host 9,
//! this test's alone, made fresh at the start): PATH without Homebrew, the engine behind the
//! colima context in a VM that shares only the home directory, the Compose plugin not
//! registered with docker, launchd instead of systemd. setup (twice), deploy, a psql query
//! through the tunnel, status with the daemon that launchd runs, an agent loop to completion,
//! a backup and restore, then a power cut: with automatic login on, everything comes back
//! with no command from the laptop.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homebase_testkit::{
    FRESH_MAC, TestProject, checklist_item, hosts, json_of, testhost, unique_port,
};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

/// Waits up to `secs` for `pred` on `homebase status --json`.
fn wait_status(p: &TestProject, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = p.run(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {v:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_whole_journey_on_a_mac_with_homebrew_and_colima() {
    testhost(&["fresh", &FRESH_MAC.to_string()], &[]);
    let hosts = hosts();
    let h = hosts.host(FRESH_MAC);
    assert!(h.is_mac());
    let db_port = unique_port();
    let compose = format!(
        r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {{POSTGRES_PASSWORD: pw}}
    ports: ["127.0.0.1:{db_port}:5432"]
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: {{test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}}
  api:
    image: hb/busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_signal: SIGKILL
volumes:
  pgdata: {{}}
"#
    );
    let agent = "#!/bin/sh\necho \"iteration $HOMEBASE_ITERATION\" >> /workspace/work.txt\n[ \"$HOMEBASE_ITERATION\" = 2 ] && echo '<promise>COMPLETE</promise>'\nexit 0\n";
    let toml = String::from(
        "[services.db]\nmemory = \"512MiB\"\n[services.api]\nmemory = \"32MiB\"\n\
         [loops.ralph]\nimage = \"hb/busybox:latest\"\ncommand = \"sh /workspace/agent.sh\"\nworkspace = \"~/work/ralph\"\nmemory = \"32MiB\"\ntimeout = \"60s\"\n\
         [loops.astray]\nimage = \"hb/busybox:latest\"\ncommand = \"true\"\nworkspace = \"/tmp/hb-astray\"\nmemory = \"16MiB\"\nautostart = false\n",
    );
    let p = TestProject::new(&hosts, h, bin(), "mac", &compose, &toml);

    // A fresh Mac: the checklist says what is missing, each with its fix.
    let check = p.run(&["setup", "--check", "--json"]);
    assert_eq!(check.status.code(), Some(1));
    let r = json_of(&check);
    assert_eq!(
        checklist_item(&r, "host")["detail"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("Darwin")
    );
    assert_eq!(checklist_item(&r, "docker engine")["state"], "ok", "{r:#}");
    assert_eq!(checklist_item(&r, "docker compose")["state"], "ok", "{r:#}");
    assert_eq!(checklist_item(&r, "compose plugin")["state"], "warning");
    assert_eq!(
        checklist_item(&r, "colima at login")["fix"],
        "brew services start colima"
    );
    assert_eq!(
        checklist_item(&r, "power failure")["fix"],
        "sudo pmset -a autorestart 1"
    );
    assert!(
        checklist_item(&r, "automatic login")["detail"]
            .as_str()
            .unwrap()
            .contains("FileVault is on")
    );
    assert_eq!(checklist_item(&r, "homebase binary")["state"], "missing");
    assert_eq!(
        checklist_item(&r, "live restore")["state"],
        "warning",
        "{r:#}"
    );
    // nothing changed on the host
    let untouched = hosts.ssh_ok(h, "ls ~/Library/LaunchAgents 2>/dev/null; grep -c cliPluginsExtraDirs ~/.docker/config.json; true");
    assert_eq!(untouched.trim(), "0", "{untouched}");

    // setup: the plugin registered, Colima at login, the binary (built for this "Mac"), the
    // LaunchAgent, started through launchctl, answering with its token.
    let out = p.run(&["setup", "--json", "--binary", bin().to_str().unwrap()]);
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    for name in [
        "compose plugin",
        "colima at login",
        "homebase binary",
        "daemon service",
        "live restore",
    ] {
        assert_eq!(
            checklist_item(&r, name)["state"],
            "changed",
            "{name}: {r:#}"
        );
    }
    // live-restore through Colima's own configuration, applied by restarting Colima while
    // nothing ran yet
    assert!(
        checklist_item(&r, "live restore")["detail"]
            .as_str()
            .unwrap()
            .contains("Colima restarted"),
        "{r:#}"
    );
    let yaml = hosts.ssh_ok(h, "cat ~/.colima/default/colima.yaml");
    assert!(yaml.contains("docker:\n  live-restore: true"), "{yaml}");
    assert_eq!(
        hosts
            .ssh_ok(h, "docker info --format '{{.LiveRestoreEnabled}}'")
            .trim(),
        "true"
    );
    assert_eq!(checklist_item(&r, "daemon")["state"], "ok", "{r:#}");
    assert!(
        hosts
            .ssh_ok(h, "docker compose version --short")
            .trim()
            .starts_with('2')
    );
    let agent_state = hosts.ssh_ok(h, "launchctl print gui/$(id -u)/dev.homebase.daemon");
    assert!(agent_state.contains("state = running"), "{agent_state}");
    let plist = hosts.ssh_ok(h, "cat ~/Library/LaunchAgents/dev.homebase.daemon.plist");
    assert!(
        plist.contains("<key>KeepAlive</key>") && plist.contains("/opt/homebrew/bin"),
        "{plist}"
    );
    // a second run changes nothing
    let again = p.run(&["setup", "--json", "--binary", bin().to_str().unwrap()]);
    let r = json_of(&again);
    assert_eq!(r["changed"], false, "{r:#}");
    assert_eq!(again.status.code(), Some(0));

    // deploy: the loop workspace outside the home directory is flagged
    hosts.ssh_ok(h, "mkdir -p ~/work/ralph");
    hosts.ssh_with_input(h, "cat > ~/work/ralph/agent.sh", agent.as_bytes());
    let d = p.run(&["deploy"]);
    let err = String::from_utf8_lossy(&d.stderr);
    assert!(d.status.success(), "{err}");
    assert!(
        err.contains("loops.astray.workspace = `/tmp/hb-astray` is outside the home directory"),
        "{err}"
    );
    assert!(!err.contains("loops.ralph.workspace"), "{err}");

    // a query through the tunnel
    let state = tempfile::tempdir().unwrap();
    let mut tunnel = p
        .cmd(&["tunnel", "--json"])
        .env("HOMEBASE_STATE_DIR", state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tunnel.stdout.take().unwrap()).lines();
    let up = loop {
        let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if v["event"] == "up" {
            break v;
        }
    };
    let port = up["forwards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["service"] == "db")
        .unwrap()["local_port"]
        .as_u64()
        .unwrap();
    let q = Command::new("psql")
        .arg(format!("postgresql://postgres:pw@127.0.0.1:{port}/postgres?connect_timeout=5"))
        .args(["-tAc", "CREATE TABLE notes (n int); INSERT INTO notes SELECT generate_series(1, 300); SELECT count(*) FROM notes"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim().lines().last(),
        Some("300")
    );
    let _ = Command::new("kill").arg(tunnel.id().to_string()).status();
    let _ = tunnel.wait();

    // status with the daemon launchd runs
    let s = wait_status(&p, "healthy with the daemon", 60, |v| {
        v["healthy"] == true
            && v["daemon"]
                .as_str()
                .is_some_and(|d| d.starts_with("running"))
    });
    assert_eq!(s["services"].as_array().unwrap().len(), 2, "{s:#}");

    // the agent loop runs to completion in its workspace under the home directory
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ls: Value =
            serde_json::from_slice(&p.run(&["loop", "ls", "--json"]).stdout).unwrap_or_default();
        let ralph = ls
            .as_array()
            .and_then(|a| a.iter().find(|l| l["name"] == "ralph").cloned());
        if ralph.as_ref().is_some_and(|r| r["state"] == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loop did not complete: {ls:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        hosts.ssh_ok(h, "cat ~/work/ralph/work.txt"),
        "iteration 1\niteration 2\n"
    );

    // a backup and a restore
    let b = json_of(&p.run(&["backup", "now", "--json"]));
    let id = b["backup"]["id"].as_str().unwrap().to_string();
    let drop_table = p.exec("db", "psql -U postgres -tAc 'DROP TABLE notes'");
    assert!(drop_table.status.success());
    p.ok(&["backup", "restore", &id]);
    let count = p.exec("db", "psql -U postgres -tAc 'SELECT count(*) FROM notes'");
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "300");

    // The user follows the power checklist (as `sudo pmset`, fdesetup and System Settings
    // would change it); then setup --check is clean.
    let n = FRESH_MAC.to_string();
    for (k, v) in [
        ("sleep", "0"),
        ("autorestart", "1"),
        ("filevault", "off"),
        ("autologin", h.user.as_str()),
    ] {
        testhost(&["mac-set", &n, k, v], &[]);
    }
    let r = json_of(&p.run(&["setup", "--check", "--json"]));
    for name in [
        "sleep",
        "power failure",
        "automatic login",
        "colima at login",
    ] {
        assert_eq!(checklist_item(&r, name)["state"], "ok", "{name}: {r:#}");
    }

    // A power cut: every process and the VM gone; at login launchd starts Colima (brew
    // services) and the daemon. The stack, the daemon and the loop's record come back.
    testhost(&["reboot", &n], &[]);
    let s = wait_status(&p, "back after the power cut", 120, |v| {
        v["healthy"] == true
            && v["daemon"]
                .as_str()
                .is_some_and(|d| d.starts_with("running"))
    });
    assert_eq!(s["services"].as_array().unwrap().len(), 2, "{s:#}");
    let count = p.exec("db", "psql -U postgres -tAc 'SELECT count(*) FROM notes'");
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "300");
    let ls: Value = serde_json::from_slice(&p.ok(&["loop", "ls", "--json"]).into_bytes()).unwrap();
    let ralph = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "ralph")
        .unwrap();
    assert_eq!(ralph["state"], "completed", "{ls:#}");
}
