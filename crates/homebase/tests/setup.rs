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

    // "Reboot": everything stops; dockerd and the service come back by themselves.
    hosts.ssh(
        h,
        "kill $(cat ~/.homebase/supervisor.pid); pkill -f '.homebase/bin/homebase daemon'; true",
    );
    testhost(&["restart-dockerd", "4"], &[]);
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

    hosts.ssh(h, "kill $(cat ~/.homebase/supervisor.pid); pkill -f '.homebase/bin/homebase daemon'; rm -rf ~/.homebase/bin ~/.homebase/daemon ~/.config/systemd; true");
}
