#!/usr/bin/env bash
# Deploying the three-node stack (PostgreSQL pinned to one node, an HTTP API, three
# workers; 1.5 GiB reserved, more than any one node's budget): `homebase deploy` from the
# laptop against what a user runs by hand on the manager: `docker stack deploy` of the same
# rendered file, then polling `docker stack services` until every service runs all its
# replicas. Both from nothing (the stack removed in between), RUNS times each, alternating;
# medians. Also a no-op redeploy, and round trips to the API on whichever node runs it:
# `homebase tunnel` against `ssh -L` through the manager and `ssh -L` to that node itself.
# Needs root and `scripts/testhost up 7` (hosts 5, 6, 7).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
eval "$(scripts/testhost env)"
work=$(mktemp -d); chmod 755 "$work"
node() { local n=$1; shift; ssh -i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" -o BatchMode=yes "hb$n@10.231.0.1$n" "$@"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  node 5 'docker stack rm benchs >/dev/null 2>&1; rm -rf ~/.homebase/benchs ~/benchs.yml' || true
  for n in 5 6 7; do node "$n" 'docker swarm leave --force >/dev/null 2>&1; rm -rf ~/.homebase/benchs; true'; done
  rm -rf "$work"
}
trap cleanup EXIT
for n in 5 6 7; do node "$n" 'docker swarm leave --force >/dev/null 2>&1; true'; done
# The swarm, formed by hand (homebase setup does the same; here only the deploys are timed).
tok=$(node 5 'docker swarm init --advertise-addr 10.231.0.15 >/dev/null && docker swarm update --dispatcher-heartbeat 1s >/dev/null && docker swarm join-token -q worker')
for n in 6 7; do node "$n" "docker swarm join --token $tok --advertise-addr 10.231.0.1$n 10.231.0.15:2377 >/dev/null"; done
# label by address, the reliable way
for n in 5 6 7; do id=$(node "$n" "docker info --format '{{.Swarm.NodeID}}'"); node 5 "docker node update --label-add homebase.node=n$n $id >/dev/null"; done

cat > "$work/compose.yml" <<'YML'
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw}
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo ok > /tmp/ok && exec httpd -f -p 8080 -h /tmp"]
    healthcheck: {test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/ok"], interval: 1s, retries: 3}
    ports: ["8080:8080"]
    stop_signal: SIGKILL
  worker:
    image: hb/busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
volumes:
  pgdata: {}
YML
cat > "$work/homebase.toml" <<TOML
[project]
name = "benchs"
mode = "swarm"
[host]
identity_file = "$HB_TESTHOST_KEY"
known_hosts_file = "$HB_TESTHOST_KNOWN_HOSTS"
[nodes.n5]
ssh = "hb5@10.231.0.15"
memory = "1GiB"
[nodes.n6]
ssh = "hb6@10.231.0.16"
memory = "1GiB"
[nodes.n7]
ssh = "hb7@10.231.0.17"
memory = "1GiB"
[services.db]
memory = "600MiB"
node = "n6"
[services.api]
memory = "600MiB"
node = "n7"
local_port = 39180
[services.worker]
memory = "100MiB"
replicas = 3
TOML
"$hb" -C "$work" render -o "$work/stack.yml" 2>/dev/null
node 5 'cat > ~/benchs.yml' < "$work/stack.yml"

remove() { node 5 'docker stack rm benchs >/dev/null 2>&1; for i in $(seq 60); do docker network ls -q --filter label=com.docker.stack.namespace=benchs | grep -q . || break; sleep 0.5; done; rm -rf ~/.homebase/benchs'; }
by_hand() {
  node 5 'docker stack deploy -c ~/benchs.yml --resolve-image never benchs >/dev/null 2>&1
    while docker stack services benchs --format "{{.Replicas}}" | awk "{split(\$1,a,\"/\"); if (a[1]!=a[2]) n++} END {exit !(n+0)}"; do sleep 0.5; done'
}
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
hb_times=(); hand_times=()
for _ in $(seq "$RUNS"); do
  remove; hb_times+=("$(ms "$hb" -C "$work" deploy --timeout 180)")
  remove; hand_times+=("$(ms by_hand)")
done
remove; "$hb" -C "$work" deploy --timeout 180 >/dev/null 2>&1
noop=$(ms "$hb" -C "$work" deploy)
hand_noop=$(ms by_hand)
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
h=$(med "${hb_times[@]}"); m=$(med "${hand_times[@]}")
echo "| three-node stack, $RUNS runs, median | homebase deploy | docker stack deploy + wait, by hand on the manager | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| first deploy to healthy (s) | $(awk -v x="$h" 'BEGIN{printf "%.1f", x/1000}') | $(awk -v x="$m" 'BEGIN{printf "%.1f", x/1000}') | $(ratio "$m" "$h") |"
echo "| redeploy, nothing changed (s) | $(awk -v x="$noop" 'BEGIN{printf "%.2f", x/1000}') | $(awk -v x="$hand_noop" 'BEGIN{printf "%.2f", x/1000}') | $(ratio "$hand_noop" "$noop") |"
echo "(runs: homebase ${hb_times[*]} ms; by hand ${hand_times[*]} ms)"

# Round trips to the API on n7, a worker: the tunnel goes through the manager's SSH.
addr=$("$hb" -C "$work" tunnel --check --json 2>/dev/null | python3 -c 'import json,sys; print(next(s["remote_host"] for s in json.load(sys.stdin)["services"] if s["service"] == "api"))')
n=${addr##*.1}
SSH_OPTS=(-i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" -o BatchMode=yes -o ExitOnForwardFailure=yes)
HOMEBASE_STATE_DIR=$work/state "$hb" -C "$work" tunnel --json > "$work/tunnel.log" 2>&1 & pids+=($!)
ssh "${SSH_OPTS[@]}" -N -L "127.0.0.1:39181:$addr:8080" hb5@10.231.0.15 & pids+=($!)
ssh "${SSH_OPTS[@]}" -N -L 127.0.0.1:39182:127.0.0.1:8080 "hb$n@$addr" & pids+=($!)
for port in 39180 39181 39182; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ok" >/dev/null && break; sleep 0.1; done
done
read -r hb50 hb99 < <(rtt 39180 ok)
read -r jump50 jump99 < <(rtt 39181 ok)
read -r direct50 direct99 < <(rtt 39182 ok)
echo
echo "| API on node n$n, 1,000 HTTP requests | homebase tunnel (via the manager) | ssh -L via the manager (it ÷ homebase) | ssh -L to n$n itself (it ÷ homebase) |"
echo "| --- | ---: | ---: | ---: |"
echo "| round trip p50 (ms) | $hb50 | $jump50 ($(ratio "$hb50" "$jump50")×) | $direct50 ($(ratio "$hb50" "$direct50")×) |"
echo "| round trip p99 (ms) | $hb99 | $jump99 ($(ratio "$hb99" "$jump99")×) | $direct99 ($(ratio "$hb99" "$direct99")×) |"
