# Shared helpers for the benchmark scripts: time a command N times, report the median.

# median_ms N CMD...: runs CMD N times (output discarded) and prints the median in ms.
median_ms() { local n=$1; shift; median_ms_after "$n" : "$@"; }

# median_ms_after N PREP CMD...: like median_ms, running PREP (untimed) before each run.
median_ms_after() {
  local n=$1 prep=$2; shift 2
  local times=()
  for _ in $(seq "$n"); do
    $prep >/dev/null 2>&1 || true
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f\n", m / 1000}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (a > 0 ? b / a : 0) }'; }

# rtt PORT [PATH]: p50 and p99 (ms) of 1,000 HTTP/1.0 requests to 127.0.0.1:PORT/PATH.
rtt() { python3 - "$1" "${2:-index.html}" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); req = f"GET /{sys.argv[2]} HTTP/1.0\r\nHost: x\r\n\r\n".encode(); t = []
for _ in range(1000):
    s0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(req)
    while s.recv(4096): pass
    s.close()
    t.append((time.perf_counter() - s0) * 1000)
t.sort()
print(f"{t[499]:.2f} {t[989]:.2f}")
PY
}

# long_link ADDR ONE_WAY_MS WORK: starts the testkit's delay proxy in front of ADDR:22 (each
# direction delayed ONE_WAY_MS) and writes WORK/known_hosts for it (and for ADDR itself).
# Sets proxy_pid and pport; the caller kills proxy_pid at its end. Needs `scripts/testhost env`.
long_link() {
  local addr=$1 delay=$2 work=$3
  ./target/release/delay-proxy "$addr:22" "$delay" > "$work/port" &
  proxy_pid=$!
  for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
  pport=$(cat "$work/port")
  grep "^$addr " "$HB_TESTHOST_KNOWN_HOSTS" | sed "s/^$addr /[127.0.0.1]:$pport /" > "$work/known_hosts"
  cat "$HB_TESTHOST_KNOWN_HOSTS" >> "$work/known_hosts"
}
