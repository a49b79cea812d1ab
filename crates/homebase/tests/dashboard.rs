//! The dashboard in a real headless Chromium (driven over WebDriver by chromedriver), loaded
//! through `homebase dash`'s SSH forward from a test host's daemon: it lists the services
//! with their memory, shows a stopped container down without a reload, and shows no data
//! without the token. Saves a screenshot to target/dashboard.png.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use homebase_testkit::{TestProject, hosts, repo_root, unique_port};
use serde_json::{Value, json};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

/// Ends a child process however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGTERM first, so that `homebase dash` closes its SSH master; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Driver {
    child: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = unique_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--no-first-run", "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]}}}});
        let mut session = None;
        for _ in 0..100 {
            if let Ok(mut r) = ureq::post(&format!("{base}/session")).send_json(&caps) {
                let v: Value = r.body_mut().read_json().unwrap();
                session = Some(v["value"]["sessionId"].as_str().unwrap().to_string());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            base,
            session: session.expect("a WebDriver session"),
            _profile: profile,
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut r = ureq::post(&format!("{}/session/{}/{path}", self.base, self.session))
            .send_json(&body)
            .unwrap();
        r.body_mut().read_json::<Value>().unwrap()["value"].clone()
    }

    fn go(&self, url: &str) {
        self.post("url", json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.post("execute/sync", json!({"script": script, "args": []}))
    }

    fn text(&self) -> String {
        self.js("return document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn wait(&self, what: &str, cond: impl Fn(&Driver) -> bool) -> Duration {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if cond(self) {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("page never showed {what}:\n{}", self.text());
    }

    fn screenshot(&self, to: &Path) {
        let mut r = ureq::get(&format!(
            "{}/session/{}/screenshot",
            self.base, self.session
        ))
        .call()
        .unwrap();
        let v: Value = r.body_mut().read_json().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dashboard_lists_services_and_shows_a_stop_live() {
    let hosts = hosts();
    let h = hosts.host(1);
    let compose = r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw}
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}
  api:
    image: hb/busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_signal: SIGKILL
"#;
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "dash",
        compose,
        "[services.db]\nmemory = \"512MiB\"\n[services.api]\nmemory = \"32MiB\"\n[daemon]\nunhealthy_grace_secs = 60\n\
         [loops.agent]\nimage = \"hb/busybox:latest\"\ncommand = \"echo working; sleep 3; echo '{\\\"type\\\":\\\"result\\\",\\\"subtype\\\":\\\"success\\\",\\\"result\\\":\\\"<promise>COMPLETE</promise>\\\",\\\"total_cost_usd\\\":0.42}'\"\noutput_format = \"json\"\nmemory = \"16MiB\"\n",
    );
    p.ok(&["deploy"]);
    // The daemon, watching only this project, with its files in the default place.
    let port = unique_port();
    let state = format!("/tmp/hb-dash-{}", p.name);
    hosts.ssh_ok(h, &format!("mkdir -p {state}; nohup {} daemon --listen 127.0.0.1:{port} --project {} --state-dir {state} > {state}/log 2>&1 < /dev/null & echo $! > {state}/pid", bin().display(), p.name));
    // homebase dash reads ~/.homebase/daemon/{endpoint,token}: point them at this daemon
    for _ in 0..100 {
        if hosts
            .ssh(h, &format!("test -s {state}/endpoint"))
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = hosts
        .ssh_ok(h, &format!("cat {state}/token"))
        .trim()
        .to_string();

    // homebase dash opens the forward (no browser here) and says where.
    let mut dash = KillOnDrop(
        p.cmd(&["dash", "--no-browser", "--json", "--print-url"])
            .env("HOMEBASE_DAEMON_STATE", &state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let first = BufReader::new(dash.0.stdout.take().unwrap())
        .lines()
        .next()
        .expect("dash printed nothing")
        .unwrap();
    let info: Value = serde_json::from_str(&first).unwrap();
    assert!(!first.contains(&token), "the token was printed");
    // a one-time sign-in code in the fragment, never the token
    let login_url = info["url"].as_str().unwrap().to_string();
    let (url, code) = login_url.split_once("#login=").expect("a #login= URL");
    let (url, code) = (url.to_string(), code.to_string());
    assert_ne!(code, token);

    let d = Driver::start();
    // Without the token: the page loads but shows no data.
    d.go(&url);
    d.wait("the sign-in form", |d| d.text().contains("Sign in"));
    assert!(
        !d.text().contains("db"),
        "data shown without the token:\n{}",
        d.text()
    );

    // With the one-time code (in the fragment): the services and their memory.
    d.go(&login_url);
    d.wait("the services with memory", |d| {
        let t = d.text();
        t.contains(&p.name)
            && t.contains("api")
            && t.contains("db")
            && t.contains("MiB")
            && t.contains("live")
    });
    assert!(
        !d.js("return location.href")
            .as_str()
            .unwrap()
            .contains("login"),
        "the code stayed in the URL"
    );
    // the code is spent
    let again = hosts.ssh_ok(
        h,
        &format!("curl -s -o /dev/null -w '%{{http_code}}' -X POST -H 'X-Homebase-Login: {code}' http://127.0.0.1:{port}/api/session"),
    );
    assert_eq!(again.trim(), "401", "a sign-in code worked twice");
    // The agent loop: listed, and seen completing live.
    d.wait("the agent loop completed", |d| {
        d.js("const r = document.querySelector('tr[data-loop=\"agent\"]'); return r ? r.dataset.state : ''").as_str() == Some("completed")
    });
    assert!(d.text().contains("Agent loops"), "{}", d.text());
    // what its agent reported it spent, read from its result line
    d.wait("the loop's spend shown", |d| {
        d.js("const r = document.querySelector('tr[data-loop=\"agent\"] td.spend'); return r ? r.textContent : ''")
            .as_str()
            .is_some_and(|t| t.starts_with("$0.42 today") && t.contains("last $0.42"))
    });
    let shot = repo_root().join("target/dashboard.png");
    d.screenshot(&shot);

    // Stop a container: the page shows it down without a reload.
    hosts.docker(h, &["stop", "-t", "0", &format!("{}-api-1", p.name)]);
    let took = d.wait("api down", |d| {
        d.js("const r = document.querySelector('tr[data-service=\"api\"]'); return r ? r.dataset.state : ''").as_str() != Some("running")
    });
    eprintln!("BENCH stop→page {} ms", took.as_millis());
    d.screenshot(&repo_root().join("target/dashboard-down.png"));

    // Stopped by hand, it stays stopped: the daemon does not fight `docker stop`.
    d.wait("the stopped-by-hand event", |d| {
        d.text().contains("stopped by hand")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(p.state("api"), "exited");

    // Page weight: what the first load transfers.
    let weight = d.js("return performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation')).reduce((a, e) => a + (e.transferSize || e.encodedBodySize || 0), 0)");
    eprintln!("BENCH page weight {} bytes", weight);

    drop(dash);
    hosts.ssh(h, &format!("kill $(cat {state}/pid); rm -rf {state}"));
}
