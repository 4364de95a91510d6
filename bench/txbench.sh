#!/usr/bin/env bash
# Transactional mode vs plain mode on Postgres, same payments binary, IDEM_MODE switched.
# 1. commits per first call: pg_stat_database.xact_commit delta over N sequential first calls / N
# 2. throughput and p99 of POST /payments (first calls), both modes side by side, interleaved.
set -euo pipefail
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
N=${N:-2000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
OUT=${OUT:-/tmp/txbench}
mkdir -p "$OUT"; : >"$OUT/results.jsonl"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
PG_DIR=$(mktemp -d /tmp/idem-txbench-pg.XXXXXX)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
PG_PORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
# Durable defaults, as bench/run.sh: fsync and synchronous_commit on.
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start -o \
  "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" >/dev/null
psql() { "$PG_BIN/psql" -q -X -tA -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE idem_tx" >/dev/null
URL="postgres://postgres@127.0.0.1:$PG_PORT/idem_tx"
commits() { psql -d postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'idem_tx'"; }

start() { # start NAME MODE: sets ADDR and PID
  local name=$1 mode=$2
  env IDEM_STORE="$URL" IDEM_MODE="$mode" BIND=127.0.0.1:0 RUST_LOG=warn "$BIN/payments" >"$OUT/$name.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 200); do
    ADDR=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$OUT/$name.log" | head -n1)
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  cat "$OUT/$name.log" >&2; return 1
}
start plain plain; PLAIN=$ADDR
start tx transactional; TX=$ADDR
BODY='{"amount":1200,"currency":"EUR"}'
load() { # load MODE ADDR C ROUND TAG [extra]
  local mode=$1 addr=$2 c=$3 round=$4 tag=$5; shift 5
  "$BIN/loadgen" --addr "$addr" --path /payments --mode first --concurrency "$c" --body "$BODY" \
    --tag "$tag" --label "$mode" "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["round"]=int(sys.argv[1]); print(json.dumps(r))' "$round"
}
# Warm both up (connections opened, statements prepared).
load plain "$PLAIN" 4 0 warm-p --duration 2 >/dev/null
load transactional "$TX" 4 0 warm-t --duration 2 >/dev/null

# ---- commits per first call
for mode in plain transactional; do
  addr=$PLAIN; [ $mode = transactional ] && addr=$TX
  # Backends report their counters after 10 s idle at the latest (PGSTAT_IDLE_INTERVAL): wait
  # that out before each reading; the idle rate is measured over the same wait.
  sleep 11; idle0=$(commits); sleep 11; idle1=$(commits)
  before=$idle1
  load $mode "$addr" 1 0 "count-$mode" --requests "$N" --duration 600 >"$OUT/count-$mode.json"
  sleep 11; after=$(commits)
  python3 - "$mode" "$N" "$before" "$after" "$idle0" "$idle1" "$OUT/count-$mode.json" <<'PY'
import json, sys
mode, n, before, after, i0, i1, path = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:7]), sys.argv[7]
r = json.load(open(path))
idle = i1 - i0
delta = after - before - idle
print(f"commits per first call, {mode}: ({after} - {before} - {idle} idle) / {r['requests']} = "
      f"{delta / r['requests']:.3f}  (statuses {r['status']})")
PY
done | tee "$OUT/commits.txt"

[ "${ONLY_COMMITS:-0}" = 1 ] && exit 0
# ---- throughput and p99, interleaved
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    load plain "$PLAIN" "$c" "$round" "r$round-p-c$c" --duration "$DURATION" --warmup 1 >>"$OUT/results.jsonl"
    load transactional "$TX" "$c" "$round" "r$round-t-c$c" --duration "$DURATION" --warmup 1 >>"$OUT/results.jsonl"
  done
done
python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.txt"
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| concurrency | mode | rps (median of rounds) | p50 ms | p99 ms | statuses |")
print("|---|---|---|---|---|---|")
for c in sorted({r["concurrency"] for r in rows}):
    for mode in ("plain", "transactional"):
        rs = [r for r in rows if r["concurrency"] == c and r["label"] == mode]
        rps = statistics.median(r["rps"] for r in rs)
        p50 = statistics.median(r["p50_us"] for r in rs) / 1000
        p99 = statistics.median(r["p99_us"] for r in rs) / 1000
        st = {}
        for r in rs:
            for k, v in r["status"].items(): st[k] = st.get(k, 0) + v
        print(f"| {c} | {mode} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {st} |")
PY
