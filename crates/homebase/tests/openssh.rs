//! homebase under OpenSSH configurations it did not write: an alias from the user's
//! configuration file, reached through a jump host (`ProxyJump`), with its own known-hosts
//! file. `ssh-config` prints a block OpenSSH can use as it is, and the host-key hints name
//! the entry and the file OpenSSH really uses, the jump host's included.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;

use homebase_testkit::{TestProject, hosts, unique_port};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_homebase"))
}

fn compose(port: u16) -> String {
    format!(
        "services:\n  web:\n    image: hb/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n    ports: [\"127.0.0.1:{port}:8080\"]\n    stop_signal: SIGKILL\n"
    )
}

/// The known-hosts lines of `host` in `file`.
fn lines_of(file: &Path, address: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(address))
        .map(str::to_string)
        .collect()
}

#[test]
fn aliases_jump_hosts_and_known_hosts_files_are_read_as_openssh_reads_them() {
    let hosts = hosts();
    let target = hosts.host(3);
    let jump = hosts.host(2);
    let p = TestProject::new(
        &hosts,
        target,
        bin(),
        "openssh",
        &compose(unique_port()),
        "[services.web]\nmemory = \"16MiB\"\n",
    );
    let dir = p.dir.path();
    let alias = format!("mini-{}", p.name);
    let jump_alias = format!("jump-{}", p.name);
    // known hosts of their own for the target and for the jump host
    let target_known = dir.join("known_target");
    let jump_known = dir.join("known_jump");
    std::fs::write(
        &target_known,
        lines_of(&hosts.known_hosts, &target.address).join("\n") + "\n",
    )
    .unwrap();
    std::fs::write(
        &jump_known,
        lines_of(&hosts.known_hosts, &jump.address).join("\n") + "\n",
    )
    .unwrap();
    let config = dir.join("ssh_config");
    let write_config = |jump_known: &Path| {
        std::fs::write(
            &config,
            format!(
                "Host {alias}\n  HostName {}\n  User {}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  ProxyJump {jump_alias}\n\nHost {jump_alias}\n  HostName {}\n  User {}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                target.address,
                target.user,
                target_known.display(),
                jump.address,
                jump.user,
                jump_known.display(),
                key = hosts.key.display(),
            ),
        )
        .unwrap();
    };
    write_config(&jump_known);
    let toml = |ssh: &str, known: &Path| {
        format!(
            "[project]\nname = \"{}\"\n\n[host]\nssh = \"{ssh}\"\nssh_config = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout_secs = 5\npersist_secs = 0\n\n[budget]\nhost_memory = \"4GiB\"\n\n[services.web]\nmemory = \"16MiB\"\n",
            p.name,
            config.display(),
            known.display()
        )
    };
    std::fs::write(dir.join("homebase.toml"), toml(&alias, &target_known)).unwrap();

    // through the alias and the jump host
    p.ok(&["deploy", "--timeout", "60"]);

    // ssh-config: the real host, user, known-hosts file and jump, usable by OpenSSH as is
    let block = p.ok(&["ssh-config"]);
    assert!(
        block.contains(&format!("  HostName {}\n", target.address)),
        "{block}"
    );
    assert!(
        block.contains(&format!("  User {}\n", target.user)),
        "{block}"
    );
    assert!(
        block.contains(&format!("  ProxyJump {jump_alias}\n")),
        "{block}"
    );
    assert!(
        block.contains(&format!(
            "  UserKnownHostsFile {}\n",
            target_known.display()
        )),
        "{block}"
    );
    let generated = dir.join("generated_config");
    let jump_block = std::fs::read_to_string(&config).unwrap();
    let jump_block = &jump_block[jump_block.find(&format!("Host {jump_alias}")).unwrap()..];
    std::fs::write(
        &generated,
        format!(
            "{block}\n{jump_block}\nHost *\n  IdentityFile {}\n",
            hosts.key.display()
        ),
    )
    .unwrap();
    let o = Command::new("ssh")
        .args(["-F", generated.to_str().unwrap(), "-o", "BatchMode=yes"])
        .arg(format!("homebase-{}", p.name))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ssh with the printed block: {}\n{block}",
        String::from_utf8_lossy(&o.stderr)
    );

    // the target's key changed: the hint names its entry and the file in use
    let other_key = lines_of(&hosts.known_hosts, &jump.address)[0]
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let wrong_target = dir.join("known_target_wrong");
    std::fs::write(&wrong_target, format!("{} {other_key}\n", target.address)).unwrap();
    std::fs::write(dir.join("homebase.toml"), toml(&alias, &wrong_target)).unwrap();
    let o = p.run(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("CHANGED"), "{err}");
    assert!(
        err.contains(&format!(
            "ssh-keygen -R {} -f {}",
            target.address,
            wrong_target.display()
        )),
        "{err}"
    );

    // unknown behind a jump host: ssh-keyscan cannot go through it; the hint says what can
    let empty = dir.join("known_empty");
    std::fs::write(&empty, "").unwrap();
    std::fs::write(dir.join("homebase.toml"), toml(&alias, &empty)).unwrap();
    let o = p.run(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("is not known"), "{err}");
    assert!(err.contains("StrictHostKeyChecking=accept-new"), "{err}");
    assert!(err.contains(&empty.display().to_string()), "{err}");

    // unknown without a jump: the keyscan at the resolved name, into the file in use, with
    // the fingerprint the host offers
    let direct = format!("direct-{}", p.name);
    std::fs::write(
        &config,
        format!(
            "{}\nHost {direct}\n  HostName {}\n  User {}\n  IdentityFile {}\n",
            std::fs::read_to_string(&config).unwrap(),
            target.address,
            target.user,
            hosts.key.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("homebase.toml"), toml(&direct, &empty)).unwrap();
    let o = p.run(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "ssh-keyscan {} >> {}",
            target.address,
            empty.display()
        )),
        "{err}"
    );
    assert!(err.contains("SHA256:"), "{err}");

    // the jump host's key changed: OpenSSH's own reason, naming the jump host
    let wrong_jump = dir.join("known_jump_wrong");
    let target_key = lines_of(&hosts.known_hosts, &target.address)[0]
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    std::fs::write(&wrong_jump, format!("{} {target_key}\n", jump.address)).unwrap();
    write_config(&wrong_jump);
    std::fs::write(dir.join("homebase.toml"), toml(&alias, &target_known)).unwrap();
    let o = p.run(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("CHANGED") && err.contains("jump host"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "ssh-keygen -R {} -f {}",
            jump.address,
            wrong_jump.display()
        )),
        "{err}"
    );
}
