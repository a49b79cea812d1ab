//! Proof that the test hosts are real: reached only over SSH, each with its own engine,
//! published ports private to the host, and a real PostgreSQL with pgvector.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use homebase_testkit::{ProjectGuard, hosts, unique_name, unique_port};

#[test]
fn compose_over_ssh_gives_healthy_limited_containers() {
    let hosts = hosts();
    let h1 = hosts.host(1);
    let project = unique_name("harness");
    let _guard = ProjectGuard {
        hosts: &hosts,
        host: h1,
        project: project.clone(),
    };
    let port = unique_port();
    let compose = format!(
        r#"
services:
  web:
    image: hb/busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    mem_limit: 64m
    ports: ["127.0.0.1:{port}:8080"]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/"]
      interval: 1s
      retries: 20
  sleeper:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    mem_limit: 32m
"#
    );
    let out = hosts.ssh_with_input(
        h1,
        &format!("docker compose -p {project} -f - up -d --wait"),
        compose.as_bytes(),
    );
    assert!(
        out.status.success(),
        "compose up over ssh: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ps = hosts.ssh_ok(
        h1,
        &format!("docker ps --filter label=com.docker.compose.project={project} --format '{{{{.Names}}}} {{{{.Status}}}}'"),
    );
    assert!(
        ps.lines()
            .any(|l| l.contains("web") && l.contains("(healthy)")),
        "{ps}"
    );
    let limits = hosts.ssh_ok(
        h1,
        &format!(
            "docker inspect --format '{{{{.Name}}}} {{{{.HostConfig.Memory}}}}' $(docker ps -q --filter label=com.docker.compose.project={project})"
        ),
    );
    assert!(
        limits
            .lines()
            .any(|l| l.contains("web") && l.ends_with(" 67108864")),
        "{limits}"
    );
    assert!(
        limits
            .lines()
            .any(|l| l.contains("sleeper") && l.ends_with(" 33554432")),
        "{limits}"
    );

    // The port answers on the host's own loopback...
    let inside = hosts.ssh_ok(
        h1,
        &format!(
            "wget -qO- http://127.0.0.1:{port}/ 2>/dev/null || curl -s http://127.0.0.1:{port}/"
        ),
    );
    assert_eq!(inside.trim(), "ok");
    // ...and not from the laptop side, neither on the host's address nor on our loopback.
    for addr in [
        format!("{}:{port}", h1.address),
        format!("127.0.0.1:{port}"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
            "{addr} is reachable from the laptop side"
        );
    }
}

#[test]
fn hosts_have_separate_engines() {
    let hosts = hosts();
    let (h1, h2) = (hosts.host(1), hosts.host(2));
    let project = unique_name("isolation");
    let _guard = ProjectGuard {
        hosts: &hosts,
        host: h2,
        project: project.clone(),
    };
    hosts.ssh_ok(
        h2,
        &format!("docker run -d --name {project} --label com.docker.compose.project={project} hb/busybox:latest sleep 600"),
    );
    let on2 = hosts.ssh_ok(
        h2,
        &format!("docker ps -a --filter name={project} --format '{{{{.Names}}}}'"),
    );
    assert_eq!(on2.trim(), project);
    let on1 = hosts.ssh_ok(
        h1,
        &format!("docker ps -a --filter name={project} --format '{{{{.Names}}}}'"),
    );
    assert_eq!(on1.trim(), "", "host 1 sees host 2's container");
    hosts.ssh_ok(h2, &format!("docker rm -f {project}"));
}

#[test]
fn pgvector_answers_a_distance_query() {
    let hosts = hosts();
    let h1 = hosts.host(1);
    let name = unique_name("pg");
    let _guard = ProjectGuard {
        hosts: &hosts,
        host: h1,
        project: name.clone(),
    };
    hosts.ssh_ok(
        h1,
        &format!(
            "docker run -d --name {name} --label com.docker.compose.project={name} -e POSTGRES_PASSWORD=pw hb/pgvector:latest"
        ),
    );
    let sql = "CREATE EXTENSION IF NOT EXISTS vector; CREATE TABLE items (id int, embedding vector(3)); \
               INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]'); \
               SELECT id FROM items ORDER BY embedding <-> '[3,1,2]' LIMIT 1;";
    let script = format!(
        "for i in $(seq 60); do docker exec {name} pg_isready -h 127.0.0.1 -U postgres >/dev/null 2>&1 && break; sleep 0.5; done; \
         docker exec {name} psql -h 127.0.0.1 -U postgres -tA -c \"{sql}\""
    );
    let out = hosts.ssh_with_input(h1, &script, b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().last(), Some("1"), "{stdout}");
    hosts.ssh_ok(h1, &format!("docker rm -f {name}"));
}
