#!/usr/bin/env bash
# What running behind a transaction-mode pooler costs the Postgres store, on both sides, in one
# run of one build: bench_server's `/idem` on a `PostgresStore::connect` store with its default
# named statements (`named`), with its statements as text (`IDEM_PG_POOLER=transaction`,
# `text`), and as text through PgBouncer in transaction mode (`text+pgbouncer`). First calls
# (claim and complete) and replays (the claim alone), interleaved in rounds. For each run:
# requests per second, and CPU per request of the bench server, of Postgres (the postmaster,
# its live children, and the children it reaped, through its cutime and cstime), and of
# PgBouncer, from /proc before and after the measured window. bench/notes.md ("Postgres behind
# a pooler") has the figures.
#
#   SECS=10 bench/pooler_cpu.sh          # 3 rounds x 10 s, about 4 minutes (15 s by default)
#   ROUNDS=1 SECS=3 bench/pooler_cpu.sh  # a quick look
#
# BIN holds release builds of bench_server and loadgen (default $CARGO_TARGET_DIR/release).
# Postgres (fsync and synchronous_commit off, to measure CPU rather than the disk) and PgBouncer
# 1.18 run on loopback ports in a temp folder, as the postgres user when run as root; all
# started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}
C=${C:-8}; SECS=${SECS:-15}; ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/pooler_cpu}; mkdir -p "$OUT"; : >"$OUT/results.jsonl"
log() { printf '[pooler_cpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$BIN/bench_server" ] && [ -x "$BIN/loadgen" ] || {
  log "build first: cargo build --release -p idem-examples --bin bench_server --bin loadgen"; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$(mktemp -d /tmp/idem-pooler-cpu-XXXXXX); chmod 755 "$DIR"
AS=(); if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

PG_PORT=$(free_port)
"${AS[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w -o \
  "-p $PG_PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" \
  start >/dev/null
PG_PID=$(head -1 "$DIR/data/postmaster.pid")
DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

B_PORT=$(free_port)
printf '[databases]\n* = host=127.0.0.1 port=%s\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nunix_socket_dir =\nauth_type = trust\nauth_file = %s/users.txt\npool_mode = transaction\nignore_startup_parameters = extra_float_digits,options\ndefault_pool_size = 10\nmax_client_conn = 200\n' \
  "$PG_PORT" "$B_PORT" "$DIR" >"$DIR/pgbouncer.ini"
echo '"postgres" ""' >"$DIR/users.txt"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"/pgbouncer.ini "$DIR"/users.txt
"${AS[@]}" pgbouncer "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "process up" "$DIR/pgbouncer.log" && break; sleep 0.1; done
B_PID=$(pgrep -n -x pgbouncer)
POOLED="postgres://postgres@127.0.0.1:$B_PORT/postgres"

# Clock ticks used by a process; by Postgres: the postmaster, its live children, and the
# children it has reaped (its cutime and cstime), so that a backend that exits still counts.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_ticks() {
  local t; t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$PG_PID/stat")
  for p in $(pgrep -P "$PG_PID"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

run() { # run LABEL URL POOLER ROUND
  local label=$1 url=$2 pooler=$3 round=$4
  "${AS[@]}" "$PGBIN/psql" -qX -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c 'SET client_min_messages = warning' -c 'DROP TABLE IF EXISTS idempotency_keys' >/dev/null
  IDEM_STORE=$url IDEM_PG_POOLER=$pooler BIND=127.0.0.1:0 "$BIN/bench_server" >"$DIR/server.out" 2>&1 &
  local app=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$DIR/server.out" && break
    kill -0 "$app" 2>/dev/null || { cat "$DIR/server.out"; exit 1; }
    sleep 0.1
  done
  local addr; addr=$(sed -n 's/.*listening on http:\/\///p' "$DIR/server.out" | head -1)
  for mode in first replay; do
    # Warm-up: connections opened, statements prepared, caches filled.
    "$BIN/loadgen" --addr "$addr" --path /idem --mode "$mode" --concurrency "$C" --duration 2 \
      --body-bytes 100 >/dev/null
    local a0 p0 b0 a1 p1 b1 load out
    a0=$(ticks "$app"); p0=$(pg_ticks); b0=$(ticks "$B_PID")
    out=$("$BIN/loadgen" --addr "$addr" --path /idem --mode "$mode" --concurrency "$C" \
      --duration "$SECS" --body-bytes 100)
    a1=$(ticks "$app"); p1=$(pg_ticks); b1=$(ticks "$B_PID")
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$label" "$mode" "$round" "$HZ" $((a1 - a0)) $((p1 - p0)) $((b1 - b0)) "$load" "$out" \
      >>"$OUT/results.jsonl" <<'PY'
import json, sys
label, mode, round_, hz, app, pg, bouncer, load, out = sys.argv[1:]
report = json.loads(out)
n = report["requests"]
us = lambda t: round(int(t) / int(hz) * 1e6 / n)
print(json.dumps({"label": label, "mode": mode, "round": int(round_), "requests": n,
                  "rps": round(report["rps"]), "app_us": us(app), "pg_us": us(pg),
                  "bouncer_us": us(bouncer), "load": float(load), "status": report["status"]}))
PY
    log "$(tail -1 "$OUT/results.jsonl")"
  done
  kill "$app"; wait "$app" 2>/dev/null || true
}

log "load before: $(cut -d' ' -f1-3 /proc/loadavg); Postgres $("$PGBIN/postgres" --version); $(pgbouncer --version | head -1)"
for round in $(seq "$ROUNDS"); do
  run named "$DIRECT" none "$round"
  run text "$DIRECT" transaction "$round"
  run text+pgbouncer "$POOLED" transaction "$round"
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| store's statements | call | requests/s | app CPU per request | Postgres CPU per request | PgBouncer CPU per request | load |")
print("|---|---|---|---|---|---|---|")
for mode in ["first", "replay"]:
    for label in ["named", "text", "text+pgbouncer"]:
        runs = [r for r in rows if r["label"] == label and r["mode"] == mode]
        cell = lambda key, unit="": " / ".join(f"{r[key]:,}{unit}" for r in runs)
        bouncer = cell("bouncer_us", " µs") if label.endswith("pgbouncer") else ""
        loads = " / ".join(f"{r['load']:.1f}" for r in runs)
        call = "first call" if mode == "first" else "replay"
        print(f"| {label} | {call} | {cell('rps')} | {cell('app_us', ' µs')} | {cell('pg_us', ' µs')} | {bouncer} | {loads} |")
PY
