#!/usr/bin/env bash
# Agent-loop soak: one loop of N short iterations (each writes a file in its workspace, so
# the breaker stays closed) run by the host daemon on test host 1. Reports the daemon's RSS
# at iteration 100 and at the end, leaked containers and volumes, and the time per
# iteration side by side with a bare `docker run` of the same image with the same limits
# (what a bash loop in tmux does), run N_BARE times on the same host.
# RESULT=1: each iteration also prints a recorded Claude Code stream-json result (three
# lines, the result last) and the loop reads it (`output_format = "stream-json"`, with a
# daily cap, so the ledger is written and summed every iteration); the bare loop prints
# the same lines. Needs root and `scripts/testhost up 1`. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-2000}
N_BARE=${N_BARE:-200}
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
eval "$(scripts/testhost env)"
work=$(mktemp -d); chmod 755 "$work"
ssh_h() { ssh -i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" -o BatchMode=yes "$HB_HOST1_USER@$HB_HOST1_ADDR" "$@"; }
state=/tmp/benchl-state
port=7798
cleanup() {
  ssh_h "kill \$(cat $state/pid) 2>/dev/null; DOCKER_HOST= docker compose -p benchl down >/dev/null 2>&1; rm -rf ~/.homebase/benchl $state ~/benchl-ws" || true
  rm -rf "$work"
}
trap cleanup EXIT
cleanup; work=$(mktemp -d); chmod 755 "$work"
uidgid=$(ssh_h 'echo $(id -u):$(id -g)'); home=$(ssh_h 'echo $HOME')
ssh_h 'mkdir -p ~/benchl-ws'
extra=""; say=""
if [ "${RESULT:-0}" = 1 ]; then
  ssh_h 'cat > ~/benchl-ws/result.jsonl' <<'JSON'
{"type":"system","subtype":"init","session_id":"5b1c2d3e-0000-4000-8000-000000000001","tools":["Bash","Edit","Read"],"model":"claude-sonnet-4-5"}
{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Story US-1 passes."}]},"session_id":"5b1c2d3e-0000-4000-8000-000000000001"}
{"type":"result","subtype":"success","is_error":false,"duration_ms":41233,"num_turns":9,"result":"Story US-1 passes.","session_id":"5b1c2d3e-0000-4000-8000-000000000001","total_cost_usd":0.0001,"usage":{"input_tokens":1200,"cache_creation_input_tokens":15000,"cache_read_input_tokens":200000,"output_tokens":3800}}
JSON
  extra=$'output_format = "stream-json"\nmax_cost_per_day = 1000000.0'
  say="; cat /workspace/result.jsonl"
fi
printf 'services:\n  idle:\n    image: hb/busybox:latest\n    command: ["sleep", "3600"]\n    stop_signal: SIGKILL\n' > "$work/compose.yml"
cat > "$work/homebase.toml" <<TOML
[project]
name = "benchl"
[host]
ssh = "$HB_HOST1_USER@$HB_HOST1_ADDR"
identity_file = "$HB_TESTHOST_KEY"
known_hosts_file = "$HB_TESTHOST_KNOWN_HOSTS"
[budget]
host_memory = "4GiB"
[services.idle]
memory = "16MiB"
[loops.soak]
image = "hb/busybox:latest"
command = "date +%s%N > /workspace/last; echo iteration \$HOMEBASE_ITERATION$say"
$extra
workspace = "$home/benchl-ws"
user = "$uidgid"
memory = "16MiB"
timeout = "60s"
max_iterations = $N
TOML
volumes_before=$(ssh_h 'docker volume ls -q | wc -l')
"$hb" -C "$work" deploy >/dev/null
api() { ssh_h "wget -qO- --header \"Authorization: Bearer \$(cat $state/token)\" 'http://127.0.0.1:$port/api/loops?project=benchl'"; }
iterations() { api | sed -n 's/.*"iterations":\([0-9]*\).*/\1/p'; }
loop_state() { api | sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p'; }
rss_kib() { ssh_h "awk '/VmRSS/ {print \$2}' /proc/\$(cat $state/pid)/status"; }
ssh_h "mkdir -p $state; nohup $hb daemon --listen 127.0.0.1:$port --state-dir $state --project benchl > $state/log 2>&1 < /dev/null & echo \$! > $state/pid"
until api >/dev/null 2>&1; do sleep 0.2; done
# wait for iteration 100
while [ "$(iterations || echo 0)" -lt 100 ] 2>/dev/null; do sleep 0.5; done
rss100=$(rss_kib); t100=$(date +%s%N); i100=$(iterations)
while [ "$(loop_state)" != "exhausted" ] && [ "$(loop_state)" != "completed" ]; do sleep 2; done
rss_end=$(rss_kib); t_end=$(date +%s%N); i_end=$(iterations)
per_iter=$(awk -v a="$t100" -v b="$t_end" -v n=$((i_end - i100)) 'BEGIN { printf "%.0f", (b - a) / n / 1e6 }')
leaked=$(ssh_h 'docker ps -aq --filter label=dev.homebase.loop | wc -l')
volumes_after=$(ssh_h 'docker volume ls -q | wc -l')
# bare docker run, the same image, limits and mount, one after another
bare=$(ssh_h "mkdir -p ~/benchl-ws; t0=\$(date +%s%N); for i in \$(seq $N_BARE); do docker run --rm --init -m 16m --memory-swap 16m --user $uidgid -v \$HOME/benchl-ws:/workspace -w /workspace hb/busybox:latest sh -c 'date +%s%N > /workspace/last; echo iteration$say' >/dev/null; done; t1=\$(date +%s%N); echo \$(( (t1 - t0) / $N_BARE / 1000000 ))")
growth=$(awk -v a="$rss100" -v b="$rss_end" 'BEGIN { printf "%.1f", (b - a) / a * 100 }')
echo "| soak: $i_end iterations of one loop | homebase daemon | bare \`docker run --rm\` loop | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| time per iteration (ms; create, start, output, wait, record, remove) | $per_iter | $bare | $(ratio "$bare" "$per_iter") |"
echo "| daemon RSS at iteration $i100 → $i_end (MiB) | $(awk -v k="$rss100" 'BEGIN{printf "%.1f", k/1024}') → $(awk -v k="$rss_end" 'BEGIN{printf "%.1f", k/1024}') ($growth %) | – | – |"
echo "| iteration containers left / volumes added | $leaked / $((volumes_after - volumes_before)) | – | – |"
