#!/usr/bin/env bash
# `status` answered through `homebase mcp` (a JSON-RPC client over the server's stdio, as a
# coding agent's would be) side by side with the command an agent would otherwise run,
# `homebase status --json`, over a short link (test host 2 directly) and a long one (a delay
# proxy adding 125 ms each way: 250 ms round trips). Both with the warm SSH connection.
# `first answer` is a fresh server: spawn, handshake, tool list, first `status`. The host
# daemon runs, so `status` takes its last sample (as for a user with `homebase setup` done).
# Uses test host 2; prints a markdown table (median of N, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet --bin homebase --bin delay-proxy
hb=$PWD/target/release/homebase
N=${N:-5}
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
addr=$HB_HOST2_ADDR; user=$HB_HOST2_USER
engine=unix:///run/homebase-testhost/hbhost2/docker.sock
work=$(mktemp -d)
proxy_pid=
dstate=/tmp/hb-benchmcp-daemon-$$
dport=$(( 42000 + $$ % 1000 ))
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" "kill \$(cat $dstate/pid) 2>/dev/null; rm -rf $dstate" >/dev/null 2>&1 || true
  for d in "$work"/ssh/*; do [ -S "$d" ] && ssh -S "$d" -O exit x >/dev/null 2>&1; done
  DOCKER_HOST=$engine docker compose -p benchmcp down -v -t 1 >/dev/null 2>&1 || true
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" 'rm -rf ~/.homebase/benchmcp' >/dev/null 2>&1 || true
  rm -rf "$work"
  true
}
trap cleanup EXIT
long_link "$addr" 125 "$work"
mkdir -m 700 "$work/ssh"
export HOMEBASE_SSH_CONTROL_DIR=$work/ssh

project() { # project LINK: a directory with the stack, reaching host 2 directly or through the proxy
  local dir=$work/$1 ssh port
  mkdir -p "$dir"
  if [ "$1" = long ]; then ssh="$user@127.0.0.1"; port=$pport; else ssh="$user@$addr"; port=22; fi
  cat > "$dir/compose.yml" <<'EOF'
services:
  db:
    image: hb/pgvector:latest
    environment: { POSTGRES_PASSWORD: pw }
    healthcheck: { test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60 }
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    stop_signal: SIGKILL
    healthcheck: { test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/"], interval: 1s, retries: 3 }
EOF
  printf '[project]\nname = "benchmcp"\n[host]\nssh = "%s"\nport = %s\nidentity_file = "%s"\nknown_hosts_file = "%s/known_hosts"\n[budget]\nhost_memory = "4GiB"\n[services.db]\nmemory = "512MiB"\n[services.api]\nmemory = "64MiB"\n' \
    "$ssh" "$port" "$K" "$work" > "$dir/homebase.toml"
  echo "$dir"
}

# mcp_times DIR N: "first-answer-ms median-call-ms" for one server answering N status calls
mcp_times() { python3 - "$hb" "$1" "$2" <<'PY'
import json, subprocess, sys, time
hb, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
p = subprocess.Popen([hb, "-C", d, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
i = 0
def ask(method, params):
    global i
    i += 1
    p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n")
    p.stdin.flush()
    while True:
        m = json.loads(p.stdout.readline())
        if m.get("id") == i:
            if "error" in m or m.get("result", {}).get("isError"):
                sys.exit(f"{method}: {m}")
            return m["result"]
ask("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
ask("tools/list", {})
ask("tools/call", {"name": "status", "arguments": {}})
first = (time.perf_counter() - t0) * 1000
t = []
for _ in range(n):
    s = time.perf_counter()
    r = ask("tools/call", {"name": "status", "arguments": {}})
    assert r["structuredContent"]["healthy"], r
    t.append((time.perf_counter() - s) * 1000)
p.stdin.close(); p.wait()
t.sort()
print(f"{first:.0f} {t[len(t) // 2]:.0f}")
PY
}
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
cli_median() { # cli_median DIR N
  local t=()
  for _ in $(seq "$2"); do local a; a=$(ms_now); "$hb" -C "$1" status --json >/dev/null; t+=($(( $(ms_now) - a ))); done
  printf '%s\n' "${t[@]}" | sort -n | sed -n "$(( ($2 + 1) / 2 ))p"
}

# the host daemon, watching the bench's project: status takes its last sample
/usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" \
  "mkdir -p $dstate; nohup $hb daemon --listen 127.0.0.1:$dport --state-dir $dstate --project benchmcp > $dstate/log 2>&1 < /dev/null & echo \$! > $dstate/pid"
export HOMEBASE_DAEMON_STATE=$dstate

echo "| link | \`homebase status --json\` | MCP \`status\` call | MCP ÷ CLI | MCP first answer (fresh server) |"
echo "|---|---:|---:|---:|---:|"
for link in short long; do
  dir=$(project "$link")
  "$hb" -C "$dir" deploy >/dev/null 2>&1
  "$hb" -C "$dir" status --json >/dev/null # the warm connection
  cli=$(cli_median "$dir" "$N")
  read -r first call < <(mcp_times "$dir" "$N")
  label=$([ "$link" = long ] && echo "250 ms RTT" || echo "short (test host)")
  echo "| $label | ${cli} ms | ${call} ms | $(awk -v a="$cli" -v b="$call" 'BEGIN { printf "%.2f×", b / a }') | ${first} ms |"
  DOCKER_HOST=$engine docker compose -p benchmcp down -v -t 1 >/dev/null 2>&1 || true
  /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" 'rm -rf ~/.homebase/benchmcp' >/dev/null 2>&1 || true
done
