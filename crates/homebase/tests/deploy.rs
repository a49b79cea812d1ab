//! `homebase deploy` and friends against real test hosts: a real sshd, a real dockerd, a real
//! PostgreSQL. Each test deploys its own project under a unique name.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use homebase_testkit::{TestProject, hosts, unique_port};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

const BUDGET: &str = "[services.db]\nmemory = \"512MiB\"\n[services.api]\nmemory = \"64MiB\"\n[services.worker]\nmemory = \"32MiB\"\npriority = \"batch\"\n";

/// The test stack; `api_page` is what the API serves, `api_check` its healthcheck command.
fn stack(api_page: &str, api_check: &str) -> String {
    let port = unique_port();
    format!(
        r#"
services:
  db:
    image: hb/pgvector:latest
    environment:
      POSTGRES_PASSWORD: pw
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]
      interval: 1s
      retries: 60
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo {api_page} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    ports: ["127.0.0.1:{port}:8080"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD-SHELL", "{api_check}"]
      interval: 1s
      timeout: 2s
      retries: 3
  worker:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
volumes:
  pgdata: {{}}
"#
    )
}

const HEALTHY: &str = "wget -qO- http://127.0.0.1:8080/";

fn psql(p: &TestProject, sql: &str) -> String {
    let o = p.exec(
        "db",
        &format!("psql -h 127.0.0.1 -U postgres -tA -c \"{sql}\""),
    );
    assert!(
        o.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn api_page(p: &TestProject) -> String {
    let o = p.exec("api", "wget -qO- http://127.0.0.1:8080/");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn deploy_noop_change_and_rollback_keep_data() {
    let hosts = hosts();
    // the Mac-like host: docker only in /opt/homebrew/bin, the engine behind a context
    let p = TestProject::new(
        &hosts,
        hosts.host(homebase_testkit::MAC),
        bin(),
        "deploy",
        &stack("v1", HEALTHY),
        BUDGET,
    );

    // First deploy: healthy, current set, logged.
    p.ok(&["deploy"]);
    let first = p.container_ids();
    assert_eq!(first.len(), 3, "{first:?}");
    assert_eq!(api_page(&p), "v1");
    let current1 = p.host_file("current").unwrap();
    let status: serde_json::Value = serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["healthy"], true);
    assert_eq!(status["release"].as_str(), Some(current1.trim()));
    let db = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap();
    assert_eq!(db["limit_bytes"], 512 << 20);
    assert_eq!(db["health"], "healthy");
    psql(
        &p,
        "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')",
    );

    // No-op: nothing touched.
    let out = p.run(&["deploy"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        p.container_ids(),
        first,
        "a no-op deploy replaced containers"
    );

    // One changed service: only it is replaced.
    let compose = std::fs::read_to_string(p.dir.path().join("compose.yml"))
        .unwrap()
        .replace("echo v1", "echo v2");
    std::fs::write(p.dir.path().join("compose.yml"), compose).unwrap();
    p.ok(&["deploy"]);
    let second = p.container_ids();
    assert_ne!(second["api"], first["api"], "api was not replaced");
    assert_eq!(second["db"], first["db"], "db was replaced");
    assert_eq!(second["worker"], first["worker"], "worker was replaced");
    assert_eq!(api_page(&p), "v2");
    let current2 = p.host_file("current").unwrap();

    // A release that never becomes healthy is rolled back; the previous containers serve.
    let compose = std::fs::read_to_string(p.dir.path().join("compose.yml"))
        .unwrap()
        .replace("echo v2", "echo v3")
        .replace(HEALTHY, "exit 1");
    std::fs::write(p.dir.path().join("compose.yml"), compose).unwrap();
    let out = p.run(&["deploy", "--timeout", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not become healthy"), "{stderr}");
    assert!(stderr.contains("rolled back to release"), "{stderr}");
    assert!(stderr.contains("service `api`"), "{stderr}");
    assert!(stderr.contains("last 50 log lines"), "{stderr}");
    assert_eq!(
        p.host_file("current").unwrap(),
        current2,
        "current changed after a failed deploy"
    );
    assert_eq!(api_page(&p), "v2");
    let status = p.run(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // Rows survive deploy and rollback (volumes are never removed).
    assert_eq!(psql(&p, "SELECT body FROM notes"), "kept");
    p.ok(&["rollback", current1.trim()]);
    assert_eq!(api_page(&p), "v1");
    assert_eq!(psql(&p, "SELECT body FROM notes"), "kept");

    let releases: serde_json::Value = serde_json::from_str(&p.ok(&["releases", "--json"])).unwrap();
    let outcomes: Vec<&str> = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "deployed",
            "up-to-date",
            "deployed",
            "rolled-back",
            "rollback"
        ]
    );
    assert_eq!(releases["current"].as_str(), Some(current1.trim()));

    // Releases beyond the newest 20, and temp dirs an interrupted upload left over an hour
    // ago, go at the end of the next deploy.
    let h = hosts.host(homebase_testkit::MAC);
    hosts.ssh_ok(
        h,
        &format!(
            "cd ~/.homebase/{}/releases && for i in $(seq 10 34); do mkdir 20200101T0000${{i}}Z; \
             printf '{{\"id\":\"20200101T0000%sZ\",\"outcome\":\"deployed\"}}\\n' $i >> ../releases.jsonl; done && \
             mkdir 20990101T000000Z-never-started .tmp-stale .tmp-fresh && touch -d '2 hours ago' .tmp-stale",
            p.name
        ),
    );
    p.write(&stack("v4", HEALTHY), BUDGET);
    p.ok(&["deploy"]);
    let left = hosts.ssh_ok(h, &format!("ls -A ~/.homebase/{}/releases", p.name));
    let kept: Vec<&str> = left.lines().filter(|l| !l.starts_with('.')).collect();
    assert_eq!(kept.len(), 20, "{left}");
    assert!(
        kept.iter().all(|r| *r > "20200101T000018Z"),
        "the oldest went first: {left}"
    );
    assert!(
        !left.contains(".tmp-stale") && left.contains(".tmp-fresh"),
        "{left}"
    );
    assert!(
        !left.contains("never-started"),
        "an upload the release log does not name was kept: {left}"
    );
    assert_eq!(api_page(&p), "v4");

    // A stopped service: the same release is not up to date; the deploy starts it again. On
    // a Mac `/usr/bin/say` speaks: the host's scripts never call a `say` of their own.
    let spoken = || hosts.ssh_ok(h, "cat ~/.spoken 2>/dev/null; true");
    let said = spoken();
    let stop = hosts.docker(h, &["stop", &format!("{}-api-1", p.name)]);
    assert!(stop.status.success());
    let o = p.run(&["deploy"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("up to date"),
        "a stopped service was called up to date"
    );
    assert_eq!(api_page(&p), "v4");
    assert_eq!(spoken(), said, "the Mac Mini spoke");
}

#[test]
fn second_deploy_refuses_while_the_first_holds_the_lock() {
    let hosts = hosts();
    // A slow healthcheck keeps the first deploy busy for a few seconds.
    let compose = stack(
        "slow",
        "test -f /tmp/ready || { sleep 1; touch /tmp/ready; exit 1; }",
    )
    .replace("retries: 3", "retries: 10");
    let p = TestProject::new(&hosts, hosts.host(2), bin(), "lock", &compose, BUDGET);
    let mut first = p
        .cmd(&["deploy", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    // Wait until the first deploy is starting services (it holds the lock then).
    loop {
        let line = lines
            .next()
            .expect("deploy ended before starting services")
            .unwrap();
        if line.contains("start services") {
            break;
        }
    }
    let second = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("holds the lock"), "{stderr}");
    assert!(stderr.contains("pid "), "{stderr}");
    for _ in lines {}
    assert!(first.wait().unwrap().success());
    // The lock is released afterwards.
    p.ok(&["deploy"]);

    // A lock left by a deploy that died an hour ago: reported as stale, broken on request.
    let info = format!(
        "{{\\\"holder\\\":\\\"ghost@laptop\\\",\\\"pid\\\":4242,\\\"time\\\":{},\\\"token\\\":\\\"t\\\"}}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600
    );
    hosts.ssh_ok(
        p.host,
        &format!(
            "mkdir -p ~/.homebase/{0}/lock && echo \"{info}\" > ~/.homebase/{0}/lock/info",
            p.name
        ),
    );
    let stale = p.run(&["deploy", "--force"]);
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(stale.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("ghost@laptop, pid 4242, for 1h0m (stale"),
        "{stderr}"
    );
    p.ok(&["deploy", "--force", "--force-unlock"]);

    // Two deploys at the same instant, a few times: the one refused always names the real
    // holder (the lock and its holder's line are made in one step).
    for _ in 0..3 {
        let a = p
            .cmd(&["deploy", "--force"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = p
            .cmd(&["deploy", "--force"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.code() == Some(4) {
                assert!(!err.contains(", pid 0,"), "{err}");
                assert!(!err.contains("stale"), "{err}");
            } else {
                assert!(o.status.success(), "{err}");
            }
        }
    }
    let lock = hosts.ssh(
        p.host,
        &format!(
            "test -e ~/.homebase/{}/lock || test -L ~/.homebase/{}/lock",
            p.name, p.name
        ),
    );
    assert!(!lock.status.success(), "a lock was left");
}

#[test]
fn lost_connection_mid_upload_leaves_the_current_release() {
    let hosts = hosts();
    let h = hosts.host(2);
    let p = TestProject::new(&hosts, h, bin(), "cut", &stack("one", HEALTHY), BUDGET);
    p.ok(&["deploy"]);
    let current = p.host_file("current").unwrap();
    let ids = p.container_ids();

    // A big release (a 16 MB environment value) so that the upload takes a while.
    let big = "x".repeat(16 << 20);
    let compose = std::fs::read_to_string(p.dir.path().join("compose.yml"))
        .unwrap()
        .replace(
            "  worker:\n",
            &format!("  worker:\n    environment:\n      BIG: {big}\n"),
        );
    std::fs::write(p.dir.path().join("compose.yml"), compose).unwrap();
    let mut deploy = p
        .cmd(&["deploy", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(deploy.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("deploy ended before uploading")
            .unwrap();
        if line.contains("upload release") {
            break;
        }
    }
    // Kill this deploy's SSH master: the uploading child names its control socket.
    let pid = deploy.id();
    let socket = (0..200)
        .find_map(|_| {
            let o = std::process::Command::new("pgrep")
                .args(["-a", "-P", &pid.to_string()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let found = text
                .split_whitespace()
                .skip_while(|w| *w != "-S")
                .nth(1)
                .map(str::to_string);
            if found.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            found
        })
        .expect("the upload's ssh process");
    let killed = std::process::Command::new("pkill")
        .args(["-f", "--", &format!("-M -S {socket}")])
        .status()
        .unwrap();
    assert!(killed.success(), "no master with socket {socket}");
    let events: Vec<String> = lines.map_while(Result::ok).collect();
    let out = deploy.wait_with_output().unwrap();
    let stderr = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        events.join("\n")
    );
    match out.status.code() {
        // cut before the host started the release: nothing changed
        Some(3) => {
            assert_eq!(
                p.host_file("current").unwrap(),
                current,
                "the current release changed: {stderr}"
            );
            assert_eq!(p.container_ids(), ids, "containers changed: {stderr}");
        }
        // cut after the upload: the host ran the release by itself and the deploy followed
        // it (the engine refuses the 16 MB variable, so it went back)
        Some(1) => {
            assert!(stderr.contains("rolled back"), "{stderr}");
            assert_eq!(p.host_file("current").unwrap(), current, "{stderr}");
        }
        other => {
            panic!("deploy {pid} ended with {other:?} although its connection was killed: {stderr}")
        }
    }
    // Never a part of a bundle under its id.
    let dirs = hosts.ssh_ok(
        h,
        &format!(
            "cd ~/.homebase/{}/releases && for r in *; do printf '%s %s\\n' \"$r\" \"$(wc -c < \"$r/compose.yml\")\"; done",
            p.name
        ),
    );
    for line in dirs.lines() {
        let (id, size) = line.split_once(' ').unwrap();
        let size: usize = size.trim().parse().unwrap();
        assert!(
            id == current.trim() || size > big.len(),
            "a partial release was promoted: {dirs}"
        );
    }
    // The next deploy (of a release the engine takes) just works, and keeps only the
    // releases the log names.
    let compose = std::fs::read_to_string(p.dir.path().join("compose.yml"))
        .unwrap()
        .replace(&big, "small");
    std::fs::write(p.dir.path().join("compose.yml"), compose).unwrap();
    p.ok(&["deploy"]);
    let now = p.host_file("current").unwrap();
    assert_ne!(now, current, "the next deploy did not deploy");
    let dirs = hosts.ssh_ok(h, &format!("ls ~/.homebase/{}/releases", p.name));
    let log = p.host_file("releases.jsonl").unwrap();
    for d in dirs.lines() {
        assert!(
            d == now.trim() || log.contains(&format!("\"id\":\"{d}\"")),
            "release {d} was never deployed and was kept:\n{dirs}\n{log}"
        );
    }
    assert!(dirs.lines().any(|d| d == current.trim()), "{dirs}");
}

#[test]
fn unknown_host_key_is_refused_and_the_host_untouched() {
    let hosts = hosts();
    let h = hosts.host(1);
    let p = TestProject::new(&hosts, h, bin(), "hostkey", &stack("k", HEALTHY), BUDGET);
    let empty = p.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace(
            &hosts.known_hosts.display().to_string(),
            &empty.display().to_string(),
        );
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    let out = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("the host key of `{}` is not known", h.address)),
        "{stderr}"
    );
    assert!(stderr.contains("SHA256:"), "no fingerprint shown: {stderr}");
    assert!(stderr.contains("ssh-keyscan"), "{stderr}");
    assert!(p.host_file("current").is_none());
    let o = hosts.ssh(h, &format!("test -e ~/.homebase/{}", p.name));
    assert!(!o.status.success(), "the host was touched");
}

#[test]
fn unreachable_host_fails_with_a_clear_message() {
    let hosts = hosts();
    let p = TestProject::new(
        &hosts,
        hosts.host(1),
        bin(),
        "unreach",
        &stack("u", HEALTHY),
        BUDGET,
    );
    // An address on the test bridge where no host answers.
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace(&hosts.host(1).address, "10.231.0.250")
        .replace("connect_timeout_secs = 5", "connect_timeout_secs = 2");
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    let out = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot reach `10.231.0.250` over SSH within 2s"),
        "{stderr}"
    );
    // a name that does not resolve is named as such, not as a host that is off
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace("10.231.0.250", "mac-mini.invalid");
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    let out = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the host name `mac-mini.invalid` does not resolve")
            && stderr.contains("~/.ssh/config"),
        "{stderr}"
    );
}

#[test]
fn over_budget_deploy_is_refused_before_the_host_is_touched() {
    let hosts = hosts();
    let h = hosts.host(1);
    let over = BUDGET.replace("memory = \"512MiB\"", "memory = \"3584MiB\"");
    let p = TestProject::new(&hosts, h, bin(), "over", &stack("o", HEALTHY), &over);
    let out = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deploy refused, the host was not touched"),
        "{stderr}"
    );
    assert!(stderr.contains("over the budget"), "{stderr}");
    let o = hosts.ssh(h, &format!("test -e ~/.homebase/{}", p.name));
    assert!(!o.status.success(), "the host was touched");
}

#[test]
fn logs_and_exec_reach_the_service() {
    let hosts = hosts();
    // the api prints a terminal escape (a window-title change) to its log
    let compose = stack("hello", HEALTHY)
        .replace("  api:\n", "  api:\n    env_file: [api.env]\n")
        .replace(
            r#""echo hello > /tmp/index.html"#,
            r#""printf 'title\\033]0;pwned\\007end\\n'; echo hello > /tmp/index.html"#,
        );
    let p = TestProject::new(
        &hosts,
        hosts.host(homebase_testkit::MAC),
        bin(),
        "logs",
        &compose,
        BUDGET,
    );
    std::fs::write(p.dir.path().join("api.env"), "GREETING=from-env-file\n").unwrap();
    p.ok(&["deploy"]);
    let out = p.ok(&["exec", "api", "--", "cat", "/tmp/index.html"]);
    assert_eq!(out.trim(), "hello");
    // The env file travelled in the bundle, private to the host user.
    let out = p.ok(&["exec", "api", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(out.trim(), "from-env-file");
    let current = p.host_file("current").unwrap();
    let modes = hosts.ssh_ok(
        p.host,
        &format!(
            "stat -c '%a %n' ~/.homebase/{}/releases/{}/*",
            p.name,
            current.trim()
        ),
    );
    assert!(modes.lines().all(|l| l.starts_with("600 ")), "{modes}");
    assert!(modes.contains("api.env"), "{modes}");
    let logs = p.ok(&["logs", "db", "--tail", "200"]);
    assert!(
        logs.contains("database system is ready to accept connections"),
        "{logs}"
    );
    // a container's bytes reach the terminal as text, never as an escape sequence
    let logs = p.ok(&["logs", "api"]);
    assert!(logs.contains("| title\\u{1b}]0;pwned\\u{7}end"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
    // a service that printed nothing: said, not silence
    let quiet = p.run(&["logs", "worker", "-n", "20"]);
    assert!(quiet.status.success());
    assert!(
        String::from_utf8_lossy(&quiet.stderr)
            .contains("`worker` wrote no output since its container started"),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let bad = p.run(&["logs", "apii"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `api`?"));
}

#[test]
fn local_target_deploys_to_this_machines_engine() {
    // homebase itself runs on the test host (as its user, whose DOCKER_HOST is that host's
    // engine) with `ssh = "local"`: no SSH between homebase and the engine.
    let hosts = hosts();
    let h = hosts.host(2);
    let p = TestProject::new(&hosts, h, bin(), "local", &stack("local", HEALTHY), BUDGET);
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml")).unwrap();
    let start = toml.find("[host]").unwrap();
    let end = toml.find("[budget]").unwrap();
    let toml = format!(
        "{}[host]\nssh = \"local\"\n\n{}",
        &toml[..start],
        &toml[end..]
    )
    .replace("host_memory = \"4GiB\"", "host_memory = \"detect\"");
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(p.dir.path())
        .status()
        .unwrap();
    let run_env = |env: &str, args: &str| {
        hosts.ssh(
            h,
            &format!(
                "{env} HOMEBASE_COLOR=never {} -C {} {args}",
                bin().display(),
                p.dir.path().display()
            ),
        )
    };
    let run = |args: &str| run_env("", args);
    // The engine down: exit 3 naming it, and nothing on the host, not even a lock.
    let toml_path = p.dir.path().join("homebase.toml");
    let detect = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        detect.replace("host_memory = \"detect\"", "host_memory = \"4GiB\""),
    )
    .unwrap();
    let down = run_env("DOCKER_HOST=unix:///nonexistent/docker.sock", "deploy");
    let err = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(3), "{err}");
    assert!(err.contains("does not answer"), "{err}");
    let left = hosts.ssh_ok(
        h,
        &format!("ls -A ~/.homebase/{} 2>/dev/null; true", p.name),
    );
    assert_eq!(left.trim(), "", "the host was touched: {left}");
    std::fs::write(&toml_path, detect).unwrap();

    let out = run("deploy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&run("plan --json").stdout).unwrap();
    assert!(
        plan["host_memory_source"]
            .as_str()
            .unwrap()
            .starts_with("detected on local"),
        "{plan}"
    );
    assert!(plan["host_memory_bytes"].as_u64().unwrap() > 1 << 30);
    let status: serde_json::Value = serde_json::from_slice(&run("status --json").stdout).unwrap();
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["host"], "local");
    assert_eq!(p.container_ids().len(), 3);
}

/// The stack at variant `v`: the API's page and an environment value of the database change,
/// so a deploy of the next variant recreates both (and backs the database up first).
fn variant(v: usize, port: u16) -> String {
    let re_port = with_port(&stack(&format!("v{v}"), HEALTHY), port);
    re_port.replace(
        "POSTGRES_PASSWORD: pw",
        &format!("POSTGRES_PASSWORD: pw\n      HB_VARIANT: \"{v}\""),
    )
}

/// `stack` with its published port replaced by `port` (a variant keeps its port).
fn with_port(compose: &str, port: u16) -> String {
    compose
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("ports: [\"127.0.0.1:") {
                format!("    ports: [\"127.0.0.1:{port}:8080\"]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The project's containers are all running and healthy, and each is the one the current
/// release's compose file defines (Compose's config hash of the service, as `up` labels it).
fn on_one_healthy_release(p: &TestProject) -> Result<String, String> {
    let current = p
        .host_file("current")
        .ok_or("no current release")?
        .trim()
        .to_string();
    let file = format!(
        "/home/{}/.homebase/{}/releases/{current}/compose.yml",
        p.host.user, p.name
    );
    let o = p.hosts.docker(
        p.host,
        &[
            "compose", "-p", &p.name, "-f", &file, "config", "--hash", "*",
        ],
    );
    let wanted: std::collections::BTreeMap<String, String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, h)| (s.to_string(), h.trim().to_string()))
        .collect();
    if wanted.len() != 3 {
        return Err(format!(
            "cannot read the hashes of {file}: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let o = p.hosts.docker(
        p.host,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={}", p.name),
            "--format",
            "{{.Label \"com.docker.compose.service\"}}|{{.State}}|{{.Status}}|{{.Label \"com.docker.compose.config-hash\"}}",
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != wanted.len() {
        return Err(format!(
            "{} containers, not {}:\n{text}",
            lines.len(),
            wanted.len()
        ));
    }
    for l in &lines {
        let f: Vec<&str> = l.split('|').collect();
        let healthy =
            f[1] == "running" && !f[2].contains("unhealthy") && !f[2].contains("starting");
        if !healthy || wanted.get(f[0]).map(String::as_str) != Some(f[3]) {
            return Err(format!("not all healthy on release {current}:\n{text}"));
        }
    }
    Ok(current)
}

/// Deploys of a changed release, each interrupted at a random point: SIGINT (no terminal:
/// abort, roll back), SIGKILL of homebase (then `deploy --attach`), the SSH connection cut
/// on the host, the engine stopped and started again. After each, with no manual step, the
/// stack is healthy on one release, the lock is gone, and every PostgreSQL row written
/// before the fault is there. `HB_FAULT_SEED` replays a run.
#[test]
fn interrupted_deploys_always_end_on_one_healthy_release() {
    let hosts = hosts();
    let h = hosts.host(4);
    let port = unique_port();
    let p = TestProject::new(&hosts, h, bin(), "fault", &variant(0, port), BUDGET);
    p.ok(&["deploy"]);
    psql(&p, "create table kept (n int primary key)");
    psql(&p, "insert into kept values (0)");
    // An uninterrupted deploy of a change: the span the faults are spread over.
    p.write(&variant(1, port), BUDGET);
    let t = Instant::now();
    p.ok(&["deploy"]);
    let span = t.elapsed();
    let mut seed: u64 = std::env::var("HB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                .into()
        });
    eprintln!(
        "fault seed {seed} (HB_FAULT_SEED), a changed deploy takes {:.1}s",
        span.as_secs_f64()
    );
    let mut random = move || {
        // xorshift64*
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let kinds = ["SIGINT", "SIGKILL", "ssh drop", "engine stop"];
    let mut rows = 1;
    let mut log = Vec::new();
    for i in 0..20 {
        psql(&p, &format!("insert into kept values ({})", i + 1));
        rows += 1;
        p.write(&variant(i + 2, port), BUDGET);
        let kind = i % kinds.len();
        let delay = span.mul_f64(random() * 1.1);
        let t = Instant::now();
        let child = p
            .cmd(&["deploy", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        match kind {
            0 | 1 => {
                let signal = if kind == 0 { "-INT" } else { "-KILL" };
                std::process::Command::new("kill")
                    .args([signal, &child.id().to_string()])
                    .status()
                    .unwrap();
            }
            2 => {
                // every SSH connection of this host's user, cut on the host's side
                std::process::Command::new("pkill")
                    .args(["-KILL", "-f", &format!("^sshd: {}(@| )", h.user)])
                    .status()
                    .unwrap();
            }
            _ => {
                homebase_testkit::testhost(&["stop-dockerd", "4"], &[]);
                std::thread::sleep(Duration::from_secs(2));
                homebase_testkit::testhost(&["start-dockerd", "4"], &[]);
            }
        }
        let out = child.wait_with_output().unwrap();
        let mut code = out.status.code();
        if kind == 1 {
            // the laptop is back: follow what the host did meanwhile
            let attach = p.run(&["deploy", "--attach"]);
            let err = String::from_utf8_lossy(&attach.stderr);
            assert!(
                matches!(attach.status.code(), Some(0 | 1 | 3)),
                "attach after SIGKILL: {err}"
            );
            code = attach.status.code();
        }
        // The host finishes by itself: the lock goes, the stack is on one healthy release.
        let end = Instant::now() + Duration::from_secs(300);
        while hosts
            .ssh(
                h,
                &format!(
                    "test -L ~/.homebase/{0}/lock || test -d ~/.homebase/{0}/lock",
                    p.name
                ),
            )
            .status
            .success()
        {
            assert!(
                Instant::now() < end,
                "fault {i} ({}): the lock stayed",
                kinds[kind]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let end = Instant::now() + Duration::from_secs(120);
        let release = loop {
            match on_one_healthy_release(&p) {
                Ok(r) => break r,
                Err(e) if Instant::now() > end => panic!(
                    "fault {i} ({}) after {:.1}s: {e}\ndeploy said:\n{}",
                    kinds[kind],
                    delay.as_secs_f64(),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        assert_eq!(
            psql(&p, "select count(*) from kept"),
            rows.to_string(),
            "fault {i}: rows lost"
        );
        log.push(format!(
            "{i:>2} {:<11} at {:>5.1}s  exit {:<4} on {release}  settled in {:.1}s",
            kinds[kind],
            delay.as_secs_f64(),
            code.map(|c| c.to_string()).unwrap_or("-".into()),
            t.elapsed().as_secs_f64()
        ));
    }
    eprintln!("{}", log.join("\n"));
    // And the next deploy just works, on the first try.
    p.write(&variant(100, port), BUDGET);
    p.ok(&["deploy"]);
    assert!(on_one_healthy_release(&p).is_ok());
}

/// A command after another reuses its SSH connection (no new master, so no handshake); with
/// `persist_secs = 0` every command opens and closes its own.
#[test]
fn the_next_command_reuses_the_warm_connection() {
    let hosts = hosts();
    let compose =
        "services:\n  w:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n";
    let p = TestProject::new(
        &hosts,
        hosts.host(1),
        bin(),
        "warm",
        compose,
        "[services.w]\nmemory = \"16MiB\"\n",
    );
    // (masters opened, commands sent to the host) by one homebase command
    let count = |args: &[&str], env: &[(&str, &str)]| p.count_ssh(args, env);
    assert_eq!(
        count(&["releases"], &[]).0,
        1,
        "the first command opens the connection"
    );
    assert_eq!(count(&["releases"], &[]).0, 0, "the second one reuses it");
    assert_eq!(count(&["releases"], &[]).0, 0);
    // a no-op deploy is one command on the host: decided and logged there, no lock taken
    p.ok(&["deploy"]);
    assert_eq!(count(&["deploy"], &[]), (0, 1));
    // a changed deploy: one command. Prepare (the lock) answers, then the same command is
    // sent the script that uploads the bundle (inside it), starts the job and follows it
    p.write(
        &compose.replace("3600", "3601"),
        "[services.w]\nmemory = \"16MiB\"\n",
    );
    assert_eq!(
        count(&["deploy"], &[]),
        (0, 1),
        "a changed deploy: prepare, then upload + the job's start + follow on its stdin"
    );
    // a rollback: prepare (with the release log and the releases on the host), then the
    // job's start and its follower, in the same command
    assert_eq!(
        count(&["rollback"], &[]),
        (0, 1),
        "a rollback: prepare, then the job's start + follow"
    );
    // a bundle too big for a command line (a 100 KiB env file) goes the same way
    let big: String = (0..5000).map(|i| format!("K{i}=value-{i:010}\n")).collect();
    assert!(big.len() > 96 * 1024);
    std::fs::write(p.dir.path().join("big.env"), &big).unwrap();
    p.write(
        &format!(
            "{}    env_file: [big.env]\n",
            compose.replace("3600", "3602")
        ),
        "[services.w]\nmemory = \"16MiB\"\n",
    );
    assert_eq!(count(&["deploy"], &[]), (0, 1), "a big bundle");
    let o = p.run(&["exec", "w", "--", "sh", "-c", "echo $K4999"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "value-0000004999",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // releases, and status with the daemon running: one command each. The daemon is asked
    // on the host and its last sample stands in for a `docker stats` sample.
    assert_eq!(count(&["releases"], &[]), (0, 1));
    let h = hosts.host(1);
    let d = homebase_testkit::Daemon {
        bin: bin().to_path_buf(),
        hosts: &hosts,
        host: h,
        state: format!("/tmp/hb-warm-{}", p.name),
        port: unique_port(),
        project: p.name.clone(),
    };
    hosts.ssh_ok(h, &format!("mkdir -p {}", d.state));
    d.start();
    let state = [("HOMEBASE_DAEMON_STATE", d.state.as_str())];
    // the daemon's first sample
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let o = p.cmd(&["status", "--json"]).envs(state).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["services"][0]["memory_bytes"].is_u64() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        status["daemon"]
            .as_str()
            .unwrap()
            .starts_with("running at 127.0.0.1:"),
        "{status:#}"
    );
    assert!(status["services"][0]["memory_bytes"].is_u64(), "{status:#}");
    assert_eq!(count(&["status"], &state), (0, 1), "status in one command");
    assert_eq!(
        count(&["loop", "ls"], &state),
        (0, 1),
        "loop ls in one command"
    );
    let fresh = p
        .cmd(&["status", "--json", "--fresh"])
        .envs(state)
        .output()
        .unwrap();
    let fresh: serde_json::Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert!(fresh["services"][0]["memory_bytes"].is_u64(), "{fresh:#}");
    d.stop();
    let _ = hosts.ssh(h, &format!("rm -rf {}", d.state));

    let off = [("HOMEBASE__HOST__PERSIST_SECS", "0")];
    assert_eq!(count(&["releases"], &off).0, 1);
    assert_eq!(
        count(&["releases"], &off).0,
        1,
        "persist_secs = 0: a connection per command"
    );
    // planning that reads the host's memory hands its connection to the deploy: one
    // master for the command (the memory, then prepare with upload + start + follow)
    p.write(
        &compose.replace("3600", "3603"),
        "[services.w]\nmemory = \"16MiB\"\n",
    );
    let detect = [
        ("HOMEBASE__HOST__PERSIST_SECS", "0"),
        ("HOMEBASE__BUDGET__HOST_MEMORY", "detect"),
    ];
    assert_eq!(count(&["deploy"], &detect), (1, 2), "detect, then deploy");
}

/// Over a long link (a delay proxy: 60 ms each way) the deploy says how long the link's
/// round trips are, so a slow deploy is explained; over the short one it does not.
#[test]
fn a_long_link_is_named_in_the_progress() {
    let hosts = hosts();
    let h = hosts.host(1);
    let compose = "services:\n  w:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n";
    let budget = "[services.w]\nmemory = \"16MiB\"\n";
    let p = TestProject::new(&hosts, h, bin(), "link", compose, budget);
    let short = p.run(&["deploy"]);
    assert!(short.status.success());
    assert!(!String::from_utf8_lossy(&short.stderr).contains("round trips of"));

    let port = homebase_testkit::delay::start((h.address.as_str(), 22), Duration::from_millis(60))
        .unwrap();
    let known = p.dir.path().join("known_hosts_via_proxy");
    let theirs = std::fs::read_to_string(&hosts.known_hosts).unwrap();
    let mine: String = theirs
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{} ", h.address)))
        .map(|key| format!("[127.0.0.1]:{port} {key}\n"))
        .collect();
    std::fs::write(&known, mine).unwrap();
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace(
            &format!("ssh = \"{}@{}\"", h.user, h.address),
            &format!("ssh = \"{}@127.0.0.1\"\nport = {port}", h.user),
        )
        .replace(
            &hosts.known_hosts.display().to_string(),
            &known.display().to_string(),
        );
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    std::fs::write(
        p.dir.path().join("compose.yml"),
        compose.replace("3600", "3601"),
    )
    .unwrap();
    let long = p.run(&["deploy"]);
    let err = String::from_utf8_lossy(&long.stderr);
    assert!(long.status.success(), "{err}");
    assert!(
        err.contains("round trips of ~") && err.contains(&format!("{}@127.0.0.1", h.user)),
        "{err}"
    );
    assert!(err.contains("(link round trip ~"), "{err}");
}

/// No file homebase writes on the host is readable by another user at any moment of a
/// deploy: another account of the host (`nobody`) looks for readable files under the
/// project's directory all through a deploy whose bundle carries an env file and a secret,
/// and after it; it finds none. The services still read their files (the tree keeps the
/// project's modes for containers running as other users).
#[test]
fn nothing_homebase_writes_is_readable_by_another_host_user() {
    let hosts = hosts();
    let h = hosts.host(1);
    let compose =
        stack("private", HEALTHY).replace("  api:\n", "  api:\n    env_file: [api.env]\n");
    let p = TestProject::new(&hosts, h, bin(), "umask", &compose, BUDGET);
    std::fs::write(p.dir.path().join("api.env"), "TOKEN=s3cret-value\n").unwrap();
    // a big file makes the upload take a moment
    let big: String = (0..400_000).map(|i| format!("{i:x}")).collect();
    std::fs::write(p.dir.path().join("big.txt"), big).unwrap();
    let compose = compose.replace(
        "  api:\n",
        "  api:\n    volumes: [\"./big.txt:/big.txt:ro\"]\n",
    );
    std::fs::write(p.dir.path().join("compose.yml"), &compose).unwrap();
    let home = hosts.ssh_ok(h, "echo $HOME").trim().to_string();
    let root = format!("{home}/.homebase");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let watcher = {
        let (stop, seen, root) = (stop.clone(), seen.clone(), root.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds == 0 {
                let o = std::process::Command::new("runuser")
                    .args([
                        "-u",
                        "nobody",
                        "--",
                        "find",
                        &root,
                        "-readable",
                        "-type",
                        "f",
                    ])
                    .output()
                    .unwrap();
                for l in String::from_utf8_lossy(&o.stdout).lines() {
                    seen.lock().unwrap().insert(l.to_string());
                }
                rounds += 1;
            }
            rounds
        })
    };
    p.ok(&["deploy"]);
    let out = p.ok(&[
        "exec",
        "api",
        "--",
        "sh",
        "-c",
        "echo $TOKEN; wc -c < /big.txt",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = watcher.join().unwrap();
    assert!(out.contains("s3cret-value"), "{out}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.is_empty(),
        "another user could read, over {rounds} looks: {seen:#?}"
    );
    let mode = hosts.ssh_ok(h, "stat -c %a ~/.homebase");
    assert_eq!(mode.trim(), "700");
}

/// `examples/local`, the README's first command for a Mac laptop: the demo stack deployed to
/// the machine's own engine (`ssh = "local"`), as it is in the repository but for the images
/// (no registry here) and its ports (tests run side by side).
#[test]
fn the_local_example_deploys_to_this_machines_engine() {
    let hosts = hosts();
    let h = hosts.host(2);
    let dir = tempfile::tempdir().unwrap();
    let name = homebase_testkit::unique_name("demolocal");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local");
    for f in ["compose.yml", "homebase.toml"] {
        let text = std::fs::read_to_string(example.join(f))
            .unwrap()
            .replace("demo-local", &name);
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path())
        .status()
        .unwrap();
    let env = format!(
        "DB_IMAGE=hb/pgvector:latest TOOLS_IMAGE=hb/busybox:latest DB_PORT={} API_PORT={} HOMEBASE_COLOR=never",
        unique_port(),
        unique_port()
    );
    let run = |args: &str| {
        hosts.ssh(
            h,
            &format!(
                "{env} {} -C {} {args}",
                bin().display(),
                dir.path().display()
            ),
        )
    };
    let out = run("deploy --timeout 90");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&run("status --json").stdout).unwrap();
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["host"], "local");
    let _ = hosts.ssh(
        h,
        &format!("docker compose -p {name} down -v >/dev/null 2>&1; rm -rf ~/.homebase/{name}"),
    );
}

/// A deploy interrupted while the engine is still stopping the old container of a service
/// whose process ignores SIGTERM (the engine kills it 10 s later): the way back waits for
/// that stop and starts the service again, so the host ends with every service running, not
/// with one the engine stopped after the rollback reported success.
#[test]
fn an_aborted_deploy_leaves_no_service_stopped() {
    let hosts = hosts();
    let h = hosts.host(3);
    let compose = |v: u32| {
        format!(
            "services:\n  stubborn:\n    image: hb/busybox:latest\n    command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n    init: false\n    environment:\n      V: \"{v}\"\n"
        )
    };
    let budget = "[services.stubborn]\nmemory = \"16MiB\"\n";
    let p = TestProject::new(&hosts, h, bin(), "abort", &compose(1), budget);
    p.ok(&["deploy", "--timeout", "60"]);
    p.write(&compose(2), budget);
    let mut child = p
        .cmd(&["deploy", "--json", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // abort once the engine is stopping the old container (its SIGTERM ignored)
    let name = format!("{}-stubborn-1", p.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_stop = false;
    while Instant::now() < deadline {
        let ev = hosts.ssh(
            h,
            &format!(
                "docker events --since 60s --until 0s --filter container={name} --filter event=kill --format x"
            ),
        );
        if String::from_utf8_lossy(&ev.stdout).contains('x') {
            saw_stop = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_stop, "the deploy never stopped the old container");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    assert!(
        out.contains("rolled back") || out.contains("\"back\"") || out.contains("aborted"),
        "{out}"
    );
    // well past the engine's 10 s: the service runs
    std::thread::sleep(Duration::from_secs(12));
    let state = hosts.ssh_ok(
        h,
        &format!(
            "docker ps -a --filter label=com.docker.compose.project={} --format '{{{{.Names}}}} {{{{.State}}}}'",
            p.name
        ),
    );
    assert!(
        state.lines().any(|l| l.ends_with(" running")) && !state.contains("exited"),
        "a service was left stopped:\n{state}\n{out}"
    );
}

#[test]
fn a_planned_change_replaces_that_service_alone_unless_a_dependent_asks_to_restart() {
    let hosts = hosts();
    let h = hosts.host(2);
    let compose = |v: u32, restart: bool| {
        format!(
            "services:\n  db:\n    image: hb/busybox:latest\n    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n    environment:\n      V: \"{v}\"\n  api:\n    image: hb/busybox:latest\n    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n    depends_on:\n      db: {{condition: service_started, restart: {restart}}}\n  watcher:\n    image: hb/busybox:latest\n    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n    depends_on: [db]\n"
        )
    };
    let budget = "[services.db]\nmemory = \"16MiB\"\n[services.api]\nmemory = \"16MiB\"\n[services.watcher]\nmemory = \"16MiB\"\n";
    let p = TestProject::new(&hosts, h, bin(), "alone", &compose(1, false), budget);
    p.ok(&["deploy", "--timeout", "60"]);
    // container id and start time of each service
    let started = || -> std::collections::BTreeMap<String, String> {
        hosts
            .ssh_ok(
                h,
                &format!(
                    "for c in $(docker ps -q --filter label=com.docker.compose.project={}); do docker inspect -f '{{{{index .Config.Labels \"com.docker.compose.service\"}}}} {{{{.Id}}}}{{{{.State.StartedAt}}}}' $c; done",
                    p.name
                ),
            )
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .collect()
    };
    let before = started();
    assert_eq!(before.len(), 3, "{before:?}");
    // a change of db's environment: db alone is replaced, its dependents run on untouched
    p.write(&compose(2, false), budget);
    p.ok(&["deploy", "--timeout", "60"]);
    let after = started();
    assert_ne!(after["db"], before["db"]);
    assert_eq!(after["api"], before["api"], "api was restarted");
    assert_eq!(after["watcher"], before["watcher"], "watcher was restarted");
    // a dependent that says `restart: true` is restarted with it, as Compose does
    p.write(&compose(2, true), budget);
    p.ok(&["deploy", "--timeout", "60"]);
    let marked = started();
    p.write(&compose(3, true), budget);
    p.ok(&["deploy", "--timeout", "60"]);
    let last = started();
    assert_ne!(last["db"], marked["db"]);
    assert_ne!(last["api"], marked["api"], "api asked to restart with db");
    let releases = p.ok(&["releases", "--json"]);
    assert!(releases.contains("\"deployed\""), "{releases}");
}
