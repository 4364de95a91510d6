#!/usr/bin/env bash
# Instructions the bench server spends per request over HTTP, by crate: `bench_server` under
# callgrind, loaded by `loadgen` one request at a time, run twice (200 and 1,000 requests) and
# differenced, so that start-up and shutdown cancel out. Repeatable on a busy machine, unlike
# CPU time. Under valgrind SHA-256 runs in software (about 56,800 instructions per KiB); it is
# shown as the `sha2` line.
#
#   IDEM_STORE=postgres://... bench/server_instructions.sh first|replay [BENCH_SERVER [LOADGEN]]
#
# IDEM_STORE names the store as for bench_server (default `memory`), BENCH_PATH the route
# (default `/idem`; `/bare` for the handler without the attribute); the binaries default to
# this repository's release builds (`cargo build --release -p idem-examples --bin bench_server
# --bin loadgen`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:?first or replay}
SERVER=${2:-$ROOT/target/release/bench_server}
LOADGEN=${3:-$ROOT/target/release/loadgen}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# run N: serves N requests under callgrind, into $WORK/N.out
run() {
  local n=$1 pid addr=""
  env IDEM_STORE="${IDEM_STORE:-memory}" BIND=127.0.0.1:0 RUST_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$n.out" "$SERVER" >"$WORK/$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    addr=$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$WORK/$n.log" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$n.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "bench_server did not start under valgrind" >&2; exit 1; }
  "$LOADGEN" --addr "$addr" --path "${BENCH_PATH:-/idem}" --mode "$MODE" --concurrency 1 --duration 600 \
    --warmup 0 --requests "$n" --body-bytes 1024 --tag "callgrind-$n-$$" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" || true
}
run 200
run 1000
python3 "$ROOT/bench/instructions_by_crate.py" "$WORK/200.out" "$WORK/1000.out" 800
