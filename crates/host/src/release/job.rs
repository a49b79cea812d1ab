//! The release job: the script that runs detached on the host, starts a release, gates it
//! on health and otherwise goes back to the previous one, logging the outcome and releasing
//! the lock whatever the laptop does.

use std::time::Duration;

use anyhow::Result;
use homebase_proto::ReleaseEntry;
use homebase_remote::sh_quote;

use crate::{FIND_COMPOSE, HEALTHY_FN, LOCK_INFO, tree};

/// What the job does: start `new`, wait until every planned service is running and
/// healthy, make it current; otherwise (or on abort) start `prev` again, or remove `new`'s
/// containers when there is no previous release.
pub struct Job {
    pub project: String,
    pub new: String,
    pub prev: Option<String>,
    /// The services that must be running and healthy; empty: those `new`'s compose file
    /// enables.
    pub services: Vec<String>,
    pub wait: Duration,
    /// The release-log lines for success and failure; the job fills in time, duration and,
    /// on failure, the release that runs and the reason.
    pub ok_entry: ReleaseEntry,
    pub fail_entry: ReleaseEntry,
    /// Time the laptop spent before the job started.
    pub pre: Duration,
}

impl Job {
    pub(super) fn start_script(&self, dir: &str, token: &str, holder: &str) -> Result<String> {
        crate::check_id(&self.new)?;
        if let Some(p) = &self.prev {
            crate::check_id(p)?;
        }
        for s in &self.services {
            if !homebase_proto::is_safe_name(s) {
                anyhow::bail!(
                    "service name `{}` cannot go into a script",
                    s.escape_debug()
                );
            }
        }
        let template = |e: &ReleaseEntry, fail: bool| -> Result<String> {
            let mut v = serde_json::to_value(e)?;
            v["time"] = "@TIME@".into();
            v["duration_ms"] = "@MS@".into();
            if fail {
                v["target"] = "@TARGET@".into();
                v["error"] = "@ERROR@".into();
            }
            Ok(serde_json::to_string(&v)?)
        };
        let header = format!(
            "d={dir}\np={p}\nnew={new}\nprev={prev}\nsvcs={svcs}\nwait={wait}\nlimit={limit}\ntok={tok}\npre_ms={pre}\ncompose={FIND_COMPOSE}\n",
            p = sh_quote(&self.project),
            new = sh_quote(&self.new),
            prev = sh_quote(self.prev.as_deref().unwrap_or("")),
            svcs = sh_quote(&self.services.join(" ")),
            wait = self.wait.as_secs().max(1),
            // Compose's own wait, plus time for pulls and the stop of the old containers
            limit = (self.wait + Duration::from_secs(300)).as_secs(),
            tok = sh_quote(token),
            pre = self.pre.as_millis(),
        );
        let prefix = crate::lock_line_prefix(holder, token, true);
        Ok(format!(
            "d={dir}; j=\"$d/job\"; {{ {LOCK_INFO}; }} | grep -qF {tok} || {{ echo notours; exit 0; }}; \
             rm -rf \"$j\"; mkdir -p \"$j\" && chmod 700 \"$j\" && cd \"$j\" || exit 1; \
             printf '%s\\n' {ok} > entry.ok; printf '%s\\n' {fail} > entry.fail; printf '%s\\n' {new} > new; \
             printf '%s' {script} | {{ base64 -d 2>/dev/null || base64 -D; }} | gzip -dc > run.sh && [ -s run.sh ] || exit 1; \
             nohup sh \"$j/run.sh\" </dev/null >\"$j/log\" 2>&1 & jp=$!; echo \"$jp\" > \"$j/pid\"; \
             ln -s {prefix}\"$jp}}\" \"$d/lock.new.$jp\" && mv -f \"$d/lock.new.$jp\" \"$d/lock\" && : > \"$j/go\" && echo \"started $jp\"",
            tok = sh_quote(token),
            ok = sh_quote(&template(&self.ok_entry, false)?),
            fail = sh_quote(&template(&self.fail_entry, true)?),
            new = sh_quote(&self.new),
            // the job's text (13 KB) gzip'd: what a deploy sends over a slow link is mostly it
            script = sh_quote(&gzip_base64(&format!(
                "{header}{HEALTHY_FN}{fns}{JOB}{}\nprune_tree\nreadlink \"$d/lock\" 2>/dev/null | grep -qF \"$tok\" && rm -f \"$d/lock\"\nsay end\n: > \"$j/done\"\n",
                crate::PRUNE,
                fns = tree::JOB_FNS,
            ))?),
            prefix = sh_quote(&prefix),
        ))
    }
}

/// `text` gzip'd and base64-encoded, for a script to unpack with `base64 -d | gzip -dc`.
fn gzip_base64(text: &str) -> Result<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(gz.finish()?))
}

/// The job, after its variables (`d p new prev svcs wait limit tok pre_ms compose`).
/// `start_script` appends `PRUNE` (under the lock), the lock's release, `say end` and the
/// `done` file.
const JOB: &str = r#"j="$d/job"
say() { printf '@@ %s\n' "$*"; }
quote() { sed 's/^/| /'; }
n=0
while [ ! -f "$j/go" ]; do
  n=$((n + 1))
  if [ "$n" -gt 100 ]; then say outcome nogo the lock could not be handed to the job; say end; : > "$j/done"; exit 1; fi
  sleep 0.1
done
t0=$(date +%s)
up=; aborted=
trap '' HUP
trap 'aborted=1; [ -n "$up" ] && kill -TERM "$up" 2>/dev/null' TERM INT
# `docker info` within 10 s (a hung engine does not hang the job)
ask_engine() {
  docker info >/dev/null 2>&1 & a=$!
  ( sleep 10; kill -0 "$$" 2>/dev/null && kill "$a" 2>/dev/null ) & w=$!
  wait "$a"; r=$?
  # KILL: after `trap '' TERM INT` the watchdog and its sleep ignore TERM
  pkill -KILL -P "$w" 2>/dev/null; kill -KILL "$w" 2>/dev/null
  return $r
}
engine_wait() {
  ask_engine && return 0
  say wait-engine
  n=0
  while [ "$n" -lt 24 ]; do sleep 5; ask_engine && return 0; n=$((n + 1)); done
  return 1
}
# containers an interrupted `up` left: never started, dead, or renamed aside by a recreate
cleanup() {
  docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.ID}} {{.Names}} {{.State}}' 2>/dev/null |
  while read -r id name state; do
    case "$state:$name" in
      created:*|dead:*|*:[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]_*)
        docker rm -f "$id" >/dev/null 2>&1 && say cleaned "$name" ;;
    esac
  done
}
# the services a release starts (those its compose file enables)
services_of() { hbc "$1" config --services 2>/dev/null; }
# alone ID: the running services whose configuration release ID changes (Compose's config
# hash against the running container's label), less those whose replacement takes their
# dependents along (the release's restart-with: `depends_on.restart`, shared namespaces,
# volumes_from, links). Each is replaced alone (`up --no-deps`): a service that depends on
# it is neither stopped nor recreated. (A release without the file: none.)
alone() {
  [ -f "$d/releases/$1/restart-with" ] || return 0
  docker ps --filter "label=com.docker.compose.project=$p" \
    --format '{{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.config-hash"}}' > "$j/running.hash" 2>/dev/null
  hbc "$1" config --hash '*' 2>/dev/null | awk -v keep="$d/releases/$1/restart-with" -v run="$j/running.hash" '
    BEGIN { while ((getline l < keep) > 0) k[l] = 1; while ((getline l < run) > 0) { split(l, f, " "); r[f[1]] = f[2] } }
    ($1 in r) && r[$1] != $2 && !($1 in k) { print $1 }'
}
# compose_up ID ARGS...: `up -d --wait` of release ID, bounded by the watchdog, its output
# appended to up.out
compose_up() {
  _id=$1; shift
  hbc "$_id" up -d --no-build --wait --wait-timeout "$wait" "$@" >> "$j/up.out" 2>&1 &
  up=$!
  # the watchdog acts only while the job lives (a killed job leaves no stale pid to kill)
  ( sleep "$limit"; kill -0 "$$" 2>/dev/null && kill -TERM "$up" 2>/dev/null && say timeout "$limit" ) & wd=$!
  wait "$up"; rc=$?
  while kill -0 "$up" 2>/dev/null; do wait "$up"; rc=$?; done
  up=
  pkill -KILL -P "$wd" 2>/dev/null; kill -KILL "$wd" 2>/dev/null
  return "$rc"
}
# up_release ID SERVICES
up_release() {
  cleanup
  apply_tree "$1" || { say fail the release files could not be laid out in the tree; return 1; }
  : > "$j/up.out"
  _alone=$(alone "$1"); _was=$aborted
  rc=0
  if [ -n "$_alone" ]; then
    # shellcheck disable=SC2086 # service names: checked safe words
    compose_up "$1" --no-deps $_alone || rc=$?
  fi
  # an abort during the first `up` stops here (a rollback, which ignores aborts, goes on)
  [ "$rc" -ne 0 ] || [ "$aborted" != "$_was" ] || compose_up "$1" --remove-orphans || rc=$?
  quote < "$j/up.out"
  [ "$rc" -eq 0 ] || return 1
  healthy "$2" || { say unhealthy $unhealthy; return 1; }
}
# settle: the containers this job's `up` asked the engine to stop (a `kill` event, no `die`
# yet: a process that ignores SIGTERM gets 10 s) are waited for before the way back, so that
# the rollback starts them again instead of finding them still running
settle() {
  _pending=$(docker events --since "$t0" --until "$(date +%s)" --filter "label=com.docker.compose.project=$p" \
      --filter event=kill --filter event=die --format '{{.Action}} {{.Actor.ID}}' 2>/dev/null |
    awk '$1 == "kill" { k[$2] = 1 } $1 == "die" { delete k[$2] } END { for (i in k) print i }')
  [ -n "$_pending" ] || return 0
  say wait-stops
  _n=0
  while [ "$_n" -lt 30 ]; do
    _left=
    for _id in $_pending; do
      [ "$(docker inspect -f '{{.State.Running}}' "$_id" 2>/dev/null)" = true ] && _left=1
    done
    [ -n "$_left" ] || return 0
    sleep 0.5; _n=$((_n + 1))
  done
}
report() {
  docker ps -a --filter "label=com.docker.compose.project=$p" --format '{{.Names}} {{.Label "com.docker.compose.service"}} {{.State}} {{.Status}}' 2>/dev/null |
  while read -r name svc state status; do
    if [ "$state" = running ]; then
      case "$status" in *"(unhealthy)"*|*"(health: starting)"*) ;; *) continue ;; esac
    fi
    say report "$svc" "$name"
    {
      echo "state: $(docker inspect --format '{{.State.Status}} (exit {{.State.ExitCode}}, oom-killed {{.State.OOMKilled}})' "$name")"
      docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}health: exit {{.ExitCode}}: {{.Output}}{{end}}{{end}}' "$name" | tail -n 5
      echo 'last 50 log lines:'
      docker logs --tail 50 "$name" 2>&1
    } | quote
  done
}
entry() {
  now=$(date +%s)
  ms=$(( (now - t0) * 1000 + pre_ms ))
  line=$(sed -e "s|\"@TIME@\"|$now|" -e "s|\"@MS@\"|$ms|" -e "s|\"@TARGET@\"|$2|" -e "s|\"@ERROR@\"|$3|" "$j/entry.$1")
  printf '%s\n' "$line" >> "$d/releases.jsonl"
  say entry "$line"
}
built=1; prep_fail="did not build"
patch_manifest "$new" || { built=; prep_fail="could not read its files' manifest"; }
[ -n "$svcs" ] || svcs=$(services_of "$new")
[ -n "$built" ] && { { [ -z "$aborted" ] && build_release "$new" && sync_repo "$new" && [ -z "$aborted" ]; } || built=; }
[ -n "$built" ] && say step up "$new"
if [ -z "$built" ]; then
  trap '' TERM INT
  if [ -n "$aborted" ]; then why="was aborted from the laptop before it started"; else why=$prep_fail; fi
  if [ -n "$prev" ]; then tgt="\"$prev\""; runs="release $prev still runs"; else tgt=null; runs="no release ran before"; fi
  msg="release $new $why; nothing on the host changed ($runs)"
  entry fail "$tgt" "\"$msg\""
  say outcome build-failed "$msg"
elif [ -z "$aborted" ] && up_release "$new" "$svcs" && [ -z "$aborted" ]; then
  printf '%s\n' "$new" > "$d/current.tmp" && mv "$d/current.tmp" "$d/current"
  say ok
  entry ok null null
  say outcome ok "$new"
else
  trap '' TERM INT
  if [ -n "$aborted" ]; then why="was aborted from the laptop"; say fail aborted; else why="did not become healthy"; say fail not healthy; fi
  report
  if [ -n "$prev" ] && [ "$prev" != "$new" ] && [ -f "$d/releases/$prev/compose.yml" ]; then
    engine_wait
    settle
    say step back "$prev"
    if up_release "$prev" "$(services_of "$prev")"; then
      say ok; out=back; msg="release $new $why; rolled back to release $prev, which is healthy again"
    else
      say fail not healthy; report; out=back-failed; msg="release $new $why; the rollback to release $prev did not become healthy either"
    fi
    tgt="\"$prev\""
  else
    engine_wait
    say step remove
    if hbc "$new" down --remove-orphans > "$j/up.out" 2>&1; then
      say ok; out=removed; msg="release $new $why; there was no previous release, so its containers were removed (volumes kept)"
    else
      quote < "$j/up.out"; say fail; out=remove-failed; msg="release $new $why; there was no previous release, and removing its containers failed"
    fi
    tgt=null
  fi
  entry fail "$tgt" "\"$msg\""
  say outcome "$out" "$msg"
fi
"#;
