#!/usr/bin/env bash
# The user's own code on the host, side by side in one run: a ~50 MB project (a service with
# its dependencies vendored into the image: Python's standard library as the stand-in) built
# on the host, over a hotel uplink (the delay proxy capped at 10 Mbit/s each way) with 0 and
# 250 ms round trips. Three ways:
#   homebase   `homebase deploy` (files by content, images built on the host) and `rollback`
#   compose    `DOCKER_HOST=ssh://… docker compose up -d --build --wait` (the build context
#              goes over the engine's SSH connection)
#   rsync      `rsync -az --delete` of the checkout, then `docker compose up -d --build --wait`
#              on the host over ssh (what people script by hand)
# For each: the first deploy, a one-file change, and a rollback (compose and rsync: the
# previous commit checked out and deployed again). Prints a markdown table: seconds, bytes
# sent (laptop → host, counted by the proxy) and round trips (time ÷ 250 ms on the long
# link). Uses test host 2.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync >/dev/null; }
cargo build --release --quiet --bin homebase --bin delay-proxy
hb=$PWD/target/release/homebase
RATE=${RATE:-10000} # kbit/s
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
addr=$HB_HOST2_ADDR; user=$HB_HOST2_USER
engine=unix:///run/homebase-testhost/hbhost2/docker.sock
work=$(mktemp -d)
proxies=()
cleanup() {
  set +e
  for p in "${proxies[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "$work"/ssh/*; do [ -S "$d" ] && ssh -S "$d" -O exit x >/dev/null 2>&1; done
  for p in benchcode-hb benchcode-compose benchcode-rsync; do
    DOCKER_HOST=$engine docker compose -p $p down -v -t 1 >/dev/null 2>&1 || true
  done
  DOCKER_HOST=$engine docker image ls -q --filter 'reference=homebase/benchcode-*' --filter 'reference=benchcode-*' | sort -u | xargs -r env DOCKER_HOST=$engine docker rmi -f >/dev/null 2>&1 || true
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" 'rm -rf ~/.homebase/benchcode-hb ~/benchcode-rsync' >/dev/null 2>&1 || true
  rm -rf "$work"
  true
}
trap cleanup EXIT
mkdir -p "$work/bin"; mkdir -m 700 "$work/ssh"
: > "$work/known_hosts"
printf '#!/bin/sh\nexec /usr/bin/ssh -i %s -o UserKnownHostsFile=%s/known_hosts "$@"\n' "$K" "$work" > "$work/bin/ssh"
chmod +x "$work/bin/ssh"
export PATH=$work/bin:$PATH HOMEBASE_SSH_CONTROL_DIR=$work/ssh

# link ONE_WAY_MS: a proxy to host 2's sshd; sets lport and lstats
link() {
  DELAY_PROXY_STATS=$work/stats-$1 ./target/release/delay-proxy "$addr:22" "$1" "$RATE" > "$work/port-$1" &
  proxies+=($!)
  for _ in $(seq 50); do [ -s "$work/port-$1" ] && break; sleep 0.1; done
  lport=$(cat "$work/port-$1"); lstats=$work/stats-$1
  grep "^$addr " "$KH" | sed "s/^$addr /[127.0.0.1]:$lport /" >> "$work/known_hosts"
}
sent() { cut -d' ' -f1 "$1" 2>/dev/null || echo 0; }

# the project: a checkout with ~50 MB vendored into the image and a small source tree
make_project() {
  local d=$1
  mkdir -p "$d/src" "$d/vendor"
  cp -rL /usr/lib/python3.11/. "$d/vendor/" 2>/dev/null || true
  find "$d/vendor" -name __pycache__ -prune -exec rm -rf {} +
  echo '<h1>v1</h1>' > "$d/src/index.html"
  printf 'def handler():\n    return "v1"\n' > "$d/src/app.py"
  printf 'FROM hb/busybox:latest\nCOPY vendor /app/vendor\nCOPY src /app/src\nCMD ["httpd", "-f", "-p", "8080", "-h", "/app/src"]\n' > "$d/Dockerfile"
  cat > "$d/compose.yml" <<EOF
services:
  api:
    build: .
    ports: ["127.0.0.1:$2:8080"]
    stop_signal: SIGKILL
    healthcheck: { test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/"], interval: 1s, retries: 60 }
EOF
  printf '.homebase-bench\nssh/\n' > "$d/.gitignore"
  git -C "$d" init -q && git -C "$d" add -A && git -C "$d" -c user.email=b@x -c user.name=b commit -qm v1
}
change() { # the one-file change, committed
  printf 'def handler():\n    return "v2"\n' > "$1/src/app.py"
  echo '<h1>v2</h1>' > "$1/src/index.html"
  git -C "$1" -c user.email=b@x -c user.name=b commit -qam v2
}
back() { git -C "$1" checkout -q HEAD~1 -- . ; }

declare -A T B
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# measure KEY STATS CMD...: one run's ms and the bytes it sent
measure() {
  local key=$1 stats=$2; shift 2
  sleep 0.3
  local b0; b0=$(sent "$stats"); local a; a=$(ms_now)
  "$@" >>"$work/out" 2>&1 || { echo "FAILED: $key" >&2; tail -20 "$work/out" >&2; }
  T[$key]=$(( $(ms_now) - a ))
  sleep 0.3
  B[$key]=$(( $(sent "$stats") - b0 ))
}

base=$work/project; make_project "$base" 0 >/dev/null
size=$(du -sb --exclude=.git "$base" | cut -f1)
# forget_host: nothing of the three projects left on the host (files, releases, images,
# build cache), so that each link's first deploy is a first one
forget_host() {
  for p in benchcode-hb benchcode-compose benchcode-rsync; do
    DOCKER_HOST=$engine docker compose -p $p down -v -t 1 >/dev/null 2>&1 || true
  done
  DOCKER_HOST=$engine docker image ls -q --filter 'reference=homebase/benchcode-*' --filter 'reference=benchcode-*' | sort -u | xargs -r env DOCKER_HOST=$engine docker rmi -f >/dev/null 2>&1 || true
  DOCKER_HOST=$engine docker builder prune -af >/dev/null 2>&1 || true
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" 'rm -rf ~/.homebase/benchcode-hb ~/benchcode-rsync' >/dev/null 2>&1 || true
}
for delay in 0 125; do
  link "$delay"
  n=$((delay / 125 + 1))
  # homebase
  forget_host
  d=$work/hb-$delay; cp -r "$base" "$d"; sed -i "s/127.0.0.1:0:/127.0.0.1:3${n}701:/" "$d/compose.yml"
  git -C "$d" -c user.email=b@x -c user.name=b commit -qam port
  printf '[project]\nname = "benchcode-hb"\n[host]\nssh = "%s@127.0.0.1"\nport = %s\nidentity_file = "%s"\nknown_hosts_file = "%s/known_hosts"\n[budget]\nhost_memory = "4GiB"\n[services.api]\nmemory = "64MiB"\n' \
    "$user" "$lport" "$K" "$work" > "$d/homebase.toml"
  measure "hb-first-$delay" "$lstats" "$hb" -C "$d" deploy
  change "$d"
  measure "hb-change-$delay" "$lstats" "$hb" -C "$d" deploy
  measure "hb-rollback-$delay" "$lstats" "$hb" -C "$d" rollback
  DOCKER_HOST=$engine docker compose -p benchcode-hb down -t 1 >/dev/null 2>&1 || true
  # compose over ssh://
  forget_host
  d=$work/c-$delay; cp -r "$base" "$d"; sed -i "s/127.0.0.1:0:/127.0.0.1:3${n}702:/" "$d/compose.yml"
  git -C "$d" -c user.email=b@x -c user.name=b commit -qam port
  pc() { DOCKER_HOST=ssh://$user@127.0.0.1:$lport docker compose -p benchcode-compose -f "$d/compose.yml" up -d --build --wait; }
  measure "c-first-$delay" "$lstats" pc
  change "$d"
  measure "c-change-$delay" "$lstats" pc
  back "$d"
  measure "c-rollback-$delay" "$lstats" pc
  DOCKER_HOST=$engine docker compose -p benchcode-compose down -t 1 >/dev/null 2>&1 || true
  # rsync, then compose on the host
  forget_host
  d=$work/r-$delay; cp -r "$base" "$d"; sed -i "s/127.0.0.1:0:/127.0.0.1:3${n}703:/" "$d/compose.yml"
  git -C "$d" -c user.email=b@x -c user.name=b commit -qam port
  rs() {
    rsync -az --delete --exclude .git -e "ssh -p $lport" "$d/" "$user@127.0.0.1:benchcode-rsync/" &&
      ssh -p "$lport" "$user@127.0.0.1" 'cd benchcode-rsync && docker compose -p benchcode-rsync up -d --build --wait'
  }
  measure "r-first-$delay" "$lstats" rs
  change "$d"
  measure "r-change-$delay" "$lstats" rs
  back "$d"
  measure "r-rollback-$delay" "$lstats" rs
  DOCKER_HOST=$engine docker compose -p benchcode-rsync down -t 1 >/dev/null 2>&1 || true
done

mib() { awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MiB", b / 1048576; else printf "%.1f KiB", b / 1024 }'; }
sec() { awk -v m="$1" 'BEGIN { printf "%.1f s", m / 1000 }'; }
echo "Project: $(mib "$size") in $(git -C "$base" ls-files | wc -l) files; link capped at $((RATE / 1000)) Mbit/s each way."
echo
echo "| step | RTT | homebase | compose over ssh:// | rsync + compose | time vs compose | bytes vs compose |"
echo "|---|---|---|---|---|---|---|"
for step in first change rollback; do
  for delay in 0 125; do
    rtt=$((delay * 2))
    h=hb-$step-$delay c=c-$step-$delay r=r-$step-$delay
    printf '| %s | %s ms | %s, %s | %s, %s | %s, %s | %s× faster | %s× fewer |\n' "$step" "$rtt" \
      "$(sec "${T[$h]}")" "$(mib "${B[$h]}")" "$(sec "${T[$c]}")" "$(mib "${B[$c]}")" \
      "$(sec "${T[$r]}")" "$(mib "${B[$r]}")" "$(ratio "${T[$h]}" "${T[$c]}")" "$(ratio "$((B[$h] + 1))" "${B[$c]}")"
  done
done
