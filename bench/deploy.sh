#!/usr/bin/env bash
# homebase deploy against `DOCKER_HOST=ssh://… docker compose up -d` on the deployable demo
# stack, from the laptop side to test host 1, in one run: first deploy, no-op, one-service
# change. Needs `scripts/testhost up 1`. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
N=${N:-5}
eval "$(scripts/testhost env)"
work=$(mktemp -d); trap 'cleanup' EXIT
export DB_PORT=35432 API_PORT=38080

# homebase's project
mkdir -p "$work/hb"; cp examples/demo/compose.yml "$work/hb/"
sed -e 's/^name = "demo"/name = "benchhb"/' -e "s/^ssh = .*/ssh = \"$HB_HOST1_USER@$HB_HOST1_ADDR\"/" -e '/^# An agent loop/,$d' examples/demo/homebase.toml > "$work/hb/homebase.toml"
# plain compose: the same rendered file, its own project and ports, ssh through a temp HOME
mkdir -p "$work/bin" "$work/plain"
# ssh reads the config of the passwd home, not $HOME: a wrapper hands docker's ssh our config
printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$work/ssh_config" > "$work/bin/ssh"; chmod +x "$work/bin/ssh"
cat > "$work/ssh_config" <<CFG
Host $HB_HOST1_ADDR
  User $HB_HOST1_USER
  IdentityFile $HB_TESTHOST_KEY
  UserKnownHostsFile $HB_TESTHOST_KNOWN_HOSTS
  StrictHostKeyChecking yes
CFG
plain() { PATH=$work/bin:$PATH DOCKER_HOST=ssh://$HB_HOST1_USER@$HB_HOST1_ADDR docker compose -p benchplain -f "$work/plain/compose.yml" "$@"; }
render_plain() { DB_PORT=45432 API_PORT=48080 "$hb" -C "$work/hb" render -o "$work/plain/compose.yml" 2>/dev/null; }
reset_hb() { DOCKER_HOST=unix:///run/homebase-testhost/hbhost1/docker.sock docker compose -p benchhb down -v >/dev/null 2>&1 || true
             ssh -i "$HB_TESTHOST_KEY" -o UserKnownHostsFile="$HB_TESTHOST_KNOWN_HOSTS" "$HB_HOST1_USER@$HB_HOST1_ADDR" 'rm -rf ~/.homebase/benchhb' ; }
reset_plain() { plain down -v >/dev/null 2>&1 || true; }
cleanup() { reset_hb; reset_plain; rm -rf "$work"; }
marker() { sed -i "s/\"-h\", \"\/www\"\]/\"-h\", \"\/www\", \"-v\"]/; t; s/\"-h\", \"\/www\", \"-v\"\]/\"-h\", \"\/www\"]/" "$work/hb/compose.yml"; }

first_hb() { reset_hb; "$hb" -C "$work/hb" deploy; }
first_plain() { reset_plain; render_plain; plain up -d; }
first_plain_wait() { reset_plain; render_plain; plain up -d --wait; }
change_hb() { marker; "$hb" -C "$work/hb" deploy; }
change_plain() { marker; render_plain; plain up -d --wait; }

f_hb=$(median_ms "$N" first_hb)
f_pl=$(median_ms "$N" first_plain)
f_plw=$(median_ms "$N" first_plain_wait)
n_hb=$(median_ms "$N" "$hb" -C "$work/hb" deploy)
n_pl=$(median_ms "$N" plain up -d)
c_hb=$(median_ms "$N" change_hb)
c_pl=$(median_ms "$N" change_plain)

echo "| scenario | homebase deploy (ms) | compose over ssh:// (ms) | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| first deploy (homebase waits for health) | $f_hb | $f_pl (up -d) / $f_plw (up -d --wait) | $(ratio "$f_plw" "$f_hb")× of --wait |"
echo "| no-op deploy | $n_hb | $n_pl (up -d) | $(ratio "$n_pl" "$n_hb")× |"
echo "| one service changed | $c_hb | $c_pl (up -d --wait) | $(ratio "$c_pl" "$c_hb")× |"
