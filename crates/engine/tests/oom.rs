//! An out-of-memory kill read from a real engine, through the flag and through the event
//! log (Docker can set the flag too late: the loops read both), and a kill by hand that is
//! not one.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use homebase_engine::Engine;
use homebase_testkit::{hosts, unique_name};

fn docker_ok(hosts: &homebase_testkit::Hosts, h: &homebase_testkit::Host, args: &[&str]) -> String {
    let o = hosts.docker(h, args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn an_oom_kill_is_in_the_event_log_and_a_kill_by_hand_is_not() {
    let hosts = hosts();
    let h = hosts.host(5);
    let engine = Engine::connect(&h.docker_host).await.unwrap();
    let since = now() - 1;
    let hog = unique_name("oom-hog");
    let killed = unique_name("oom-killed");
    docker_ok(
        &hosts,
        h,
        &[
            "run",
            "-d",
            "--name",
            &hog,
            "--memory",
            "32m",
            "hb/busybox:latest",
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    docker_ok(
        &hosts,
        h,
        &[
            "run",
            "-d",
            "--name",
            &killed,
            "hb/busybox:latest",
            "sleep",
            "600",
        ],
    );
    docker_ok(&hosts, h, &["kill", &killed]);
    assert_eq!(docker_ok(&hosts, h, &["wait", &hog]), "137");
    assert_eq!(docker_ok(&hosts, h, &["wait", &killed]), "137");

    let oom = engine.exit(&hog).await.unwrap();
    assert_eq!((oom.running, oom.exit_code), (false, 137));
    assert!(engine.oom_logged(&hog, since).await.unwrap());
    let by_hand = engine.exit(&killed).await.unwrap();
    assert_eq!((by_hand.exit_code, by_hand.oom_killed), (137, false));
    assert!(!engine.oom_logged(&killed, since).await.unwrap());
    // an event from before `since` is not read
    assert!(!engine.oom_logged(&hog, now() + 2).await.unwrap());
    docker_ok(&hosts, h, &["rm", "-f", &hog, &killed]);
}
