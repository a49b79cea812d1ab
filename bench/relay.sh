#!/usr/bin/env bash
# The way in from anywhere, side by side in one run, on hosts 11 (a Mac-like Mini) and 12 (a
# relay: sshd and an account), `scripts/testhost up-away`:
#  1. A warm command (`homebase status`, its connection already open) directly and through
#     the relay, with 0 and 250 ms round trips on the laptop's link (the delay proxy in front
#     of the Mini's and the relay's sshd; the relay and the Mini are close, as a VPS near
#     home is): median milliseconds, and round trips (time ÷ RTT).
#  2. The Mini's uplink cut for 25 s, then back: seconds from its return until a command
#     through the relay works again, homebase's tunnel (kept by its daemon) against the usual
#     hand-made one, `autossh -M 0 -N -R …` with the same keep-alives, on the same relay,
#     both running during the same cut. The laptop's link is direct here (0 ms).
# Prints markdown tables. N (default 15) runs per warm figure.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-15}
CAP=${CAP:-90}   # seconds the uplink benchmark waits for a tunnel to come back
cargo build --release --quiet --bin homebase --bin delay-proxy
hb=$PWD/target/release/homebase
scripts/testhost fresh 11 >/dev/null 2>&1
scripts/testhost fresh 12 >/dev/null 2>&1
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
mini=$HB_HOST11_ADDR; mu=$HB_HOST11_USER; relay=$HB_HOST12_ADDR; ru=$HB_HOST12_USER
work=$(mktemp -d); mkdir -m 700 "$work/ssh"
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  pkill -u "$mu" -f autossh 2>/dev/null
  scripts/testhost allow-inbound 11 >/dev/null 2>&1
  scripts/testhost link-up 11 >/dev/null 2>&1
  for d in "$work"/ssh/*; do [ -S "$d" ] && ssh -S "$d" -O exit x >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT
export HOMEBASE_SSH_CONTROL_DIR=$work/ssh HOMEBASE_COLOR=never
P_HB=2222; P_AUTO=2223

# proxy ADDR ONE_WAY_MS NAME: a delay proxy in front of ADDR:22; its port in $work/NAME
proxy() {
  ./target/release/delay-proxy "$1:22" "$2" > "$work/$3" & pids+=($!)
  for _ in $(seq 50); do [ -s "$work/$3" ] && break; sleep 0.1; done
}
# project DIR MINI_PORT RELAY_ADDR RELAY_PORT: a project whose first way is the Mini behind
# its proxy, and whose relay is RELAY_ADDR:RELAY_PORT
project() {
  local d=$1 mp=$2 ra=$3 rp=$4
  mkdir -p "$d"
  printf 'services:\n  api:\n    image: hb/busybox:latest\n    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]\n    stop_signal: SIGKILL\n' > "$d/compose.yml"
  {
    grep "^$mini " "$KH" | sed "s/^$mini /[127.0.0.1]:$mp /"
    grep "^$relay " "$KH" | sed "s/^$relay /[$ra]:$rp /"
    cat "$KH"
  } > "$d/known_hosts"
  cat > "$d/homebase.toml" <<TOML
[project]
name = "benchrelay"
[host]
ssh = "$mu@127.0.0.1"
port = $mp
identity_file = "$K"
known_hosts_file = "$d/known_hosts"
connect_timeout_secs = 5
[host.relay]
ssh = "$ru@$ra"
port = $rp
tunnel_port = $P_HB
identity_file = "$K"
known_hosts_file = "$d/known_hosts"
[budget]
host_memory = "4GiB"
[services.api]
memory = "64MiB"
TOML
}

# the setup (at home, direct): the Mini's key on the relay for both tunnels' ports
# (the relay as the Mini reaches it: directly, not through the laptop's proxy)
proxy "$mini" 0 m0
project "$work/p0" "$(cat "$work/m0")" "$relay" 22
line=$( ("$hb" -C "$work/p0" setup --binary "$hb" --json 2>/dev/null || true) | python3 -c 'import json,sys; r=json.load(sys.stdin); print([i for i in r["items"] if i["name"]=="relay account"][0]["fix"].splitlines()[-1])')
key=${line#* }
echo "restrict,port-forwarding,permitlisten=\"127.0.0.1:$P_HB\",permitlisten=\"127.0.0.1:$P_AUTO\" $key" >> "/home/$ru/.ssh/authorized_keys"
"$hb" -C "$work/p0" setup --binary "$hb" >/dev/null 2>&1 || { "$hb" -C "$work/p0" setup --binary "$hb"; exit 1; }
"$hb" -C "$work/p0" deploy >/dev/null 2>&1

echo "### A warm command, directly and through the relay ($N runs each, median)"
echo
echo "| laptop link RTT | direct | through the relay | ratio | round trips direct / relay |"
echo "|---|---|---|---|---|"
for ow in 0 125; do
  proxy "$mini" "$ow" "m$ow"; proxy "$relay" "$ow" "r$ow"
  project "$work/q$ow" "$(cat "$work/m$ow")" 127.0.0.1 "$(cat "$work/r$ow")"
  scripts/testhost allow-inbound 11 >/dev/null
  "$hb" -C "$work/q$ow" status >/dev/null 2>&1 || true
  direct=$(median_ms "$N" "$hb" -C "$work/q$ow" status)
  for d in "$work"/ssh/*; do [ -S "$d" ] && ssh -S "$d" -O exit x >/dev/null 2>&1; done
  scripts/testhost block-inbound 11 >/dev/null
  "$hb" -C "$work/q$ow" status >/dev/null 2>&1 || true
  via=$(median_ms "$N" "$hb" -C "$work/q$ow" status)
  rtt=$((ow * 2))
  if [ "$rtt" -gt 0 ]; then
    trips="$(awk -v t="$direct" -v r="$rtt" 'BEGIN{printf "%.1f", t/r}') / $(awk -v t="$via" -v r="$rtt" 'BEGIN{printf "%.1f", t/r}')"
  else trips="-"; fi
  echo "| $rtt ms | ${direct} ms | ${via} ms | $(ratio "$direct" "$via")× | $trips |"
done
echo

# 2. the uplink: autossh beside the daemon's tunnel, on the same relay, the same key
as_mini() { nsenter --net=/run/netns/hbhost11 setpriv --reuid="$mu" --regid="$mu" --init-groups env HOME="/Users/$mu" "$@"; }
rk=/Users/$mu/.homebase/relay
as_mini env AUTOSSH_GATETIME=0 autossh -M 0 -f -N -o BatchMode=yes -o StrictHostKeyChecking=yes \
  -o "UserKnownHostsFile=$rk/known_hosts" -o HostKeyAlias=homebase-relay -o IdentitiesOnly=yes -i "$rk/id_ed25519" \
  -o ServerAliveInterval=5 -o ServerAliveCountMax=2 -o ExitOnForwardFailure=yes -o ConnectTimeout=5 \
  -R "127.0.0.1:$P_AUTO:127.0.0.1:22" "$ru@$relay"
# through_relay PORT: the Mini's sshd answers on the relay's loopback PORT (a fresh connection)
through_relay() {
  timeout 8 ssh -i "$K" -o IdentitiesOnly=yes -o UserKnownHostsFile="$KH" -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o HostKeyAlias="$mini" -o ConnectTimeout=3 \
    -o "ProxyCommand=ssh -i $K -o IdentitiesOnly=yes -o UserKnownHostsFile=$KH -o BatchMode=yes -W %h:%p $ru@$relay" \
    -p "$1" "$mu@127.0.0.1" true >/dev/null 2>&1
}
for _ in $(seq 100); do through_relay $P_AUTO && through_relay $P_HB && break; sleep 0.2; done
through_relay $P_AUTO || { echo "autossh's tunnel did not come up"; exit 1; }
echo "### The Mini's uplink cut for 25 s, then back: seconds until a command through the relay works"
echo
echo "| tunnel | back after |"
echo "|---|---|"
scripts/testhost link-down 11 >/dev/null
sleep 25
scripts/testhost link-up 11 >/dev/null
t0=$(date +%s%N); hb_back=""; auto_back=""
while :; do
  now=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ -z "$hb_back" ] && through_relay $P_HB && hb_back=$(awk -v m="$(( ($(date +%s%N) - t0) / 1000000 ))" 'BEGIN{printf "%.1f", m/1000}')
  [ -z "$auto_back" ] && through_relay $P_AUTO && auto_back=$(awk -v m="$(( ($(date +%s%N) - t0) / 1000000 ))" 'BEGIN{printf "%.1f", m/1000}')
  [ -n "$hb_back" ] && [ -n "$auto_back" ] && break
  [ "$now" -gt $((CAP * 1000)) ] && break
  sleep 0.1
done
echo "| homebase (the daemon's tunnel) | ${hb_back:-> $CAP} s |"
echo "| autossh -M 0 (ServerAlive 5 s × 2) | ${auto_back:-> $CAP} s |"
