#!/usr/bin/env bash
# Plan and render speed against `docker compose config` on the same files, in one run:
# the largest corpus file and a generated 500-service file. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
cargo build --release --quiet --bin homebase
hb=$PWD/target/release/homebase
N=${N:-20}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# 1. the largest corpus file (by lines)
corpus=../shared/corpus/compose
big=$(wc -l "$corpus"/*.y*ml | sort -n | grep -v total | tail -1 | awk '{print $2}')
mkdir -p "$work/corpus"; cp "$big" "$work/corpus/compose.yml"
printf '[project]\nname = "bench"\n[budget]\nhost_memory = "1024GiB"\n' > "$work/corpus/homebase.toml"
for s in $("$hb" -C "$work/corpus" plan --json | python3 -c 'import json,sys; print(" ".join(x["name"] for x in json.load(sys.stdin)["services"]))'); do
  printf '[services."%s"]\nmemory = "256MiB"\n' "$s" >> "$work/corpus/homebase.toml"
done

# 2. a generated 500-service file with anchors, interpolation, healthchecks and limits
mkdir -p "$work/gen"
{
  echo "x-common: &common"
  echo "  restart: unless-stopped"
  echo "  environment:"
  echo "    LOG_LEVEL: \${LOG_LEVEL:-info}"
  echo "services:"
  for i in $(seq 500); do
    cat <<YML
  svc$i:
    <<: *common
    image: "registry.example/app:\${TAG:-1.$i}"
    mem_limit: $((64 + i % 64))m
    ports: ["127.0.0.1:$((20000 + i)):8080"]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/health"]
      interval: 10s
    depends_on: [$( [ "$i" -gt 1 ] && echo "svc$((i - 1))" || echo "" )]
YML
  done
  echo "volumes: {}"
} | sed 's/depends_on: \[\]/depends_on: []/' > "$work/gen/compose.yml"
sed -i '/depends_on: \[\]/d' "$work/gen/compose.yml"
printf '[project]\nname = "bench"\n[budget]\nhost_memory = "1024GiB"\n' > "$work/gen/homebase.toml"

echo "| file | homebase plan (ms) | homebase render (ms) | docker compose config (ms) | compose / render |"
echo "| --- | ---: | ---: | ---: | ---: |"
for d in corpus gen; do
  name=$([ $d = corpus ] && basename "$big" || echo "generated, 500 services")
  p=$(median_ms "$N" "$hb" -C "$work/$d" plan)
  r=$(median_ms "$N" "$hb" -C "$work/$d" render -o "$work/$d/out.yml")
  c=$(median_ms "$N" docker compose -f "$work/$d/compose.yml" config)
  echo "| $name | $p | $r | $c | $(ratio "$r" "$c")× |"
done
