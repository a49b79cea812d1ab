//! The user's own code on the host: the project's files synced by content, images built
//! there from a git checkout, bind mounts that see the project (never the release record),
//! host edits never lost, a broken build that changes nothing; on a Debian test host and a
//! Mac-like one (Homebrew, Colima), through real sshd, dockerd, Compose and git.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;

use homebase_testkit::{Host, Hosts, TestProject, hosts, unique_port};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

const BUDGET: &str = "[services.api]\nmemory = \"64MiB\"\n[services.worker]\nmemory = \"32MiB\"\n";

/// An API built from `api/` (its page copied from the source) and a worker that mounts the
/// project read-only at /code and a data directory at /data, writing a line there at each
/// start. `version` changes the worker's environment (a recreate).
fn stack(port: u16, version: &str) -> String {
    format!(
        r#"
services:
  api:
    build:
      context: ./api
      args:
        GREETING: hello
    ports: ["127.0.0.1:{port}:8080"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/"]
      interval: 1s
      retries: 30
  worker:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo start $$VERSION >> /data/log; exec sleep 3600"]
    environment:
      VERSION: "{version}"
    env_file: [./worker.env]
    stop_signal: SIGKILL
    volumes: [".:/code:ro", "./data:/data"]
"#
    )
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A git checkout of the test project: `api/` (Dockerfile, a large static file, the page),
/// a note, the worker's env file (ignored by git, as secrets are), data ignored.
fn checkout(p: &TestProject, port: u16) {
    let dir = p.dir.path();
    p.write(&stack(port, "1"), BUDGET);
    write(
        dir,
        "api/Dockerfile",
        "FROM hb/busybox:latest\nARG GREETING\nCOPY static /static\nCOPY www /www\nRUN echo $GREETING > /www/greeting\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    );
    write(dir, "api/static/blob", &"x".repeat(200_000));
    write(dir, "api/www/index.html", "v1");
    write(dir, "notes.txt", "notes");
    write(dir, "worker.env", "SECRET=s3cr3t-value\n");
    write(dir, ".gitignore", "data/\nworker.env\nssh/\n");
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "v1"]);
}

/// `deploy --json`'s events: the upload step's name (what crossed) and whether it built.
fn deploy(p: &TestProject, extra: &[&str]) -> (String, bool, String) {
    let mut args = vec!["deploy", "--json"];
    args.extend_from_slice(extra);
    let out = p.ok(&args);
    let upload = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "step" && e["step"].as_str().unwrap_or("").starts_with("upload"))
        .map(|e| e["step"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let built = out.contains("build images on the host");
    (upload, built, out)
}

/// The project's directory on its host, as a shell word.
fn pdir(p: &TestProject) -> String {
    homebase_proto::layout::sh_project(&p.name)
}

fn exec(p: &TestProject, service: &str, cmd: &str) -> String {
    let o = p.exec(service, cmd);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn layers(hosts: &Hosts, host: &Host, image: &str) -> Vec<String> {
    let o = hosts.docker(
        host,
        &["image", "inspect", "-f", "{{json .RootFS.Layers}}", image],
    );
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

fn api_image(p: &TestProject) -> String {
    let o = p.hosts.docker(
        p.host,
        &[
            "inspect",
            "-f",
            "{{.Config.Image}}",
            &format!("{}-api-1", p.name),
        ],
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Stops a test's daemon and removes its iteration containers and state when dropped, so
/// a failing test leaves nothing running.
struct DaemonGuard<'a>(homebase_testkit::Daemon<'a>, String);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        self.0.stop();
        let _ = self.0.hosts.ssh(
            self.0.host,
            &format!(
                "ids=$(docker ps -aq --filter name=hb-loop-{}-); [ -z \"$ids\" ] || docker rm -f $ids; rm -rf {} {}",
                self.0.project, self.0.state, self.1
            ),
        );
    }
}

fn journey(host_index: u32) {
    let hosts = hosts();
    let host = hosts.host(host_index);
    let p = TestProject::new(&hosts, host, bin(), "code", "", "");
    let port = unique_port();
    checkout(&p, port);
    let dir = p.dir.path();

    // plan says what will travel and what the host builds
    let plan: serde_json::Value = serde_json::from_str(&p.ok(&["plan", "--json"])).unwrap();
    assert_eq!(plan["files"]["from_git"], true, "{plan}");
    assert_eq!(plan["files"]["builds"][0]["service"], "api", "{plan}");

    // 1. first deploy: everything crosses, the API is built from the source on the host
    let (upload, built, _) = deploy(&p, &[]);
    assert!(built, "the first deploy builds the API");
    assert!(upload.contains("(8 of 8 project files"), "{upload}");
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v1");
    assert_eq!(exec(&p, "api", "cat /www/greeting"), "hello", "build args");
    // the worker sees the project, not homebase's release record; its secret env file
    // came along although git ignores it, private on the host
    let code = exec(&p, "worker", "ls -a /code");
    for f in ["api", "notes.txt", "compose.yml", "homebase.toml", "data"] {
        assert!(code.lines().any(|l| l == f), "{f} in /code:\n{code}");
    }
    for f in ["hash", "files", "builds", "current", "releases"] {
        assert!(!code.lines().any(|l| l == f), "{f} in /code:\n{code}");
    }
    assert_eq!(exec(&p, "worker", "echo $SECRET"), "s3cr3t-value");
    let mode = hosts.ssh_ok(
        host,
        &format!("ls -l {}/tree/worker.env | cut -c1-10", pdir(&p)),
    );
    assert_eq!(mode.trim(), "-rw-------");
    let v1_image = api_image(&p);
    let v1_layers = layers(&hosts, host, &v1_image);

    // 2. one source file changed and a file deleted: only that file crosses, only the
    // layers after it are built again
    write(dir, "api/www/index.html", "v2");
    git(dir, &["rm", "-q", "notes.txt"]);
    git(dir, &["commit", "-qam", "v2"]);
    let (upload, built, _) = deploy(&p, &[]);
    assert!(built);
    assert!(upload.contains("(1 of 7 project files, 2 B)"), "{upload}");
    // the manifest went as a change to the running release's, and reads back whole
    let current = p.host_file("current").unwrap();
    let files = p
        .host_file(&format!("releases/{}/files", current.trim()))
        .unwrap();
    assert_eq!(files.lines().count(), 7, "{files}");
    assert!(files.lines().any(|l| l.ends_with(" api/www/index.html")));
    assert!(
        p.host_file(&format!("releases/{}/files.base", current.trim()))
            .is_some()
    );
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v2");
    let v2_image = api_image(&p);
    let v2_layers = layers(&hosts, host, &v2_image);
    assert_eq!(v1_layers.len(), v2_layers.len());
    let shared = v1_layers.len() - 2; // COPY www and the RUN after it change
    assert_eq!(v1_layers[..shared], v2_layers[..shared], "cached layers");
    assert_ne!(v1_layers.last(), v2_layers.last());
    assert!(!exec(&p, "worker", "ls /code").contains("notes.txt"));

    // 3. rollback: the old image again, no build, the old files back
    let out = p.ok(&["rollback", "--json"]);
    assert!(!out.contains("build images"), "{out}");
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v1");
    assert_eq!(api_image(&p), v1_image);
    assert_eq!(exec(&p, "worker", "cat /code/notes.txt"), "notes");

    // 4. forward again with the worker changed: only compose.yml crosses (the page's v2 is
    // on the host already), the v2 image is reused, and the data the worker wrote stays
    p.write(&stack(port, "2"), BUDGET);
    let (upload, built, out) = deploy(&p, &[]);
    assert!(!built, "{out}");
    assert!(upload.contains("(1 of 7 project files"), "{upload}");
    assert_eq!(api_image(&p), v2_image);
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v2");
    assert_eq!(exec(&p, "worker", "cat /data/log"), "start 1\nstart 2");

    // 5. a broken Dockerfile: exit 1 with the build's words, the old release serving, the
    // lock free, the tree untouched
    write(
        dir,
        "api/Dockerfile",
        "FROM hb/busybox:latest\nCOPY www /www\nRUN echo broken-step && false\n",
    );
    let o = p.run(&["deploy"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not build; nothing on the host changed"),
        "{err}"
    );
    assert!(err.contains("broken-step"), "the build's tail: {err}");
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v2");
    assert!(p.host_file("lock").is_none(), "the lock is free");
    assert!(!exec(&p, "worker", "cat /code/api/Dockerfile").contains("broken"));
    git(dir, &["checkout", "--", "api/Dockerfile"]);

    // 6. a synced file edited on the host is never overwritten: refused, then set aside
    let tree_page = format!("{}/tree/api/www/index.html", pdir(&p));
    hosts.ssh_ok(host, &format!("echo edited-on-host > {tree_page}"));
    write(dir, "api/www/index.html", "v3");
    git(dir, &["commit", "-qam", "v3"]);
    let o = p.run(&["deploy"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("api/www/index.html"), "{err}");
    assert_eq!(
        hosts.ssh_ok(host, &format!("cat {tree_page}")).trim(),
        "edited-on-host"
    );
    let (_, _, out) = deploy(&p, &["--set-aside"]);
    assert!(out.contains("api/www/index.html"), "{out}");
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v3");
    let kept = hosts.ssh_ok(
        host,
        &format!("cat {}/set-aside/*/api/www/index.html", pdir(&p)),
    );
    assert_eq!(kept.trim(), "edited-on-host");

    // 7. a symlink a container could plant on the way to a synced path is moved aside,
    // never written through
    hosts.ssh_ok(
        host,
        &format!(
            "d={d}; mkdir -p \"$d/outside\" \"$d/elsewhere\" && rm -rf \"$d/tree/api/www\" && ln -s \"$d/outside\" \"$d/tree/api/www\" && \
             echo STOLEN=1 > \"$d/elsewhere/secret\" && rm \"$d/tree/worker.env\" && ln -s \"$d/elsewhere/secret\" \"$d/tree/worker.env\" && \
             touch -h -d 2000-01-01 \"$d/tree/worker.env\" \"$d/tree/api/www\"",
            d = pdir(&p)
        ),
    );
    write(dir, "api/www/index.html", "v4");
    git(dir, &["commit", "-qam", "v4"]);
    let o = p.run(&["deploy", "--set-aside"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outside = hosts.ssh_ok(host, &format!("ls -A {}/outside", pdir(&p)));
    assert_eq!(outside.trim(), "", "nothing written through the symlink");
    // an env file a container swapped for a symlink is not read through it
    assert_eq!(
        exec(&p, "worker", "echo ${STOLEN:-none} $SECRET"),
        "none s3cr3t-value"
    );
    hosts.ssh_ok(
        host,
        &format!(
            "test ! -L {d}/tree/worker.env && test -f {d}/tree/worker.env",
            d = pdir(&p)
        ),
    );
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v4");

    // 8. a no-op is one round trip and builds nothing
    let (upload, built, out) = deploy(&p, &[]);
    assert!(upload.is_empty() && !built, "{out}");
    assert!(out.contains("up-to-date"), "{out}");

    // 9. an image no release on the host names any more (its releases gone, as retention
    // removes them) goes with the next deploy; the running one stays
    hosts.ssh_ok(
        host,
        &format!(
            "cd {}/releases && for r in $(grep -l '{v1_image}' */builds | cut -d/ -f1); do [ \"$r\" = \"$(cat ../current)\" ] || rm -rf \"$r\"; done",
            pdir(&p)
        ),
    );
    write(dir, "api/www/index.html", "v5");
    git(dir, &["commit", "-qam", "v5"]);
    deploy(&p, &[]);
    assert_eq!(exec(&p, "api", "wget -qO- http://127.0.0.1:8080/"), "v5");
    let gone = hosts.docker(host, &["image", "inspect", &v1_image]);
    assert!(!gone.status.success(), "{v1_image} is still on the host");
    let running = hosts.docker(host, &["image", "inspect", &api_image(&p)]);
    assert!(running.status.success());
}

#[test]
fn your_code_on_a_mac_like_host() {
    journey(homebase_testkit::MAC);
}

#[test]
fn your_code_on_a_debian_host() {
    journey(2);
}

/// Each bad tree is refused before the host is touched, with what is wrong and the fix.
#[test]
fn bad_trees_are_refused_before_the_host_changes() {
    let hosts = hosts();
    let host = hosts.host(1);
    let p = TestProject::new(&hosts, host, bin(), "badtree", "", "");
    let dir = p.dir.path();
    let port = unique_port();
    checkout(&p, port);
    let refused = |what: &str, needle: &str| {
        let o = p.run(&["deploy"]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        let there = hosts.ssh(host, &format!("test -e {}", pdir(&p)));
        assert!(!there.status.success(), "{what}: the host was touched");
    };

    // a build context outside the project
    p.write(&stack(port, "1").replace("./api", "../elsewhere"), BUDGET);
    refused("context outside", "is outside the project directory");
    p.write(&stack(port, "1"), BUDGET);

    // a symlink pointing out of the project
    std::os::unix::fs::symlink("/etc/passwd", dir.join("api/passwd")).unwrap();
    refused("symlink out", "points out of the project");
    std::fs::remove_file(dir.join("api/passwd")).unwrap();

    // a tree over the size limit (an unignored node_modules)
    write(dir, "api/node_modules/big/index.js", &"y".repeat(300_000));
    p.write(
        &stack(port, "1"),
        &format!("{BUDGET}[files]\nmax_size = \"400KiB\"\n"),
    );
    refused("too large", "`api/node_modules/big/` alone is");
    std::fs::remove_dir_all(dir.join("api/node_modules")).unwrap();
    p.write(&stack(port, "1"), BUDGET);

    // a missing Dockerfile
    std::fs::rename(dir.join("api/Dockerfile"), dir.join("api/Dockerfile.old")).unwrap();
    refused("no Dockerfile", "its Dockerfile");
    std::fs::rename(dir.join("api/Dockerfile.old"), dir.join("api/Dockerfile")).unwrap();

    // a .dockerignore that excludes the Dockerfile
    write(dir, "api/.dockerignore", "Docker*\n");
    refused("ignored Dockerfile", "excludes its Dockerfile");
    std::fs::remove_file(dir.join("api/.dockerignore")).unwrap();

    // and outside git, .dockerignore decides what travels
    std::fs::remove_dir_all(dir.join(".git")).unwrap();
    write(dir, ".dockerignore", "api/static\n");
    let plan: serde_json::Value = serde_json::from_str(&p.ok(&["plan", "--json"])).unwrap();
    assert_eq!(plan["files"]["from_git"], false, "{plan}");
    assert!(plan["files"]["bytes"].as_u64().unwrap() < 100_000, "{plan}");
}

const IDLE: &str = "services:\n  idle:\n    image: hb/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n";

/// The host user's `uid:gid` (what a loop's `user` is set to).
fn host_user(hosts: &Hosts, host: &Host) -> String {
    hosts
        .ssh_ok(host, "echo $(id -u):$(id -g)")
        .trim()
        .to_string()
}

/// A daemon for `p` on its host with its own state directory and port, stopped (and
/// `also` removed) when the guard goes.
fn start_daemon<'a>(p: &TestProject<'a>, also: String) -> DaemonGuard<'a> {
    let d = homebase_testkit::Daemon {
        bin: bin().to_path_buf(),
        hosts: p.hosts,
        host: p.host,
        state: format!("/tmp/hb-code-{}", p.name),
        port: unique_port(),
        project: p.name.clone(),
    };
    p.hosts.ssh_ok(p.host, &format!("mkdir -p {}", d.state));
    d.start();
    DaemonGuard(d, also)
}

/// A loop's image is built on the host from the project (`build` in place of `image`), so
/// the loop needs no `docker build` by hand; the daemon runs the image the release names.
#[test]
fn a_loop_image_is_built_on_the_host() {
    let hosts = hosts();
    let host = hosts.host(homebase_testkit::MAC);
    let compose = IDLE;
    let p = TestProject::new(&hosts, host, bin(), "loopbuild", compose, "");
    let dir = p.dir.path();
    let user = host_user(&hosts, host);
    let home = hosts.ssh_ok(host, "echo $HOME").trim().to_string();
    let ws = format!("{home}/ws-{}", p.name);
    hosts.ssh_ok(host, &format!("mkdir -p {ws}"));
    write(
        dir,
        "agent/Dockerfile",
        "FROM hb/busybox:latest\nARG WORD\nCOPY run.sh /run.sh\nRUN echo $WORD > /word\n",
    );
    write(
        dir,
        "agent/run.sh",
        "cat /word > /workspace/out.txt\necho '<promise>COMPLETE</promise>'\n",
    );
    p.write(
        compose,
        &format!(
            "[services.idle]\nmemory = \"16MiB\"\n\n[loops.agent]\nbuild = {{ context = \"./agent\", args = {{ WORD = \"built-on-the-host\" }} }}\ncommand = \"sh /run.sh\"\nworkspace = \"{ws}\"\nuser = \"{user}\"\nmemory = \"32MiB\"\ntimeout = \"60s\"\nmax_iterations = 1\n"
        ),
    );
    let o = p.run(&["deploy", "--timeout", "60"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("build images on the host (loop-agent)"),
        "{err}"
    );
    assert!(!err.contains("is not on"), "no image warning: {err}");
    let d = start_daemon(&p, ws.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut out = String::new();
    while std::time::Instant::now() < deadline {
        out = String::from_utf8_lossy(&hosts.ssh(host, &format!("cat {ws}/out.txt")).stdout)
            .trim()
            .to_string();
        if !out.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let log = hosts.ssh(host, &format!("tail -20 {}/log", d.0.state));
    drop(d);
    assert_eq!(
        out,
        "built-on-the-host",
        "daemon log:\n{}",
        String::from_utf8_lossy(&log.stdout)
    );
}

/// A loop that works in the project's own repository: deploy brings the laptop's commit
/// (no remote, no step on the host), the loop's iterations are committed on its branch,
/// `loop pull` brings them back; changed instructions are merged in between iterations,
/// and a conflict pauses the loop naming the file.
#[test]
fn a_loop_works_in_the_projects_repository_and_its_commits_come_back() {
    let hosts = hosts();
    let host = hosts.host(homebase_testkit::MAC);
    let compose = IDLE;
    let p = TestProject::new(&hosts, host, bin(), "gitloop", compose, "");
    let dir = p.dir.path();
    let user = host_user(&hosts, host);
    write(
        dir,
        "agent/Dockerfile",
        "FROM hb/pgvector:latest\nCOPY agent.sh /agent.sh\n",
    );
    write(
        dir,
        "agent/agent.sh",
        "cd /workspace\necho \"run $HOMEBASE_RUN iteration $HOMEBASE_ITERATION: $(cat PROMPT.md)\" >> work.txt\n[ \"$HOMEBASE_ITERATION\" -ge 2 ] && echo '<promise>COMPLETE</promise>'\nexit 0\n",
    );
    write(dir, "PROMPT.md", "first instructions");
    write(dir, "work.txt", "the laptop's line\n");
    write(dir, ".gitignore", "ssh/\n");
    p.write(
        compose,
        &format!(
            "[services.idle]\nmemory = \"16MiB\"\n\n[loops.ralph]\nbuild = \"./agent\"\ncommand = \"sh /agent.sh\"\nworkspace = \"git\"\nuser = \"{user}\"\nmemory = \"64MiB\"\ntimeout = \"60s\"\nmax_iterations = 5\n"
        ),
    );
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "the project"]);
    let o = p.run(&["deploy", "--timeout", "60"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = start_daemon(&p, String::new());
    let status = |want: &str| -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let (_, body) = d.0.api(&format!("/api/loops?project={}", p.name));
            let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
            let l = all
                .into_iter()
                .find(|l| l["name"] == "ralph")
                .unwrap_or_default();
            if l["state"] == want {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "loop not {want}: {l:#}\n{}",
                String::from_utf8_lossy(
                    &hosts
                        .ssh(host, &format!("tail -30 {}/log", d.0.state))
                        .stdout
                )
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    status("completed");

    // every iteration is a commit on homebase/ralph, and the history says which
    let with_daemon = |args: &[&str]| p.ok_with_daemon(&d.0, args);
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&with_daemon(&["loop", "history", "ralph", "--json"])).unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(
        history
            .iter()
            .all(|i| i["commit"].as_str().is_some_and(|c| c.len() == 40)),
        "{history:#?}"
    );

    // loop pull: the branch in the laptop's repository, and what came
    let pulled: serde_json::Value =
        serde_json::from_str(&p.ok(&["loop", "pull", "ralph", "--json"])).unwrap();
    assert_eq!(pulled["branch"], "homebase/ralph");
    let subjects: Vec<&str> = pulled["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        vec![
            "homebase: loop ralph iteration 1 (run 1)",
            "homebase: loop ralph iteration 2 (run 1)"
        ]
    );
    assert_eq!(pulled["files"], serde_json::json!(["work.txt"]));
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["show", "homebase/ralph:work.txt"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the laptop's line\nrun 1 iteration 1: first instructions\nrun 1 iteration 2: first instructions\n"
    );

    // changed instructions reach the loop with the next deploy, merged into its branch
    write(dir, "PROMPT.md", "second instructions");
    git(dir, &["commit", "-qam", "new instructions"]);
    p.ok(&["deploy", "--timeout", "60"]);
    with_daemon(&["loop", "start", "ralph"]);
    status("completed");
    let work = hosts.ssh_ok(
        host,
        &format!("cat {}/loops/ralph/workspace/work.txt", pdir(&p)),
    );
    assert!(
        work.contains("run 2 iteration 1: second instructions"),
        "{work}"
    );

    // a change on the laptop that conflicts with the loop's: the loop pauses, naming it
    write(dir, "work.txt", "the laptop rewrote this line\n");
    git(dir, &["commit", "-qam", "conflicting"]);
    p.ok(&["deploy", "--timeout", "60"]);
    with_daemon(&["loop", "start", "ralph"]);
    let paused = status("paused");
    let reason = paused["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("conflicts") && reason.contains("work.txt"),
        "{paused:#}"
    );
}

/// The second review's attack on the daemon's token, and the helper that ran the agent's
/// transport. Loop `reader` swaps `.git/refs/tags` for a link to the daemon's directory and
/// points HEAD at `refs/tags/token`: the daemon reads HEAD before every iteration and must
/// not get the token through the link. Loop `fetcher` makes its checkout a partial clone
/// whose promisor remote is reached by an `sshCommand` of its own, and leaves a commit whose
/// parent is missing: merging the next deployed commit walks to it, and git would fetch it
/// by running that command in the helper. Neither may happen: the token appears nowhere
/// (history, events, the workspaces, the daemon's log) and the command never runs.
#[test]
fn an_agent_cannot_reach_the_daemons_token_through_its_checkout() {
    let hosts = hosts();
    let host = hosts.host(homebase_testkit::MAC);
    let compose = IDLE;
    let p = TestProject::new(&hosts, host, bin(), "thief", compose, "");
    let dir = p.dir.path();
    let user = host_user(&hosts, host);
    let state = format!("/tmp/hb-code-{}", p.name);
    write(
        dir,
        "agent/Dockerfile",
        "FROM hb/pgvector:latest\nCOPY reader.sh fetcher.sh /\n",
    );
    write(
        dir,
        "agent/reader.sh",
        &format!(
            "cd /workspace\nexport HOME=/tmp\nif [ \"$HOMEBASE_ITERATION\" = 1 ]; then\n  rm -rf .git/refs/tags && ln -s {state} .git/refs/tags\n  printf 'ref: refs/tags/token\\n' > .git/HEAD\nfi\necho \"iteration $HOMEBASE_ITERATION\"\n"
        ),
    );
    write(
        dir,
        "agent/fetcher.sh",
        r#"cd /workspace
export HOME=/tmp
if [ "$HOMEBASE_ITERATION" = 1 ]; then
  printf '#!/bin/sh\ncat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " " >> /workspace/leaked.txt\necho ran >> /workspace/ssh-ran.txt\nexit 1\n' > .leak.sh
  chmod +x .leak.sh
  t=$(git write-tree)
  c=$(printf 'tree %s\nparent 1234567890123456789012345678901234567890\nauthor a <a@a> 1 +0000\ncommitter a <a@a> 1 +0000\n\nx\n' "$t" | git hash-object -t commit -w --literally --stdin)
  git update-ref HEAD "$c" || exit 7
  git config core.repositoryformatversion 1
  git config extensions.partialClone origin
  git config remote.origin.url ssh://example.invalid/repo
  git config remote.origin.promisor true
  git config core.sshCommand /workspace/.leak.sh
fi
echo '<promise>COMPLETE</promise>'
"#,
    );
    write(dir, "PROMPT.md", "first");
    let loop_at = |name: &str, extra: &str| {
        format!(
            "\n[loops.{name}]\nbuild = \"./agent\"\ncommand = \"sh /{name}.sh\"\nworkspace = \"git\"\nuser = \"{user}\"\nmemory = \"64MiB\"\ntimeout = \"60s\"\n{extra}\n"
        )
    };
    p.write(
        compose,
        &format!(
            "[services.idle]\nmemory = \"16MiB\"\n{}{}",
            loop_at("reader", "max_iterations = 3\nbreaker_no_progress = 10\n"),
            loop_at("fetcher", "max_iterations = 5\n"),
        ),
    );
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "the project"]);
    p.ok(&["deploy", "--timeout", "60"]);
    let d = start_daemon(&p, String::new());
    let token = hosts
        .ssh_ok(host, &format!("cat {state}/token"))
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    let loop_state = |name: &str| -> serde_json::Value {
        let (_, body) = d.0.api(&format!("/api/loops?project={}", p.name));
        let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        all.into_iter()
            .find(|l| l["name"] == name)
            .unwrap_or_default()
    };
    let wait = |name: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let l = loop_state(name);
            if pred(&l) {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {l:#}\n{}",
                String::from_utf8_lossy(&hosts.ssh(host, &format!("tail -30 {state}/log")).stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    wait("reader", &|l| {
        l["iterations"].as_i64() >= Some(3) && l["state"] != "active"
    });
    wait("fetcher", &|l| l["state"] == "completed");
    // a new deployed commit: merging it walks the fetcher's history to the missing parent
    write(dir, "PROMPT.md", "second");
    git(dir, &["commit", "-qam", "second"]);
    p.ok(&["deploy", "--timeout", "60"]);
    let (code, body) = d.0.post(&format!("/api/loops/{}/fetcher/start", p.name));
    assert_eq!(code, 200, "{body}");
    wait("fetcher", &|l| {
        l["iterations"].as_i64() >= Some(1) && l["state"] != "active"
    });
    std::thread::sleep(std::time::Duration::from_secs(1));

    let ws = |name: &str| format!("{}/loops/{name}/workspace", pdir(&p));
    let ran = hosts.ssh(host, &format!("cat {}/ssh-ran.txt", ws("fetcher")));
    assert!(
        !ran.status.success(),
        "the agent's ssh command ran in a git helper: {}",
        String::from_utf8_lossy(&ran.stdout)
    );
    let everything = format!(
        "{}\n{}\n{:?}\n{}",
        d.0.api(&format!("/api/loops/{}/reader/history?limit=100", p.name)).1,
        d.0.api(&format!("/api/loops/{}/fetcher/history?limit=100", p.name)).1,
        d.0.events(),
        String::from_utf8_lossy(
            &hosts
                .ssh(host, &format!("cat {state}/log; cat {}/leaked.txt {}/leaked.txt 2>/dev/null; grep -rl {token} {} {} 2>/dev/null", ws("reader"), ws("fetcher"), ws("reader"), ws("fetcher")))
                .stdout
        )
    );
    assert!(!everything.contains(&token), "the daemon's token leaked");
    let log = hosts.ssh_ok(host, &format!("cat {state}/log"));
    assert!(
        log.contains("refused: the workspace's git configuration makes a partial clone"),
        "{log}"
    );
}
