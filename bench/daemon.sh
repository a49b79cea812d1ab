#!/usr/bin/env bash
# The host daemon's cost while it watches 20 containers at 2 s, side by side with what users
# script today: a shell loop running `docker stats --no-stream` every 2 s. Both run on test
# host 1 for the same time; CPU is user+system of the process tree, memory its peak RSS.
# Needs root and `scripts/testhost up 1`. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${SECS:-60}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
eval "$(scripts/testhost env)"
work=$(mktemp -d); chmod 755 "$work"
ssh_h() { ssh -i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" -o BatchMode=yes "$HB_HOST1_USER@$HB_HOST1_ADDR" "$@"; }
cleanup() { DOCKER_HOST=unix:///run/homebase-testhost/hbhost1/docker.sock docker compose -p benchd down >/dev/null 2>&1 || true
            ssh_h 'rm -rf ~/.homebase/benchd /tmp/benchd-state' || true; rm -rf "$work"; }
trap cleanup EXIT

{ echo "services:"; for i in $(seq 20); do printf '  s%s:\n    image: hb/busybox:latest\n    command: ["sleep", "3600"]\n    stop_signal: SIGKILL\n' "$i"; done; } > "$work/compose.yml"
{ printf '[project]\nname = "benchd"\n[host]\nssh = "%s@%s"\nidentity_file = "%s"\nknown_hosts_file = "%s"\n[budget]\nhost_memory = "4GiB"\n' \
    "$HB_HOST1_USER" "$HB_HOST1_ADDR" "$HB_TESTHOST_KEY" "$HB_TESTHOST_KNOWN_HOSTS"
  for i in $(seq 20); do printf '[services.s%s]\nmemory = "16MiB"\n' "$i"; done; } > "$work/homebase.toml"
"$hb" -C "$work" deploy >/dev/null

# each measurement: "<cpu seconds> <max rss KiB>"
daemon=$(ssh_h "/usr/bin/time -f '%U %S %M' timeout -s TERM $SECS $hb daemon --listen 127.0.0.1:7799 --state-dir /tmp/benchd-state --project benchd 2>&1 >/dev/null | tail -1")
loop=$(ssh_h "/usr/bin/time -f '%U %S %M' timeout -s TERM $SECS sh -c 'while true; do docker stats --no-stream >/dev/null; sleep 2; done' 2>&1 >/dev/null | tail -1")
samples=$(ssh_h "ls /tmp/benchd-state >/dev/null && echo ok")
read -r du ds dm <<<"$daemon"; read -r lu ls_ lm <<<"$loop"
dcpu=$(awk -v a="$du" -v b="$ds" -v s="$SECS" 'BEGIN { printf "%.2f", (a + b) / s * 100 }')
lcpu=$(awk -v a="$lu" -v b="$ls_" -v s="$SECS" 'BEGIN { printf "%.2f", (a + b) / s * 100 }')
echo "| over ${SECS} s, 20 containers, every 2 s | homebase daemon | docker stats --no-stream loop | ratio (daemon / loop) |"
echo "| --- | ---: | ---: | ---: |"
echo "| CPU (% of one core) | $dcpu | $lcpu | $(ratio "$lcpu" "$dcpu") |"
echo "| peak RSS (MiB) | $(awk -v m="$dm" 'BEGIN { printf "%.1f", m / 1024 }') | $(awk -v m="$lm" 'BEGIN { printf "%.1f", m / 1024 }') (largest process) | $(ratio "$lm" "$dm") |"
[ "$samples" = ok ] || echo "warning: the daemon left no state" >&2
