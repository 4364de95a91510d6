#!/usr/bin/env python3
"""Writes BENCHMARKS.md (to stdout) from what bench/run.sh measured in OUT.

usage: report.py OUT ROOT

Every table comes from the one run in OUT: medians over its rounds, and ratios between
configurations measured in the same rounds. bench/notes.md (hand-written: profiling, caveats)
is appended as it is.
"""

import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

OUT, ROOT = sys.argv[1], sys.argv[2]


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
    values = [r[field] for r in by.get((label, mode, c), [])]
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
      f"{env.get('postgres', 'postgres ?')}, {env.get('pgbench', 'pgbench ?')}, "
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

# ------------------------------------------------------------------ HTTP
print("## 2. Over HTTP on loopback\n")
print("`bench_server` serves the same trivial handler bare (`/bare`), under `#[idempotent]` "
      "(`/idem`) on the memory, SQLite and Postgres stores, and behind `axum-idempotent` "
      "(`/peer`). `loadgen` keeps C connections busy; first calls send a new key per request, "
      "replays cycle through 8 completed keys per connection. Requests per second (median over "
      "rounds), and the share of the bare handler's.\n")
for mode, title in (("first", "First calls (a new key per request)"), ("replay", "Replays")):
    print(f"### {title}\n")
    labels = ["memory", "sqlite", "postgres", "peer"]
    print("| C | bare | " + " | ".join(f"{l} | % of bare" for l in labels) + " | spread (bare / memory) |")
    print("|---|---|" + "---|---|" * len(labels) + "---|")
    for c in concurrencies:
        bare = med("bare", "first", c)
        cells = []
        for l in labels:
            v = med(l, mode, c)
            cells += [rps(v), pct(v, bare)]
        sb, sm = spread("bare", "first", c), spread("memory", mode, c)
        s = "–" if sb is None or sm is None else f"{100 * sb:.0f}% / {100 * sm:.0f}%"
        print(f"| {c} | {rps(bare)} | " + " | ".join(cells) + f" | {s} |")
    print()
    print("Latency, p50 / p99 (medians over rounds):\n")
    print("| C | bare | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for c in concurrencies:
        row = [f"{us(med('bare', 'first', c, 'p50_us'))} / {us(med('bare', 'first', c, 'p99_us'))}"]
        for l in labels:
            row.append(f"{us(med(l, mode, c, 'p50_us'))} / {us(med(l, mode, c, 'p99_us'))}")
        print(f"| {c} | " + " | ".join(row) + " |")
    print()

# ------------------------------------------------------------------ pgbench
print("## 3. Postgres against its own limit\n")
print("`pgbench -M prepared -j 1` runs the store's own statements, read from "
      "`idem-runtime/src/store/postgres.rs`, with the same values: the claim and then the "
      "completion (first calls), or the claim alone on one of 1000 completed keys (replays). "
      "The bench server reaches Postgres through `PostgresStore::connect`'s 10 "
      "connections, so above C = 10 pgbench also runs with 10 clients (`same, 10 clients` columns): the "
      "same number of database sessions. Ratios are HTTP requests per second over pgbench "
      "transactions per second.\n")
print("| C | first calls (HTTP) | pgbench claim + complete, C clients | ratio | same, 10 clients | ratio | "
      "replays (HTTP) | pgbench claim, C clients | ratio | same, 10 clients | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for c in concurrencies:
    pf, bf, bfp = med("postgres", "first", c), med("pgbench-first", "first", c), med("pgbench-first-pool", "first", c)
    pr, br, brp = med("postgres", "replay", c), med("pgbench-replay", "replay", c), med("pgbench-replay-pool", "replay", c)
    print(f"| {c} | {rps(pf)} | {rps(bf)} | {pct(pf, bf)} | {rps(bfp)} | {pct(pf, bfp)} | "
          f"{rps(pr)} | {rps(br)} | {pct(pr, br)} | {rps(brp)} | {pct(pr, brp)} |")
print()
print("Latency at the database, p50 / p99 (pgbench, C clients): " + "; ".join(
    f"C={c}: claim + complete {us(med('pgbench-first', 'first', c, 'p50_us'))} / "
    f"{us(med('pgbench-first', 'first', c, 'p99_us'))}, claim {us(med('pgbench-replay', 'replay', c, 'p50_us'))} / "
    f"{us(med('pgbench-replay', 'replay', c, 'p99_us'))}" for c in concurrencies) + ".\n")

# ------------------------------------------------------------------ peer
print("## 4. Against a peer: axum-idempotent\n")
print("The same handler behind `axum-idempotent` in direct-key mode (`Idempotency-Key`), on its "
      "in-memory session store (ruts `MokaStore`), with the cookie and session layers it needs. "
      "It caches only for requests that carry a session, so each connection first opens one, and "
      "for first calls starts a new session every 100 requests (its store keeps all of a "
      "session's keys in one map and rewrites it on each write); those session requests are not "
      "counted. It does not claim a key before running the handler (two concurrent duplicates "
      "both run), compares no fingerprint, and has no 409 for a request in progress.\n")
print("| C | mode | idem (memory) req/s | peer req/s | idem / peer | idem p99 | peer p99 |")
print("|---|---|---|---|---|---|---|")
for mode in ("first", "replay"):
    for c in concurrencies:
        a, b = med("memory", mode, c), med("peer", mode, c)
        ratio = "–" if a is None or not b else f"{a / b:.2f}×"
        print(f"| {c} | {mode} | {rps(a)} | {rps(b)} | {ratio} | "
              f"{us(med('memory', mode, c, 'p99_us'))} | {us(med('peer', mode, c, 'p99_us'))} |")
print()

# ------------------------------------------------------------------ RSS
rss = json.loads(read(f"{OUT}/rss.json", "null") or "null")
print("## 5. Memory per key\n")
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


print("## Goals of the first benchmark work\n")
row = crit_row("1KiB")
if row:
    first_add, steady_add, replay_add = num(row[4]), num(row[5]), num(row[6])
    verdict = lambda added: "met" if added < 2 else f"not met, {added - 2:+.2f} µs over"
    print(f"1. **In-process, 1 KiB, under 2 µs added**: a first call adds {steady_add:.2f} µs with the "
          f"store at a steady size ({verdict(steady_add)}) and {first_add:.2f} µs with the store growing "
          f"through the run ({verdict(first_add)}); a replay adds {replay_add:.2f} µs "
          f"({verdict(replay_add)}).")
    flat = [(op, num(r[2])) for op, r in (("claim a new key", crit_row("claim a new key (+ release)")),
                                           ("claim a completed key", crit_row("claim a completed key"))) if r]
    if flat:
        print("   **Memory store flat from 1k to 1M records** (read here as within 1.25×): " + ", ".join(
            f"{op} {x:.2f}×" for op, x in flat) + (": met." if all(x <= 1.25 for _, x in flat) else
            ": not met; see the notes on what grows."))
else:
    print("1. In-process: criterion was not run.")
items = []
for mode in ("first", "replay"):
    for c in concurrencies:
        v, b = med("memory", mode, c), med("bare", "first", c)
        if v and b:
            items.append((f"{mode} C={c}", 100 * v / b))
if items:
    ok = all(x >= 90 for _, x in items)
    print("2. **HTTP, memory store, at least 90% of bare throughput**: " + ", ".join(
        f"{k} {x:.0f}%" for k, x in items) + (": met." if ok else f": not met (worst {min(x for _, x in items):.0f}%)."))
items = []
for mode, label in (("first", "pgbench-first"), ("replay", "pgbench-replay")):
    for c in concurrencies:
        v, b = med("postgres", mode, c), med(label, mode, c)
        if v and b:
            items.append((f"{mode} C={c}", 100 * v / b))
if items:
    ok = all(x >= 85 for _, x in items)
    print("3. **Postgres, at least 85% of pgbench (C clients)**: " + ", ".join(
        f"{k} {x:.0f}%" for k, x in items) + (": met." if ok else f": not met (worst {min(x for _, x in items):.0f}%)."))
items = []
for mode in ("first", "replay"):
    for c in concurrencies:
        a, b = med("memory", mode, c), med("peer", mode, c)
        pa, pb = med("memory", mode, c, "p99_us"), med("peer", mode, c, "p99_us")
        if a and b and pa and pb:
            items.append((f"{mode} C={c}", a / b, pa / pb))
if items:
    ahead = [(k, t, p) for k, t, p in items if t > 1 and p < 1]
    print("4. **Ahead of axum-idempotent on throughput and p99**: " + ", ".join(
        f"{k} {t:.2f}× throughput, p99 {p:.2f}× theirs" for k, t, p in items) +
        (": met." if len(ahead) == len(items) else f": met in {len(ahead)} of {len(items)} cases."))
if rss and rss["status"].get("201"):
    stored = rss["status"]["201"]
    print(f"5. **Memory**: {(rss['rss_after_kib'] - rss['rss_before_kib']) * 1024 / stored:,.0f} bytes "
          f"resident per stored key ({stored:,} keys).")
print()

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
print("## Checks\n")
if odd:
    print("Answers other than expected (every request should get 201; every replay the replay header):\n")
    for line in odd:
        print(f"- {line}")
else:
    print("Every measured request got 201, and every replay carried the replay header.")
print()

notes = read(f"{ROOT}/bench/notes.md")
if notes:
    print(notes.strip())
