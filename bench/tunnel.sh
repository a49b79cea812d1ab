#!/usr/bin/env bash
# Tunnel benchmarks, homebase tunnel against the tools users script today, in one run:
#  1. round trip (p50, p99) of 1,000 small HTTP requests through `homebase tunnel` and
#     through a raw `ssh -N -L`;
#  2. throughput of 100 MB through each;
#  3. time to be usable again after the host's sshd restarts (every session dropped, sshd
#     back after 1 s): `homebase tunnel` against autossh -M 0 with the same ServerAlive settings.
# Needs root and `scripts/testhost up 1`; uses test host 1. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
command -v autossh >/dev/null || apt-get install -y -qq autossh >/dev/null
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
eval "$(scripts/testhost env)"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
            DOCKER_HOST=unix:///run/homebase-testhost/hbhost1/docker.sock docker compose -p benchtun down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# A stack with an HTTP server that also serves a 100 MB file.
mkdir -p "$work/p"
cat > "$work/p/compose.yml" <<'YML'
services:
  web:
    image: hb/busybox:latest
    command: ["sh", "-c", "mkdir -p /srv && echo ok > /srv/index.html && dd if=/dev/zero of=/srv/big bs=1M count=100 2>/dev/null && exec httpd -f -p 8080 -h /srv"]
    stop_signal: SIGKILL
    ports: ["127.0.0.1:39080:8080"]
YML
cat > "$work/p/homebase.toml" <<TOML
[project]
name = "benchtun"
[host]
ssh = "$HB_HOST1_USER@$HB_HOST1_ADDR"
identity_file = "$HB_TESTHOST_KEY"
known_hosts_file = "$HB_TESTHOST_KNOWN_HOSTS"
[budget]
host_memory = "4GiB"
[services.web]
memory = "256MiB"
TOML
"$hb" -C "$work/p" deploy >/dev/null
sleep 2

SSH_OPTS=(-i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" -o StrictHostKeyChecking=yes -o BatchMode=yes
          -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o ExitOnForwardFailure=yes)
# homebase tunnel on 39080 (the published port), raw ssh on 39081, autossh on 39082
HOMEBASE_STATE_DIR=$work/state "$hb" -C "$work/p" tunnel --json > "$work/tunnel.log" 2>&1 & pids+=($!)
ssh "${SSH_OPTS[@]}" -N -L 127.0.0.1:39081:127.0.0.1:39080 "$HB_HOST1_USER@$HB_HOST1_ADDR" & pids+=($!)
AUTOSSH_GATETIME=0 AUTOSSH_POLL=10 autossh -M 0 "${SSH_OPTS[@]}" -N -L 127.0.0.1:39082:127.0.0.1:39080 "$HB_HOST1_USER@$HB_HOST1_ADDR" & pids+=($!)
for port in 39080 39081 39082; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/index.html" >/dev/null && break; sleep 0.1; done
done

mbps() { local t0 t1; t0=$(date +%s%N); curl -sf -o /dev/null "http://127.0.0.1:$1/big"; t1=$(date +%s%N)
         awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 / (ns / 1e9) }'; }

read -r hb50 hb99 < <(rtt 39080)
read -r raw50 raw99 < <(rtt 39081)
hbm=$(mbps 39080); rawm=$(mbps 39081)

# Reconnect after the host's sshd restarts: time until each forward answers again.
back_after() { # port: ms from now until a request through it succeeds
  local t0; t0=$(date +%s%N)
  until curl -sf -m 1 "http://127.0.0.1:$1/index.html" >/dev/null 2>&1; do sleep 0.05; done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
reconnects_hb=(); reconnects_auto=()
for _ in 1 2 3; do
  HB_SSHD_DOWN_SECS=1 scripts/testhost restart-sshd 1 >/dev/null 2>&1 &
  rs=$!
  sleep 0.05
  back_after 39080 > "$work/a" & ba=$!
  back_after 39082 > "$work/b" & bb=$!
  wait $ba $bb $rs
  reconnects_hb+=("$(cat "$work/a")"); reconnects_auto+=("$(cat "$work/b")")
  sleep 2
done
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

echo "| measure | homebase tunnel | raw ssh -N -L / autossh | ratio (other / homebase) |"
echo "| --- | ---: | ---: | ---: |"
echo "| round trip p50, 1,000 HTTP requests (ms) | $hb50 | $raw50 (ssh -L) | $(ratio "$hb50" "$raw50") |"
echo "| round trip p99 (ms) | $hb99 | $raw99 (ssh -L) | $(ratio "$hb99" "$raw99") |"
echo "| throughput, 100 MB (MB/s) | $hbm | $rawm (ssh -L) | $(ratio "$rawm" "$hbm") (homebase / ssh) |"
echo "| usable again after sshd restart, median of 3 (ms) | $(med "${reconnects_hb[@]}") | $(med "${reconnects_auto[@]}") (autossh -M 0) | $(ratio "$(med "${reconnects_hb[@]}")" "$(med "${reconnects_auto[@]}")") |"
