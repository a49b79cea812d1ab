#!/usr/bin/env bash
# A deploy of a changed release (database, API and worker), interrupted at a random point:
# SIGINT and SIGKILL of the client on the laptop, the SSH connection cut on the host's side,
# the engine stopped and started again. The same faults, in the same run, against
# `homebase deploy` and against what a user would otherwise type,
# `DOCKER_HOST=ssh://… docker compose up -d --wait`. After each fault nobody touches
# anything for up to 120 s: counted is whether the stack ends healthy on one release (every
# container running, healthy, and of one compose file: the new or the previous one) by
# itself, and how long that took; then whether the next plain command works first time.
# Uses test host 4 alone (do not run it beside the tests). N faults of each kind (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
N=${N:-5}
SEED=${SEED:-$RANDOM}
RANDOM=$SEED
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
addr=$HB_HOST4_ADDR; user=$HB_HOST4_USER
engine=unix:///run/homebase-testhost/hbhost4/docker.sock
work=$(mktemp -d)
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec /usr/bin/ssh -i %s -o UserKnownHostsFile=%s "$@"\n' "$K" "$KH" > "$work/bin/ssh"
chmod +x "$work/bin/ssh"
cleanup() {
  for p in benchfault-hb benchfault-compose; do
    DOCKER_HOST=$engine docker compose -p "$p" down -v -t 1 >/dev/null 2>&1 || true
  done
  $HB_HOST4_SSH 'rm -rf ~/.homebase/benchfault-hb' >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# variant DIR V: the stack with the API's page and a database setting at V
variant() {
  cat > "$1/compose.yml" <<EOF
services:
  db:
    image: hb/pgvector:latest
    environment:
      POSTGRES_PASSWORD: pw
      HB_VARIANT: "$2"
    volumes: [pgdata:/var/lib/postgresql/data]
    restart: unless-stopped
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]
      interval: 1s
      retries: 60
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo v$2 > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    restart: unless-stopped
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/"]
      interval: 1s
      retries: 3
  worker:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    restart: unless-stopped
    stop_signal: SIGKILL
volumes:
  pgdata: {}
EOF
}

# hashes FILE PROJECT: "service hash" lines Compose would label the containers with
hashes() { DOCKER_HOST=$engine docker compose -p "$2" -f "$1" config --hash '*' 2>/dev/null | sort; }
# running PROJECT: "service hash" of the running, healthy containers (nothing else may exist)
running() {
  DOCKER_HOST=$engine docker ps -a --filter "label=com.docker.compose.project=$1" \
    --format '{{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.config-hash"}} {{.State}} {{.Status}}' |
    awk '$3 != "running" || /unhealthy|starting/ { bad = 1 } { print $1, $2 } END { if (bad) print "BAD" }' | sort
}
# settled PROJECT FILE...: the stack runs exactly one of the compose files, healthy
settled() {
  local p=$1 now; shift
  now=$(running "$p")
  for f in "$@"; do [ -n "$now" ] && [ "$now" = "$(hashes "$f" "$p")" ] && return 0; done
  return 1
}

fault() { # fault KIND PID
  case $1 in
    SIGINT) kill -INT "$2" 2>/dev/null || true ;;
    SIGKILL) kill -KILL "$2" 2>/dev/null || true ;;
    ssh-drop) pkill -KILL -f "^sshd: $user(@| )" || true ;;
    engine-stop) scripts/testhost stop-dockerd 4 >/dev/null 2>&1; sleep 2; scripts/testhost start-dockerd 4 >/dev/null 2>&1 ;;
  esac
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- homebase ---
mkdir -p "$work/hb"
variant "$work/hb" 0
printf '[project]\nname = "benchfault-hb"\n[host]\nssh = "%s@%s"\nidentity_file = "%s"\nknown_hosts_file = "%s"\n[budget]\nhost_memory = "4GiB"\n[services.db]\nmemory = "512MiB"\n[services.api]\nmemory = "64MiB"\n[services.worker]\nmemory = "32MiB"\n' \
  "$user" "$addr" "$K" "$KH" > "$work/hb/homebase.toml"
"$hb" -C "$work/hb" deploy >/dev/null 2>&1
variant "$work/hb" 1
t0=$(now_ms); "$hb" -C "$work/hb" deploy >/dev/null 2>&1; span=$(( $(now_ms) - t0 ))
# --- compose over ssh:// ---
mkdir -p "$work/c"
plain() { PATH=$work/bin:$PATH DOCKER_HOST=ssh://$user@$addr docker compose -p benchfault-compose -f "$work/c/compose.yml" up -d --wait --wait-timeout 120 "$@"; }
variant "$work/c" 0; plain >/dev/null 2>&1
variant "$work/c" 1
t0=$(now_ms); plain >/dev/null 2>&1; cspan=$(( $(now_ms) - t0 ))

# from here on a failed probe is data, not the end of the run
set +e
declare -A OK TIME NEXT
v=1
for i in $(seq $((N * 4))); do
  kind=$(echo SIGINT SIGKILL ssh-drop engine-stop | cut -d' ' -f$(( (i - 1) % 4 + 1 )))
  frac=$((RANDOM % 110))
  v=$((v + 1))
  for tool in hb compose; do
    if [ $tool = hb ]; then dir=$work/hb; d=$(( span * frac / 100 )); else dir=$work/c; d=$(( cspan * frac / 100 )); fi
    cp "$dir/compose.yml" "$dir/old.yml"
    variant "$dir" "$v"
    start=$(now_ms)
    if [ $tool = hb ]; then "$hb" -C "$dir" deploy >/dev/null 2>&1 & else plain >/dev/null 2>&1 & fi
    pid=$!
    sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
    fault "$kind" "$pid"
    wait "$pid" 2>/dev/null || true
    ok=0
    for _ in $(seq 240); do
      if [ $tool = hb ]; then
        cur=$($HB_HOST4_SSH 'cat ~/.homebase/benchfault-hb/current; test -L ~/.homebase/benchfault-hb/lock && echo locked' 2>/dev/null || true)
        case "$cur" in *locked*) ;; *)
          $HB_HOST4_SSH "cat ~/.homebase/benchfault-hb/releases/$cur/compose.yml" > "$work/cur.yml" 2>/dev/null &&
            settled benchfault-hb "$work/cur.yml" && { ok=1; break; } ;;
        esac
      else
        settled benchfault-compose "$dir/compose.yml" "$dir/old.yml" && { ok=1; break; }
      fi
      sleep 0.5
    done
    took=$(( $(now_ms) - start ))
    OK[$tool]=$(( ${OK[$tool]:-0} + ok ))
    [ $ok = 1 ] && TIME[$tool]="${TIME[$tool]:-} $took"
    # the next plain command, first try
    if [ $tool = hb ]; then "$hb" -C "$dir" deploy >/dev/null 2>"$work/next.err" && n=1 || n=0; else plain >/dev/null 2>"$work/next.err" && n=1 || n=0; fi
    NEXT[$tool]=$(( ${NEXT[$tool]:-0} + n ))
    why=; [ $n = 1 ] || why=" ($(tr -d '\r' < "$work/next.err" | grep -v '^\s*$' | tail -2 | tr '\n' ' ' | cut -c1-200))"
    echo "fault $i $kind at ${frac}% $tool: settled=$ok in ${took} ms, next command ok=$n$why" | tee -a "${LOG:-/dev/null}" >&2
  done
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {if (NR == 0) {print "–"; exit} m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f s\n", m / 1000}'; }
total=$((N * 4))
echo "seed $SEED; a changed deploy uninterrupted: homebase $(awk -v a="$span" 'BEGIN{printf "%.1f", a/1000}') s, compose over ssh:// $(awk -v a="$cspan" 'BEGIN{printf "%.1f", a/1000}') s"
echo
echo "| after a fault ($total: SIGINT, SIGKILL, SSH cut, engine stop) | homebase deploy | compose over \`ssh://\` |"
echo "|---|---:|---:|"
echo "| healthy on one release by itself within 120 s | ${OK[hb]} / $total | ${OK[compose]} / $total |"
echo "| median time from the start to that state | $(median "${TIME[hb]:-}") | $(median "${TIME[compose]:-}") |"
echo "| next command works first time | ${NEXT[hb]} / $total | ${NEXT[compose]} / $total |"
