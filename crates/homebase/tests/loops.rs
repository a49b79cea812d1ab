//! Agent loops on a real test host, run by `homebase daemon` with a deterministic fake agent:
//! a shell script in the workspace whose behaviour, iteration by iteration, is one line of
//! `plan.txt` (write a file, change nothing, fail, print the completion marker, mark a
//! prd.json story as passing, report a usage limit, sleep, eat memory). Each test has its own
//! project, daemon (state directory and port) and workspaces.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use homebase_testkit::{Daemon, Host, Hosts, TestProject, hosts, unique_port};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

/// The fake agent. `HOMEBASE_ITERATION` (set by the daemon) picks the line of plan.txt.
const AGENT: &str = r#"#!/bin/sh
cd /workspace
step=$(sed -n "${HOMEBASE_ITERATION}p" plan.txt)
set -- $step
case "$1" in
  progress) echo "iteration $HOMEBASE_ITERATION" >> work.txt; echo "wrote work.txt" ;;
  noop|"") echo "thinking; nothing to change" ;;
  secret) if [ "$API_KEY" = "k-123-secret" ] && [ "$MODE" = "test" ]; then echo "iteration $HOMEBASE_ITERATION" >> work.txt; echo "key and mode present"; else echo "Error: API_KEY or MODE missing"; exit 9; fi ;;
  fail) echo "starting"; echo "Error: $2 failed at step $HOMEBASE_ITERATION" >&2; exit 3 ;;
  complete) echo "iteration $HOMEBASE_ITERATION" >> work.txt; echo "all stories done <promise>COMPLETE</promise>" ;;
  pass) sed -i "s/\"id\": \"US-$2\", \"passes\": false/\"id\": \"US-$2\", \"passes\": true/" prd.json; echo "US-$2 passes" ;;
  usage) echo "Claude AI usage limit reached|$(( $(date +%s) + $2 ))"; exit 1 ;;
  sleep) echo "start $HOMEBASE_RUN.$HOMEBASE_ITERATION $(date +%s)" >> runs.txt; sleep "$2"; echo "end $HOMEBASE_RUN.$HOMEBASE_ITERATION $(date +%s)" >> runs.txt; echo slept ;;
  oom) echo "allocating"; x=$(head -c 200000000 /dev/zero | tr '\0' a); echo "${#x}" ;;
  say) echo "iteration $HOMEBASE_ITERATION" >> work.txt; echo "a line on stderr" >&2; cat "$2"; exit "${3:-0}" ;;
  usagejson) echo "iteration $HOMEBASE_ITERATION" >> work.txt; printf '{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|%s","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":0}}\n' $(( $(date +%s) + $2 )); exit 1 ;;
  huge) echo "iteration $HOMEBASE_ITERATION" >> work.txt; head -c 2000000 /dev/zero | tr '\0' a; echo ;;
esac
"#;

const COMPOSE: &str = r#"
services:
  idle:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
"#;

struct Env<'a> {
    hosts: &'a Hosts,
    host: &'a Host,
    p: TestProject<'a>,
    d: Daemon<'a>,
    /// The host directory holding each loop's workspace.
    ws: String,
    /// What the first deploy printed on stderr (progress and warnings).
    deploy_output: String,
}

impl<'a> Env<'a> {
    /// A project with `compose` and the loops of `loops_toml` (where `{ws}` is the
    /// workspaces' directory and `{user}` the host user's uid:gid), deployed, with a daemon
    /// watching only it. `plans` are (loop, plan.txt, prd.json) written before the deploy.
    fn new(
        hosts: &'a Hosts,
        host: &'a Host,
        prefix: &str,
        compose: &str,
        toml: &str,
        host_memory: &str,
        plans: &[(&str, &str, Option<&str>)],
    ) -> Env<'a> {
        let user = hosts
            .ssh_ok(host, "echo $(id -u):$(id -g)")
            .trim()
            .to_string();
        let home = hosts.ssh_ok(host, "echo $HOME").trim().to_string();
        let p = TestProject::new(hosts, host, bin(), prefix, compose, "");
        let ws = format!("{home}/ws-{}", p.name);
        p.write(compose, &toml.replace("{ws}", &ws).replace("{user}", &user));
        // the loops' secrets travel with the release (mode 0600) and are never printed
        std::fs::write(p.dir.path().join("agent.env"), "API_KEY=k-123-secret\n").unwrap();
        let path = p.dir.path().join("homebase.toml");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "host_memory = \"4GiB\"",
            &format!("host_memory = \"{host_memory}\""),
        );
        std::fs::write(&path, text).unwrap();
        for (name, plan, prd) in plans {
            let dir = format!("{ws}/{name}");
            hosts.ssh_ok(host, &format!("mkdir -p {dir}"));
            hosts.ssh_with_input(host, &format!("cat > {dir}/agent.sh"), AGENT.as_bytes());
            hosts.ssh_with_input(host, &format!("cat > {dir}/plan.txt"), plan.as_bytes());
            if let Some(prd) = prd {
                hosts.ssh_with_input(host, &format!("cat > {dir}/prd.json"), prd.as_bytes());
            }
        }
        let o = p.run(&["deploy", "--timeout", "60"]);
        let deploy_output = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "deploy failed:\n{deploy_output}");
        let d = Daemon {
            bin: bin().to_path_buf(),
            hosts,
            host,
            state: format!("/tmp/hb-loops-{}", p.name),
            port: unique_port(),
            project: p.name.clone(),
        };
        hosts.ssh_ok(host, &format!("mkdir -p {}", d.state));
        d.start();
        Env {
            hosts,
            host,
            p,
            d,
            ws,
            deploy_output,
        }
    }

    fn status(&self, name: &str) -> Value {
        let (_, body) = self.d.api(&format!("/api/loops?project={}", self.p.name));
        let all: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        all.into_iter()
            .find(|l| l["name"] == name)
            .unwrap_or(Value::Null)
    }

    /// Waits (up to `secs`) until the loop's status satisfies `pred`.
    fn wait(&self, name: &str, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let s = self.status(name);
            if pred(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "loop {name}: {what}\nstatus: {:#}\nhistory: {:#?}\nlog:\n{}",
            self.status(name),
            self.history(name),
            self.hosts
                .ssh_ok(self.host, &format!("tail -40 {}/log", self.d.state))
        );
    }

    /// Iterations, oldest first.
    fn history(&self, name: &str) -> Vec<Value> {
        let (_, body) = self.d.api(&format!(
            "/api/loops/{}/{name}/history?limit=1000",
            self.p.name
        ));
        let mut v: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        v.reverse();
        v
    }

    fn outcomes(&self, name: &str) -> Vec<String> {
        self.history(name)
            .iter()
            .map(|i| i["outcome"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn events(&self, name: &str, kind: &str) -> Vec<Value> {
        self.d
            .events()
            .into_iter()
            .filter(|e| e["service"] == format!("loop:{name}") && e["kind"] == kind)
            .collect()
    }

    /// Iteration containers of this project left on the host.
    fn leftover_containers(&self) -> String {
        self.hosts.ssh_ok(
            self.host,
            &format!(
                "docker ps -aq --filter label=dev.homebase.loop --filter name=hb-loop-{}-",
                self.p.name
            ),
        )
    }
}

impl Drop for Env<'_> {
    fn drop(&mut self) {
        self.d.stop();
        let _ = self.hosts.ssh(
            self.host,
            &format!(
                "ids=$(docker ps -aq --filter name=hb-loop-{}-); [ -z \"$ids\" ] || docker rm -f $ids; rm -rf {} {}",
                self.p.name, self.ws, self.d.state
            ),
        );
    }
}

fn loop_toml(name: &str, extra: &str) -> String {
    format!(
        "[loops.{name}]\nimage = \"hb/busybox:latest\"\ncommand = \"sh /workspace/agent.sh\"\nworkspace = \"{{ws}}/{name}\"\nuser = \"{{user}}\"\nmemory = \"32MiB\"\ntimeout = \"60s\"\n{extra}\n"
    )
}

#[test]
fn loops_complete_by_marker_by_prd_file_and_at_the_maximum() {
    let hosts = hosts();
    // the Mac-like host: workspaces under /Users, the engine in its VM
    let h = hosts.host(homebase_testkit::MAC);
    let prd = "{\"userStories\": [\n  {\"id\": \"US-1\", \"passes\": false},\n  {\"id\": \"US-2\", \"passes\": false}\n]}\n";
    let toml = format!(
        "[services.idle]\nmemory = \"16MiB\"\n{}{}{}",
        loop_toml(
            "marker",
            "env_files = [\"agent.env\"]\nenv = { MODE = \"test\" }"
        ),
        loop_toml("prd", "completion_file = \"prd.json\""),
        loop_toml("capped", "max_iterations = 2"),
    ) + "[loops.ghost]\nimage = \"hb/ghost:latest\"\ncommand = \"true\"\nmemory = \"16MiB\"\nautostart = false\n";
    let env = Env::new(
        &hosts,
        h,
        "loops",
        COMPOSE,
        &toml,
        "4GiB",
        &[
            ("marker", "secret\nprogress\ncomplete\n", None),
            ("prd", "pass 1\nnoop\npass 2\nprogress\n", Some(prd)),
            ("capped", "progress\nprogress\nprogress\n", None),
        ],
    );
    // an image the host does not have: deploy warns; the loop waits for a start
    assert!(
        env.deploy_output
            .contains("loop image `hb/ghost:latest` is not on"),
        "{}",
        env.deploy_output
    );
    let ghost = env.wait("ghost", "is listed, idle", 30, |s| s["state"] == "idle");
    assert!(
        ghost["reason"]
            .as_str()
            .unwrap()
            .contains("autostart = false")
    );
    let s = env.wait("marker", "completes", 90, |s| s["state"] == "completed");
    assert_eq!(s["iterations"], 3, "{s:#}");
    assert!(
        s["reason"].as_str().unwrap().contains("completion marker"),
        "{s:#}"
    );
    let hist = env.history("marker");
    assert_eq!(env.outcomes("marker"), ["ok", "ok", "completed"]);
    for i in &hist {
        assert_eq!(i["files_changed"], 1, "{i:#}");
        assert_eq!(i["exit_code"], 0, "{i:#}");
    }
    assert!(
        hist[2]["tail"]
            .as_str()
            .unwrap()
            .contains("<promise>COMPLETE</promise>")
    );
    assert!(
        hist[0]["tail"]
            .as_str()
            .unwrap()
            .contains("key and mode present")
    );

    let s = env.wait("prd", "completes by prd.json", 90, |s| {
        s["state"] == "completed"
    });
    assert_eq!(s["iterations"], 3, "{s:#}");
    assert!(s["reason"].as_str().unwrap().contains("prd.json"), "{s:#}");
    assert_eq!(env.outcomes("prd"), ["ok", "ok", "completed"]);
    assert_eq!(env.history("prd")[1]["files_changed"], 0);

    let s = env.wait("capped", "stops at max_iterations", 90, |s| {
        s["state"] == "exhausted"
    });
    assert_eq!(s["iterations"], 2, "{s:#}");
    assert_eq!(env.outcomes("capped"), ["ok", "ok"]);
    // reaching the maximum and completing are notices to the channels, never alerts
    assert!(!env.events("capped", "alert_notice").is_empty());
    assert!(env.events("capped", "alert_firing").is_empty());
    assert!(!env.events("marker", "alert_notice").is_empty());
    assert!(env.events("marker", "alert_firing").is_empty());

    // The laptop: ls, history, logs, and a new run.
    let cli = |args: &[&str]| {
        let o = env
            .p
            .cmd(args)
            .env("HOMEBASE_DAEMON_STATE", &env.d.state)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["loop", "ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ls: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(ls.len(), 4);
    let (code, out, _) = cli(&["loop", "ls"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("marker  completed  run 1, 3 iterations"),
        "{out}"
    );
    assert!(
        out.contains("capped  exhausted  run 1, 2 iterations/2"),
        "{out}"
    );
    let (code, out, _) = cli(&["loop", "history", "marker"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("completed") && out.contains("OUTCOME"),
        "{out}"
    );
    let (code, out, _) = cli(&["loop", "logs", "marker", "-n", "50"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("=== marker iteration 3 (run 1) started"),
        "{out}"
    );
    assert!(out.contains("wrote work.txt"), "{out}");
    assert!(
        out.contains("=== iteration 3: completed, exit 0, 1 files changed"),
        "{out}"
    );
    // the secret is in the release, readable by the host user only, and in no output
    let mode = hosts.ssh_ok(
        h,
        &format!(
            "stat -c %a ~/.homebase/{0}/releases/$(cat ~/.homebase/{0}/current)/agent.env",
            env.p.name
        ),
    );
    assert_eq!(mode.trim(), "600");
    let (code, out, _) = cli(&["status"]);
    assert!(out.contains("loop marker  completed"), "{code}: {out}");

    // A finished loop cannot be paused; a new run starts from iteration 1 and completes again.
    let (code, _, err) = cli(&["loop", "pause", "marker"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not active"), "{err}");
    let (code, out, err) = cli(&["loop", "start", "marker", "--json"]);
    assert_eq!(code, 0, "{err}");
    let started: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(started["run"], 2);
    let s = env.wait("marker", "completes run 2", 90, |s| {
        s["state"] == "completed" && s["run"] == 2
    });
    assert_eq!(s["iterations"], 3);
    let runs: Vec<i64> = env
        .history("marker")
        .iter()
        .map(|i| i["run"].as_i64().unwrap())
        .collect();
    assert_eq!(runs, [1, 1, 1, 2, 2, 2]);

    for args in [
        &["loop", "ls", "--json"][..],
        &["loop", "logs", "marker"],
        &["status", "--json"],
    ] {
        let (_, out, err) = cli(args);
        assert!(
            !out.contains("k-123-secret") && !err.contains("k-123-secret"),
            "{args:?}"
        );
    }
    let (_, metrics) = env.d.api("/metrics");
    assert!(
        metrics.contains(&format!(
            "homebase_loop_iterations{{project=\"{}\",loop=\"marker\"}} 3",
            env.p.name
        )),
        "{metrics}"
    );
    // Bad input is caught on the laptop, with the fix.
    let (code, _, err) = cli(&["loop", "stop", "makrer"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no loop `makrer`") && err.contains("did you mean `marker`?"),
        "{err}"
    );
    assert_eq!(env.leftover_containers().trim(), "");
}

#[test]
fn breaker_opens_on_no_progress_and_repeated_errors_then_half_opens_and_usage_limits_wait() {
    let hosts = hosts();
    let h = hosts.host(2);
    let toml = format!(
        "[services.idle]\nmemory = \"16MiB\"\n{}{}{}{}",
        loop_toml("stuck", "breaker_cooldown = \"3s\""),
        loop_toml(
            "failing",
            "breaker_same_error = 2\nbreaker_cooldown = \"3s\""
        ),
        loop_toml("limited", "usage_limit_backoff = \"1h\""),
        loop_toml("hourly", "max_per_hour = 2"),
    );
    let env = Env::new(
        &hosts,
        h,
        "breaker",
        COMPOSE,
        &toml,
        "4GiB",
        &[
            // 3 × no change → open; trial (noop) → open again; trial (progress) → closed
            (
                "stuck",
                "noop\nnoop\nnoop\nnoop\nprogress\ncomplete\n",
                None,
            ),
            // 2 × the same error (the step numbers differ) → open; trial → closed
            (
                "failing",
                "fail compile\nfail compile\nprogress\ncomplete\n",
                None,
            ),
            ("limited", "usage 5\ncomplete\n", None),
            ("hourly", "progress\nprogress\nprogress\n", None),
        ],
    );
    let s = env.wait("stuck", "completes after two trials", 120, |s| {
        s["state"] == "completed"
    });
    assert_eq!(s["breaker"], "closed");
    assert_eq!(
        env.outcomes("stuck"),
        ["ok", "ok", "ok", "ok", "ok", "completed"]
    );
    assert_eq!(env.events("stuck", "loop_breaker_open").len(), 2);
    assert_eq!(env.events("stuck", "loop_breaker_half_open").len(), 2);
    assert_eq!(env.events("stuck", "loop_breaker_closed").len(), 1);
    let alerts = env.events("stuck", "alert_firing");
    assert!(
        alerts
            .iter()
            .any(|a| a["message"].as_str().unwrap().contains(
                "loop_breaker: circuit breaker open: 3 iterations in a row changed no file"
            )),
        "{alerts:#?}"
    );
    // the cool-down is honoured: the trial starts no sooner than 3 s after the third end
    let hist = env.history("stuck");
    assert!(hist[3]["started"].as_i64().unwrap() >= hist[2]["ended"].as_i64().unwrap() + 3);

    let s = env.wait("failing", "completes", 120, |s| s["state"] == "completed");
    assert_eq!(s["breaker"], "closed");
    assert_eq!(
        env.outcomes("failing"),
        ["error", "error", "ok", "completed"]
    );
    let opened = env.events("failing", "loop_breaker_open");
    assert_eq!(
        opened.len(),
        1,
        "{:#?}\n{:#?}",
        env.history("failing"),
        env.d
            .events()
            .iter()
            .filter(|e| e["service"] == "loop:failing")
            .collect::<Vec<_>>()
    );
    assert!(
        opened[0]["message"].as_str().unwrap().contains(
            "2 identical errors in a row: error (exit 3): Error: compile failed at step N"
        ),
        "{opened:#?}"
    );

    // The usage limit names its reset (5 s ahead): the next iteration waits for it.
    let s = env.wait("limited", "completes after the reset", 60, |s| {
        s["state"] == "completed"
    });
    assert_eq!(s["breaker"], "closed");
    let hist = env.history("limited");
    assert_eq!(env.outcomes("limited"), ["usage_limit", "completed"]);
    let reset: i64 = hist[0]["tail"]
        .as_str()
        .unwrap()
        .rsplit('|')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(hist[1]["started"].as_i64().unwrap() >= reset, "{hist:#?}");
    assert_eq!(env.events("limited", "loop_usage_limit").len(), 1);
    assert!(
        env.events("limited", "loop_wait")
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("usage limit"))
    );

    // At most 2 an hour: the third waits, and says why.
    let s = env.wait("hourly", "waits for the hourly cap", 60, |s| {
        s["waiting"]
            .as_str()
            .is_some_and(|w| w.starts_with("rate limit: 2 iterations in the last hour"))
    });
    assert_eq!(s["iterations"], 2);
    let until = s["wait_until"].as_i64().unwrap();
    let first = env.history("hourly")[0]["started"].as_i64().unwrap();
    assert_eq!(until, first + 3600);
    // stop ends the wait for good
    let (code, body) = env
        .d
        .post(&format!("/api/loops/{}/hourly/stop", env.p.name));
    assert_eq!(code, 200, "{body}");
    env.wait("hourly", "is stopped", 10, |s| s["state"] == "stopped");
    assert_eq!(env.leftover_containers().trim(), "");
}

#[test]
fn a_killed_daemon_resumes_the_loop_without_running_an_iteration_twice() {
    let hosts = hosts();
    let h = hosts.host(1);
    let toml = format!(
        "[services.idle]\nmemory = \"16MiB\"\n{}",
        loop_toml("slow", "")
    );
    let env = Env::new(
        &hosts,
        h,
        "resume",
        COMPOSE,
        &toml,
        "4GiB",
        &[(
            "slow",
            "sleep 4\nsleep 4\nsleep 4\nsleep 4\ncomplete\n",
            None,
        )],
    );
    let running = |n: i64| move |s: &Value| s["running"]["n"] == n;
    // Killed mid-iteration 2: the container runs on and is adopted.
    env.wait("slow", "runs iteration 2", 60, running(2));
    env.d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    env.d.start();
    // Killed mid-iteration 3, and its container removed too (as a host restart may leave
    // it): recorded as interrupted, not run again.
    env.wait("slow", "runs iteration 3", 60, running(3));
    env.d.kill9();
    hosts.ssh_ok(
        h,
        &format!(
            "docker rm -f $(docker ps -q --filter name=hb-loop-{}-slow-)",
            env.p.name
        ),
    );
    env.d.start();
    let s = env.wait("slow", "completes", 90, |s| s["state"] == "completed");
    assert_eq!(s["iterations"], 5, "{s:#}");
    let hist = env.history("slow");
    assert_eq!(
        env.outcomes("slow"),
        ["ok", "ok", "interrupted", "ok", "completed"]
    );
    assert!(
        hist[1]["note"].as_str().unwrap().contains("adopted"),
        "{hist:#?}"
    );
    assert!(
        hist[2]["note"].as_str().unwrap().contains("not run again"),
        "{hist:#?}"
    );
    // What the agent itself saw: every iteration started once, never two at a time.
    let runs = hosts.ssh_ok(h, &format!("cat {}/slow/runs.txt", env.ws));
    let lines: Vec<(String, String, i64)> = runs
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    let starts: Vec<&str> = lines
        .iter()
        .filter(|l| l.0 == "start")
        .map(|l| l.1.as_str())
        .collect();
    assert_eq!(starts, ["1.1", "1.2", "1.3", "1.4"], "{runs}");
    for w in lines.windows(2) {
        // only the iteration whose container was removed never wrote its end
        if w[1].0 == "start" && w[0].0 == "start" {
            assert_eq!(
                w[0].1, "1.3",
                "iteration {} started before {} ended:\n{runs}",
                w[1].1, w[0].1
            );
        }
        assert!(w[1].2 >= w[0].2, "{runs}");
    }
    assert_eq!(env.leftover_containers().trim(), "");
}

#[test]
fn oom_is_recorded_and_the_loop_goes_on_and_memory_pressure_holds_iterations_back() {
    let hosts = hosts();
    let h = hosts.host(2);
    // `hog` fills 300 MiB of tmpfs (memory of its container) at start: above the high
    // watermark (30% of 0.8 × 1 GiB ≈ 245 MiB). It is critical: the governor leaves it.
    let compose = r#"
services:
  hog:
    image: hb/busybox:latest
    command: ["sh", "-c", "dd if=/dev/zero of=/fill/x bs=1M count=300 2>/dev/null; sleep 3600"]
    stop_signal: SIGKILL
    tmpfs: ["/fill:size=350m"]
"#;
    let toml = format!(
        "[services.hog]\nmemory = \"400MiB\"\npriority = \"critical\"\n[daemon]\ninterval_ms = 500\nhigh_watermark = 0.3\nlow_watermark = 0.2\n{}",
        loop_toml("hungry", "")
    );
    let env = Env::new(
        &hosts,
        h,
        "oom",
        compose,
        &toml,
        "1GiB",
        &[("hungry", "oom\nprogress\ncomplete\n", None)],
    );
    let s = env.wait("hungry", "is held back by memory", 60, |s| {
        s["waiting"]
            .as_str()
            .is_some_and(|w| w.starts_with("memory: the stack uses"))
    });
    assert_eq!(s["iterations"], 0, "{s:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.history("hungry").is_empty());
    let waits = env.events("hungry", "loop_wait");
    assert!(
        waits.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("above the 30% high watermark")),
        "{waits:#?}"
    );
    // Stopped by hand: the memory is free again and the loop goes on.
    hosts.ssh_ok(h, &format!("docker stop {}-hog-1", env.p.name));
    let s = env.wait("hungry", "completes", 90, |s| s["state"] == "completed");
    assert_eq!(s["iterations"], 3);
    let hist = env.history("hungry");
    assert_eq!(env.outcomes("hungry"), ["oom", "ok", "completed"]);
    assert_eq!(hist[0]["exit_code"], 137);
    assert!(
        hist[0]["note"].as_str().unwrap().contains("32 MiB limit"),
        "{hist:#?}"
    );
    assert_eq!(env.events("hungry", "loop_oom").len(), 1);
    assert_eq!(env.leftover_containers().trim(), "");
}

/// The agent plants every git hook it can in its checkout (fsmonitor, a clean filter, an
/// external diff, a textconv driver, a hooks path) each of which, run by git on the host,
/// would write a marker outside the workspace. The daemon still gets its diffstat (from git
/// in a sealed container), nothing runs on the host, and the iteration ran hardened: no new
/// privileges, only the default capabilities, a pids limit. A second loop relaxes the
/// sandbox item by item.
#[test]
fn an_agent_cannot_make_the_host_run_commands_and_runs_behind_its_walls() {
    let hosts = hosts();
    let h = hosts.host(homebase_testkit::MAC);
    let home = hosts.ssh_ok(h, "echo $HOME").trim().to_string();
    let pwn = format!("{home}/{}", homebase_testkit::unique_name("pwn"));
    // iteration 1 makes the checkout and plants the hooks; iteration 2 changes a file, so
    // the daemon computes a diffstat with the planted configuration in place
    let plant = format!(
        r#"#!/bin/sh
cd /workspace
export HOME=/tmp
grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status
echo "pids.max=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max 2>/dev/null)"
if [ "$HOMEBASE_ITERATION" = 1 ]; then
  git init -q . && echo hi > README && git add README agent.sh
  git -c user.email=t@t -c user.name=t commit -qm init || exit 5
  cat >> .git/config <<CFG
[core]
	fsmonitor = "touch {pwn}/fsmonitor; false"
	hooksPath = /workspace/.h
[diff]
	external = "{pwn}/../x"
[diff "x"]
	textconv = "touch {pwn}/textconv; cat"
[filter "x"]
	clean = "touch {pwn}/clean; cat"
CFG
  mkdir -p .h
  for hk in post-checkout pre-commit post-index-change reference-transaction; do printf '#!/bin/sh\ntouch {pwn}/%s\n' $hk > .h/$hk; chmod +x .h/$hk; done
  echo '* diff=x filter=x' > .gitattributes
  echo planted
else
  echo changed >> README
  echo "<promise>COMPLETE</promise>"
fi
"#
    );
    let relaxed = "#!/bin/sh\ngrep -E '^(CapBnd|NoNewPrivs)' /proc/self/status\necho \"pids.max=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max 2>/dev/null)\"\necho '<promise>COMPLETE</promise>'\n";
    let loop_at = |name: &str, extra: &str| {
        format!(
            "[loops.{name}]\nimage = \"hb/pgvector:latest\"\ncommand = \"sh /workspace/{name}.sh\"\nworkspace = \"{{ws}}/{name}\"\nuser = \"{{user}}\"\nmemory = \"64MiB\"\ntimeout = \"60s\"\nautostart = false\n{extra}\n"
        )
    };
    let toml = format!(
        "[services.idle]\nmemory = \"16MiB\"\n{}{}",
        loop_at("planter", ""),
        loop_at(
            "relaxed",
            "[loops.relaxed.sandbox]\ncapabilities = [\"NET_RAW\"]\nno_new_privileges = false\npids_limit = 0\nnetwork = \"none\"\n"
        ),
    );
    hosts.ssh_ok(h, &format!("mkdir -p {pwn} && chmod 777 {pwn}"));
    let env = Env::new(
        &hosts,
        h,
        "sandbox",
        COMPOSE,
        &toml,
        "4GiB",
        &[("planter", "", None), ("relaxed", "", None)],
    );
    let ws = &env.ws;
    hosts.ssh_with_input(
        h,
        &format!("cat > {ws}/planter/planter.sh"),
        plant.as_bytes(),
    );
    hosts.ssh_with_input(
        h,
        &format!("cat > {ws}/relaxed/relaxed.sh"),
        relaxed.as_bytes(),
    );
    env.wait("planter", "is listed", 30, |s| s["state"] == "idle");
    for l in ["planter", "relaxed"] {
        let (code, body) = env.d.post(&format!("/api/loops/{}/{l}/start", env.p.name));
        assert_eq!(code, 200, "{body}");
    }
    let s = env.wait("planter", "completes", 90, |s| s["state"] == "completed");
    assert_eq!(s["iterations"], 2, "{s:#}");
    let hist = env.history("planter");
    assert_eq!(env.outcomes("planter"), ["ok", "completed"], "{hist:#?}");
    let it = &hist[1];
    // git ran (in its sealed container) and saw the change, with the planted drivers set
    assert!(
        it["diffstat"]
            .as_str()
            .is_some_and(|d| d.contains("1 file changed")),
        "{it:#}"
    );
    // …and nothing ran on the host
    let markers = hosts.ssh_ok(h, &format!("ls -A {pwn}"));
    assert_eq!(markers.trim(), "", "hooks ran on the host: {markers}");
    let tail = it["tail"].as_str().unwrap();
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID = bits 0,1,3,4,5,6,7
    assert!(tail.contains("CapBnd:\t00000000000000fb"), "{tail}");
    assert!(tail.contains("CapEff:\t0000000000000000"), "{tail}");
    assert!(tail.contains("NoNewPrivs:\t1"), "{tail}");
    assert!(tail.contains("pids.max=1024"), "{tail}");

    let s = env.wait("relaxed", "completes", 90, |s| s["state"] == "completed");
    assert_eq!(s["iterations"], 1, "{s:#}");
    let tail = env.history("relaxed")[0]["tail"]
        .as_str()
        .unwrap()
        .to_string();
    // NET_RAW is bit 13
    assert!(tail.contains("CapBnd:\t00000000000020fb"), "{tail}");
    assert!(tail.contains("NoNewPrivs:\t0"), "{tail}");
    assert!(tail.contains("pids.max=max"), "{tail}");
    assert_eq!(env.leftover_containers().trim(), "");
    let helpers = hosts.ssh_ok(
        h,
        &format!("docker ps -aq --filter name=hb-git-{}-", env.p.name),
    );
    assert_eq!(helpers.trim(), "", "git helper containers left");
    hosts.ssh_ok(h, &format!("rm -rf {pwn}"));
}

/// Settings that would open the sandbox are refused before the host is touched.
#[test]
fn sandbox_settings_that_open_the_host_are_refused() {
    let hosts = hosts();
    let h = hosts.host(1);
    let p = TestProject::new(&hosts, h, bin(), "walls", COMPOSE, "");
    for (extra, want) in [
        ("network = \"host\"", "must not share the host's"),
        (
            "mounts = [\"/var/run/docker.sock:/var/run/docker.sock\"]",
            "an engine's socket is the host",
        ),
        ("mounts = [\"~/.ssh/id_ed25519:/k\"]", "a directory of keys"),
        (
            "mounts = [\"~/.homebase/daemon/token:/t\"]",
            "a directory of keys",
        ),
        ("mounts = [\"~/:/h\"]", "is a home directory"),
        ("mounts = [\"/etc/shadow:/s\"]", "lies in `/etc`"),
        ("mounts = [\"~/w/../.ssh:/k\"]", "a directory of keys"),
        (
            "capabilities = [\"SYS_ADMIN\"]",
            "would give the agent the host",
        ),
    ] {
        p.write(
            COMPOSE,
            &format!(
                "[services.idle]\nmemory = \"16MiB\"\n[loops.l]\nimage = \"hb/busybox:latest\"\ncommand = \"true\"\nmemory = \"16MiB\"\n[loops.l.sandbox]\n{extra}\n"
            ),
        );
        let o = p.run(&["deploy"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
    let dir = hosts.ssh_ok(
        h,
        &format!("ls -d ~/.homebase/{} 2>/dev/null || true", p.name),
    );
    assert_eq!(dir.trim(), "", "the host was touched");
}

/// Bytes an agent (or anyone on the host) writes never reach the laptop's terminal raw: an
/// agent prints a clear-screen, a full reset, window-title and clipboard OSC sequences and
/// a bidi override, and fails, so its output lands in the iteration history, events,
/// alerts and the breaker's reason; a host-edited `releases.jsonl` carries the same bytes
/// and a non-ASCII commit. Every printing command, run under a PTY (colour on), shows them
/// escaped, and none panics.
#[test]
fn hostile_host_bytes_are_shown_escaped_under_a_terminal() {
    let hosts = hosts();
    let h = hosts.host(1);
    let hostile = r"printf '\033[H\033[J\033cCLEARED \033]0;pwned-title\007 \033]52;c;cHduZWQ=\007 \342\200\256evil\302\233 \n' >&2; exit 3";
    let toml = "[services.idle]\nmemory = \"16MiB\"\n[loops.hostile]\nimage = \"hb/busybox:latest\"\ncommand = \"sh /workspace/hostile.sh\"\nworkspace = \"{ws}/hostile\"\nmemory = \"32MiB\"\ntimeout = \"60s\"\nbreaker_same_error = 2\nautostart = false\n";
    let env = Env::new(
        &hosts,
        h,
        "hostile",
        COMPOSE,
        toml,
        "4GiB",
        &[("hostile", "", None)],
    );
    hosts.ssh_with_input(
        h,
        &format!("cat > {}/hostile/hostile.sh", env.ws),
        hostile.as_bytes(),
    );
    let (code, body) = env
        .d
        .post(&format!("/api/loops/{}/hostile/start", env.p.name));
    assert_eq!(code, 200, "{body}");
    env.wait("hostile", "opens its breaker", 90, |s| {
        s["state"] == "breaker_open"
            || s["breaker"]["state"] == "open"
            || s["iterations"].as_i64() >= Some(2)
    });
    // a host-edited release log: the same bytes, and a commit that is not ASCII
    let line = serde_json::json!({
        "id": "20300101T000000Z-evil",
        "time": 1,
        "user": "\u{1b}]0;pwned\u{7}\u{1b}[2J",
        "git_commit": "é€ü\u{202e}abcdef",
        "git_dirty": false,
        "config_hash": "h",
        "outcome": "deployed\u{1b}c",
        "duration_ms": 5
    });
    hosts.ssh_with_input(
        h,
        &format!("cat >> .homebase/{}/releases.jsonl", env.p.name),
        format!("{line}\n").as_bytes(),
    );
    // SGR sequences (colours) removed: `ESC [ digits;… m`
    let strip_sgr = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('\u{1b}') {
            out.push_str(&rest[..i]);
            let tail = &rest[i + 1..];
            let body = tail.strip_prefix('[').map(|t| {
                t.find(|c: char| !(c.is_ascii_digit() || c == ';'))
                    .filter(|&j| t[j..].starts_with('m'))
                    .map(|j| j + 2)
            });
            match body.flatten() {
                Some(n) => rest = &tail[n..],
                None => {
                    out.push('\u{1b}');
                    rest = tail;
                }
            }
        }
        out.push_str(rest);
        out
    };
    for args in [
        vec!["status"],
        vec!["loop", "ls"],
        vec!["loop", "history", "hostile"],
        vec!["releases"],
        vec!["status", "--json"],
        vec!["loop", "history", "hostile", "--json"],
        vec!["releases", "--json"],
    ] {
        let c = env.p.cmd(&args);
        let mut line = String::from("env HOMEBASE_COLOR=always");
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(
                    " {}='{}'",
                    k.to_string_lossy(),
                    v.to_string_lossy()
                ));
            }
        }
        line.push_str(&format!(" HOMEBASE_DAEMON_STATE='{}'", env.d.state));
        line.push_str(&format!(" '{}'", c.get_program().to_string_lossy()));
        for a in c.get_args() {
            line.push_str(&format!(" '{}'", a.to_string_lossy()));
        }
        let o = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{args:?} under a PTY: {out}");
        assert!(!out.contains("panicked"), "{args:?}: {out}");
        // homebase's own colours aside, nothing a terminal acts on
        let bare = strip_sgr(&out);
        let bad: Vec<char> = bare
            .chars()
            .filter(|c| {
                (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(bad.is_empty(), "{args:?} printed {bad:?} raw:\n{out:?}");
    }
    // the bytes are there, escaped: the agent's output reached the history
    let o = env
        .p
        .cmd(&["loop", "history", "hostile"])
        .env("HOMEBASE_DAEMON_STATE", &env.d.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\\u{1b}"), "{text}");
    let releases = env.p.ok(&["releases"]);
    assert!(releases.contains("é€ü"), "{releases}");
}

/// Recorded results of Claude Code (`--output-format stream-json` and `json`), each a file the
/// fake agent prints with `say FILE [EXIT]`.
const RESULTS: &[(&str, &str)] = &[
    (
        "success.out",
        concat!(
            r#"{"type":"system","subtype":"init","session_id":"5b1c2d3e-0000-4000-8000-000000000001","tools":["Bash","Edit","Read"],"model":"claude-sonnet-4-5"}"#,
            "\n",
            r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Story US-1 passes."}]},"session_id":"5b1c2d3e-0000-4000-8000-000000000001"}"#,
            "\n",
            r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":41233,"duration_api_ms":39877,"num_turns":9,"result":"Story US-1 passes.","session_id":"5b1c2d3e-0000-4000-8000-000000000001","total_cost_usd":0.25,"usage":{"input_tokens":1200,"cache_creation_input_tokens":15000,"cache_read_input_tokens":200000,"output_tokens":3800,"server_tool_use":{"web_search_requests":0},"service_tier":"standard"}}"#,
            "\n"
        ),
    ),
    (
        "maxturns.out",
        r#"{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":602113,"num_turns":31,"session_id":"5b1c2d3e-0000-4000-8000-000000000002","total_cost_usd":0.3,"usage":{"input_tokens":2000,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5000}}"#,
    ),
    (
        "error.out",
        r#"{"type":"result","subtype":"success","is_error":true,"duration_ms":3100,"num_turns":1,"result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}","session_id":"5b1c2d3e-0000-4000-8000-000000000003","total_cost_usd":0.05,"usage":{"input_tokens":100,"output_tokens":50}}"#,
    ),
    (
        "success2.out",
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"Refactored the watcher.","session_id":"5b1c2d3e-0000-4000-8000-000000000004","total_cost_usd":0.5,"usage":{"input_tokens":500,"output_tokens":500}}"#,
    ),
    (
        "success3.out",
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Fixed a typo.","total_cost_usd":0.1,"usage":{"input_tokens":40,"output_tokens":60}}"#,
    ),
    (
        "done.out",
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"Every story passes. <promise>COMPLETE</promise>","total_cost_usd":0.0,"usage":{"input_tokens":1,"output_tokens":1}}"#,
    ),
    // bad endings: none of them may count, crash, or open a cap
    (
        "ok40.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.4,"usage":{"input_tokens":100,"output_tokens":100}}"#,
    ),
    (
        "negative.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":-100,"usage":{"input_tokens":100,"output_tokens":100}}"#,
    ),
    (
        "nan.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":NaN}"#,
    ),
    (
        "truncated.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.3,"usage":{"input_tok"#,
    ),
    (
        "nonjson.out",
        "{\"type\":\"result\",\"subtype\":\"success\",\"total_cost_usd\":0.3}\nDone.\n",
    ),
    (
        "absurd.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":1e12}"#,
    ),
    (
        "ok20.out",
        r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.2,"usage":{"input_tokens":100,"output_tokens":100}}"#,
    ),
];

/// A fixed offset from UTC (`-07:13:20`) in which the day turns `secs` seconds from now.
fn zone_turning_in(secs: i64) -> (String, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let turn = now + secs;
    // local = utc + offset; local midnight at `turn`
    let mut offset = (-turn).rem_euclid(86_400);
    if offset > 43_200 {
        offset -= 86_400;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.abs();
    (
        format!("{sign}{:02}:{:02}:{:02}", a / 3600, a % 3600 / 60, a % 60),
        turn,
    )
}

#[test]
fn agents_results_are_read_their_spend_capped_per_day_and_bad_results_never_count() {
    let hosts = hosts();
    let h = hosts.host(3);
    // the day turns in 12 hours: the first phase never crosses it
    let (far, _) = zone_turning_in(43_000);
    let toml = |zone: &str| {
        format!(
            "[services.idle]\nmemory = \"16MiB\"\n{}{}[spend]\nmax_cost_per_month = 100.0\ntime_zone = \"{zone}\"\n",
            loop_toml(
                "paid",
                "output_format = \"stream-json\"\nmax_cost_per_day = 1.0\nautostart = false"
            ),
            loop_toml(
                "bad",
                "output_format = \"json\"\nmax_cost_per_day = 0.5\nautostart = false"
            ),
        )
    };
    let env = Env::new(
        &hosts,
        h,
        "spend",
        COMPOSE,
        &toml(&far),
        "4GiB",
        &[
            (
                "paid",
                "say success.out\nsay maxturns.out 1\nsay error.out 1\nusagejson 3\nsay success2.out\nsay success3.out\nsay done.out\n",
                None,
            ),
            (
                "bad",
                "say ok40.out\nsay negative.out\nsay nan.out\nsay truncated.out\nsay nonjson.out\nhuge\nsay absurd.out\nsay ok20.out\nsay ok20.out\n",
                None,
            ),
        ],
    );
    for name in ["paid", "bad"] {
        for (file, text) in RESULTS {
            hosts.ssh_with_input(
                h,
                &format!("cat > {}/{name}/{file}", env.ws),
                text.as_bytes(),
            );
        }
        let (code, body) = env
            .d
            .post(&format!("/api/loops/{}/{name}/start", env.p.name));
        assert_eq!(code, 200, "{body}");
    }

    // Five iterations, then the day's cap ($1.10 spent of $1.00) holds the loop.
    let capped = |s: &Value| {
        s["waiting"]
            .as_str()
            .is_some_and(|w| w.starts_with("spend cap:"))
    };
    let s = env.wait("paid", "reaches its daily cap", 120, capped);
    assert_eq!(
        env.outcomes("paid"),
        ["ok", "max_turns", "error", "usage_limit", "ok"]
    );
    assert!(
        s["waiting"]
            .as_str()
            .unwrap()
            .contains("loop `paid` spent $1.10 today, max_cost_per_day = 1"),
        "{s:#}"
    );
    let hist = env.history("paid");
    let costs: Vec<f64> = hist
        .iter()
        .map(|i| i["result"]["cost_usd"].as_f64().unwrap())
        .collect();
    assert_eq!(costs, [0.25, 0.3, 0.05, 0.0, 0.5], "{hist:#?}");
    let tokens: Vec<u64> = hist
        .iter()
        .map(|i| {
            let r = &i["result"];
            [
                "input_tokens",
                "output_tokens",
                "cache_creation_tokens",
                "cache_read_tokens",
            ]
            .iter()
            .map(|k| r[k].as_u64().unwrap())
            .sum()
        })
        .collect();
    assert_eq!(tokens, [220_000, 7000, 150, 10, 1000]);
    assert_eq!(hist[0]["result"]["turns"], 9);
    assert_eq!(
        hist[0]["result"]["session_id"],
        "5b1c2d3e-0000-4000-8000-000000000001"
    );
    assert_eq!(hist[1]["result"]["subtype"], "error_max_turns");
    assert_eq!(hist[2]["result"]["is_error"], true);
    // the usage limit came from the result's own words, its reset honoured
    let reset: i64 = hist[3]["tail"]
        .as_str()
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(hist[4]["started"].as_i64().unwrap() >= reset, "{hist:#?}");
    let spend = &s["spend"];
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&spend["today_cost_usd"], 1.1), "{spend:#}");
    assert!(close(&spend["last_cost_usd"], 0.5), "{spend:#}");
    assert_eq!(spend["today_tokens"], 228_160);
    assert_eq!(spend["today_results"], 5);
    assert_eq!(spend["max_cost_per_day"], 1.0);
    let until = s["wait_until"].as_i64().unwrap();
    assert_eq!(
        until,
        spend["day_start"].as_i64().unwrap() + 86_400,
        "{s:#}"
    );
    let alert = env
        .events("paid", "alert_firing")
        .into_iter()
        .find(|a| a["message"].as_str().unwrap().contains("loop_spend_cap"))
        .unwrap_or_else(|| panic!("no alert: {:#?}", env.d.events()));
    assert!(
        alert["message"].as_str().unwrap().contains("$1.10 today"),
        "{alert:#}"
    );

    // Bad results are recorded as none, with the reason; only the two good ones count,
    // so the negative figure cannot lift the cap.
    let s = env.wait("bad", "reaches its daily cap", 120, capped);
    let hist = env.history("bad");
    assert_eq!(hist.len(), 8, "{hist:#?}");
    let with_result: Vec<i64> = hist
        .iter()
        .filter(|i| !i["result"].is_null())
        .map(|i| i["n"].as_i64().unwrap())
        .collect();
    assert_eq!(with_result, [1, 8], "{hist:#?}");
    let notes: Vec<&str> = hist.iter().map(|i| i["note"].as_str().unwrap()).collect();
    for (i, why) in [
        (1, "negative, not a number"),
        (2, "not a valid result"),
        (3, "truncated"),
        (4, "not JSON"),
        (5, "over 1 MiB"),
        (6, "above 1000"),
    ] {
        assert!(notes[i].contains(why), "iteration {}: {}", i + 1, notes[i]);
    }
    assert!(close(&s["spend"]["today_cost_usd"], 0.6), "{s:#}");

    // The laptop sees the spend: ls, history, metrics.
    let cli = |args: &[&str]| env.p.ok_with_daemon(&env.d, args);
    let ls = cli(&["loop", "ls"]);
    assert!(ls.contains("$1.10 of $1.00 today ($0.50 last"), "{ls}");
    assert!(ls.contains("waiting: spend cap"), "{ls}");
    let history = cli(&["loop", "history", "paid"]);
    assert!(
        history.contains("COST") && history.contains("$0.25") && history.contains("220.0k"),
        "{history}"
    );
    let (_, metrics) = env.d.api("/metrics");
    assert!(
        metrics.contains(&format!(
            "homebase_loop_tokens{{project=\"{}\",loop=\"paid\",period=\"today\"}} 228160",
            env.p.name
        )),
        "{metrics}"
    );

    // `loop resume` says what lifts the cap
    let (code, body) = env
        .d
        .post(&format!("/api/loops/{}/paid/resume", env.p.name));
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("held by a spend cap") && body.contains("Raise the cap"),
        "{body}"
    );

    // A daemon restart keeps the spend: still capped, nothing started.
    env.d.stop();
    env.d.start();
    let s = env.wait("paid", "is capped again after the restart", 30, capped);
    assert!(close(&s["spend"]["today_cost_usd"], 1.1), "{s:#}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.history("paid").len(), 5);

    // The day turns (a calendar whose midnight is 15 s away): the loop goes on by itself,
    // today's spend starts again from zero, and the alert resolves.
    let (near, turn) = zone_turning_in(15);
    env.p.write(
        COMPOSE,
        &toml(&near)
            .replace("{ws}", &env.ws)
            .replace("{user}", hosts.ssh_ok(h, "echo $(id -u):$(id -g)").trim()),
    );
    env.p.ok(&["deploy", "--timeout", "60"]);
    let s = env.wait("paid", "completes the next day", 90, |s| {
        s["state"] == "completed"
    });
    let hist = env.history("paid");
    assert_eq!(hist.len(), 7, "{hist:#?}");
    assert!(hist[5]["started"].as_i64().unwrap() >= turn, "{hist:#?}");
    assert!(close(&s["spend"]["today_cost_usd"], 0.1), "{s:#}");
    assert_eq!(s["spend"]["day_start"], turn);
    assert!(
        env.events("paid", "alert_resolved")
            .iter()
            .any(|a| a["message"].as_str().unwrap().contains("loop_spend_cap")),
        "{:#?}",
        env.d.events()
    );
    // `bad` resumed at the day's turn too: stopped (its iteration killed) before the count
    let (code, body) = env.d.post(&format!("/api/loops/{}/bad/stop", env.p.name));
    assert_eq!(code, 200, "{body}");
    env.wait("bad", "is stopped", 30, |s| {
        s["state"] == "stopped" && s["running"].is_null()
    });
    assert_eq!(env.leftover_containers().trim(), "");
}
