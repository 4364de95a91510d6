#!/usr/bin/env bash
# The benchmarks, end to end, in one run: builds in release, runs the criterion benches, then
# measures the whole matrix over HTTP on loopback, interleaved by round: the bare handler;
# #[idempotent] on memory, SQLite, Postgres and Redis in plain mode; SQLite and Postgres in
# transactional mode; duplicates that wait for the in-flight result; the axum-idempotent peer;
# a tonic method bare and under #[idempotent] (grpc_bench);
# and pgbench running the Postgres store's own statements. Every row carries req/s, p50, p99
# and CPU per request of the server, the database and the load generator, over the measured
# window only (bench/measure.py). Then the payments service's memory after a million keys,
# BENCHMARKS.md and the charts in bench/charts/.
#
# Every run is bounded in time (and count); everything listens on 127.0.0.1 and every server
# is stopped on exit by its PID. Timings never fail anything: the script fails only when
# something cannot run.
#
#   bench/run.sh                     # everything (about 35 minutes on 2 cores)
#   BENCH_CONCURRENCY="1 16" BENCH_DURATION=4 bench/run.sh   # what BENCHMARKS.md holds (17 minutes)
#   BENCH_ROUNDS=1 BENCH_DURATION=2 BENCH_RSS_KEYS=100000 BENCH_WRITE=0 bench/run.sh   # a quick look
#
# Settings: BENCH_ROUNDS (3; each configuration runs once per round, interleaved, and the
# tables show medians over rounds), BENCH_DURATION (5 s measured per run, after 1 s of warm-up),
# BENCH_CONCURRENCY ("1 16 64"), BENCH_BODY (1024 bytes), BENCH_RSS_KEYS (1000000),
# BENCH_CRITERION (1; 0 skips `cargo bench`), BENCH_OUT (target/bench), BENCH_WRITE (1; 0 leaves
# BENCHMARKS.md and bench/charts alone and writes both under $BENCH_OUT).
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
  echo "compilers_before=$(pgrep -xc rustc || true)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- idem-runtime idem-macros examples 2>/dev/null || echo ' plus uncommitted changes')"
} >"$OUT/machine.env"

python3 -c 'import matplotlib' 2>/dev/null || {
  log "matplotlib missing: installing it for the charts"
  python3 -m pip install --quiet matplotlib || python3 -m pip install --quiet --break-system-packages matplotlib
}

log "building in release (bench_server, loadgen, payments)"
cargo build --release --quiet -p idem-examples --features peer-bench \
  --bin bench_server --bin loadgen --bin payments --bin grpc_bench

if [ "${BENCH_CRITERION:-1}" = 1 ]; then
  log "criterion: cargo bench -p idem-tests --bench overhead"
  cargo bench --quiet -p idem-tests --bench overhead -- --noplot 2>&1 | tee "$OUT/criterion.txt" >&2
fi

# ---------------------------------------------------------------- databases
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || ! command -v redis-server >/dev/null; then
  log "PostgreSQL server binaries or redis-server missing: installing them"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql redis-server redis-tools >/dev/null
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
PG_DIR=$(mktemp -d /tmp/idem-bench-pg.XXXXXX)
SQLITE_DIR=$(mktemp -d /tmp/idem-bench-sqlite.XXXXXX)
REDIS_DIR=$(mktemp -d /tmp/idem-bench-redis.XXXXXX)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -f "$REDIS_DIR/redis.pid" ] && kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR" "$SQLITE_DIR" "$REDIS_DIR"
}
trap cleanup EXIT

PG_PORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
log "starting a throwaway Postgres on 127.0.0.1:$PG_PORT (durable defaults: fsync and synchronous_commit on)"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start -o \
  "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB \
   -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on" >/dev/null
PSQL="$PG_BIN/psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $PG_PORT -U postgres -d idem_bench"
as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE idem_bench" >/dev/null
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/idem_bench"
# pg_stat_statements counts the statements each row sends (its round trips), for both the bench
# server and pgbench; it costs every statement the same small bookkeeping.
$PSQL -c "CREATE EXTENSION pg_stat_statements" >/dev/null
PG_MAIN=$(head -n1 "$PG_DIR/data/postmaster.pid")

# Redis as the Redis store's tests run it: AOF with fsync every second, no eviction.
REDIS_PORT=$(free_port)
log "starting a throwaway redis-server on 127.0.0.1:$REDIS_PORT (AOF, appendfsync everysec)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --daemonize yes \
  --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save '' \
  --appendonly yes --appendfsync everysec --maxmemory-policy noeviction
RCLI="redis-cli -h 127.0.0.1 -p $REDIS_PORT"
for _ in $(seq 1 100); do [ "$($RCLI PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done
REDIS_MAIN=$(cat "$REDIS_DIR/redis.pid")

# ---------------------------------------------------------------- servers
# start NAME BIN ENV...: starts a server, waits for its address, sets ADDR and PID.
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
start mem bench_server IDEM_STORE=memory; MEM=$ADDR; MEM_PID=$PID
start sqlite bench_server IDEM_STORE="sqlite://$SQLITE_DIR/bench.db"; SQLITE=$ADDR; SQLITE_PID=$PID
start pg bench_server IDEM_STORE="$PG_URL"; PG=$ADDR; PG_APP=$PID
start redis bench_server IDEM_STORE="redis://127.0.0.1:$REDIS_PORT"; REDIS=$ADDR; REDIS_APP=$PID
log "bench_server: memory $MEM, sqlite $SQLITE, postgres $PG, redis $REDIS"
# gRPC: grpc_bench serves the same trivial tonic method bare and under #[idempotent] on the
# memory store, in one process, and names both addresses.
"$BIN/grpc_bench" serve >"$OUT/grpc.addrs" 2>"$OUT/grpc.log" &
GRPC_PID=$!
PIDS+=("$GRPC_PID")
for _ in $(seq 1 100); do [ "$(wc -l <"$OUT/grpc.addrs")" -ge 2 ] && break; sleep 0.05; done
GRPC_BARE=$(awk '$1 == "bare" {print $2}' "$OUT/grpc.addrs")
GRPC_IDEM=$(awk '$1 == "idem" {print $2}' "$OUT/grpc.addrs")

# load LABEL MODE C ROUND SERVER_ADDR SERVER_PID PATH DB [loadgen args]: one measured run.
# DB is none (memory, or SQLite in the server's own process), pg or redis.
load() {
  local label=$1 mode=$2 c=$3 round=$4 addr=$5 pid=$6 path=$7 db=$8 dbargs=(); shift 8
  case $db in
    pg) dbargs=(--db-tree "$PG_MAIN" --psql "$PSQL") ;;
    redis) dbargs=(--db "$REDIS_MAIN" --redis "$RCLI") ;;
  esac
  python3 "$ROOT/bench/measure.py" loadgen --server "$pid" "${dbargs[@]}" \
    --field round="$round" --field db="$db" -- \
    "$BIN/loadgen" --addr "$addr" --path "$path" --mode "$mode" --concurrency "$c" \
    --duration "$DURATION" --warmup 1 --body-bytes "$BODY" --tag "r$round-$label-$mode-c$c" \
    --label "$label" "$@" >>"$OUT/results.jsonl"
}

# grpc LABEL ADDR MODE C ROUND: one measured run of grpc_bench's own load generator (one
# HTTP/2 connection per caller, 1 s of warm-up), which marks its window as loadgen does.
grpc() {
  local label=$1 addr=$2 mode=$3 c=$4 round=$5
  python3 "$ROOT/bench/measure.py" loadgen --server "$GRPC_PID" --field round="$round" \
    --field db=none --field label="$label" -- \
    "$BIN/grpc_bench" load "$addr" "$mode" "$c" "$DURATION" >>"$OUT/results.jsonl"
}

# ---------------------------------------------------------------- pgbench
# The store's own statements, read from its source, with the bench server's values filled in.
python3 "$ROOT/bench/pgbench_scripts.py" "$ROOT" "$OUT"
# Let a first request create the table (the bench server migrates at start), then add the
# replay keys: 1000 completed records with the script's fingerprint, in each scope the
# scripts use.
$PSQL -c "INSERT INTO idempotency_keys (scope, handler, idempotency_key, request_fingerprint,
    response_status, response_headers, response_body, owner_token, locked_until, expires_at)
  SELECT scope, 'pgbench::replay', k::text, repeat('ab', 32), 201,
         '[[\"content-type\",\"application/json\"]]', '{\"received\":1024}'::bytea, repeat('cd', 16),
         now(), now() + interval '1 day'
  FROM generate_series(1, 1000) k, (VALUES (''), ('bench')) scopes (scope) ON CONFLICT DO NOTHING" >/dev/null

# pgb LABEL SCRIPT CLIENTS ROUND [AS_C]: one pgbench run, measured like a loadgen run (under
# concurrency AS_C, default CLIENTS): its first second is the warm-up.
POOL=10 # PostgresStore::CONNECTIONS
# pgbench refuses an empty value, so the bound scripts run under scope `bench`, not ''.
PGB_VARS=(-D scope=bench -D handler=pgbench::handler -D replay_handler=pgbench::replay
  -D fp="$(printf 'ab%.0s' $(seq 1 32))" -D token="$(printf 'cd%.0s' $(seq 1 16))" -D lease=30000000
  -D ttl=86400000000 -D status=201 -D 'headers=[["content-type","application/json"]]'
  -D 'body={"received":1024}')
pgb() {
  local label=$1 script=$2 c=$3 round=$4 as_c=${5:-$3} mode=first
  case $script in pg_replay*) mode=replay ;; esac
  python3 "$ROOT/bench/measure.py" pgbench --db-tree "$PG_MAIN" --psql "$PSQL" --warmup 1 \
    --log-prefix "$OUT/pgbench_log" --field label="$label" --field mode="$mode" \
    --field concurrency="$as_c" --field clients="$c" --field round="$round" --field db=pg -- \
    "$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$c" -j 1 \
    "${PGB_VARS[@]}" -T $((DURATION + 1)) -f "$OUT/$script" --log --log-prefix="$OUT/pgbench_log" idem_bench \
    >>"$OUT/results.jsonl"
  if [ "$mode" = first ]; then
    # Every claim must have been completed by the script's UPDATE, as the store's would be: a
    # completion that matched no row would skip its write and its commit's flush.
    local open
    open=$($PSQL -tA -c "SELECT count(*) FROM idempotency_keys
      WHERE handler = 'pgbench::handler' AND response_status IS NULL")
    [ "$open" = 0 ] || { echo "pgbench left $open claims uncompleted: the script is wrong" >&2; return 1; }
  fi
}

# ---------------------------------------------------------------- Redis's own limit
# redis-benchmark sending the Redis store's own scripts by EVALSHA: the claim of a new key, the
# completion, the claim of a completed key (a replay), with redis-server's CPU per command.
SHAS=$(python3 - "$ROOT/idem-runtime/src/stores/redis/scripts.rs" <<'PY2'
import hashlib, re, sys
src = open(sys.argv[1]).read()
def const(name):
    return re.search(r'const %s: &str = "(.*?)";' % name, src, re.S).group(1)
for name in ("CLAIM", "COMPLETE"):
    body = const("PRELUDE") + const(name)  # as Scripts builds them: format!("{PRELUDE}{body}")
    print(name, hashlib.sha1(body.encode()).hexdigest())
PY2
)
CLAIM_SHA=$(echo "$SHAS" | awk '/^CLAIM/ {print $2}')
COMPLETE_SHA=$(echo "$SHAS" | awk '/^COMPLETE/ {print $2}')
# The Redis bench server loads both scripts on its first call; check the SHAs are those.
"$BIN/loadgen" --addr "$REDIS" --path /idem --mode first --concurrency 1 --duration 1 --tag warm >/dev/null 2>&1
[ "$($RCLI SCRIPT EXISTS "$CLAIM_SHA" "$COMPLETE_SHA" | tr -d '\n')" = 11 ] || {
  log "the Redis scripts' SHA1s computed here are not the ones the store loaded"; exit 1; }
FP=$(printf 'ab%.0s' $(seq 1 32)); TOKEN=$(printf 'cd%.0s' $(seq 1 16))
HEADERS='[["content-type","application/json"]]'
REPLY='{"received":1024}' # what bench_server's /idem answers to a 1 KiB request
# 100,000 records in progress under the token, and 1,000 completed ones.
$RCLI EVAL "for i = 0, 99999 do
  local k = string.format('lim:%012d', i)
  redis.call('HSET', k, 'f', ARGV[1], 't', ARGV[2], 'l', '0', 'e', '99999999999999', 'c', '0', 'u', '0')
end
for i = 0, 999 do
  local k = string.format('rep:%012d', i)
  redis.call('HSET', k, 'f', ARGV[1], 't', ARGV[2], 's', '201', 'h', ARGV[3], 'b', ARGV[4],
    'l', '0', 'e', '99999999999999', 'c', '0', 'u', '0')
end" 0 "$FP" "$TOKEN" "$HEADERS" "$REPLY" >/dev/null
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# rlimit NAME C ROUND RANGE ARGS...: one redis-benchmark run of one EVALSHA (__rand_int__ is a
# 12-digit number below RANGE), with redis-server's CPU per command.
rlimit() {
  local name=$1 c=$2 round=$3 range=$4 n s0 s1 raw; shift 4
  n=$(( (c == 1 ? 10000 : 40000) * DURATION ))
  s0=$(ticks "$REDIS_MAIN")
  raw=$(timeout $((DURATION * 30)) redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c" -n "$n" \
    -r "$range" -q "$@" 2>&1 | tr '\r' '\n' | grep 'requests per second' | tail -n1) || {
    log "redis-benchmark $name at $c did not finish"; return 1; }
  s1=$(ticks "$REDIS_MAIN")
  python3 - "$name" "$c" "$round" "$raw" "$n" "$HZ" "$((s1 - s0))" <<'PY2' >>"$OUT/results.jsonl"
import json, re, sys
name, c, rnd, raw, n, hz, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
rps = float(re.search(r"([0-9.]+) requests per second", raw).group(1))
print(json.dumps({"label": name, "mode": "limit", "concurrency": c, "round": rnd, "rps": rps,
                  "requests": n, "cpu_db_us": ticks / hz * 1e6 / n, "status": {}, "replayed": 0,
                  "errors": 0}))
PY2
}

# ---------------------------------------------------------------- the rounds
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    log "round $round/$ROUNDS, concurrency $c (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "load_during=$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/machine.env"
    echo "compilers_during=$(pgrep -xc rustc || true)" >>"$OUT/machine.env" # other engineers' builds
    load bare first "$c" "$round" "$MEM" "$MEM_PID" /bare none
    for mode in first replay; do
      load memory "$mode" "$c" "$round" "$MEM" "$MEM_PID" /idem none
      load peer "$mode" "$c" "$round" "$MEM" "$MEM_PID" /peer none --session /peer/session
      load sqlite "$mode" "$c" "$round" "$SQLITE" "$SQLITE_PID" /idem none
      load sqlite-tx "$mode" "$c" "$round" "$SQLITE" "$SQLITE_PID" /idem/tx none
      load postgres "$mode" "$c" "$round" "$PG" "$PG_APP" /idem pg
      load postgres-tx "$mode" "$c" "$round" "$PG" "$PG_APP" /idem/tx pg
      load redis "$mode" "$c" "$round" "$REDIS" "$REDIS_APP" /idem redis
    done
    grpc grpc-bare "$GRPC_BARE" first "$c" "$round" || log "gRPC bare run failed"
    grpc grpc "$GRPC_IDEM" first "$c" "$round" || log "gRPC first-call run failed"
    grpc grpc "$GRPC_IDEM" replay "$c" "$round" || log "gRPC replay run failed"
    # Duplicates: connections in fours send the same new keys together; one runs the handler
    # (2 ms), the other three wait for its answer.
    [ "$c" -ge 4 ] && load waiting first "$c" "$round" "$MEM" "$MEM_PID" /idem/wait none --group 4
    pgb pgbench-first pg_first.sql "$c" "$round"
    pgb pgbench-tx pg_tx.sql "$c" "$round"
    pgb pgbench-replay pg_replay.sql "$c" "$round"
    # New keys live 60 s, so that millions of them do not fill the server.
    rlimit redis-claim-new "$c" "$round" 1000000000 EVALSHA "$CLAIM_SHA" 1 "new:$round:__rand_int__" "$FP" "$TOKEN" 30000 60000
    rlimit redis-complete "$c" "$round" 100000 EVALSHA "$COMPLETE_SHA" 1 "lim:__rand_int__" "$TOKEN" 201 "$HEADERS" "$REPLY" 86400000
    rlimit redis-claim-replay "$c" "$round" 1000 EVALSHA "$CLAIM_SHA" 1 "rep:__rand_int__" "$FP" "$TOKEN" 30000 86400000
    # The bench server talks to Postgres through at most POOL connections: pgbench with as many.
    if [ "$c" -gt "$POOL" ]; then
      pgb pgbench-first-pool pg_first.sql "$POOL" "$round" "$c"
      pgb pgbench-tx-pool pg_tx.sql "$POOL" "$round" "$c"
      pgb pgbench-replay-pool pg_replay.sql "$POOL" "$round" "$c"
    fi
    # Where the database's difference comes from: the same statements with every value bound.
    if [ "$c" = 16 ]; then
      pgb pgbench-first-bound pg_first_bound.sql "$POOL" "$round" "$c"
      pgb pgbench-replay-bound pg_replay_bound.sql "$POOL" "$round" "$c"
    fi
  done
done

# Every statement Postgres ran, by calls, for bench/notes.md's account of the difference.
$PSQL -c "SELECT calls, round(total_exec_time::numeric / greatest(calls, 1) * 1000, 1) AS exec_us,
    round(total_plan_time::numeric / greatest(plans, 1) * 1000, 1) AS plan_us, plans,
    regexp_replace(query, '\s+', ' ', 'g') AS query
  FROM pg_stat_statements ORDER BY calls DESC LIMIT 25" -A -F ' | ' >"$OUT/pg_statements.txt" 2>&1 || true

# ---------------------------------------------------------------- bytes stored per record
{
  echo "pg_bytes=$($PSQL -tA -c "SELECT pg_total_relation_size('idempotency_keys')")"
  echo "pg_records=$($PSQL -tA -c "SELECT count(*) FROM idempotency_keys")"
  echo "sqlite_bytes=$(du -cb "$SQLITE_DIR"/bench.db* | tail -n1 | cut -f1)"
  echo "sqlite_records=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM idempotency_keys").fetchone()[0])' "$SQLITE_DIR/bench.db")"
  # Redis's own estimate (MEMORY USAGE) for 200 of the store's records: the limit's are others.
  echo "redis_bytes=$($RCLI --scan --pattern 'idem:*' | head -n 200 |
    while read -r key; do $RCLI MEMORY USAGE "$key"; done | awk '{s += $1} END {print s + 0}')"
  echo "redis_records=$($RCLI --scan --pattern 'idem:*' | head -n 200 | wc -l)"
} >"$OUT/stored.env"

# ---------------------------------------------------------------- memory per key
log "payments (memory store): resident memory after $RSS_KEYS keys"
start payments payments IDEM_STORE=memory; PAY=$ADDR; PAY_PID=$PID
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
"$BIN/loadgen" --addr "$PAY" --path /payments --mode first --concurrency 4 --duration 5 \
  --requests 2000 --tag warm --body '{"amount":1200,"currency":"EUR"}' >/dev/null 2>&1
RSS_BEFORE=$(rss_kib "$PAY_PID")
"$BIN/loadgen" --addr "$PAY" --path /payments --mode first --concurrency 64 --duration 300 \
  --requests "$RSS_KEYS" --tag rss --label payments-rss \
  --body '{"amount":1200,"currency":"EUR"}' >"$OUT/rss_load.json" 2>/dev/null
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
  echo "redis=$(redis-server --version | cut -d' ' -f1-3)"
  echo "rustc=$(rustc --version)"
} >>"$OUT/machine.env"

if [ "${BENCH_WRITE:-1}" = 1 ]; then REPORT=$ROOT/BENCHMARKS.md CHARTS=$ROOT/bench/charts
else REPORT=$OUT/BENCHMARKS.md CHARTS=$OUT/charts; fi
python3 "$ROOT/bench/charts.py" "$OUT" "$CHARTS"
python3 "$ROOT/bench/report.py" "$OUT" "$ROOT" "$(realpath --relative-to="$(dirname "$REPORT")" "$CHARTS")" >"$REPORT"
if [ "${BENCH_WRITE:-1}" = 1 ]; then
  # README.md's Performance section carries the cost model, between its two markers.
  python3 - "$ROOT/README.md" "$OUT/cost-model.md" <<'PY2'
import re, sys
readme, table = open(sys.argv[1]).read(), open(sys.argv[2]).read()
start, end = "<!-- cost model: written by bench/run.sh -->\n", "<!-- end of cost model -->"
readme = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: start + table + end, readme, flags=re.S)
open(sys.argv[1], "w").write(readme)
PY2
fi
log "wrote $REPORT, the charts in $CHARTS and README.md's cost model"
