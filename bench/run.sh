#!/usr/bin/env bash
# The benchmarks, end to end: builds in release, runs the criterion benches, starts
# the bench server on memory, SQLite and a throwaway Postgres, drives them with bench's own
# load generator on loopback (bare, #[idempotent], the axum-idempotent peer; first calls and
# replays; concurrency 1, 16, 64), runs pgbench with the store's own statements, measures the
# payments service's memory after a million keys, and writes BENCHMARKS.md.
#
# Every run is bounded in time (and count); everything listens on 127.0.0.1 and is stopped on
# exit. Timings never fail anything: the script fails only when something cannot run.
#
#   bench/run.sh                     # everything (about 15 minutes on 2 cores)
#   BENCH_ROUNDS=1 BENCH_DURATION=2 BENCH_RSS_KEYS=100000 bench/run.sh   # a quick look
#
# Settings: BENCH_ROUNDS (3; each configuration runs once per round, interleaved, and the
# tables show medians over rounds), BENCH_DURATION (5 s measured per run, after 1 s of warm-up),
# BENCH_CONCURRENCY ("1 16 64"), BENCH_BODY (1024 bytes), BENCH_RSS_KEYS (1000000),
# BENCH_CRITERION (1; 0 skips `cargo bench`), BENCH_OUT (target/bench), BENCH_WRITE (1; 0 leaves
# BENCHMARKS.md alone and writes only $BENCH_OUT/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
BODY=${BENCH_BODY:-1024}
RSS_KEYS=${BENCH_RSS_KEYS:-1000000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$TARGET/bench}
BIN=$TARGET/release
mkdir -p "$OUT"
: >"$OUT/results.jsonl"
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- machine and build
{
  echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- idem-runtime idem-macros examples 2>/dev/null || echo ' plus uncommitted changes')"
} >"$OUT/machine.env"

log "building in release (bench_server, loadgen, payments)"
cargo build --release --quiet -p idem-examples --features peer-bench \
  --bin bench_server --bin loadgen --bin payments

if [ "${BENCH_CRITERION:-1}" = 1 ]; then
  log "criterion: cargo bench -p idem-tests --bench overhead"
  cargo bench --quiet -p idem-tests --bench overhead -- --noplot 2>&1 | tee "$OUT/criterion.txt" >&2
fi

# ---------------------------------------------------------------- Postgres
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  log "PostgreSQL server binaries missing: installing them"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
PG_DIR=$(mktemp -d /tmp/idem-bench-pg.XXXXXX)
SQLITE_DIR=$(mktemp -d /tmp/idem-bench-sqlite.XXXXXX)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR" "$SQLITE_DIR"
}
trap cleanup EXIT

PG_PORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
log "starting a throwaway Postgres on 127.0.0.1:$PG_PORT (durable defaults: fsync and synchronous_commit on)"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start -o \
  "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" >/dev/null
as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE idem_bench" >/dev/null
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/idem_bench"
psql_bench() { "$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d idem_bench "$@"; }

# ---------------------------------------------------------------- servers
# start NAME ENV...: starts a server, waits for its address, sets ADDR and PID.
start() {
  local name=$1 bin=$2; shift 2
  env "$@" BIND=127.0.0.1:0 RUST_LOG=warn "$BIN/$bin" >"$OUT/$name.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 200); do
    ADDR=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$OUT/$name.log" | head -n1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$OUT/$name.log" >&2; return 1; }
    sleep 0.05
  done
  log "$name did not start"; return 1
}
start mem bench_server IDEM_STORE=memory; MEM=$ADDR
start sqlite bench_server IDEM_STORE="sqlite://$SQLITE_DIR/bench.db"; SQLITE=$ADDR
start pg bench_server IDEM_STORE="$PG_URL"; PG=$ADDR
log "bench_server: memory $MEM, sqlite $SQLITE, postgres $PG"

# load LABEL ADDR PATH MODE C ROUND [extra loadgen args]
load() {
  local label=$1 addr=$2 path=$3 mode=$4 c=$5 round=$6; shift 6
  "$BIN/loadgen" --addr "$addr" --path "$path" --mode "$mode" --concurrency "$c" \
    --duration "$DURATION" --warmup 1 --body-bytes "$BODY" --tag "r$round-$label-$mode-c$c" \
    --label "$label" "$@" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["round"]=int(sys.argv[1]); print(json.dumps(r))' "$round" \
      >>"$OUT/results.jsonl"
}

# ---------------------------------------------------------------- pgbench scripts
# The store's own statements, read from the source, with the bench server's values filled in.
python3 - "$ROOT/idem-runtime/src/store/postgres.rs" "$OUT" <<'PY'
import re, sys
src, out = open(sys.argv[1]).read(), sys.argv[2]
def const(name):
    m = re.search(r'const %s: &str = "(.*?)";' % name, src, re.S)
    return m.group(1).replace("{table}", "idempotency_keys").strip()
fp = "'" + "ab" * 32 + "'"
token = "'" + "cd" * 16 + "'"
common = {1: "''", 2: "'pgbench::handler'", 3: ":k", 4: fp, 5: token}
def fill(sql, values):
    return re.sub(r"\$(\d+)", lambda m: str(values[int(m.group(1))]), sql)
claim = fill(const("CLAIM"), {**common, 6: "30000000", 7: "86400000000"})
# COMPLETE binds the token as $4 (not the fingerprint) and the response from $5.
complete = fill(const("COMPLETE"), {**common, 4: token, 5: "201",
    6: "'[[\"content-type\",\"application/json\"]]'", 7: "'{\"received\":1024}'::bytea",
    8: "86400000000"})
one_line = lambda s: " ".join(s.split()) + ";\n"
with open(f"{out}/pg_first.sql", "w") as f:
    f.write("\\set k random(1, 1000000000000)\n" + one_line(claim) + one_line(complete))
with open(f"{out}/pg_replay.sql", "w") as f:
    f.write("\\set k random(1, 1000)\n" + one_line(claim.replace("'pgbench::handler'", "'pgbench::replay'")))
PY
# The replay keys: 1000 completed records with the script's fingerprint.
psql_bench -c "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
    response_status, response_headers, response_body, owner_token, locked_until, expires_at)
  SELECT '', 'pgbench::replay', k::text, repeat('ab', 32), 201,
         '[[\"content-type\",\"application/json\"]]', '{\"received\":1024}'::bytea, repeat('cd', 16),
         now(), now() + interval '1 day'
  FROM generate_series(1, 1000) k ON CONFLICT DO NOTHING" >/dev/null

# pgbench LABEL SCRIPT CLIENTS ROUND [AS_C]: one pgbench run, recorded like a loadgen run (under
# concurrency AS_C, default CLIENTS).
POOL=10 # PostgresStore::CONNECTIONS
pgb() {
  local label=$1 script=$2 c=$3 round=$4 as_c=${5:-$3} raw
  raw=$("$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$c" -j 1 \
    -T "$DURATION" -f "$OUT/$script" --log --log-prefix="$OUT/pgbench_log" idem_bench 2>&1) || {
    echo "$raw" >&2; return 1; }
  if [ "$script" = pg_first.sql ]; then
    # Every claim must have been completed by the script's UPDATE, as the store's would be: a
    # completion that matched no row would skip its write and its commit's flush.
    local open
    open=$(psql_bench -tA -c "SELECT count(*) FROM idempotency_keys
      WHERE handler = 'pgbench::handler' AND response_status IS NULL")
    [ "$open" = 0 ] || { echo "pgbench left $open claims uncompleted: the script is wrong" >&2; return 1; }
  fi
  python3 - "$label" "$as_c" "$round" "$OUT" "$DURATION" <<PY >>"$OUT/results.jsonl"
import glob, json, os, re, sys
label, c, rnd, out, dur = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
raw = """$raw"""
tps = float(re.search(r"tps = ([0-9.]+)", raw).group(1))
lat = []
for path in glob.glob(out + "/pgbench_log*"):
    with open(path) as f:
        lat += [int(line.split()[2]) for line in f if line.strip()]
    os.remove(path)
lat.sort()
pct = lambda p: lat[max(0, min(len(lat), -(-len(lat) * p // 100)) - 1)] if lat else 0
print(json.dumps({"label": label, "mode": "first" if "first" in label else "replay",
    "concurrency": c, "requests": len(lat), "seconds": dur, "rps": tps, "p50_us": pct(50),
    "p90_us": pct(90), "p99_us": pct(99), "max_us": lat[-1] if lat else 0, "status": {},
    "replayed": 0, "errors": 0, "round": rnd}))
PY
}

# ---------------------------------------------------------------- the rounds
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    log "round $round/$ROUNDS, concurrency $c"
    echo "load_during=$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/machine.env"
    echo "compilers_during=$(pgrep -xc rustc || true)" >>"$OUT/machine.env" # other engineers' builds
    load bare "$MEM" /bare first "$c" "$round"
    load memory "$MEM" /idem first "$c" "$round"
    load peer "$MEM" /peer first "$c" "$round" --session /peer/session
    load sqlite "$SQLITE" /idem first "$c" "$round"
    load postgres "$PG" /idem first "$c" "$round"
    pgb pgbench-first pg_first.sql "$c" "$round"
    # The bench server talks to Postgres through at most POOL connections: pgbench with as many.
    [ "$c" -gt "$POOL" ] && pgb pgbench-first-pool pg_first.sql "$POOL" "$round" "$c"
    load memory "$MEM" /idem replay "$c" "$round"
    load peer "$MEM" /peer replay "$c" "$round" --session /peer/session
    load sqlite "$SQLITE" /idem replay "$c" "$round"
    load postgres "$PG" /idem replay "$c" "$round"
    pgb pgbench-replay pg_replay.sql "$c" "$round"
    [ "$c" -gt "$POOL" ] && pgb pgbench-replay-pool pg_replay.sql "$POOL" "$round" "$c"
  done
done

# ---------------------------------------------------------------- memory per key
log "payments (memory store): resident memory after $RSS_KEYS keys"
start payments payments IDEM_STORE=memory; PAY=$ADDR; PAY_PID=$PID
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
"$BIN/loadgen" --addr "$PAY" --path /payments --mode first --concurrency 4 --duration 5 \
  --requests 2000 --tag warm --body '{"amount":1200,"currency":"EUR"}' >/dev/null
RSS_BEFORE=$(rss_kib "$PAY_PID")
"$BIN/loadgen" --addr "$PAY" --path /payments --mode first --concurrency 64 --duration 300 \
  --requests "$RSS_KEYS" --tag rss --label payments-rss \
  --body '{"amount":1200,"currency":"EUR"}' >"$OUT/rss_load.json"
sleep 1
RSS_AFTER=$(rss_kib "$PAY_PID")
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(rss_before_kib=int(sys.argv[2]), rss_after_kib=int(sys.argv[3])); print(json.dumps(r))' \
  "$OUT/rss_load.json" "$RSS_BEFORE" "$RSS_AFTER" >"$OUT/rss.json"
kill "$PAY_PID"

{
  echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "postgres=$("$PG_BIN/postgres" --version)"
  echo "pgbench=$("$PG_BIN/pgbench" --version)"
  echo "rustc=$(rustc --version)"
} >>"$OUT/machine.env"

if [ "${BENCH_WRITE:-1}" = 1 ]; then REPORT=$ROOT/BENCHMARKS.md; else REPORT=$OUT/BENCHMARKS.md; fi
python3 "$ROOT/bench/report.py" "$OUT" "$ROOT" >"$REPORT"
log "wrote $REPORT"
