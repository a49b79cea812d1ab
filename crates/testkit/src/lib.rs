//! Test support for homebase: the real remote hosts that `scripts/testhost` brings up
//! (network namespaces with their own dockerd and sshd), unique names and ports so that tests
//! running in parallel never share state, and helpers to run commands on a host over SSH.
//!
//! Tests call [`hosts()`]; it fails with the fix (`scripts/testhost up`) when no host is up.

pub mod delay;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use homebase_proto::layout;
use serde::Deserialize;

/// Every test host and the client key that reaches them.
#[derive(Debug, Clone, Deserialize)]
pub struct Hosts {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub hosts: Vec<Host>,
}

/// One test host: reached only through `ssh user@address`.
#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub name: String,
    pub index: u32,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The login user's home (`/Users/hbN` on the Mac-like hosts).
    #[serde(default)]
    pub home: String,
    /// `debian`, or `mac` for a host that behaves like a Mac Mini with Homebrew and Colima.
    #[serde(default)]
    pub kind: String,
    /// The host's engine socket, for assertions a test makes from outside (never for the
    /// code under test, which must go through SSH).
    pub docker_host: String,
    pub netns: String,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Runs `scripts/testhost ARGS` (with extra environment) and panics with its stderr on failure.
pub fn testhost(args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(repo_root().join("scripts/testhost"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/testhost");
    assert!(
        out.status.success(),
        "scripts/testhost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test hosts that are up. Panics with the fix when there are none.
pub fn hosts() -> Hosts {
    let script = repo_root().join("scripts/testhost");
    let out = Command::new(&script)
        .args(["env", "--json"])
        .output()
        .expect("run scripts/testhost env");
    assert!(
        out.status.success(),
        "no test hosts: run `scripts/testhost up 2` (as root) first\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts: Hosts = serde_json::from_slice(&out.stdout).expect("testhost env --json output");
    assert!(
        !hosts.hosts.is_empty(),
        "no test hosts: run `scripts/testhost up 2` first"
    );
    hosts
}

impl Host {
    pub fn is_mac(&self) -> bool {
        self.kind == "mac"
    }
}

/// The Mac-like host the tests that cover deploy, backups and loops use by default
/// (its Compose plugin is registered in `cliPluginsExtraDirs`).
pub const MAC: u32 = 8;
/// The Mac-like host fresh from `brew install` and `colima start`: the setup journey's alone.
pub const FRESH_MAC: u32 = 9;
/// The Mac-like host away from home (`scripts/testhost up-away`): its network may refuse
/// every inbound connection, so that only the relay reaches it. The relay test's alone.
pub const AWAY: u32 = 11;
/// The relay (sshd and an account, no engine): the relay test's alone.
pub const RELAY: u32 = 12;

impl Hosts {
    pub fn host(&self, index: u32) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.index == index)
            .unwrap_or_else(|| {
                panic!("test host {index} is not up: run `scripts/testhost up {index}`")
            })
    }

    /// `ssh` options that reach a host with host-key checking on.
    pub fn ssh_args(&self, host: &Host) -> Vec<String> {
        vec![
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-p".into(),
            host.port.to_string(),
            format!("{}@{}", host.user, host.address),
        ]
    }

    /// Runs a shell command on the host over SSH, with `stdin` piped in. A test's own
    /// commands find Homebrew's tools on a Mac-like host as a user's login shell would (the
    /// code under test gets no such help).
    pub fn ssh_with_input(&self, host: &Host, command: &str, stdin: &[u8]) -> Output {
        use std::io::Write;
        let command = if host.kind == "mac" {
            format!("PATH=\"$PATH:/opt/homebrew/bin\"; export PATH; {command}")
        } else {
            command.to_string()
        };
        let mut child = Command::new("ssh")
            .args(self.ssh_args(host))
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write to ssh");
        child.wait_with_output().expect("wait for ssh")
    }

    pub fn ssh(&self, host: &Host, command: &str) -> Output {
        self.ssh_with_input(host, command, b"")
    }

    /// Runs a command over SSH and returns its stdout; panics with stderr when it fails.
    pub fn ssh_ok(&self, host: &Host, command: &str) -> String {
        let o = self.ssh(host, command);
        assert!(
            o.status.success(),
            "on {}: `{command}` failed ({}):\n{}{}",
            host.name,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Runs `docker` against a host's engine directly (for assertions from outside).
    pub fn docker(&self, host: &Host, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", &host.docker_host)
            .args(args)
            .output()
            .expect("run docker")
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this or another test process) uses: `prefix-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port for a test host's loopback that no other test uses at the same time: derived from
/// the process id and a counter, in 20000–59999.
pub fn unique_port() -> u16 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    (20000 + (pid.wrapping_mul(97).wrapping_add(n.wrapping_mul(7919))) % 40000) as u16
}

/// Removes a compose project from a host when dropped, so a failing test leaves nothing.
pub struct ProjectGuard<'a> {
    pub hosts: &'a Hosts,
    pub host: &'a Host,
    pub project: String,
}

impl Drop for ProjectGuard<'_> {
    fn drop(&mut self) {
        let _ = self.hosts.docker(
            self.host,
            &[
                "compose",
                "-p",
                &self.project,
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "1",
            ],
        );
        // the images the host built for it, and what its containers wrote (as root) into
        // its tree, then the project's directory
        let images = self.hosts.docker(
            self.host,
            &[
                "image",
                "ls",
                "-q",
                "--filter",
                &format!("reference=homebase/{}-*", self.project.to_ascii_lowercase()),
            ],
        );
        for id in String::from_utf8_lossy(&images.stdout).split_whitespace() {
            let _ = self.hosts.docker(self.host, &["rmi", "-f", id]);
        }
        let _ = self.hosts.ssh(
            self.host,
            &format!(
                "d={d}; [ -d \"$d/tree\" ] && docker run --rm -v \"$d\":/x hb/busybox:latest rm -rf /x/tree /x/set-aside >/dev/null 2>&1; rm -rf \"$d\"",
                d = layout::sh_project(&self.project)
            ),
        );
    }
}

/// A homebase project in a temp dir, deployed to one test host under a unique name.
pub struct TestProject<'a> {
    pub hosts: &'a Hosts,
    pub host: &'a Host,
    pub name: String,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

impl<'a> TestProject<'a> {
    /// Writes `compose` and a homebase.toml that reaches `host`; `extra_toml` is appended.
    pub fn new(
        hosts: &'a Hosts,
        host: &'a Host,
        bin: &Path,
        prefix: &str,
        compose: &str,
        extra_toml: &str,
    ) -> Self {
        let name = unique_name(prefix);
        let dir = tempfile::tempdir().expect("temp dir");
        let p = TestProject {
            hosts,
            host,
            name,
            dir,
            bin: bin.to_path_buf(),
        };
        p.write(compose, extra_toml);
        p
    }

    pub fn write(&self, compose: &str, extra_toml: &str) {
        std::fs::write(self.dir.path().join("compose.yml"), compose).expect("write compose.yml");
        let toml = format!(
            "[project]\nname = \"{}\"\n\n[host]\nssh = \"{}@{}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout_secs = 5\n\n[budget]\nhost_memory = \"4GiB\"\n\n{extra_toml}",
            self.name,
            self.host.user,
            self.host.address,
            self.hosts.key.display(),
            self.hosts.known_hosts.display()
        );
        std::fs::write(self.dir.path().join("homebase.toml"), toml).expect("write homebase.toml");
    }

    /// `homebase -C <dir> <args>`. The project's SSH masters (which outlive a command, for
    /// the next one) live in its own directory, so that a test that cuts a connection cuts
    /// only its own; they are closed when the project is dropped.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-C")
            .arg(self.dir.path())
            .args(args)
            .env("HOMEBASE_COLOR", "never")
            .env("HOMEBASE_SSH_CONTROL_DIR", self.control_dir());
        c
    }

    /// Where this project's shared SSH masters keep their sockets.
    pub fn control_dir(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run homebase")
    }

    /// Runs homebase as a laptop that talks to `daemon` (its state directory) and panics
    /// with its stderr unless it exits 0; returns stdout.
    pub fn ok_with_daemon(&self, daemon: &Daemon, args: &[&str]) -> String {
        let o = self
            .cmd(args)
            .env("HOMEBASE_DAEMON_STATE", &daemon.state)
            .output()
            .expect("run homebase");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Runs homebase and panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "homebase {args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Container id per compose service, read from the host's engine directly.
    pub fn container_ids(&self) -> std::collections::BTreeMap<String, String> {
        let o = self.hosts.docker(
            self.host,
            &[
                "ps",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.name),
                "--format",
                "{{.Label \"com.docker.compose.service\"}} {{.ID}}",
            ],
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(s, id)| (s.to_string(), id.to_string()))
            })
            .collect()
    }

    /// The engine's state of a service's container (`running`, `exited`, …).
    pub fn state(&self, service: &str) -> String {
        let o = self.hosts.docker(
            self.host,
            &[
                "inspect",
                "--format",
                "{{.State.Status}}",
                &format!("{}-{service}-1", self.name),
            ],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Runs a command in a service's container on the host (for assertions).
    pub fn exec(&self, service: &str, cmd: &str) -> Output {
        let container = format!("{}-{service}-1", self.name);
        self.hosts
            .docker(self.host, &["exec", &container, "sh", "-c", cmd])
    }

    /// The host's view of `~/.homebase/<project>/<file>`.
    pub fn host_file(&self, file: &str) -> Option<String> {
        let o = self.hosts.ssh(
            self.host,
            &format!("cat {}/{file}", layout::sh_project(&self.name)),
        );
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    }
}

impl TestProject<'_> {
    /// Ends this project's warm SSH connections (the next command opens a new one).
    pub fn close_masters(&self) {
        for socket in std::fs::read_dir(self.control_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(socket.path())
                .args(["-O", "exit", "x"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// The ssh processes `args` starts: (masters opened, commands sent to the host), counted
    /// through an `ssh` wrapper first on PATH. Panics unless homebase exits 0.
    pub fn count_ssh(&self, args: &[&str], env: &[(&str, &str)]) -> (usize, usize) {
        let wrap = tempfile::tempdir().expect("temp dir");
        let log = wrap.path().join("log");
        let ssh = wrap.path().join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec /usr/bin/ssh \"$@\"\n",
                log.display()
            ),
        )
        .expect("write the ssh wrapper");
        std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod the ssh wrapper");
        let path = format!(
            "{}:{}",
            wrap.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let o = self
            .cmd(args)
            .env("PATH", &path)
            .envs(env.iter().copied())
            .output()
            .expect("run homebase");
        assert!(
            o.status.success(),
            "homebase {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let masters = text.lines().filter(|l| l.contains(" -M ")).count();
        let commands = text
            .lines()
            .filter(|l| l.contains("ControlMaster=no"))
            .count();
        (masters, commands)
    }
}

impl Drop for TestProject<'_> {
    fn drop(&mut self) {
        self.close_masters();
        drop(ProjectGuard {
            hosts: self.hosts,
            host: self.host,
            project: self.name.clone(),
        });
    }
}

/// A `homebase daemon` started over SSH on a test host, with its own state directory,
/// port and project, so that tests on one host never share one.
pub struct Daemon<'a> {
    pub bin: PathBuf,
    pub hosts: &'a Hosts,
    pub host: &'a Host,
    pub state: String,
    pub port: u16,
    pub project: String,
}

impl Daemon<'_> {
    pub fn start(&self) {
        self.start_with("")
    }

    /// Starts the daemon after `prefix` (shell commands, such as a `ulimit`).
    pub fn start_with(&self, prefix: &str) {
        self.hosts.ssh_ok(
            self.host,
            &format!(
                "{prefix}HOMEBASE_LOG=debug nohup {} daemon --listen 127.0.0.1:{} --state-dir {} --project {} >> {}/log 2>&1 < /dev/null & echo $! > {}/pid",
                self.bin.display(),
                self.port,
                self.state,
                self.project,
                self.state,
                self.state
            ),
        );
        // wait until the API answers
        for _ in 0..100 {
            if self.api("/api/status").0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "daemon did not answer:\n{}",
            self.hosts
                .ssh_ok(self.host, &format!("cat {}/log", self.state))
        );
    }

    /// A clean stop (SIGTERM), waited for.
    pub fn stop(&self) {
        self.hosts.ssh(
            self.host,
            // until it is gone (it writes its clean-stop mark last), as a service manager waits
            &format!(
                "pid=$(cat {}/pid); kill $pid 2>/dev/null; i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done",
                self.state
            ),
        );
    }

    /// `kill -9`: no shutdown, as a crash or an OOM kill of the daemon would be.
    pub fn kill9(&self) {
        self.hosts.ssh(
            self.host,
            &format!("kill -9 $(cat {}/pid) 2>/dev/null; sleep 0.2", self.state),
        );
    }

    /// POST through `ssh host curl` with the token; returns (status, body).
    pub fn post(&self, path: &str) -> (u16, String) {
        let o = self.hosts.ssh(
            self.host,
            &format!(
                "curl -s -X POST -w '\\n%{{http_code}}' -H \"Authorization: Bearer $(cat {}/token)\" 'http://127.0.0.1:{}{path}'",
                self.state, self.port
            ),
        );
        parse_curl(&String::from_utf8_lossy(&o.stdout))
    }

    /// GET through `ssh host curl` with the token; returns (status, body).
    pub fn api(&self, path: &str) -> (u16, String) {
        self.get(path, true)
    }

    pub fn get(&self, path: &str, with_token: bool) -> (u16, String) {
        let header = if with_token {
            format!("-H \"Authorization: Bearer $(cat {}/token)\"", self.state)
        } else {
            String::new()
        };
        let o = self.hosts.ssh(
            self.host,
            &format!(
                "curl -s -w '\\n%{{http_code}}' {header} 'http://127.0.0.1:{}{path}'",
                self.port
            ),
        );
        parse_curl(&String::from_utf8_lossy(&o.stdout))
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.api("/api/events?limit=1000").1).unwrap_or_default()
    }

    pub fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "no event: {what}\n{:#?}\nlog:\n{}",
            self.events(),
            self.hosts
                .ssh_ok(self.host, &format!("tail -50 {}/log", self.state))
        );
    }
}

/// Status and body from `wget -S -qO- … 2>&1` (headers indented by two spaces).
/// `curl -w '\n%{http_code}'` output: the body, then the status on the last line (curl is on
/// every test host, a Mac's included; wget is not on a Mac).
fn parse_curl(text: &str) -> (u16, String) {
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A webhook receiver on the laptop side of the test bridge (the hosts reach it); collects
/// JSON bodies.
pub fn webhook() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    // each body gets `_received_ms`: milliseconds since the Unix epoch when it arrived
    let l = std::net::TcpListener::bind("10.231.0.1:0").expect("webhook receiver");
    let url = format!("http://{}/hook", l.local_addr().expect("webhook receiver"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = std::io::BufReader::new(s.try_clone().expect("webhook receiver"));
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("webhook receiver")
                    .as_millis() as u64;
                v["_received_ms"] = ms.into();
                sink.lock().expect("webhook receiver").push(v);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// A command's stdout as JSON; panics with stdout and stderr when it is not.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The item `name` of a `setup --json` or `preflight --json` checklist; panics when absent.
pub fn checklist_item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` in {report:#}"))
}
