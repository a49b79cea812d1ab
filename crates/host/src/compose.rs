//! The Compose half of the host protocol: a project on one host.

use std::time::Duration;

use anyhow::Result;
use homebase_remote::sh_quote;
use serde_json::Value;

use super::{HostProject, PsEntry};

/// Containers of the project (all states).
pub(super) fn ps(host: &HostProject) -> Result<Vec<PsEntry>> {
    let out = host.session.check(&format!(
        "docker ps -a --filter label=com.docker.compose.project={} --format '{{{{json .}}}}'",
        sh_quote(&host.project)
    ))?;
    Ok(out.lines().filter_map(parse_docker_ps_line).collect())
}

/// `docker compose up -d --wait` of a release.
pub(super) fn up(host: &HostProject, id: &str, wait_timeout: Duration) -> Result<(bool, String)> {
    let script = format!(
        "cd {d}/releases/{id} && {c} -f compose.yml up -d --wait --wait-timeout {t} --remove-orphans 2>&1",
        d = host.dir(),
        c = host.compose(),
        t = wait_timeout.as_secs().max(1)
    );
    // Compose's own wait, plus time for pulls and the stop of the old containers
    let deadline = (wait_timeout + Duration::from_secs(300)).max(homebase_remote::STEP_DEADLINE);
    let out = host.session.run_with_deadline(&script, b"", deadline)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    ))
}

pub(super) fn down(host: &HostProject, id: &str) -> Result<()> {
    host.session.check(&format!(
        "cd {d}/releases/{id} && {c} -f compose.yml down --remove-orphans",
        d = host.dir(),
        c = host.compose()
    ))?;
    Ok(())
}

/// `healthy SERVICES`: every one of them has a running container of project `$p` that is
/// healthy or has no healthcheck; else it returns 1 with the others in `$unhealthy`. (It
/// never calls a `say` of its own: on macOS `/usr/bin/say` speaks aloud.)
pub const HEALTHY_FN: &str = r#"healthy() {
  ps=$(docker ps --filter "label=com.docker.compose.project=$p" --filter status=running --format '{{.Label "com.docker.compose.service"}} {{.Status}}') || return 1
  bad=
  for s in $1; do
    printf '%s\n' "$ps" | awk -v s="$s" '$1 == s && $2 == "Up" && !/\(unhealthy\)/ && !/\(health: starting\)/ { f = 1 } END { exit !f }' || bad="$bad $s"
  done
  unhealthy=$bad
  [ -z "$bad" ]
}
"#;

/// The script that prints (or follows) a service's logs.
pub(super) fn logs(
    host: &HostProject,
    service: &str,
    tail: usize,
    since: &str,
    follow: bool,
) -> String {
    if follow {
        // Compose follows every container of the service, new ones too
        return format!(
            "{} logs --no-color --tail {tail}{since} --follow {}",
            host.compose(),
            sh_quote(service)
        );
    }
    // the engine's own logs of each container, prefixed with its name as Compose does: no
    // Compose start (~0.1 s on the host)
    format!(
        "p={p}; s={s}; names=$(docker ps -a --filter \"label=com.docker.compose.project=$p\" --filter \"label=com.docker.compose.service=$s\" --format '{{{{.Names}}}}') || exit 1; \
         [ -n \"$names\" ] || {{ echo \"service $s has no container on this host; deploy it first\" >&2; exit 0; }}; \
         for c in $names; do docker logs --tail {tail}{since} \"$c\" 2>&1 | sed \"s/^/$c  | /\"; done",
        p = sh_quote(&host.project),
        s = sh_quote(service),
    )
}

/// Shell (with `$p` the project, `$s` the service) that restarts the service's containers
/// and waits up to `timeout` seconds until it is healthy; prints `none`, `failed` and the
/// engine's error, or `restarted NAMES` then `healthy` or `unhealthy`.
pub(super) fn restart(timeout: u64) -> String {
    format!(
        "ids=$(docker ps -aq --filter \"label=com.docker.compose.project=$p\" --filter \"label=com.docker.compose.service=$s\"); \
         [ -n \"$ids\" ] || {{ echo none; exit 0; }}; \
         err=$(docker restart $ids 2>&1 >/dev/null) || {{ echo failed; printf '%s\\n' \"$err\"; exit 0; }}; \
         echo \"restarted $(docker inspect --format '{{{{.Name}}}}' $ids | tr -d / | tr '\\n' ' ')\"; \
         {HEALTHY_FN}n=0; until healthy \"$s\" >/dev/null; do n=$((n + 1)); [ $n -gt {timeout} ] && {{ echo unhealthy; exit 0; }}; sleep 1; done; echo healthy"
    )
}

/// Shell that sets `$c` to the service's running container, or fails naming it.
pub(super) fn locate(project: &str, service: &str) -> String {
    format!(
        "c=$(docker ps --filter {p} --filter {s} --filter status=running --format '{{{{.Names}}}}' | head -n 1); [ -n \"$c\" ] || {{ echo {msg} >&2; exit 125; }}",
        p = sh_quote(&format!("label=com.docker.compose.project={project}")),
        s = sh_quote(&format!("label=com.docker.compose.service={service}")),
        msg = sh_quote(&format!(
            "service `{service}` is not running on this host; deploy it first"
        )),
    )
}

/// One line of `docker ps --format '{{json .}}'`: the compose service comes from the labels,
/// health from the status text (`Up 5 seconds (healthy)`).
pub(super) fn parse_docker_ps_line(line: &str) -> Option<PsEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let labels = v["Labels"].as_str().unwrap_or("");
    let service = labels
        .split(',')
        .find_map(|l| l.strip_prefix("com.docker.compose.service="))?
        .to_string();
    let status = v["Status"].as_str().unwrap_or("");
    let health = homebase_proto::health_from_status(status);
    Some(PsEntry {
        service,
        name: v["Names"].as_str().unwrap_or("").to_string(),
        state: v["State"].as_str().unwrap_or("").to_string(),
        health: health.to_string(),
        desired: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_ps_lines() {
        let line = r#"{"Labels":"com.docker.compose.project=p,com.docker.compose.service=db","Names":"p-db-1","State":"running","Status":"Up 5 seconds (healthy)"}"#;
        let e = parse_docker_ps_line(line).unwrap();
        assert_eq!(
            (e.service.as_str(), e.state.as_str(), e.health.as_str()),
            ("db", "running", "healthy")
        );
        let starting = line.replace("(healthy)", "(health: starting)");
        assert_eq!(parse_docker_ps_line(&starting).unwrap().health, "starting");
        assert!(parse_docker_ps_line(r#"{"Labels":"","Names":"x"}"#).is_none());
    }
}
