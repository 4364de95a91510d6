#!/usr/bin/env bash
# gRPC first calls and replays against a bare tonic method, side by side in one run: the
# `grpc_bench` server (bare and `#[idempotent]` on the memory store, one process), loaded by
# `grpc_bench load` at each concurrency, rounds interleaved. Prints one JSON line per run
# (calls per second, and the server's user + system CPU per call from /proc/PID/stat over the
# measured window) and a Markdown table of medians over rounds, for bench/notes.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
cargo build --release -q -p idem-examples --bin grpc_bench
BIN="$CARGO_TARGET_DIR/release/grpc_bench"
OUT="$(mktemp -d)"
"$BIN" serve >"$OUT/addrs" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 50); do [ "$(wc -l <"$OUT/addrs")" -ge 2 ] && break; sleep 0.1; done
BARE=$(awk '$1 == "bare" {print $2}' "$OUT/addrs")
IDEM=$(awk '$1 == "idem" {print $2}' "$OUT/addrs")
for round in $(seq "$ROUNDS"); do
  for c in 1 16 64; do
    for target in bare first replay; do
      case $target in
        bare) line=$("$BIN" load "$BARE" first "$c" "$SECONDS_PER_RUN" "$SERVER") ;;
        *) line=$("$BIN" load "$IDEM" "$target" "$c" "$SECONDS_PER_RUN" "$SERVER") ;;
      esac
      echo "{\"round\":$round,\"target\":\"$target\",${line#\{}" | tee -a "$OUT/runs.jsonl"
    done
  done
done
python3 - "$OUT/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(target, c, field):
    return statistics.median(r[field] for r in runs if r["target"] == target and r["concurrency"] == c)
print("| C | bare calls/s | first calls/s | % of bare | replays/s | % of bare | CPU/call bare | CPU/call first | CPU/call replay |")
print("|---|---|---|---|---|---|---|---|---|")
for c in (1, 16, 64):
    b, f, r = (med(t, c, "rps") for t in ("bare", "first", "replay"))
    cb, cf, cr = (med(t, c, "cpu_us_per_call") for t in ("bare", "first", "replay"))
    print(f"| {c} | {b:,.0f} | {f:,.0f} | {100*f/b:.0f}% | {r:,.0f} | {100*r/b:.0f}% | {cb:.1f} µs | {cf:.1f} µs | {cr:.1f} µs |")
PY
