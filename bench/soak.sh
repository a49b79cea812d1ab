#!/usr/bin/env bash
# A soak: PostgreSQL (and an API depending on it) under faults for MINUTES (default 20),
# a row inserted every 100 ms by a prober on the host, side by side in one run:
#   homebase   `homebase deploy`, its daemon running (restarted by a KeepAlive-like loop, as
#              launchd does), its planned changes through `homebase deploy`
#   compose    `docker compose up -d` of the same files with `restart: unless-stopped`, its
#              planned changes through `docker compose up -d`
# Every PERIOD seconds (default 60) the next fault of the cycle hits both at once:
#   kill      `docker kill` of the database
#   change    a planned change of the database's environment, deployed
#   engine    dockerd restarted (`scripts/testhost restart-dockerd`)
#   daemon    `kill -9` of homebase's daemon (nothing for compose)
# Prints availability (inserts acknowledged / attempted), each fault kind's outage (longest
# run of failed inserts after it, min/median/max), acknowledged rows lost, and homebase's
# end state (lock, health, a final deploy). Uses test hosts
# 5 (homebase) and 6 (compose) alone: do not run it beside the tests. Homebase's engine has
# live-restore on, as `homebase setup` leaves it (LIVE_RESTORE=0: off).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
MINUTES=${MINUTES:-20}
PERIOD=${PERIOD:-60}
eval "$(scripts/testhost env)"
K=$HB_TESTHOST_KEY; KH=$HB_TESTHOST_KNOWN_HOSTS
work=$(mktemp -d)
port_hb=25601; port_c=25602; dport=17991
ssh_to() { /usr/bin/ssh -i "$K" -o UserKnownHostsFile="$KH" -o BatchMode=yes "$@"; }
h5="$HB_HOST5_USER@$HB_HOST5_ADDR"; h6="$HB_HOST6_USER@$HB_HOST6_ADDR"

compose_file() { # PORT VERSION RESTART
  cat <<EOF
services:
  db:
    image: hb/pgvector:latest
    environment: {POSTGRES_PASSWORD: pw, SOAK_VERSION: "$2"}
    ports: ["127.0.0.1:$1:5432"]
    volumes: [data:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"], interval: 1s, retries: 60}
$3
  api:
    image: hb/busybox:latest
    command: ["sh", "-c", "while true; do sleep 1; done"]
    depends_on: {db: {condition: service_healthy}}
$3
volumes:
  data: {}
EOF
}

# The engine's live-restore (its daemon.json of its own, scripts/testhost; a reload applies
# it): on for homebase's host, as `homebase setup` sets it (tested on host 4, whose account
# may sudo), off for Compose's, Docker's default. LIVE_RESTORE=0 leaves it off on both.
live_restore() { # HOST_NUMBER true|false
  local d=/run/homebase-testhost/hbhost$1
  [ -f "$d/daemon.json" ] || { echo "host $1's engine has no daemon.json of its own: run scripts/testhost fresh $1" >&2; return 1; }
  echo "{\"live-restore\": $2}" > "$d/daemon.json"
  kill -HUP "$(cat "$d/dockerd.pid")"
  for _ in $(seq 50); do
    [ "$(DOCKER_HOST=unix://$d/docker.sock docker info --format '{{.LiveRestoreEnabled}}')" = "$2" ] && return 0
    sleep 0.1
  done
  echo "host $1's engine did not take live-restore: $2" >&2; return 1
}

cleanup() {
  set +e
  live_restore 5 false; live_restore 6 false
  ssh_to "$h5" 'pkill -f "soak-keepalive" ; pkill -f "homebase daemon --listen 127.0.0.1:'$dport'"; pkill -f soak-probe' >/dev/null 2>&1
  ssh_to "$h6" 'pkill -f soak-probe' >/dev/null 2>&1
  DOCKER_HOST=unix:///run/homebase-testhost/hbhost5/docker.sock docker compose -p soak-hb down -v -t 1 >/dev/null 2>&1
  DOCKER_HOST=unix:///run/homebase-testhost/hbhost6/docker.sock docker compose -p soak-compose down -v -t 1 >/dev/null 2>&1
  ssh_to "$h5" 'rm -rf ~/.homebase/soak-hb ~/.homebase/soak-daemon ~/soak' >/dev/null 2>&1
  ssh_to "$h6" 'rm -rf ~/soak' >/dev/null 2>&1
  rm -rf "$work"
  true
}
trap cleanup EXIT
if [ "${LIVE_RESTORE:-1}" = 1 ]; then live_restore 5 true; else live_restore 5 false; fi
live_restore 6 false

# homebase's project on host 5
mkdir -p "$work/hb"
compose_file $port_hb 0 "" > "$work/hb/compose.yml"
cat > "$work/hb/homebase.toml" <<EOF
[project]
name = "soak-hb"
[host]
ssh = "$h5"
identity_file = "$K"
known_hosts_file = "$KH"
[budget]
host_memory = "4GiB"
[services.db]
priority = "critical"
memory = "512MiB"
[services.api]
memory = "16MiB"
[daemon]
interval_ms = 1000
EOF
HOMEBASE_COLOR=never "$hb" -C "$work/hb" deploy --timeout 120 >/dev/null
# compose's on host 6, copied there as a user would
compose_file $port_c 0 "    restart: unless-stopped" > "$work/compose.yml"
ssh_to "$h6" 'mkdir -p ~/soak' && ssh_to "$h6" 'cat > ~/soak/compose.yml' < "$work/compose.yml"
ssh_to "$h6" 'cd ~/soak && docker compose -p soak-compose up -d --wait >/dev/null 2>&1'

# the daemon on host 5, kept alive as launchd would
ssh_to "$h5" "mkdir -p ~/soak ~/.homebase/soak-daemon; nohup sh -c 'while true; do $hb daemon --listen 127.0.0.1:$dport --state-dir \$HOME/.homebase/soak-daemon --project soak-hb >> \$HOME/soak/daemon.log 2>&1; sleep 1; done # soak-keepalive' > /dev/null 2>&1 < /dev/null &"

# the probers: one insert every 100 ms, each line "ms ok|fail"
probe() { # HOST PORT
  ssh_to "$1" "PGPASSWORD=pw psql -h 127.0.0.1 -p $2 -U postgres -qc 'create table if not exists soak (n bigint primary key)' >/dev/null 2>&1; \
    nohup sh -c 'i=0; end=\$((\$(date +%s) + $MINUTES * 60)); while [ \$(date +%s) -lt \$end ]; do i=\$((i + 1)); t=\$(date +%s%3N); \
      if PGCONNECT_TIMEOUT=1 PGPASSWORD=pw psql -h 127.0.0.1 -p $2 -U postgres -qtAc \"insert into soak values (\$i)\" >/dev/null 2>&1; then echo \"\$t ok \$i\"; else echo \"\$t fail \$i\"; fi; sleep 0.1; done # soak-probe' > \$HOME/soak/probe.log 2>&1 < /dev/null &"
}
probe "$h5" $port_hb
probe "$h6" $port_c

faults=(kill change engine daemon)
start=$(date +%s)
n=0
: > "$work/faults"
while [ $(( $(date +%s) + PERIOD )) -lt $(( start + MINUTES * 60 )) ]; do
  sleep "$PERIOD"
  kind=${faults[$((n % 4))]}; n=$((n + 1))
  echo "$(date +%s%3N) $kind" >> "$work/faults"
  case $kind in
    kill)
      DOCKER_HOST=unix:///run/homebase-testhost/hbhost5/docker.sock docker kill soak-hb-db-1 >/dev/null 2>&1 &
      DOCKER_HOST=unix:///run/homebase-testhost/hbhost6/docker.sock docker kill soak-compose-db-1 >/dev/null 2>&1 &
      wait ;;
    change)
      compose_file $port_hb "$n" "" > "$work/hb/compose.yml"
      compose_file $port_c "$n" "    restart: unless-stopped" > "$work/compose.yml"
      ( HOMEBASE_COLOR=never "$hb" -C "$work/hb" deploy --timeout 120 >/dev/null 2>&1 || true ) &
      ( ssh_to "$h6" 'cat > ~/soak/compose.yml' < "$work/compose.yml" && ssh_to "$h6" 'cd ~/soak && docker compose -p soak-compose up -d --wait >/dev/null 2>&1' || true ) &
      wait ;;
    engine)
      scripts/testhost restart-dockerd 5 >/dev/null 2>&1 &
      scripts/testhost restart-dockerd 6 >/dev/null 2>&1 &
      wait ;;
    daemon)
      # the daemon alone (the keep-alive loop, a shell, stays as launchd would)
      ssh_to "$h5" 'pkill -9 -x homebase' >/dev/null 2>&1 || true ;;
  esac
done
left=$(( start + MINUTES * 60 - $(date +%s) + 3 )); [ "$left" -gt 0 ] && sleep "$left"

report() { # NAME HOST
  ssh_to "$2" 'cat ~/soak/probe.log' > "$work/$1.log"
  # the rows the table holds, to compare with the inserts the prober saw acknowledged
  ssh_to "$2" "PGPASSWORD=pw psql -h 127.0.0.1 -p $3 -U postgres -qtAc 'select n from soak'" > "$work/$1.rows" 2>/dev/null || true
  awk -v name="$1" 'function sortv(a, m,   i, j, x) { for (i = 2; i <= m; i++) { x = a[i]; j = i - 1; while (j > 0 && a[j] + 0 > x + 0) { a[j + 1] = a[j]; j-- } a[j + 1] = x } }
    FILENAME == ARGV[1] { ft[FNR] = $1; fk[FNR] = $2; nf = FNR; next }
    FILENAME == ARGV[2] { if ($1 != "") held[$1 + 0] = 1; next }
    { t[FNR] = $1; s[FNR] = $2; n = FNR; if ($2 == "ok") { ok++; if (!(($3 + 0) in held)) lost++ } else if (($3 + 0) in held) unacked++ }
    END {
      for (i = 1; i <= nf; i++) {
        # the longest run of failures starting within 30 s after the fault
        best = 0; run0 = 0
        for (j = 1; j <= n; j++) {
          if (t[j] < ft[i]) continue
          if (t[j] > ft[i] + 30000 && run0 == 0) break
          if (s[j] == "fail") { if (run0 == 0) run0 = t[j] } else if (run0) { d = t[j] - run0; if (d > best) best = d; run0 = 0 }
        }
        out[fk[i]] = out[fk[i]] sprintf("%.1f ", best / 1000)
      }
      printf "| %s | %.2f%% (%d of %d) | %d | %d |", name, 100 * ok / n, ok, n, lost, unacked
      split("kill change engine daemon", kinds, " ")
      for (k = 1; k <= 4; k++) {
        m = split(out[kinds[k]], v, " "); sortv(v, m)
        if (m == 0) printf " – |"; else printf " %s / %s / %s |", v[1], v[int((m + 1) / 2)], v[m]
      }
      printf "\n"
    }' "$work/faults" "$work/$1.rows" "$work/$1.log"
}
echo "soak: $MINUTES min, a fault every $PERIOD s ($(wc -l < "$work/faults") faults), inserts every 100 ms"
echo
echo "| stack | inserts acknowledged | acknowledged rows lost | rows kept but not acknowledged | kill outage s (min / median / max) | planned change | engine restart | daemon kill -9 |"
echo "|---|---|---|---|---|---|---|---|"
report homebase "$h5" $port_hb
report "compose, restart: unless-stopped" "$h6" $port_c

# homebase's end state: the lock free, the stack healthy, a deploy that works first time
lock=free; ssh_to "$h5" 'test -e ~/.homebase/soak-hb/lock' && lock=held
healthy=$(HOMEBASE_COLOR=never "$hb" -C "$work/hb" status --json 2>/dev/null | grep -o '"healthy": *[a-z]*' | head -1 | sed 's/.*: *//')
final=failed; HOMEBASE_COLOR=never "$hb" -C "$work/hb" deploy >/dev/null 2>&1 && final=ok
echo
echo "homebase at the end: lock $lock, healthy ${healthy:-unknown}, a final deploy $final"
