#!/usr/bin/env bash
# The Redis store beside memory and Postgres, in one run, and against Redis's own limit.
#
# 1. Over HTTP: bench_server's `/idem` on memory, Postgres and Redis, first calls and replays, at
#    each concurrency, interleaved in rounds. For each run: requests per second, and CPU per
#    request of the bench server and of the store's server (user + system time from /proc over
#    the measured window, divided by the requests answered).
# 2. The limit: `redis-benchmark` sending the store's own scripts by EVALSHA (the claim of a new
#    key, the completion, the claim of a completed key: a replay), at the same concurrencies,
#    with the same servers' CPU per command.
#
# Everything listens on 127.0.0.1, every run is bounded by DURATION (or a request count), and
# every server is stopped on exit. Prints the tables for bench/notes.md.
#
#   bench/redisbench.sh                          # 3 rounds x 5 s x (1 16 64), about 12 minutes
#   ROUNDS=1 DURATION=2 CONCURRENCY=16 bench/redisbench.sh     # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
OUT=${OUT:-/tmp/redisbench}
mkdir -p "$OUT"; : >"$OUT/results.jsonl"; : >"$OUT/load.txt"
log() { printf '[redisbench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$BIN/bench_server" ] && [ -x "$BIN/loadgen" ] || {
  log "build first: cargo build --release -p idem-examples --bin bench_server --bin loadgen"; exit 1; }
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
PG_DIR=$(mktemp -d /tmp/idem-redisbench-pg.XXXXXX)
REDIS_DIR=$(mktemp -d /tmp/idem-redisbench-redis.XXXXXX)
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -f "$REDIS_DIR/redis.pid" ] && kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR" "$REDIS_DIR"
}
trap cleanup EXIT

# ---- stores: Postgres with durable defaults (as bench/run.sh), Redis with AOF everysec
PG_PORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start -o \
  "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" >/dev/null
"$PG_BIN/psql" -q -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE idem_bench" >/dev/null
PG_MAIN=$(head -n1 "$PG_DIR/data/postmaster.pid")
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --daemonize yes \
  --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --save '' \
  --appendonly yes --appendfsync everysec --maxmemory-policy noeviction
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 100); do [ "$(rcli PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done
REDIS_MAIN=$(cat "$REDIS_DIR/redis.pid")

start() { # start NAME STORE_URL: sets ADDR and PID
  local name=$1 url=$2
  env IDEM_STORE="$url" BIND=127.0.0.1:0 RUST_LOG=warn "$BIN/bench_server" >"$OUT/$name.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 200); do
    ADDR=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$OUT/$name.log" | head -n1)
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  cat "$OUT/$name.log" >&2; return 1
}
start memory memory; MEM=$ADDR; MEM_PID=$PID
start postgres "postgres://postgres@127.0.0.1:$PG_PORT/idem_bench"; PG=$ADDR; PG_APP=$PID
start redis "redis://127.0.0.1:$REDIS_PORT"; REDIS=$ADDR; REDIS_APP=$PID
log "bench_server: memory $MEM, postgres $PG, redis $REDIS"

# CPU ticks (user + system) of PIDs and all their children's threads: one number.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
pg_pids() { echo "$PG_MAIN" $(pgrep -P "$PG_MAIN" || true); }
redis_pids() { echo "$REDIS_MAIN"; }
no_pids() { :; }
HZ=$(getconf CLK_TCK)

# run LABEL ADDR MODE C ROUND APP_PID STORE_PIDS_FN: one measured loadgen run, with CPU. The
# store's processes are listed after a warm-up run (Postgres backends open on first use).
run() {
  local label=$1 addr=$2 mode=$3 c=$4 round=$5 app=$6 pids=$7 stores a0 s0 a1 s1
  "$BIN/loadgen" --addr "$addr" --path /idem --mode "$mode" --concurrency "$c" --duration 1 \
    --warmup 0 --body-bytes 1024 --tag "w$round-$label-$mode-c$c" >/dev/null
  stores=$($pids)
  a0=$(ticks "$app"); s0=$(ticks $stores)
  "$BIN/loadgen" --addr "$addr" --path /idem --mode "$mode" --concurrency "$c" \
    --duration "$DURATION" --warmup 0 --body-bytes 1024 --tag "r$round-$label-$mode-c$c" \
    --label "$label" >"$OUT/run.json"
  a1=$(ticks "$app"); s1=$(ticks $stores)
  python3 - "$OUT/run.json" "$round" "$HZ" "$((a1 - a0))" "$((s1 - s0))" <<'PY' >>"$OUT/results.jsonl"
import json, sys
r = json.load(open(sys.argv[1])); hz = int(sys.argv[3])
n = max(1, r["requests"])
r.update(round=int(sys.argv[2]), app_cpu_us=int(sys.argv[4]) / hz * 1e6 / n,
         store_cpu_us=int(sys.argv[5]) / hz * 1e6 / n)
print(json.dumps(r))
PY
}

# ---- the limit: the store's scripts by EVALSHA, from redis-benchmark
SHAS=$(python3 - "$ROOT/idem-runtime/src/stores/redis/scripts.rs" <<'PY'
import hashlib, re, sys
src = open(sys.argv[1]).read()
def const(name):
    return re.search(r'const %s: &str = "(.*?)";' % name, src, re.S).group(1)
for name in ("CLAIM", "COMPLETE"):
    body = const("PRELUDE") + const(name)  # as Scripts builds them: format!("{PRELUDE}{body}")
    print(name, hashlib.sha1(body.encode()).hexdigest())
PY
)
CLAIM_SHA=$(echo "$SHAS" | awk '/^CLAIM/ {print $2}')
COMPLETE_SHA=$(echo "$SHAS" | awk '/^COMPLETE/ {print $2}')
# The bench server has loaded both scripts by its first call (warm-up below); check the SHAs.
"$BIN/loadgen" --addr "$REDIS" --path /idem --mode first --concurrency 1 --duration 1 --warmup 0 --tag warm >/dev/null
[ "$(rcli SCRIPT EXISTS "$CLAIM_SHA" "$COMPLETE_SHA" | tr -d '\n')" = 11 ] || {
  log "the scripts' SHA1s computed here are not the ones the store loaded"; exit 1; }
FP=$(printf 'ab%.0s' $(seq 1 32)); TOKEN=$(printf 'cd%.0s' $(seq 1 16))
HEADERS='[["content-type","application/json"]]'
BODY='{"received":1024}' # what bench_server's /idem answers to a 1 KiB request
# 100,000 records in progress under the token, and 1,000 completed ones, for the runs below.
rcli EVAL "for i = 0, 99999 do
  local k = string.format('lim:%012d', i)
  redis.call('HSET', k, 'f', ARGV[1], 't', ARGV[2], 'l', '0', 'e', '99999999999999', 'c', '0', 'u', '0')
end
for i = 0, 999 do
  local k = string.format('rep:%012d', i)
  redis.call('HSET', k, 'f', ARGV[1], 't', ARGV[2], 's', '201', 'h', ARGV[3], 'b', ARGV[4],
    'l', '0', 'e', '99999999999999', 'c', '0', 'u', '0')
end" 0 "$FP" "$TOKEN" "$HEADERS" "$BODY" >/dev/null

# limit NAME C ROUND RANGE ARGS...: one redis-benchmark run of one EVALSHA (__rand_int__ is a
# 12-digit number below RANGE), with redis-server's CPU.
limit() {
  local name=$1 c=$2 round=$3 range=$4 n s0 s1 raw; shift 4
  n=$(( (c == 1 ? 10000 : 40000) * DURATION ))
  s0=$(ticks "$REDIS_MAIN")
  raw=$(timeout $((DURATION * 30)) redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c" -n "$n" \
    -r "$range" -q "$@" 2>&1 | tr '\r' '\n' | grep 'requests per second' | tail -n1) || {
    log "redis-benchmark $name at $c did not finish"; return 1; }
  s1=$(ticks "$REDIS_MAIN")
  python3 - "$name" "$c" "$round" "$raw" "$n" "$HZ" "$((s1 - s0))" <<'PY' >>"$OUT/results.jsonl"
import json, re, sys
name, c, rnd, raw, n, hz, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
rps = float(re.search(r"([0-9.]+) requests per second", raw).group(1))
print(json.dumps({"label": name, "mode": "limit", "concurrency": c, "round": rnd, "rps": rps,
                  "requests": n, "store_cpu_us": ticks / hz * 1e6 / n}))
PY
}

for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    log "round $round/$ROUNDS, concurrency $c (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "round=$round c=$c load=$(cut -d' ' -f1 /proc/loadavg) rustc=$(pgrep -xc rustc || true)" >>"$OUT/load.txt"
    for mode in first replay; do
      run memory "$MEM" "$mode" "$c" "$round" "$MEM_PID" no_pids
      run postgres "$PG" "$mode" "$c" "$round" "$PG_APP" pg_pids
      run redis "$REDIS" "$mode" "$c" "$round" "$REDIS_APP" redis_pids
    done
    # New keys live 60 s, so that millions of them do not fill the server.
    limit claim-new "$c" "$round" 1000000000 EVALSHA "$CLAIM_SHA" 1 "new:$round:__rand_int__" "$FP" "$TOKEN" 30000 60000
    limit complete "$c" "$round" 100000 EVALSHA "$COMPLETE_SHA" 1 "lim:__rand_int__" "$TOKEN" 201 "$HEADERS" "$BODY" 86400000
    limit claim-replay "$c" "$round" 1000 EVALSHA "$CLAIM_SHA" 1 "rep:__rand_int__" "$FP" "$TOKEN" 30000 86400000
  done
done
rcli INFO commandstats | grep -E 'evalsha|noscript' >"$OUT/commandstats.txt" || true
{ echo "redis=$(redis-server --version)"; echo "postgres=$("$PG_BIN/postgres" --version)"
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"; } >"$OUT/versions.txt"

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/tables.md"
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: st.median(xs) if xs else float("nan")
def pick(label, mode, c, key):
    return med([r[key] for r in rows if r["label"] == label and r["mode"] == mode and r["concurrency"] == c])
cs = sorted({r["concurrency"] for r in rows})
print("| concurrency | call | store | req/s | bench_server CPU µs/req | store server CPU µs/req | req/s vs memory | CPU vs memory |")
print("|---|---|---|---|---|---|---|---|")
for c in cs:
    for mode in ("first", "replay"):
        m_rps, m_cpu = pick("memory", mode, c, "rps"), pick("memory", mode, c, "app_cpu_us")
        for store in ("memory", "postgres", "redis"):
            rps, app, sto = (pick(store, mode, c, k) for k in ("rps", "app_cpu_us", "store_cpu_us"))
            sto_txt = "" if store == "memory" else f"{sto:.0f}"
            print(f"| {c} | {mode} | {store} | {rps:,.0f} | {app:.0f} | {sto_txt} | {rps / m_rps:.2f} | {app / m_cpu:.2f} |")
print()
print("| concurrency | EVALSHA | commands/s | redis-server CPU µs/command |")
print("|---|---|---|---|")
for c in cs:
    for name in ("claim-new", "complete", "claim-replay"):
        print(f"| {c} | {name} | {pick(name, 'limit', c, 'rps'):,.0f} | {pick(name, 'limit', c, 'store_cpu_us'):.1f} |")
print()
print("| concurrency | call | Redis store over HTTP, req/s | the limit, calls/s | HTTP / limit | redis-server CPU µs per call, HTTP / limit |")
print("|---|---|---|---|---|---|")
for c in cs:
    new, done, rep = (pick(n, "limit", c, "rps") for n in ("claim-new", "complete", "claim-replay"))
    first_limit = 1 / (1 / new + 1 / done)  # a first call is one claim and one completion
    first_cpu = pick("claim-new", "limit", c, "store_cpu_us") + pick("complete", "limit", c, "store_cpu_us")
    for mode, lim, cpu in (("first", first_limit, first_cpu), ("replay", rep, pick("claim-replay", "limit", c, "store_cpu_us"))):
        rps, sto = pick("redis", mode, c, "rps"), pick("redis", mode, c, "store_cpu_us")
        print(f"| {c} | {mode} | {rps:,.0f} | {lim:,.0f} | {rps / lim:.2f} | {sto:.1f} / {cpu:.1f} |")
PY
