#!/usr/bin/env bash
# Every common command over a short link (the test host directly) and a long one (a delay
# proxy adding 125 ms each way: 250 ms round trips, as from South-East Asia to a home in
# Europe), side by side with compose over `ssh://` where it has an equivalent. Each figure
# also as round trips (time ÷ 250 ms) and the SSH processes the command started. homebase
# runs with its warm connection (the first command of a series opens it; `cold` rows are
# with `persist_secs = 0`). Uses test host 2; prints a markdown table (median of N, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet --bin homebase --bin delay-proxy
hb=$PWD/target/release/homebase
N=${N:-3}
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
addr=$HB_HOST2_ADDR; user=$HB_HOST2_USER
engine=unix:///run/homebase-testhost/hbhost2/docker.sock
work=$(mktemp -d)
proxy_pid=
dstate=/tmp/hb-benchlat-daemon-$$
dport=$(( 41000 + $$ % 1000 ))
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" "kill \$(cat $dstate/pid) 2>/dev/null; rm -rf $dstate" >/dev/null 2>&1 || true
  for d in "$work"/ssh/*; do [ -S "$d" ] && ssh -S "$d" -O exit x >/dev/null 2>&1; done
  DOCKER_HOST=$engine docker compose -p benchlat-hb down -v -t 1 >/dev/null 2>&1 || true
  DOCKER_HOST=$engine docker compose -p benchlat-compose down -v -t 1 >/dev/null 2>&1 || true
  $HB_HOST2_SSH 'rm -rf ~/.homebase/benchlat-hb' >/dev/null 2>&1 || true
  rm -rf "$work"
  true
}
trap cleanup EXIT
long_link "$addr" 125 "$work"
# every ssh a command starts, counted
mkdir -p "$work/bin"; mkdir -m 700 "$work/ssh"
printf '#!/bin/sh\necho x >> %s/count\nexec /usr/bin/ssh -i %s -o UserKnownHostsFile=%s/known_hosts "$@"\n' "$work" "$K" "$work" > "$work/bin/ssh"
chmod +x "$work/bin/ssh"
export PATH=$work/bin:$PATH HOMEBASE_SSH_CONTROL_DIR=$work/ssh

compose_file() {
  cat > "$1/compose.yml" <<EOF
services:
  db:
    image: hb/pgvector:latest
    environment: { POSTGRES_PASSWORD: pw, HB_VARIANT: "${4:-1}" }
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: { test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60 }
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo v$2 > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    ports: ["127.0.0.1:39$3:8080"]
    stop_signal: SIGKILL
    healthcheck: { test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/"], interval: 1s, retries: 3 }
volumes:
  pgdata: {}
EOF
}
# project LINK PERSIST: the homebase project reaching host 2 directly or through the proxy
project() {
  local dir=$work/hb-$1-$2 ssh port
  mkdir -p "$dir"
  if [ "$1" = long ]; then ssh="$user@127.0.0.1"; port=$pport; else ssh="$user@$addr"; port=22; fi
  compose_file "$dir" 1 "$3"
  printf '[project]\nname = "benchlat-hb"\n[host]\nssh = "%s"\nport = %s\nidentity_file = "%s"\nknown_hosts_file = "%s/known_hosts"\npersist_secs = %s\n[budget]\nhost_memory = "4GiB"\n[services.db]\nmemory = "512MiB"\n[services.api]\nmemory = "64MiB"\n' \
    "$ssh" "$port" "$K" "$work" "$2" > "$dir/homebase.toml"
  echo "$dir"
}
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# measure KEY CMD...: median ms over N runs and the SSH processes of one run
measure() {
  local key=$1; shift
  local t=()
  for _ in $(seq "$N"); do
    : > "$work/count"
    local a; a=$(ms_now); "$@" >/dev/null 2>>"$work/errors" || echo "FAILED: $key" >> "$work/errors"; t+=($(( $(ms_now) - a )))
  done
  T[$key]=$(printf '%s\n' "${t[@]}" | sort -n | sed -n "$(( (N + 1) / 2 ))p")
  S[$key]=$(grep -c . "$work/count" || true)
}
down_all() {
  DOCKER_HOST=$engine docker compose -p benchlat-hb down -v -t 1 >/dev/null 2>&1 || true
  DOCKER_HOST=$engine docker compose -p benchlat-compose down -v -t 1 >/dev/null 2>&1 || true
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" 'rm -rf ~/.homebase/benchlat-hb' >/dev/null 2>&1 || true
}

# the host daemon, watching the bench's project (status and loop ls ask it on the host)
/usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" \
  "mkdir -p $dstate; nohup $hb daemon --listen 127.0.0.1:$dport --state-dir $dstate --project benchlat-hb > $dstate/log 2>&1 < /dev/null & echo \$! > $dstate/pid"
export HOMEBASE_DAEMON_STATE=$dstate

declare -A T S
v=1
for link in short long; do
  if [ "$link" = long ]; then n=2; else n=1; fi
  dir=$(project "$link" 300 "0$n" | tail -1)
  if [ "$link" = long ]; then sshdest="$user@127.0.0.1:$pport"; else sshdest="$user@$addr"; fi
  hbc() { "$hb" -C "$dir" "$@"; }
  first() { down_all; hbc deploy; }
  measure "first-$link" first
  measure "noop-$link" hbc deploy
  change() { v=$((v + 1)); compose_file "$dir" "$v" "0$n"; hbc deploy; }
  measure "change-$link" change
  # (the daemon's next round after the deploy: until it has seen the new release, status
  # reads the engine itself)
  sleep 3
  measure "status-$link" hbc status
  measure "freshstatus-$link" hbc status --fresh
  measure "loopls-$link" hbc loop ls
  measure "logs-$link" hbc logs api -n 20
  measure "exec-$link" hbc exec api -- true
  measure "releases-$link" hbc releases
  measure "rollback-$link" hbc rollback
  measure "backup-$link" hbc backup ls
  measure "backupnow-$link" hbc backup now
  measure "tunnelcheck-$link" hbc tunnel --check
  # a database changed: homebase backs it up before it changes it
  dbchange() { v=$((v + 1)); compose_file "$dir" "$v" "0$n" "$v"; hbc deploy; }
  measure "dbchange-$link" dbchange
  cold=$(project "$link" 0 "0$n" | tail -1)
  cp "$dir/compose.yml" "$cold/compose.yml"
  measure "coldstatus-$link" "$hb" -C "$cold" status
  # compose over ssh://
  cdir=$work/c-$link; mkdir -p "$cdir"
  pc() { DOCKER_HOST=ssh://$sshdest docker compose -p benchlat-compose -f "$cdir/compose.yml" "$@"; }
  compose_file "$cdir" 1 "1$n"
  cfirst() { DOCKER_HOST=$engine docker compose -p benchlat-compose down -v -t 1 >/dev/null 2>&1; pc up -d --wait; }
  measure "cfirst-$link" cfirst
  measure "cnoop-$link" pc up -d --wait
  cchange() { v=$((v + 1)); compose_file "$cdir" "$v" "1$n"; pc up -d --wait; }
  measure "cchange-$link" cchange
  cdbchange() { v=$((v + 1)); compose_file "$cdir" "$v" "1$n" "$v"; pc up -d --wait; }
  measure "cdbchange-$link" cdbchange
  measure "cstatus-$link" pc ps
  measure "clogs-$link" pc logs --tail 20 api
  measure "cexec-$link" pc exec -T api true
  down_all
done

grep -h -B4 FAILED "$work/errors" >&2 || true
rt() { awk -v m="$1" 'BEGIN { printf "%.0f", m / 250 }'; }
s() { awk -v m="$1" 'BEGIN { printf "%.2f s", m / 1000 }'; }
row() { # row LABEL HBKEY [COMPOSEKEY]
  local c="–" cl="–" r="–"
  if [ -n "${3:-}" ]; then c=$(s "${T[$3-short]}"); cl="$(s "${T[$3-long]}") ($(rt "${T[$3-long]}") RTT, ${S[$3-long]} ssh)"; r="$(awk -v a="${T[$2-long]}" -v b="${T[$3-long]}" 'BEGIN { printf "%.1f×", b / a }')"; fi
  echo "| $1 | $(s "${T[$2-short]}") | $(s "${T[$2-long]}") ($(rt "${T[$2-long]}") RTT, ${S[$2-long]} ssh) | $c | $cl | $r |"
}
echo "| job | homebase, short link | homebase, 250 ms RTT | compose ssh://, short | compose ssh://, 250 ms RTT | compose ÷ homebase at 250 ms |"
echo "|---|---:|---:|---:|---:|---:|"
row "first deploy" first cfirst
row "no-op deploy" noop cnoop
row "one service changed (the API)" change cchange
row "the database changed (homebase backs it up first)" dbchange cdbchange
row "status (daemon running: its last sample)" status cstatus
row "status --fresh (a \`docker stats\` sample)" freshstatus
row "loop ls" loopls
row "status, cold (\`persist_secs = 0\`)" coldstatus
row "logs (20 lines)" logs clogs
row "exec (\`true\`)" exec cexec
row "releases" releases
row "rollback" rollback
row "backup ls" backup
row "backup now" backupnow
row "tunnel --check" tunnelcheck
