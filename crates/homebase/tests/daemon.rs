//! `homebase daemon` on a real test host: self-healing, crash loops, the memory governor,
//! alerts to a webhook, history that survives a restart, and an API that answers only with
//! the token and only on the host's loopback. The daemon watches only this test's project.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use homebase_testkit::{Daemon, TestProject, hosts, unique_port, webhook};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

fn kind(e: &serde_json::Value, service: &str, k: &str) -> bool {
    e["service"] == service && e["kind"] == k
}

#[test]
fn daemon_heals_governs_alerts_and_keeps_history() {
    let hosts = hosts();
    let h = hosts.host(2);
    let (hook, received) = webhook();
    let compose = r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw}
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo ok > /www/ok && exec httpd -f -p 8080 -h /www"]
    stop_signal: SIGKILL
    healthcheck: {test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/ok"], interval: 1s, timeout: 1s, retries: 2}
  worker:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
    tmpfs: ["/fill:size=600m"]
"#;
    let budget = format!(
        "[services.db]\nmemory = \"512MiB\"\n[services.api]\nmemory = \"32MiB\"\n[services.worker]\nmemory = \"600MiB\"\npriority = \"batch\"\n\
         [daemon]\ninterval_ms = 500\nhigh_watermark = 0.25\nlow_watermark = 0.15\ncrash_loop_restarts = 3\ncrash_loop_minutes = 5\nunhealthy_grace_secs = 2\ndisk_low_percent = 100.0\n[backup]\nat_hour = 0\n\
         [alerts]\nwebhook = \"{hook}\"\ncooldown_secs = 1\n"
    );
    let p = TestProject::new(&hosts, h, bin(), "daemon", compose, &budget);
    // the budget: 2 GiB × 0.8; the governor acts above 25% of it (≈410 MiB)
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace("host_memory = \"4GiB\"", "host_memory = \"2GiB\"");
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    p.ok(&["deploy", "--timeout", "60"]);
    // A crash-looping container of the project, as a bad release would leave it.
    hosts.ssh_ok(
        h,
        &format!(
            "docker run -d --name {0}-crasher-1 --label com.docker.compose.project={0} --label com.docker.compose.service=crasher \
             --restart always -m 16m hb/busybox:latest sh -c 'sleep 1; exit 3'",
            p.name
        ),
    );
    // the default place, so that `homebase status` finds it
    // (and a fresh one: an earlier run's daemon and its events must not be seen here)
    let state = "$HOME/.homebase/daemon".to_string();
    hosts.ssh_ok(
        h,
        &format!(
            "[ -f {state}/pid ] && kill $(cat {state}/pid) 2>/dev/null; sleep 0.2; rm -rf {state}; mkdir -p {state}"
        ),
    );
    let d = Daemon {
        bin: bin().to_path_buf(),
        hosts: &hosts,
        host: h,
        state: state.clone(),
        port: unique_port(),
        project: p.name.clone(),
    };
    d.start();
    // wait for the first round
    for _ in 0..100 {
        if d.api("/api/status")
            .1
            .contains(&format!("\"{}-db-1\"", p.name))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The API: 401 without the token, nothing else; not reachable from the laptop side.
    let (code, body) = d.get("/api/status", false);
    assert_eq!(code, 401, "{body}");
    assert!(
        TcpStream::connect_timeout(
            &SocketAddr::from(([10, 231, 0, 12], d.port)),
            Duration::from_secs(2)
        )
        .is_err()
    );
    let (code, metrics) = d.api("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "homebase_service_up{{project=\"{}\",service=\"db\"}} 1",
            p.name
        )),
        "{metrics}"
    );
    // valid exposition for the real tools: promtool's linter, and a Prometheus scraping it
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/testhost installs it)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let prom_port = unique_port();
    hosts.ssh_ok(
        h,
        &format!(
            "mkdir -p {state}/prom && s=$(cd {state} && pwd) && printf 'global:\\n  scrape_interval: 1s\\nscrape_configs:\\n- job_name: homebase\\n  authorization:\\n    credentials_file: %s/token\\n  static_configs:\\n  - targets: [\"127.0.0.1:{}\"]\\n' \"$s\" > {state}/prom/prometheus.yml && \
             (nohup prometheus --config.file={state}/prom/prometheus.yml --storage.tsdb.path={state}/prom/data --web.listen-address=127.0.0.1:{prom_port} > {state}/prom/log 2>&1 < /dev/null & echo $! > {state}/prom/pid)",
            d.port
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answer = String::new();
    while Instant::now() < deadline {
        answer = String::from_utf8_lossy(
            &hosts
                .ssh(
                    h,
                    &format!("curl -s 'http://127.0.0.1:{prom_port}/api/v1/query?query=homebase_service_up'"),
                )
                .stdout,
        )
        .to_string();
        if answer.contains(&format!("\"project\":\"{}\"", p.name)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = hosts.ssh(
        h,
        &format!(
            "curl -s http://127.0.0.1:{prom_port}/api/v1/targets; kill $(cat {state}/prom/pid)"
        ),
    );
    assert!(
        answer.contains(&format!("\"project\":\"{}\"", p.name)),
        "Prometheus did not scrape the daemon: {answer}\n{}",
        String::from_utf8_lossy(&targets.stdout)
    );

    // `homebase status` on the laptop shows what the daemon knows.
    let status: serde_json::Value = serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
    assert!(
        status["daemon"]
            .as_str()
            .unwrap()
            .starts_with("running at 127.0.0.1:"),
        "{status}"
    );
    assert!(!status["events"].as_array().unwrap().is_empty(), "{status}");
    // ... entirely, when it runs: state, health, uptime, restarts and limit are the daemon's
    // view, and they agree with the engine's (`--fresh` asks the engine itself)
    assert!(
        status["daemon"].as_str().unwrap().contains("its view of"),
        "{status}"
    );
    let fresh: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", "--fresh", "--json"])).unwrap();
    assert!(
        !fresh["daemon"].as_str().unwrap().contains("its view of"),
        "{fresh}"
    );
    for (a, b) in status["services"]
        .as_array()
        .unwrap()
        .iter()
        .zip(fresh["services"].as_array().unwrap())
    {
        for key in [
            "name",
            "state",
            "health",
            "restarts",
            "limit_bytes",
            "container",
        ] {
            assert_eq!(a[key], b[key], "{key}: {a} / {b}");
        }
        let (ua, ub) = (a["uptime_secs"].as_u64(), b["uptime_secs"].as_u64());
        match (ua, ub) {
            (Some(x), Some(y)) => assert!(x.abs_diff(y) <= 10, "uptime: {a} / {b}"),
            (x, y) => assert_eq!(x, y, "uptime: {a} / {b}"),
        }
    }

    // `status` left a note on the warm connection of where the daemon listens, so that
    // `tunnel --check` (no tunnel running) probes it at once, with the services; a note
    // gone stale (the daemon moved) is found out and the daemon probed where it is now.
    let note = std::fs::read_dir(p.control_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "daemon-endpoint"))
        .expect("a note of the daemon's endpoint beside the warm connection");
    let port = status["daemon"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let port: String = port.chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(
        std::fs::read_to_string(&note).unwrap(),
        format!("127.0.0.1:{port}")
    );
    for stale in [false, true] {
        if stale {
            std::fs::write(&note, "127.0.0.1:1").unwrap();
        }
        let check: serde_json::Value =
            serde_json::from_str(&p.ok(&["tunnel", "--check", "--json"])).unwrap();
        let rows: Vec<&serde_json::Value> = check["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["service"] == "homebase-daemon")
            .collect();
        assert_eq!(rows.len(), 1, "stale note {stale}: {check}");
        assert_eq!(rows[0]["ok"], true, "stale note {stale}: {check}");
        assert_eq!(rows[0]["remote_port"].to_string(), port, "{check}");
    }
    assert_eq!(
        std::fs::read_to_string(&note).unwrap(),
        format!("127.0.0.1:{port}")
    );

    // The tunnel carries the daemon's API too, and --check reaches its page.
    let tstate = tempfile::tempdir().unwrap();
    let check = p
        .cmd(&["tunnel", "--check", "--json"])
        .env("HOMEBASE_STATE_DIR", tstate.path())
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let api = check["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "homebase-daemon")
        .expect("daemon forward");
    assert_eq!(api["ok"], true, "{check}");

    // The daily backup (at_hour = 0: due at once) is taken by the daemon.
    let b = d.wait_event("scheduled backup", |e| {
        e["kind"] == "backup" || e["kind"] == "backup_failed"
    });
    assert_eq!(b["kind"], "backup", "{b}");
    let ls: serde_json::Value = serde_json::from_str(&p.ok(&["backup", "ls", "--json"])).unwrap();
    assert_eq!(ls[0]["files"][0]["kind"], "pg_dump", "{ls}");

    // Crash loop: Docker keeps restarting it; the daemon gives up, stops it and alerts.
    d.wait_event("crash loop given up", |e| kind(e, "crasher", "gave_up"));

    // Kill a container: event, webhook alert, and the daemon starts it again.
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    hosts.docker(h, &["kill", &format!("{}-api-1", p.name)]);
    d.wait_event("api died", |e| kind(e, "api", "die"));
    d.wait_event("api started again", |e| kind(e, "api", "heal_start"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !received
        .lock()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "down" && a["service"] == "api")
    {
        assert!(
            Instant::now() < deadline,
            "no webhook alert: {:?}",
            received.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let alert_ms = received
        .lock()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "down" && a["service"] == "api")
        .unwrap()["_received_ms"]
        .as_u64()
        .unwrap();
    eprintln!(
        "BENCH kill→webhook {} ms",
        alert_ms.saturating_sub(killed_ms)
    );
    assert!(
        received
            .lock()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "crash_loop" && a["service"] == "crasher")
    );

    // Unhealthy: the daemon restarts it, and it is healthy again.
    let wait_healthy = || {
        for _ in 0..100 {
            let s = p.exec("api", "wget -qO- http://127.0.0.1:8080/ok");
            if s.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("api not serving");
    };
    wait_healthy();
    std::thread::sleep(Duration::from_secs(3));
    p.exec("api", "rm /www/ok");
    let broke = super_now();
    let healed = d.wait_event("unhealthy api restarted", |e| {
        kind(e, "api", "heal_restart")
    });
    eprintln!(
        "BENCH unhealthy→restart {} s (grace 2 s, healthcheck 1 s × 2 retries)",
        healed["ts"].as_i64().unwrap() - broke
    );

    // Memory pressure: the batch worker is paused (and stopped), db keeps running, then resumes.
    let db_id = p.container_ids()["db"].clone();
    p.exec(
        "worker",
        "dd if=/dev/zero of=/fill/x bs=1M count=450 2>/dev/null",
    );
    let paused = d.wait_event("worker paused", |e| kind(e, "worker", "governor_pause"));
    assert!(
        paused["message"]
            .as_str()
            .unwrap()
            .contains("high watermark"),
        "{paused}"
    );
    d.wait_event("worker resumed", |e| kind(e, "worker", "governor_resume"));
    assert!(
        !d.events()
            .iter()
            .any(|e| e["service"] == "db" && e["kind"].as_str().unwrap().starts_with("governor")),
        "db was governed"
    );
    assert_eq!(p.container_ids()["db"], db_id, "db was replaced");
    let st = hosts.docker(h, &["inspect", "--format", "{{.State.Status}}", &db_id]);
    assert_eq!(String::from_utf8_lossy(&st.stdout).trim(), "running");

    // History survives a daemon restart.
    let before: serde_json::Value = serde_json::from_str(
        &d.api(&format!(
            "/api/history?project={}&service=db&resolution=raw&from=0",
            p.name
        ))
        .1,
    )
    .unwrap();
    let n = before["points"].as_array().unwrap().len();
    assert!(n > 5, "{before}");
    let first = before["points"][0]["ts"].clone();
    d.stop();
    d.start();
    let after: serde_json::Value = serde_json::from_str(
        &d.api(&format!(
            "/api/history?project={}&service=db&resolution=raw&from=0",
            p.name
        ))
        .1,
    )
    .unwrap();
    assert_eq!(after["points"][0]["ts"], first);
    assert!(after["points"].as_array().unwrap().len() >= n);
    // a planned stop and start is an event, not a phone notification
    d.wait_event("start recorded", |e| e["kind"] == "daemon_started");
    let restarted_alert = |e: &serde_json::Value| {
        e["kind"] == "alert_firing"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("daemon_restarted")
    };
    assert!(
        !d.events().iter().any(restarted_alert),
        "a clean restart alerted"
    );
    // an unexpected end (kill -9, a crash, a power cut) alerts at the next start
    d.kill9();
    d.start();
    d.wait_event("unexpected restart alerted", restarted_alert);
    d.stop();
    hosts.ssh(h, &format!("rm -rf {state}"));
    p.write(compose, &budget); // keep the project alive until here
}

fn super_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Slow clients cannot starve the daemon: started with launchd's default of 256 open files,
/// it takes 300 connections that never finish their request head, still answers an
/// authorised request, still sees a killed container and alerts on it, and closes the
/// half-sent connections itself. Then SIGTERM with a live stream open: it stops at once
/// (the figure is printed), cleanly, and its store opens again.
#[test]
fn slow_clients_do_not_starve_the_daemon_and_it_stops_at_once() {
    let hosts = hosts();
    let h = hosts.host(3);
    let compose = "services:\n  api:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n";
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "slowloris",
        compose,
        "[services.api]\nmemory = \"16MiB\"\n[daemon]\ninterval_ms = 500\n",
    );
    p.ok(&["deploy", "--timeout", "60"]);
    let d = Daemon {
        bin: bin().to_path_buf(),
        hosts: &hosts,
        host: h,
        state: format!("/tmp/hb-slow-{}", p.name),
        port: unique_port(),
        project: p.name.clone(),
    };
    hosts.ssh_ok(h, &format!("rm -rf {0}; mkdir -p {0}", d.state));
    // launchd's default: a soft limit of 256 (the daemon raises it)
    d.start_with("ulimit -Sn 256; ");
    d.wait_event("the daemon saw the service", |e| {
        e["kind"] == "daemon_started"
    });
    let slow = format!(
        r#"import socket, time
conns = []
for i in range(300):
    s = socket.create_connection(("127.0.0.1", {port}))
    s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    conns.append(s)
print("open", len(conns), flush=True)
closed = 0
deadline = time.time() + 40
for s in conns:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        if s.recv(1) == b"":
            closed += 1
    except ConnectionResetError:
        closed += 1
    except OSError:
        pass
print("closed", closed, flush=True)
"#,
        port = d.port
    );
    hosts.ssh_with_input(h, &format!("cat > {}/slow.py", d.state), slow.as_bytes());
    hosts.ssh_ok(
        h,
        &format!(
            "cd {0} && nohup python3 slow.py > slow.out 2>&1 < /dev/null &",
            d.state
        ),
    );
    let mut opened = String::new();
    for _ in 0..100 {
        opened = hosts.ssh_ok(h, &format!("cat {}/slow.out", d.state));
        if opened.contains("open 300") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(opened.contains("open 300"), "{opened}");
    // while they hang: an authorised request is answered, a killed container alerted on
    let (code, body) = d.api("/api/status");
    assert_eq!(code, 200, "{body}");
    hosts.docker(h, &["kill", &format!("{}-api-1", p.name)]);
    d.wait_event("the kill alerted on", |e| {
        e["service"] == "api" && e["kind"] == "alert_firing"
    });
    // the daemon closed the half-sent connections itself
    let mut out = String::new();
    for _ in 0..450 {
        out = hosts.ssh_ok(h, &format!("cat {}/slow.out", d.state));
        if out.contains("closed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("closed "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(closed, 300, "{out}");
    let log = hosts.ssh_ok(h, &format!("cat {}/log", d.state));
    assert!(!log.contains("Too many open files"), "{log}");

    // SIGTERM with a live stream open
    hosts.ssh_ok(
        h,
        &format!(
            "nohup curl -sN -H \"Authorization: Bearer $(cat {0}/token)\" http://127.0.0.1:{1}/api/stream > /dev/null 2>&1 < /dev/null &",
            d.state, d.port
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let stopped = hosts.ssh_ok(
        h,
        &format!(
            "pid=$(cat {}/pid); t0=$(date +%s%N); kill $pid; i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done; kill -0 $pid 2>/dev/null && {{ echo still running; kill -9 $pid; exit 0; }}; echo $(( ($(date +%s%N) - t0) / 1000000 ))",
            d.state
        ),
    );
    assert!(
        !stopped.contains("still running"),
        "SIGTERM did not stop the daemon in 30 s"
    );
    eprintln!("BENCH SIGTERM→exit {} ms", stopped.trim());
    let left = hosts.ssh_ok(
        h,
        &format!("grep 'did not stop in time' {}/log || true", d.state),
    );
    eprintln!("tasks left at the stop: {left}");
    let marks = hosts.ssh_ok(h, &format!("ls -A {}", d.state));
    assert!(marks.contains("clean-stop"), "no clean stop: {marks}");
    // its store opens again, with what it recorded
    d.start();
    assert!(
        d.events()
            .iter()
            .any(|e| e["service"] == "api" && e["kind"] == "alert_firing"),
        "the events were lost"
    );
    d.stop();
    let _ = hosts.ssh(
        h,
        &format!("pkill -f {}/slow.py; rm -rf {}", d.state, d.state),
    );
}

/// The engine gone is an alert at once, and the daemon brings it back with the configured
/// command (`colima start` on a Mac by default): here the daemon reaches the real engine
/// through a link, the link removed is the outage, and `engine_start` puts it back. Before
/// that, a killed container (a crash: no stop was asked for) is started again at once.
#[test]
fn the_engine_gone_is_an_alert_and_is_started_again() {
    let hosts = hosts();
    let h = hosts.host(2);
    let state = format!("/tmp/hb-engine-{}", homebase_testkit::unique_name("e"));
    let real = hosts
        .ssh_ok(h, "echo ${DOCKER_HOST#unix://}")
        .trim()
        .to_string();
    let link = format!("{state}/engine.sock");
    let compose = "services:\n  api:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n";
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "engine",
        compose,
        &format!(
            "[services.api]\nmemory = \"16MiB\"\n[daemon]\ninterval_ms = 2000\nengine_start = \"ln -sf {real} {link}\"\n"
        ),
    );
    p.ok(&["deploy", "--timeout", "60"]);
    let d = Daemon {
        bin: bin().to_path_buf(),
        hosts: &hosts,
        host: h,
        state: state.clone(),
        port: unique_port(),
        project: p.name.clone(),
    };
    hosts.ssh_ok(
        h,
        &format!("rm -rf {state}; mkdir -p {state} && ln -s {real} {link}"),
    );
    d.start_with(&format!("DOCKER_HOST=unix://{link} "));
    d.wait_event("the daemon started", |e| e["kind"] == "daemon_started");

    // a crash: no stop asked for; the daemon starts it again without waiting
    let killed = Instant::now();
    hosts.docker(h, &["kill", &format!("{}-api-1", p.name)]);
    d.wait_event("the crash healed", |e| {
        e["service"] == "api"
            && e["kind"] == "heal_start"
            && e["message"].as_str().unwrap_or("").contains("at once")
    });
    eprintln!(
        "BENCH docker kill → heal_start {} ms",
        killed.elapsed().as_millis()
    );

    // the engine gone
    let gone = Instant::now();
    hosts.ssh_ok(h, &format!("rm {link}"));
    d.wait_event("the engine alert", |e| {
        e["kind"] == "alert_firing" && e["message"].as_str().unwrap_or("").contains("engine_down")
    });
    eprintln!(
        "BENCH engine gone → alert {} ms",
        gone.elapsed().as_millis()
    );
    let started = d.wait_event("the start command", |e| e["kind"] == "engine_start");
    assert!(
        started["message"]
            .as_str()
            .unwrap()
            .contains(&format!("ran `ln -sf {real} {link}`")),
        "{started}"
    );
    d.wait_event("the engine back", |e| {
        e["kind"] == "alert_resolved" && e["message"].as_str().unwrap_or("").contains("engine_down")
    });
    d.stop();
    let _ = hosts.ssh(h, &format!("rm -rf {state}"));
}
