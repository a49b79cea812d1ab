//! `homebase setup` on a bare test host (host 4, used by this test alone): installs the
//! binary and the daemon's service definition, a second run changes nothing, `--check`
//! reports; then a "reboot" (dockerd and the daemon stopped, started again the way the
//! service manager would) brings the stack and the daemon back with no command from the
//! laptop.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::{Duration, Instant};

use homebase_testkit::{TestProject, hosts, testhost};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

/// Host 4's engine configuration (scripts/testhost): root's, as /etc/docker/daemon.json is.
const DAEMON_JSON: &str = "/run/homebase-testhost/hbhost4/daemon.json";

/// Host 4's engine back to Docker's defaults (live-restore off), with a key of the admin's
/// own that setup must keep; reloaded as `systemctl reload docker` would.
fn live_restore_off() {
    // (a reload leaves a setting the file does not name as it was: say `false`)
    std::fs::write(
        DAEMON_JSON,
        "{\"log-level\": \"info\", \"live-restore\": false}\n",
    )
    .unwrap();
    let pid = std::fs::read_to_string("/run/homebase-testhost/hbhost4/dockerd.pid").unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let sock = "unix:///run/homebase-testhost/hbhost4/docker.sock";
    for _ in 0..50 {
        let out = std::process::Command::new("docker")
            .args(["info", "--format", "{{.LiveRestoreEnabled}}"])
            .env("DOCKER_HOST", sock)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "false" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("host 4's engine kept live-restore on after a reload");
}

#[test]
fn setup_is_idempotent_and_the_stack_survives_a_reboot() {
    let hosts = hosts();
    let h = hosts.host(4);
    let compose = "services:\n  api:\n    image: hb/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    stop_signal: SIGKILL\n";
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "setup",
        compose,
        "[services.api]\nmemory = \"32MiB\"\n",
    );
    hosts.ssh(h, "rm -rf ~/.homebase/bin ~/.homebase/daemon ~/.config/systemd; pkill -f 'homebase daemon' ; true");
    // the engine as Docker installs it: live-restore off
    live_restore_off();

    // First run: installs the binary and the unit; no systemd here, so nothing starts it yet.
    let first = p.run(&["setup", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let state = |r: &serde_json::Value, name: &str| {
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(&report, "docker compose"), "ok", "{report}");
    assert_eq!(state(&report, "homebase binary"), "changed", "{report}");
    assert_eq!(state(&report, "daemon service"), "changed", "{report}");
    assert_eq!(state(&report, "service manager"), "warning", "{report}");
    // live-restore turned on in the engine's own daemon.json (its other keys kept), with
    // the account's sudo, and reloaded without a restart
    assert_eq!(state(&report, "live restore"), "changed", "{report}");
    assert_eq!(
        hosts
            .ssh_ok(h, "docker info --format '{{.LiveRestoreEnabled}}'")
            .trim(),
        "true"
    );
    let config = std::fs::read_to_string(DAEMON_JSON).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["live-restore"], true, "{config}");
    assert_eq!(config["log-level"], "info", "{config}");
    assert_eq!(
        first.status.code(),
        Some(1),
        "not ready while the daemon is not running"
    );

    // Run the unit's ExecStart the way its manager would (Restart=always: a supervisor loop).
    let unit = hosts.ssh_ok(h, "cat ~/.config/systemd/user/homebase-daemon.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .to_string();
    assert!(exec.ends_with("/.homebase/bin/homebase daemon"), "{exec}");
    // its log in the host user's own home: a fixed name in the shared /tmp would outlive
    // the user (who may come back with another uid on the next run)
    let supervise = format!(
        "nohup sh -c 'while true; do {exec}; sleep 1; done' > ~/.homebase/supervisor.log 2>&1 < /dev/null & echo $! > ~/.homebase/supervisor.pid"
    );
    hosts.ssh_ok(h, &supervise);
    p.ok(&["deploy"]);

    // Second run: nothing to change, and ready.
    let second = p.run(&["setup", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["changed"], false, "{report}");
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(second.status.code(), Some(0));
    let check = p.run(&["setup", "--check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("ready: nothing to change"));

    // "Reboot": everything stops; dockerd and the service come back by themselves. With
    // live-restore the engine's restart restarts no container.
    hosts.ssh(
        h,
        "kill $(cat ~/.homebase/supervisor.pid); pkill -f '.homebase/bin/homebase daemon'; true",
    );
    let started = || {
        hosts.ssh_ok(
            h,
            &format!(
                "docker inspect -f '{{{{.State.StartedAt}}}} {{{{.State.Running}}}}' {}-api-1",
                p.name
            ),
        )
    };
    let before = started();
    testhost(&["restart-dockerd", "4"], &[]);
    assert_eq!(
        started(),
        before,
        "the engine's restart restarted the service"
    );
    hosts.ssh_ok(h, &supervise);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = serde_json::from_str(
            &p.run(&["status", "--json"])
                .stdout
                .iter()
                .map(|b| *b as char)
                .collect::<String>(),
        )
        .unwrap_or_default();
        if status["healthy"] == true
            && status["daemon"]
                .as_str()
                .is_some_and(|d| d.starts_with("running"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "after the reboot: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A hung engine (dockerd frozen): every step has a deadline, the error names the step,
    // and a deploy leaves no lock behind.
    let pid = std::fs::read_to_string("/run/homebase-testhost/hbhost4/dockerd.pid").unwrap();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, pid.trim()])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let hung = p
        .cmd(&["deploy"])
        .env("HOMEBASE_STEP_TIMEOUT_SECS", "3")
        .output()
        .unwrap();
    let lock = hosts.ssh(h, &format!("test -e ~/.homebase/{}/lock", p.name));
    signal("-CONT");
    let err = String::from_utf8_lossy(&hung.stderr);
    assert_eq!(hung.status.code(), Some(3), "{err}");
    assert!(err.contains("did not finish within 3s"), "{err}");
    assert!(!lock.status.success(), "a lock was left");
    p.ok(&["status"]);

    // The engine stopped: a command that needs it exits 3 (the host failed), saying so, and
    // a deploy leaves no lock behind.
    testhost(&["stop-dockerd", "4"], &[]);
    let logs = p.run(&["logs", "api"]);
    let deploy = p.run(&["deploy"]);
    let lock = hosts.ssh(h, &format!("test -e ~/.homebase/{}/lock", p.name));
    testhost(&["start-dockerd", "4"], &[]);
    for (what, out) in [("logs", &logs), ("deploy", &deploy)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(err.contains("Docker daemon"), "{what}: {err}");
    }
    assert!(!lock.status.success(), "a lock was left");

    hosts.ssh(h, "kill $(cat ~/.homebase/supervisor.pid); pkill -f '.homebase/bin/homebase daemon'; rm -rf ~/.homebase/bin ~/.homebase/daemon ~/.config/systemd; true");
    live_restore_off();
}
