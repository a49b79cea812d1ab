//! `homebase backup` on a real host with real PostgreSQL: write rows, back up, destroy the
//! volumes, restore, the rows are back; a volume archive comes back too; pull to the laptop
//! with checksums verified; retention prunes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use homebase_testkit::{TestProject, hosts};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

#[test]
fn backup_destroy_restore_pull_and_prune() {
    let hosts = hosts();
    // the Mac-like host: no sha256sum, the engine in its VM
    let h = hosts.host(homebase_testkit::MAC);
    let compose = r#"
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw, POSTGRES_USER: brain, POSTGRES_DB: brain}
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U brain"], interval: 1s, retries: 60}
  files:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
    volumes: [notes:/notes]
volumes:
  pgdata: {}
  notes: {}
"#;
    let budget = "[services.db]\nmemory = \"512MiB\"\n[services.files]\nmemory = \"16MiB\"\n[backup]\nkeep_daily = 1\nkeep_weekly = 1\n";
    let p = TestProject::new(&hosts, h, bin(), "backup", compose, budget);
    p.ok(&["deploy"]);
    let psql = |sql: &str| {
        let o = p.exec(
            "db",
            &format!("psql -h 127.0.0.1 -U brain -d brain -tA -c \"{sql}\""),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // the entrypoint's password auth for TCP: use the local socket via PGPASSWORD-free trust
    psql(
        "CREATE TABLE memories (id int, body text); INSERT INTO memories SELECT g, 'memory ' || g FROM generate_series(1, 500) g",
    );
    assert!(
        p.exec("files", "echo remember-this > /notes/n.txt")
            .status
            .success()
    );

    let out: serde_json::Value = serde_json::from_str(&p.ok(&["backup", "now", "--json"])).unwrap();
    let id = out["backup"]["id"].as_str().unwrap().to_string();
    let files = out["backup"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{out}");
    assert!(
        files
            .iter()
            .any(|f| f["service"] == "db" && f["kind"] == "pg_dump")
    );
    assert!(
        files
            .iter()
            .any(|f| f["service"] == "files" && f["kind"] == "volume" && f["path"] == "/notes")
    );
    // the files service was unpaused after its archive
    assert_eq!(p.state("files"), "running");

    // Preflight checks the last backup's files on the host (here with `shasum`: a Mac has
    // no sha256sum); a file changed after the backup is named.
    let item = |r: &serde_json::Value| homebase_testkit::checklist_item(r, "backup").clone();
    let r = homebase_testkit::json_of(&p.run(&["preflight", "--json"]));
    assert_eq!(item(&r)["state"], "ok", "{r:#}");
    let dump_on_host = format!("~/.homebase/{}/backups/{id}/db.pgdump", p.name);
    hosts.ssh_ok(
        h,
        &format!("cp {dump_on_host} {dump_on_host}.kept && echo x >> {dump_on_host}"),
    );
    let r = homebase_testkit::json_of(&p.run(&["preflight", "--json"]));
    assert_eq!(item(&r)["state"], "missing", "{r:#}");
    assert!(
        item(&r)["detail"]
            .as_str()
            .unwrap()
            .ends_with("does not match its checksums: db.pgdump"),
        "{r:#}"
    );
    hosts.ssh_ok(h, &format!("mv {dump_on_host}.kept {dump_on_host}"));

    // Pull to the laptop, checksums verified.
    let to = tempfile::tempdir().unwrap();
    let pulled: serde_json::Value = serde_json::from_str(&p.ok(&[
        "backup",
        "pull",
        "--to",
        to.path().to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(pulled["verified"], true);
    let dump = to.path().join(&p.name).join(&id).join("db.pgdump");
    assert!(
        std::fs::read(&dump).unwrap().starts_with(b"PGDMP"),
        "not a pg_dump custom-format file"
    );

    // Destroy the volumes, deploy again (empty), restore: the rows and the file are back.
    let down = hosts.docker(h, &["compose", "-p", &p.name, "down", "-v"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    p.ok(&["deploy"]);
    assert!(
        !p.exec("files", "test -f /notes/n.txt").status.success(),
        "the volume was not destroyed"
    );
    assert_eq!(
        psql("SELECT count(*) FROM pg_tables WHERE tablename = 'memories'"),
        "0"
    );
    p.ok(&["backup", "restore", &id]);
    assert_eq!(psql("SELECT count(*) FROM memories"), "500");
    let mut back = String::new();
    for _ in 0..50 {
        let o = p.exec("files", "cat /notes/n.txt");
        back = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(back, "remember-this");

    // Retention (keep 1 daily, 1 weekly): a second backup the same day prunes nothing of
    // that day, and the backup of an older day goes.
    let old = "20261001T030000Z";
    hosts.ssh_ok(
        h,
        &format!(
            "cd ~/.homebase/{p}/backups && cp -r {id} {old} && sed -i 's/\"id\": *\"{id}\"/\"id\": \"{old}\"/' {old}/manifest.json",
            p = p.name
        ),
    );
    // (no pause: backups in the same second get ids of their own)
    let second: serde_json::Value =
        serde_json::from_str(&p.ok(&["backup", "now", "--json"])).unwrap();
    assert_eq!(second["pruned"], serde_json::json!([old]));
    assert_ne!(second["backup"]["id"].as_str(), Some(id.as_str()));
    let ls: serde_json::Value = serde_json::from_str(&p.ok(&["backup", "ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2, "{ls:#}");

    // A deploy that changes the database backs it up first.
    let toml = std::fs::read_to_string(p.dir.path().join("homebase.toml"))
        .unwrap()
        .replace("memory = \"512MiB\"", "memory = \"600MiB\"");
    std::fs::write(p.dir.path().join("homebase.toml"), toml).unwrap();
    let deploy = p.run(&["deploy"]);
    let stderr = String::from_utf8_lossy(&deploy.stderr);
    assert!(deploy.status.success(), "{stderr}");
    assert!(stderr.contains("taken before the change"), "{stderr}");
    let ls: serde_json::Value = serde_json::from_str(&p.ok(&["backup", "ls", "--json"])).unwrap();
    assert_eq!(
        ls.as_array().unwrap().len(),
        3,
        "no new backup before the change: {ls:#}"
    );
    assert_eq!(psql("SELECT count(*) FROM memories"), "500");

    // A mistyped id names the ones there are.
    let bad = p.run(&["backup", "restore", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the backups are:"));

    // A backup is two commands: the dumps; then the manifest, its rename and the list that
    // retention reads. A third removes what retention drops.
    let count = |p: &TestProject| -> usize {
        let ls: serde_json::Value =
            serde_json::from_str(&p.ok(&["backup", "ls", "--json"])).unwrap();
        ls.as_array().unwrap().len()
    };
    let before = count(&p);
    let (_, commands) = p.count_ssh(&["backup", "now"], &[]);
    let dropped = before + 1 - count(&p);
    assert_eq!(commands, 2 + usize::from(dropped > 0), "dropped {dropped}");
}

/// What the host says about its backups is not trusted: a manifest whose id or file names
/// would reach outside the laptop's backup directory, or into a script, is skipped; ids on
/// the command line are checked; pulled files are private and kept out of git; a restore
/// that fails leaves the service running.
#[test]
fn hostile_manifests_and_ids_are_refused_and_a_failed_restore_leaves_the_service_up() {
    let hosts = hosts();
    let h = hosts.host(1);
    let compose = r#"
services:
  files:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
    volumes: [notes:/notes]
volumes:
  notes: {}
"#;
    let p = TestProject::new(
        &hosts,
        h,
        bin(),
        "hostile",
        compose,
        "[services.files]\nmemory = \"16MiB\"\n",
    );
    p.ok(&["deploy"]);
    let out: serde_json::Value = serde_json::from_str(&p.ok(&["backup", "now", "--json"])).unwrap();
    let id = out["backup"]["id"].as_str().unwrap().to_string();
    let home = hosts.ssh_ok(h, "echo $HOME").trim().to_string();
    let backups = format!("{home}/.homebase/{}/backups", p.name);
    let marker = format!("{home}/{}", homebase_testkit::unique_name("pwned"));
    let sha = "0".repeat(64);
    // planted by whatever controls the host's files (an agent that escaped, say)
    for (dir, manifest) in [
        (
            "20990101-000000",
            format!(
                r#"{{"id":"../../../../../tmp/escape","project":"{}","time":1,"files":[]}}"#,
                p.name
            ),
        ),
        (
            "20990101-000001",
            format!(
                r#"{{"id":"20990101-000001","project":"{}","time":1,"files":[{{"service":"files","kind":"volume","path":"/notes","file":"../../../.bashrc","bytes":1,"sha256":"{sha}"}}]}}"#,
                p.name
            ),
        ),
        (
            "20990101-000002",
            format!(
                r#"{{"id":"20990101-000002","project":"{}","time":1,"files":[{{"service":"files","kind":"volume","path":"/notes","file":"x;touch {marker}","bytes":1,"sha256":"{sha}"}}]}}"#,
                p.name
            ),
        ),
    ] {
        hosts.ssh_with_input(
            h,
            &format!("mkdir -p {backups}/{dir} && cat > {backups}/{dir}/manifest.json"),
            manifest.as_bytes(),
        );
    }
    let ls = p.run(&["backup", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed:#}");
    let warned = String::from_utf8_lossy(&ls.stderr);
    assert!(
        warned.contains("skipping backup `20990101-000001`"),
        "{warned}"
    );
    for bad in ["20990101-000002", "../../x", "20990101-000000"] {
        let o = p.run(&["backup", "restore", bad, "files"]);
        assert_ne!(o.status.code(), Some(0), "{bad}");
    }
    let o = p.run(&["backup", "restore", "../x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = p.run(&["rollback", "../../other/releases/x"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a release id"));
    assert_eq!(
        hosts
            .ssh_ok(h, &format!("ls {marker} 2>/dev/null; true"))
            .trim(),
        ""
    );
    hosts.ssh_ok(h, &format!("rm -rf {backups}/20990101-*"));

    // pull into the project (a git checkout): private files, kept out of git
    assert!(
        std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(p.dir.path())
            .status()
            .unwrap()
            .success()
    );
    p.ok(&["backup", "pull"]);
    let dest = p
        .dir
        .path()
        .join(".homebase-backups")
        .join(&p.name)
        .join(&id);
    use std::os::unix::fs::PermissionsExt;
    for f in std::fs::read_dir(&dest).unwrap() {
        let mode = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let ignore = std::fs::read_to_string(p.dir.path().join(".gitignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == ".homebase-backups/"),
        "{ignore}"
    );
    p.ok(&["backup", "pull"]);
    let again = std::fs::read_to_string(p.dir.path().join(".gitignore")).unwrap();
    assert_eq!(again, ignore, "listed once");

    // a damaged archive (with a matching checksum): the restore fails, the service runs
    let archive = format!("{backups}/{id}/files-0.tar.gz");
    let fixed = hosts.ssh_ok(
        h,
        &format!(
            "head -c 100 /dev/urandom > {archive} && s=$(sha256sum {archive} | cut -d' ' -f1) && \
             sed -i \"s/\\\"sha256\\\": *\\\"[0-9a-f]*\\\"/\\\"sha256\\\": \\\"$s\\\"/\" {backups}/{id}/manifest.json && echo $s"
        ),
    );
    assert_eq!(fixed.trim().len(), 64);
    let o = p.run(&["backup", "restore", &id]);
    assert_ne!(o.status.code(), Some(0), "a damaged archive restored");
    assert_eq!(
        p.state("files"),
        "running",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
