#!/usr/bin/env bash
# The demo stack deployed to a Debian test host (1) and to the Mac-like host (8: zsh, no
# Homebrew on an SSH command's PATH, the engine behind the colima context in a VM), in one
# run: first deploy, no-op, one-service change, status. And what a user would otherwise
# type: `DOCKER_HOST=ssh://… docker compose ps` against each. Needs `scripts/testhost up 9`.
# Prints a markdown table (median of N runs, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
N=${N:-5}
eval "$(scripts/testhost env)"
work=$(mktemp -d); trap 'cleanup' EXIT
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS

project() { # project N: a copy of the demo for host N, its own name and ports
  local n=$1 addr user
  addr=$(eval echo "\$HB_HOST${n}_ADDR"); user=$(eval echo "\$HB_HOST${n}_USER")
  mkdir -p "$work/h$n"; cp examples/demo/compose.yml "$work/h$n/"
  sed -e "s/^name = \"demo\"/name = \"benchmac$n\"/" -e "s/^ssh = .*/ssh = \"$user@$addr\"/" -e "/^# An agent loop/,\$d" \
    examples/demo/homebase.toml > "$work/h$n/homebase.toml"
}
hbx() { local n=$1; shift; DB_PORT=$((35400 + n)) API_PORT=$((38000 + n)) "$hb" -C "$work/h$n" "$@"; }
reset() { local n=$1 addr user; addr=$(eval echo "\$HB_HOST${n}_ADDR"); user=$(eval echo "\$HB_HOST${n}_USER")
  hbx "$n" render -o "$work/h$n/r.yml" >/dev/null 2>&1
  ssh -i "$K" -o UserKnownHostsFile="$KH" "$user@$addr" \
    "PATH=\$PATH:/opt/homebrew/bin; docker compose -p benchmac$n down -v >/dev/null 2>&1 || /opt/homebrew/lib/docker/cli-plugins/docker-compose -p benchmac$n down -v >/dev/null 2>&1; rm -rf ~/.homebase/benchmac$n"; }
cleanup() { reset 1 || true; reset 8 || true; rm -rf "$work"; }
marker() { sed -i "s/\"-h\", \"\/www\"\]/\"-h\", \"\/www\", \"-v\"]/; t; s/\"-h\", \"\/www\", \"-v\"\]/\"-h\", \"\/www\"]/" "$work/h$1/compose.yml"; }
plain_ps() { # what a user types without homebase: compose over ssh://
  local n=$1 addr user; addr=$(eval echo "\$HB_HOST${n}_ADDR"); user=$(eval echo "\$HB_HOST${n}_USER")
  printf '#!/bin/sh\nexec /usr/bin/ssh -i %s -o UserKnownHostsFile=%s "$@"\n' "$K" "$KH" > "$work/ssh"; chmod +x "$work/ssh"
  mkdir -p "$work/bin"; cp "$work/ssh" "$work/bin/ssh"
  PATH=$work/bin:$PATH DOCKER_HOST=ssh://$user@$addr docker compose -p benchmac$n ps
}

declare -A R
for n in 1 8; do
  project "$n"
  cur=$n
  R[first$n]=$(median_ms_after "$N" "reset $n" hbx "$n" deploy)
  R[noop$n]=$(median_ms "$N" hbx "$n" deploy)
  R[change$n]=$(median_ms_after "$N" "marker $n" hbx "$n" deploy)
  R[status$n]=$(median_ms "$N" hbx "$n" status)
  if plain_ps "$n" >/dev/null 2>"$work/plain$n.err"; then
    R[plain$n]="$(median_ms "$N" plain_ps "$n") ms"
  else
    R[plain$n]="fails: $(grep -io 'command not found.*\|not found.*' "$work/plain$n.err" | head -1 | cut -c1-60)"
  fi
done
echo "| job | Debian host (1) | Mac-like host (8) | Mac ÷ Debian |"
echo "|---|---:|---:|---:|"
for j in first noop change status; do
  echo "| homebase $j | ${R[${j}1]} ms | ${R[${j}8]} ms | $(ratio "${R[${j}1]}" "${R[${j}8]}")× |"
done
echo "| \`DOCKER_HOST=ssh://… docker compose ps\` | ${R[plain1]} | ${R[plain8]} | – |"
