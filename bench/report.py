#!/usr/bin/env python3
"""Writes BENCHMARKS.md (to stdout) from what bench/run.sh measured in OUT.

usage: report.py OUT ROOT CHARTS

Every table comes from the one run in OUT: medians over its rounds, and ratios between
configurations measured in the same rounds; CHARTS is where bench/charts.py drew them, relative
to BENCHMARKS.md. bench/notes.md (hand-written: profiling, caveats) is appended as it is, from
its line "## How to rerun".
"""

import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

OUT, ROOT, CHARTS = sys.argv[1], sys.argv[2], sys.argv[3]


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


runs = [json.loads(line) for line in read(f"{OUT}/results.jsonl").splitlines() if line.strip()]
env_lines = [line.split("=", 1) for line in read(f"{OUT}/machine.env").splitlines() if "=" in line]
env = dict(env_lines)
load_during = [float(v) for k, v in env_lines if k == "load_during"]
compilers = [int(v or 0) for k, v in env_lines if k == "compilers_during"]
by = defaultdict(list)
for r in runs:
    by[(r["label"], r["mode"], r["concurrency"])].append(r)
concurrencies = sorted({r["concurrency"] for r in runs})
rounds = max((r["round"] for r in runs), default=0)


def med(label, mode, c, field="rps"):
    values = [r[field] for r in by.get((label, mode, c), []) if r.get(field) is not None]
    return statistics.median(values) if values else None


def spread(label, mode, c):
    values = [r["rps"] for r in by.get((label, mode, c), [])]
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def rps(v):
    return "–" if v is None else f"{v:,.0f}"


def us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:,.0f} µs"


def pct(a, b):
    return "–" if a is None or not b else f"{100 * a / b:.0f}%"


# ------------------------------------------------------------------ machine
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/^Mem/ {print $2}'")
lock = read(f"{ROOT}/Cargo.lock")


def locked(name):
    m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
    return m.group(1) if m else "?"


print("# Benchmarks: what idempotency costs\n")
print(
    "Written by `bench/run.sh` from one run: every ratio below compares configurations measured "
    "in the same rounds, interleaved, on the same machine. These are measurements, not tests: "
    "nothing fails on a timing.\n"
)
print("## Machine and versions\n")
print(f"- {sh('nproc')} cores ({cpu}), {mem} GiB memory, {sh('uname -sr')}")
print(f"- run from {env.get('started', '?')} to {env.get('finished', '?')}; load average "
      f"(1, 5, 15 min) {env.get('load_before', '?')} before, {env.get('load_after', '?')} after"
      + (f", 1-minute load between {min(load_during):.2f} and {max(load_during):.2f} during the rounds "
         f"(2.0 is both cores busy; the benchmark itself keeps about 2 busy)" if load_during else "")
      + (f"; other engineers' compilers (`rustc`) were running at the start of {sum(1 for n in compilers if n)} "
         f"of {len(compilers)} round steps" if compilers else "") + ". "
      "The machine is shared: other engineers compile on it, so expect noise; "
      "`spread` columns show (max − min) / median over rounds.")
print(f"- commit {env.get('commit', '?')}; {env.get('rustc', '?')}, release profile; axum {locked('axum')}, hyper {locked('hyper')}, "
      f"tokio {locked('tokio')}, sqlx {locked('sqlx')} (SQLite {locked('libsqlite3-sys')} bindings), "
      f"{env.get('postgres', 'postgres ?')}, {env.get('pgbench', 'pgbench ?')}, {env.get('redis', 'redis ?')}, "
      f"axum-idempotent {locked('axum-idempotent')} (ruts {locked('ruts')}), criterion {locked('criterion')}")
print(f"- HTTP runs: {rounds} rounds × {len(concurrencies)} concurrencies; each run "
      f"{runs[0]['seconds'] if runs else '?'} s measured after 1 s of warm-up, "
      f"{runs[0].get('body_bytes', '?') if runs else '?'}-byte JSON request bodies, keep-alive "
      "HTTP/1.1 on 127.0.0.1, load generator and server on the same 2 cores.\n")

# ------------------------------------------------------------------ criterion
crit = read(f"{OUT}/criterion.txt")
start = crit.find("## In-process overhead")
print("## 1. In-process overhead (criterion)\n")
print("A trivial axum handler (`Bytes` body in, `201` + small JSON out) called through a `Router` "
      "with `tower::ServiceExt::oneshot` on a current-thread runtime, bare and under "
      "`#[idempotent]` on `MemoryStore`; the response body is read whole. `first` and `first, "
      "steady` send a new key each call (`first` to one store that grows to about a million "
      "records per body size over the run, so its time also holds what a growing store costs; "
      "the store's own cost by size is measured below); `replay` sends one completed key again. "
      "Medians of criterion's samples.\n")
if start >= 0:
    print(crit[start:].replace("## ", "### ", 2).strip() + "\n")
else:
    print("(criterion was not run: `BENCH_CRITERION=0`)\n")


def fmt2(v):
    return "–" if v is None else f"{v:.2f}"


# ------------------------------------------------------------------ the matrix
# (label, mode, name, database): every row the run measures, in reading order.
ROWS = [("bare", "first", "bare handler", "none")]
for label, name, db in (("memory", "memory", "none"), ("sqlite", "SQLite", "in server"),
                        ("sqlite-tx", "SQLite, transactional", "in server"),
                        ("postgres", "Postgres", "Postgres"),
                        ("postgres-tx", "Postgres, transactional", "Postgres"),
                        ("redis", "Redis", "redis-server"), ("peer", "axum-idempotent (memory)", "none")):
    ROWS += [(label, "first", f"{name}, first call", db), (label, "replay", f"{name}, replay", db)]
ROWS += [("grpc-bare", "first", "gRPC (tonic), bare method", "none"),
         ("grpc", "first", "gRPC (tonic), memory, first call", "none"),
         ("grpc", "replay", "gRPC (tonic), memory, replay", "none"),
         ("waiting", "first", "memory, waiting duplicates (groups of 4)", "none"),
         ("pgbench-first", "first", "pgbench: claim + complete", "Postgres"),
         ("pgbench-first-pool", "first", "pgbench: claim + complete, 10 clients", "Postgres"),
         ("pgbench-tx", "first", "pgbench: claim; BEGIN, complete, COMMIT", "Postgres"),
         ("pgbench-tx-pool", "first", "pgbench: claim; BEGIN, complete, COMMIT, 10 clients", "Postgres"),
         ("pgbench-first-bound", "first", "pgbench: claim + complete, every value bound, 10 clients", "Postgres"),
         ("pgbench-replay", "replay", "pgbench: claim", "Postgres"),
         ("pgbench-replay-pool", "replay", "pgbench: claim, 10 clients", "Postgres"),
         ("pgbench-replay-bound", "replay", "pgbench: claim, every value bound, 10 clients", "Postgres")]
# Modes the matrix names but that are not built yet: marked, never left out.
NOT_BUILT = []


def cpu(v):
    return "–" if v is None else f"{v:,.1f}"


def total_cpu(label, mode, c):
    parts = [med(label, mode, c, f) for f in ("cpu_server_us", "cpu_db_us", "cpu_client_us")]
    return None if all(p is None for p in parts) else sum(p or 0 for p in parts)


print("## 2. The matrix: every store and mode, over HTTP on loopback\n")
print("`bench_server` serves one trivial handler (`Bytes` body in, `201` + small JSON out) bare "
      "(`/bare`), under `#[idempotent]` (`/idem`), in transactional mode (`/idem/tx`: it takes the "
      "store's `Tx` and writes nothing through it), under `wait = \"10s\"` with a 2 ms handler "
      "(`/idem/wait`), and behind `axum-idempotent` (`/peer`); one server per store. `grpc_bench` serves a trivial "
      "tonic method (`CreatePayment`) bare and under `#[idempotent]` on the memory store, loaded by "
      "its own generator over one HTTP/2 connection per caller. `loadgen` "
      "keeps C connections busy: first calls send a new key per request; replays cycle through 8 "
      "completed keys per connection; waiting duplicates send each new key from four connections "
      "at once, so one runs the handler and three wait for its answer. pgbench runs the Postgres "
      "store's own statements (section 3).\n")
print("**CPU per request** is user + system time from `/proc/PID/stat`, read when the measured "
      "window opens (after 1 s of warm-up) and when it closes, divided by the requests answered "
      "in it: the bench server's process (all threads); the database's (Postgres: the postmaster, "
      "its live children and, through its `cutime`/`cstime`, children that exited; "
      "`redis-server`'s process; SQLite runs inside the bench server, so its cost is in the "
      "server column); and the load generator's own (loadgen, or pgbench). Unlike requests per "
      "second, it does not depend much on how the kernel shares the 2 cores between the three. "
      "Requests per second and latencies are shared-core figures: the load generator, the server "
      "and the database run on the same 2 cores.\n")
print(f"![CPU per request, stacked by server, database and load generator]({CHARTS}/cpu-per-request.png)\n")
print(f"![CPU per request of the in-process rows]({CHARTS}/cpu-per-request-memory.png)\n")
print(f"![Latency percentiles by row]({CHARTS}/latency.png)\n")
for c in concurrencies:
    print(f"### C = {c}\n")
    print("| row | req/s | p50 | p99 | server CPU µs/req | database CPU µs/req | load generator CPU µs/req | total | spread (req/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, mode, name, db in ROWS:
        if not by.get((label, mode, c)):
            if label == "waiting" and c < 4:
                print(f"| {name} | – | – | – | – | – | – | – | needs C ≥ 4 |")
            continue
        s = spread(label, mode, c)
        dbcpu = med(label, mode, c, "cpu_db_us")
        db_cell = "in server" if db == "in server" else ("–" if db == "none" else cpu(dbcpu))
        print(f"| {name} | {rps(med(label, mode, c))} | {us(med(label, mode, c, 'p50_us'))} | "
              f"{us(med(label, mode, c, 'p99_us'))} | {cpu(med(label, mode, c, 'cpu_server_us'))} | "
              f"{db_cell} | {cpu(med(label, mode, c, 'cpu_client_us'))} | {cpu(total_cpu(label, mode, c))} | "
              f"{'–' if s is None else f'{100 * s:.0f}%'} |")
    for name, why in NOT_BUILT:
        print(f"| {name} | not built yet | | | | | | | {why} |")
    print()

# ------------------------------------------------------------------ pgbench
print("## 3. Postgres against pgbench, the same statements\n")
print("`pgbench -M prepared -j 1` runs the store's own statements, read from "
      "`idem-runtime/src/stores/sql/postgres.rs` (the `concat!` of its claim expanded by "
      "`bench/pgbench_scripts.py`), with the bench server's values: the claim and then the "
      "completion as two autocommit statements (a plain first call), the claim and then "
      "`BEGIN`, the completion guarded by `response_status IS NULL`, `COMMIT` (a transactional "
      "first call, whose claim commits on its own), or the claim alone on one of 1000 completed keys (a replay). "
      "Its first second is its warm-up, and its transactions are counted from its log by "
      "completion time over the same kind of window. The bench server reaches Postgres through "
      "`PostgresStore::connect`'s 10 connections, so above C = 10 pgbench also runs with 10 "
      "clients: the same number of database sessions. `write xacts` are transaction ids used "
      "per request (commits that wrote), `WAL` the WAL bytes written per request.\n")
print("| C | call | Postgres CPU µs: store | pgbench, C clients | pgbench, 10 clients | store / pgbench (same sessions) | "
      "client CPU µs: bench server | pgbench | write xacts: store / pgbench | WAL bytes: store / pgbench |")
print("|---|---|---|---|---|---|---|---|---|---|")
PAIRS = (("first", "postgres", "pgbench-first", "first call"),
         ("first", "postgres-tx", "pgbench-tx", "transactional first call"),
         ("replay", "postgres", "pgbench-replay", "replay"))


def same_sessions(bench, c):
    return bench + "-pool" if c > 10 and by.get((bench + "-pool", "first" if "replay" not in bench else "replay", c)) else bench


for c in concurrencies:
    for mode, label, bench, name in PAIRS:
        ref = same_sessions(bench, c)
        store_db, ref_db = med(label, mode, c, "cpu_db_us"), med(ref, mode, c, "cpu_db_us")
        ratio = "–" if store_db is None or not ref_db else f"{store_db / ref_db:.2f}×"
        print(f"| {c} | {name} | {cpu(store_db)} | {cpu(med(bench, mode, c, 'cpu_db_us'))} | "
              f"{cpu(med(bench + '-pool', mode, c, 'cpu_db_us')) if c > 10 else '–'} | {ratio} | "
              f"{cpu(med(label, mode, c, 'cpu_server_us'))} | {cpu(med(ref, mode, c, 'cpu_client_us'))} | "
              f"{fmt2(med(label, mode, c, 'xids_per_request'))} / {fmt2(med(ref, mode, c, 'xids_per_request'))} | "
              f"{rps(med(label, mode, c, 'wal_bytes_per_request'))} / {rps(med(ref, mode, c, 'wal_bytes_per_request'))} |")
print()
if by.get(("pgbench-first-bound", "first", 16)):
    print("Where the database's difference comes from, at C = 16 (10 sessions each): pgbench with its "
          "values written into the statement as constants (only the key a parameter), and with every "
          "value bound as a parameter, as the store binds them (bench/notes.md, \"CPU per request\").\n")
    print("| call | Postgres CPU µs: store | pgbench, constants | pgbench, every value bound | pgbench client CPU µs: constants / bound |")
    print("|---|---|---|---|---|")
    for mode, label, name in (("first", "first", "first call"), ("replay", "replay", "replay")):
        print(f"| {name} | {cpu(med('postgres', mode, 16, 'cpu_db_us'))} | "
              f"{cpu(med(f'pgbench-{label}-pool', mode, 16, 'cpu_db_us'))} | "
              f"{cpu(med(f'pgbench-{label}-bound', mode, 16, 'cpu_db_us'))} | "
              f"{cpu(med(f'pgbench-{label}-pool', mode, 16, 'cpu_client_us'))} / "
              f"{cpu(med(f'pgbench-{label}-bound', mode, 16, 'cpu_client_us'))} |")
    print()

def db_parts(label, mode, c):
    """Medians over rounds of Postgres's CPU per request by process kind: the sessions (with
    those that ended in the window), and every background process."""
    rows = by.get((label, mode, c), [])
    kinds = sorted({k for r in rows for k in r.get("cpu_db_parts_us", {})})
    out = {}
    for k in kinds:
        values = [r.get("cpu_db_parts_us", {}).get(k, 0) for r in rows if "cpu_db_parts_us" in r]
        if values:
            out[k] = statistics.median(values)
    sessions = out.pop("sessions", 0) + out.pop("exited", 0)
    return sessions, out


if any("cpu_db_parts_us" in r for r in runs):
    c = 16 if 16 in concurrencies else concurrencies[-1]
    print(f"Postgres's CPU per request by process at C = {c} (sessions include those that ended in "
          "the window; the rest are background processes, which the writes of earlier rows can keep "
          "busy):\n")
    print("| row | all | sessions | background processes |")
    print("|---|---|---|---|")
    for label, mode, name in (("postgres", "first", "store, first call"), (same_sessions("pgbench-first", c), "first", "pgbench, claim + complete"),
                              ("postgres", "replay", "store, replay"), (same_sessions("pgbench-replay", c), "replay", "pgbench, claim")):
        if not by.get((label, mode, c)):
            continue
        sessions, rest = db_parts(label, mode, c)
        others = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rest.items(), key=lambda kv: -abs(kv[1])) if abs(v) >= 0.05)
        print(f"| {name} | {cpu(med(label, mode, c, 'cpu_db_us'))} | {sessions:.1f} | {others or '–'} |")
    print()

# ------------------------------------------------------------------ Redis limit
if any(r["mode"] == "limit" for r in runs):
    print("### Redis against redis-benchmark, the same scripts\n")
    print("`redis-benchmark` (no pipelining) sends the Redis store's own scripts by `EVALSHA` (SHA1s "
          "checked against what the store loaded): the claim of a new key, the completion of an "
          "in-progress record, the claim of a completed record (a replay). A first call is a claim "
          "and a completion. `redis-server` CPU per call, over HTTP (the matrix's Redis rows) and "
          "from redis-benchmark:\n")
    print("| C | call | redis-server CPU µs: store over HTTP | redis-benchmark | commands per call over HTTP |")
    print("|---|---|---|---|---|")
    for c in concurrencies:
        new, done, rep = (med(n, "limit", c, "cpu_db_us") for n in ("redis-claim-new", "redis-complete", "redis-claim-replay"))
        for mode, lim in (("first", None if new is None or done is None else new + done), ("replay", rep)):
            print(f"| {c} | {mode} | {cpu(med('redis', mode, c, 'cpu_db_us'))} | {cpu(lim)} | "
                  f"{fmt2(med('redis', mode, c, 'commands_per_request'))} |")
    print()

# ------------------------------------------------------------------ peer
print("## 4. Against a peer: axum-idempotent\n")
print("The same handler behind `axum-idempotent` in direct-key mode (`Idempotency-Key`), on its "
      "in-memory session store (ruts `MokaStore`), with the cookie and session layers it needs "
      "(rows `axum-idempotent` above). It caches only for requests that carry a session, so each "
      "connection first opens one, and for first calls starts a new session every 100 requests; "
      "those session requests are not counted. It does not claim a key before running the "
      "handler (two concurrent duplicates both run), compares no fingerprint, and has no 409 for "
      "a request in progress.\n")
print("| C | call | idem (memory) server CPU µs/req | peer server CPU µs/req | idem / peer | idem p99 | peer p99 |")
print("|---|---|---|---|---|---|---|")
for mode in ("first", "replay"):
    for c in concurrencies:
        a, b = med("memory", mode, c, "cpu_server_us"), med("peer", mode, c, "cpu_server_us")
        ratio = "–" if a is None or not b else f"{a / b:.2f}×"
        print(f"| {c} | {mode} | {cpu(a)} | {cpu(b)} | {ratio} | "
              f"{us(med('memory', mode, c, 'p99_us'))} | {us(med('peer', mode, c, 'p99_us'))} |")
print()

# ------------------------------------------------------------------ cost model
stored = dict(line.split("=", 1) for line in read(f"{OUT}/stored.env").splitlines() if "=" in line)
rss = json.loads(read(f"{OUT}/rss.json", "null") or "null")
C_REF = 16 if 16 in concurrencies else (concurrencies[-1] if concurrencies else 0)


def per_record(name):
    try:
        return int(stored[f"{name}_bytes"]) / int(stored[f"{name}_records"])
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def cost_model():
    """The cost model's table, as markdown lines (README.md's Performance section copies it)."""
    bare_writes = med("bare", "first", C_REF, "server_writes_per_request")
    bare_cpu = med("bare", "first", C_REF, "cpu_server_us")
    mem_bytes = None
    if rss and rss["status"].get("201"):
        mem_bytes = (rss["rss_after_kib"] - rss["rss_before_kib"]) * 1024 / rss["status"]["201"]
    lines = [f"| store, call | round trips to the store | commits | server CPU µs (bare: {cpu(bare_cpu)}) | "
             "database CPU µs | bytes stored per record |", "|---|---|---|---|---|---|"]
    for label, name, kind, size in (("memory", "memory", "memory", mem_bytes),
                                    ("sqlite", "SQLite", "sqlite", per_record("sqlite")),
                                    ("sqlite-tx", "SQLite, transactional", "sqlite", per_record("sqlite")),
                                    ("postgres", "Postgres", "pg", per_record("pg")),
                                    ("postgres-tx", "Postgres, transactional", "pg", per_record("pg")),
                                    ("redis", "Redis", "redis", per_record("redis"))):
        for mode, call in (("first", "first call"), ("replay", "replay")):
            if not by.get((label, mode, C_REF)):
                continue
            writes = med(label, mode, C_REF, "server_writes_per_request")
            extra = None if writes is None or bare_writes is None else writes - bare_writes
            if kind == "memory":
                trips, commits = "0 (in process)", "–"
            elif kind == "sqlite":
                trips = f"0 (in process; {fmt2(extra)} file writes)"
                commits = "–"
            elif kind == "pg":
                trips = fmt2(med(label, mode, C_REF, "statements_per_request"))
                commits = f"{fmt2(med(label, mode, C_REF, 'xids_per_request'))} that wrote, " \
                          f"{rps(med(label, mode, C_REF, 'wal_bytes_per_request'))} WAL bytes"
            else:
                trips = fmt2(med(label, mode, C_REF, "commands_per_request"))
                commits = "none (AOF, fsync every second)"
            db = "in server" if kind == "sqlite" else ("–" if kind == "memory" else cpu(med(label, mode, C_REF, "cpu_db_us")))
            size_cell = "–" if size is None else f"{size:,.0f}" + (" (resident, payments)" if kind == "memory" else "")
            lines.append(f"| {name}, {call} | {trips} | {commits} | {cpu(med(label, mode, C_REF, 'cpu_server_us'))} | "
                         f"{db} | {size_cell if mode == 'first' else 'none added'} |")
    return lines


print("## 5. Cost model: what one call costs on each store\n")
print(f"From the matrix at C = {C_REF}, medians over rounds. Round trips are statements per request "
      "for Postgres (`pg_stat_statements` calls over the window; `BEGIN` and `COMMIT` count), "
      "scripts sent (`EVALSHA`, from `INFO commandstats`) for Redis; SQLite runs in the server's "
      "process, and its column counts the server's file writes per request beyond the bare "
      "handler's writes (`/proc/PID/io` `syscw`). Commits are Postgres transaction ids used per "
      "request (a transaction that wrote, whose commit waits for its WAL flush; a read-only one "
      "takes none) and the WAL written; SQLite's commits are not counted (no counter outside its "
      "process). Bytes stored per record: Postgres `pg_total_relation_size` (table, "
      "TOAST and index) over the records the run left; SQLite the database files over its "
      "records; Redis `used_memory` over its keys; memory the `payments` service's resident "
      "growth per stored key (section 6).\n")
for line in cost_model():
    print(line)
print()
with open(f"{OUT}/cost-model.md", "w") as f:
    f.write("\n".join(cost_model()) + "\n")

# ------------------------------------------------------------------ RSS
rss = json.loads(read(f"{OUT}/rss.json", "null") or "null")
print("## 6. Memory per key\n")
if rss:
    stored = rss["status"].get("201", 0)
    grown = (rss["rss_after_kib"] - rss["rss_before_kib"]) * 1024
    per_key = grown / stored if stored else float("nan")
    others = {k: v for k, v in rss["status"].items() if k != "201"}
    print(f"The `payments` service (`IDEM_STORE=memory`, default `MemoryStore::new()`, capacity "
          f"1,000,000) was sent {rss['requests']:,} `POST /payments` with distinct keys at "
          f"concurrency 64 ({rss['rps']:,.0f} req/s). {stored:,} were stored (201)"
          + (f"; the others answered {others}" + (" (503: the store was full of live records, "
             "which it refuses rather than evict)" if "503" in others else "") if others else "") + ".\n")
    print("| resident before | resident after | grown | records | per record |")
    print("|---|---|---|---|---|")
    print(f"| {rss['rss_before_kib'] / 1024:,.1f} MiB | {rss['rss_after_kib'] / 1024:,.1f} MiB | "
          f"{grown / 2**20:,.1f} MiB | {stored:,} | {per_key:,.0f} bytes |\n")
    print("Each record holds the key, the handler's name, the fingerprint, the owner token, the "
          "times and the stored response (status, `content-type`, the ~40-byte JSON body); the "
          "payments list itself (one small struct per payment) is in the same figure. A record's "
          "fixed part (about 210 bytes) is one allocation, its key, its stored headers (a list, "
          "each name and value) and its body are more; its shard's hash table holds a 16-byte "
          "bucket for it and runs between 44% and 87% full.\n")
else:
    print("(not measured)\n")

# ------------------------------------------------------------------ goals
def crit_row(label):
    m = re.search(r"^\| %s \|(.*)$" % re.escape(label), crit, re.M)
    return [c.strip() for c in m.group(1).split("|")] if m else None


def num(cell):
    m = re.match(r"(-?[0-9.,]+)", cell or "")
    return float(m.group(1).replace(",", "")) if m else None


def verdict(ok):
    return "**met**" if ok else "**not met**"


print("## Goals: CPU per request\n")
G = 16 if 16 in concurrencies else C_REF
bare_cpu = med("bare", "first", G, "cpu_server_us")
items = [(mode, med("memory", mode, G, "cpu_server_us")) for mode in ("first", "replay")]
if bare_cpu and all(v for _, v in items):
    ok = all(v - bare_cpu <= 3 for _, v in items)
    print(f"1. **Memory store over HTTP, server CPU ≤ bare + 3 µs at C = {G}**: bare {bare_cpu:.1f} µs; " +
          ", ".join(f"{m} call {v:.1f} µs (+{v - bare_cpu:.1f})" if m == "first" else f"replay {v:.1f} µs (+{v - bare_cpu:.1f})"
                    for m, v in items) + f": {verdict(ok)}.")
    per = lambda label, mode, f: med(label, mode, G, f)
    print("   The server's other counters per request over the same windows (bare / first call / replay): "
          f"minor page faults {fmt2(per('bare', 'first', 'server_faults_per_request'))} / "
          f"{fmt2(per('memory', 'first', 'server_faults_per_request'))} / "
          f"{fmt2(per('memory', 'replay', 'server_faults_per_request'))}; context switches "
          f"{fmt2(per('bare', 'first', 'server_switches_per_request'))} / "
          f"{fmt2(per('memory', 'first', 'server_switches_per_request'))} / "
          f"{fmt2(per('memory', 'replay', 'server_switches_per_request'))}; the in-process cost of the "
          "library's own work is part 1's (criterion).")
else:
    print(f"1. Memory store over HTTP: not measured at C = {G}.")
parts = []
for mode, label, bench, name in PAIRS[:1] + PAIRS[2:]:
    ref = same_sessions(bench, G)
    a, b = med(label, mode, G, "cpu_db_us"), med(ref, mode, G, "cpu_db_us")
    if a and b:
        parts.append((name, a, b))
if parts:
    ok = all(a <= 1.05 * b for _, a, b in parts)
    print(f"2. **Postgres's CPU per request ≤ 1.05× pgbench's for the same statements (C = {G}, the same "
          f"number of sessions)**: " + ", ".join(f"{n} {a:.1f} µs against {b:.1f} µs ({a / b:.2f}×)" for n, a, b in parts)
          + f": {verdict(ok)}. Where the difference comes from: bench/notes.md, \"CPU per request\".")
parts = []
for mode, label, bench, name in PAIRS[:1] + PAIRS[2:]:
    ref = same_sessions(bench, G)
    a, client = med(label, mode, G, "cpu_server_us"), med(ref, mode, G, "cpu_client_us")
    if a and client and bare_cpu:
        parts.append((name, a, bare_cpu + 2 * client, client))
if parts:
    ok = all(a <= limit for _, a, limit, _ in parts)
    print(f"3. **Server CPU per Postgres call ≤ bare HTTP CPU + 2× pgbench's client CPU (C = {G})**: " + ", ".join(
        f"{n} {a:.1f} µs against {bare_cpu:.1f} + 2 × {client:.1f} = {limit:.1f} µs" for n, a, limit, client in parts)
        + f": {verdict(ok)}.")
row = crit_row("1KiB")
flat = crit_row("claim a completed key")
if row and flat:
    first_add, ratio = num(row[4]), num(flat[2])
    print(f"4. **Memory store at scale (criterion)**: a first call into a store growing to a million records "
          f"adds {first_add:.2f} µs over bare ({verdict(first_add <= 2)}, at most 2 µs); claiming a completed "
          f"key costs {flat[1]} at 1M records against {flat[0]} at 1k, {ratio:.2f}× "
          f"({verdict(ratio <= 2)}, at most 2×).")
else:
    print("4. Memory store at scale: criterion was not run (`BENCH_CRITERION=0`).")
print("5. **The whole matrix in one run**: section 2; rows for modes not built yet are marked there.")
print("6. **The cost model**: section 5, copied into README.md's Performance section.\n")

# ------------------------------------------------------------------ anomalies
odd = []
for r in runs:
    if r["label"].startswith("pgbench"):
        continue
    bad = {k: v for k, v in r["status"].items() if k != "201"}
    if bad or r["errors"]:
        odd.append(f"{r['label']} {r['mode']} C={r['concurrency']} round {r['round']}: "
                   f"statuses {bad or '{}'}, connection errors {r['errors']}")
    if r["mode"] == "replay" and r["replayed"] != r["requests"]:
        odd.append(f"{r['label']} replay C={r['concurrency']} round {r['round']}: "
                   f"{r['replayed']} of {r['requests']} answers were marked replayed")
waits = [r for r in runs if r["label"] == "waiting"]
print("## Checks\n")
if odd:
    print("Answers other than expected (every request should get 201; every replay the replay header):\n")
    for line in odd:
        print(f"- {line}")
else:
    print("Every measured request got 201, and every replay carried the replay header.")
if waits:
    share = sum(r["replayed"] for r in waits) / max(1, sum(r["requests"] for r in waits))
    print(f"Waiting duplicates: {100 * share:.0f}% of their answers were replays of the answer another "
          "connection's request produced (three in four would be every duplicate waiting).")
print()

notes = read(f"{ROOT}/bench/notes.md")
start = notes.find("## How to rerun")
if start >= 0:
    print(notes[start:].strip())
