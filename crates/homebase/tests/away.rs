//! The way in from anywhere (hosts 11 and 12, this test's alone, made fresh at the start):
//! a Mac-like Mini whose network refuses every inbound connection (a home router's NAT) and
//! a relay that has nothing but sshd and an account. Setup says what to put on the relay
//! and brings the reverse tunnel up; deploy, status, logs and `tunnel` work through it; the
//! LAN way is used while it answers and the relay as soon as it does not; the Mini's uplink
//! cut and back, and a power cut, bring the tunnel back with no command; a wrong host key
//! behind the relay is refused; `preflight` fails on each broken item and passes when all
//! hold.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use homebase_testkit::{
    AWAY, RELAY, TestProject, checklist_item, hosts, json_of, testhost, unique_port, webhook,
};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs `args` until it succeeds (at most `secs`), with no other command in between: the
/// way back must come by itself.
fn until_ok(p: &TestProject, args: &[&str], secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let o = p.run(args);
        if o.status.success() {
            return o;
        }
        assert!(Instant::now() < deadline, "{what}: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(500));
    }
}

const VIA_RELAY: &str = "through the relay";

#[test]
fn the_host_is_reached_from_anywhere_through_a_relay_and_preflight_says_whether_it_holds() {
    testhost(&["fresh", &AWAY.to_string()], &[]);
    testhost(&["fresh", &RELAY.to_string()], &[]);
    let hosts = hosts();
    let (mini, relay) = (hosts.host(AWAY), hosts.host(RELAY));
    let api_port = unique_port();
    let tunnel_port = unique_port();
    let compose = format!(
        "services:\n  api:\n    image: hb/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    ports: [\"127.0.0.1:{api_port}:8080\"]\n    volumes: [\"data:/data\"]\n    stop_signal: SIGKILL\nvolumes:\n  data: {{}}\n"
    );
    let p = TestProject::new(&hosts, mini, bin(), "away", &compose, "");
    // this project's own known_hosts: the test changes the Mini's recorded key later
    let known = p.dir.path().join("known_hosts");
    std::fs::copy(&hosts.known_hosts, &known).unwrap();
    let (hook, received) = webhook();
    let toml = |hook: &str| {
        format!(
            "[project]\nname = \"{name}\"\n\n[host]\nssh = \"{mu}@{ma}\"\nidentity_file = \"{key}\"\nknown_hosts_file = \"{kh}\"\nconnect_timeout_secs = 5\n\n[host.relay]\nssh = \"{ru}@{ra}\"\ntunnel_port = {tunnel_port}\nidentity_file = \"{key}\"\nknown_hosts_file = \"{kh}\"\n\n[budget]\nhost_memory = \"4GiB\"\n\n[services.api]\nmemory = \"64MiB\"\n\n[alerts]\nwebhook = \"{hook}\"\n",
            name = p.name,
            mu = mini.user,
            ma = mini.address,
            ru = relay.user,
            ra = relay.address,
            key = hosts.key.display(),
            kh = known.display(),
        )
    };
    std::fs::write(p.dir.path().join("homebase.toml"), toml(&hook)).unwrap();
    let setup = ["setup", "--json", "--binary", bin().to_str().unwrap()];

    // 1. Setup makes the Mini's key and says the one line the relay needs; nothing else
    //    goes on the relay.
    let r = json_of(&p.run(&setup));
    assert_eq!(checklist_item(&r, "relay key")["state"], "changed", "{r:#}");
    assert_eq!(
        checklist_item(&r, "relay host key")["state"],
        "changed",
        "{r:#}"
    );
    let account = checklist_item(&r, "relay account");
    assert_eq!(account["state"], "missing", "{r:#}");
    let fix = account["fix"].as_str().unwrap();
    let line = fix.lines().last().unwrap();
    assert!(
        line.starts_with(&format!(
            "restrict,port-forwarding,permitlisten=\"127.0.0.1:{tunnel_port}\" ssh-ed25519 "
        )),
        "{fix}"
    );
    assert_eq!(r["ready"], false);
    let keys = format!("/home/{}/.ssh/authorized_keys", relay.user);
    let before = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(&keys, format!("{before}{line}\n")).unwrap();
    let r = json_of(&p.run(&setup));
    assert_eq!(checklist_item(&r, "relay account")["state"], "ok", "{r:#}");
    assert_eq!(
        checklist_item(&r, "relay tunnel")["state"],
        "changed",
        "{r:#}"
    );
    assert_eq!(checklist_item(&r, "away path")["state"], "ok", "{r:#}");
    let again = json_of(&p.run(&setup));
    assert_eq!(
        checklist_item(&again, "relay tunnel")["state"],
        "ok",
        "{again:#}"
    );

    // 2. Away: nothing reaches the Mini but through the relay. Every command takes it and
    //    says so.
    testhost(&["block-inbound", &AWAY.to_string()], &[]);
    p.close_masters();
    let d = p.run(&["deploy"]);
    assert!(d.status.success(), "{}", stderr(&d));
    assert!(stderr(&d).contains(VIA_RELAY), "{}", stderr(&d));
    let s = json_of(&p.run(&["status", "--json"]));
    assert_eq!(s["healthy"], true, "{s:#}");
    let logs = p.run(&["logs", "api", "--tail", "5"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    let mut tunnel = p
        .cmd(&["tunnel", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let got = (0..60).find_map(|_| {
        std::thread::sleep(Duration::from_millis(250));
        let o = std::process::Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{api_port}/")])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert_eq!(
        got.as_deref().map(str::trim),
        Some("ok"),
        "the service through the tunnel, through the relay"
    );

    // 3. Roaming: home again, the LAN is used; away, the relay, at the next command.
    testhost(&["allow-inbound", &AWAY.to_string()], &[]);
    p.close_masters();
    let home = p.run(&["status"]);
    assert!(home.status.success(), "{}", stderr(&home));
    assert!(!stderr(&home).contains(VIA_RELAY), "{}", stderr(&home));
    testhost(&["block-inbound", &AWAY.to_string()], &[]);
    p.close_masters();
    let away = p.run(&["status"]);
    assert!(away.status.success(), "{}", stderr(&away));
    assert!(stderr(&away).contains(VIA_RELAY), "{}", stderr(&away));

    // 4. The Mini's uplink cut long enough for its tunnel to die, then back: the next
    //    commands work again with nothing done on either side.
    // read from outside the Mini (its network takes no connection from here)
    let state_file = format!("{}/.homebase/daemon/relay-state.json", mini.home);
    let state = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap_or_default())
            .unwrap_or_default()
    };
    let connects = state()["connects"].as_u64().unwrap_or(0);
    testhost(&["link-down", &AWAY.to_string()], &[]);
    std::thread::sleep(Duration::from_secs(20));
    testhost(&["link-up", &AWAY.to_string()], &[]);
    until_ok(&p, &["status"], 60, "back after the uplink returned");
    assert!(
        state()["connects"].as_u64().unwrap_or(0) > connects,
        "{}",
        state()
    );

    // 5. A wrong host key behind the relay is refused (the Mini's key is checked end to end,
    //    under its own name, not the relay's loopback).
    let good = std::fs::read_to_string(&known).unwrap();
    let other_key = std::fs::read_to_string(format!(
        "/run/homebase-testhost/{}/ssh_host_ed25519_key.pub",
        relay.name
    ))
    .unwrap();
    let wrong: String = good
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{} ", mini.address)) {
                format!(
                    "{} {}",
                    mini.address,
                    other_key
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&known, wrong).unwrap();
    p.close_masters();
    let refused = p.run(&["status"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("CHANGED"), "{}", stderr(&refused));
    std::fs::write(&known, good).unwrap();

    // 6. A power cut: at login launchd starts the daemon, and the daemon the tunnel.
    for (k, v) in [
        ("sleep", "0"),
        ("autorestart", "1"),
        ("filevault", "off"),
        ("autologin", mini.user.as_str()),
    ] {
        testhost(&["mac-set", &AWAY.to_string(), k, v], &[]);
    }
    testhost(&["reboot", &AWAY.to_string()], &[]);
    p.close_masters();
    until_ok(&p, &["status"], 120, "back after the power cut");

    // 7. Preflight: fails on each broken item, passes when all hold.
    let pre = p.run(&["preflight", "--json"]);
    assert!(!pre.status.success());
    let r = json_of(&pre);
    assert_eq!(checklist_item(&r, "backup")["state"], "missing", "{r:#}");
    assert_eq!(checklist_item(&r, "away path")["state"], "ok", "{r:#}");
    assert_eq!(checklist_item(&r, "alerts")["state"], "ok", "{r:#}");
    assert!(
        received.lock().unwrap().iter().any(|a| a["kind"] == "test"),
        "the test message reached the webhook"
    );
    p.ok(&["backup", "now"]);
    let r = json_of(&p.run(&["preflight", "--json"]));
    assert_eq!(r["ready"], true, "{r:#}");
    assert_eq!(checklist_item(&r, "backup")["state"], "ok", "{r:#}");
    assert_eq!(checklist_item(&r, "disk")["state"], "ok", "{r:#}");
    // each broken in turn
    testhost(&["mac-set", &AWAY.to_string(), "autorestart", "0"], &[]);
    let r = json_of(&p.run(&["preflight", "--json"]));
    assert_eq!(
        checklist_item(&r, "power failure")["state"],
        "missing",
        "{r:#}"
    );
    assert_eq!(r["ready"], false);
    testhost(&["mac-set", &AWAY.to_string(), "autorestart", "1"], &[]);
    std::fs::write(&keys, &before).unwrap();
    let r = json_of(&p.run(&["preflight", "--json"]));
    assert_eq!(
        checklist_item(&r, "relay account")["state"],
        "missing",
        "{r:#}"
    );
    assert_eq!(r["ready"], false);
    std::fs::write(&keys, format!("{before}{line}\n")).unwrap();
    std::fs::write(
        p.dir.path().join("homebase.toml"),
        toml(&format!("http://10.231.0.1:{}/hook", unique_port())),
    )
    .unwrap();
    p.ok(&["deploy"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        // the daemon reads the new sinks within 5 s
        let r = json_of(&p.run(&["preflight", "--json"]));
        if checklist_item(&r, "alerts")["state"] == "missing" || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(checklist_item(&r, "alerts")["state"], "missing", "{r:#}");
    assert!(
        checklist_item(&r, "alerts")["detail"]
            .as_str()
            .unwrap()
            .contains("webhook"),
        "{r:#}"
    );
    assert_eq!(r["ready"], false);
    testhost(&["allow-inbound", &AWAY.to_string()], &[]);
}
