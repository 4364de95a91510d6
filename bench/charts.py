#!/usr/bin/env python3
"""Draws the matrix that bench/run.sh measured (OUT/results.jsonl) as charts, with matplotlib.

usage: charts.py OUT CHARTS

- cpu-per-request.png: CPU per request of every row at each concurrency, stacked by the bench
  server, the database and the load generator (loadgen, or pgbench for the pgbench rows);
  cpu-per-request-memory.png the same for the in-process rows alone, on their own scale;
- latency.png: p50 and p99 of every row, on a log scale.

Medians over rounds, as in BENCHMARKS.md.
"""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT, CHARTS = sys.argv[1], sys.argv[2]
os.makedirs(CHARTS, exist_ok=True)
runs = [json.loads(line) for line in open(f"{OUT}/results.jsonl") if line.strip()]

# The rows in reading order: (label, mode, name shown).
ROWS = [("bare", "first", "bare")]
for label, name in (("memory", "memory"), ("peer", "axum-idempotent"), ("sqlite", "SQLite"),
                    ("sqlite-tx", "SQLite, transactional"), ("postgres", "Postgres"),
                    ("postgres-tx", "Postgres, transactional"), ("redis", "Redis")):
    ROWS += [(label, "first", f"{name}, first"), (label, "replay", f"{name}, replay")]
ROWS += [("grpc-bare", "first", "gRPC, bare method"), ("grpc", "first", "gRPC, first"),
         ("grpc", "replay", "gRPC, replay"), ("waiting", "first", "memory, waiting duplicates"),
         ("pgbench-first", "first", "pgbench: claim + complete"),
         ("pgbench-tx", "first", "pgbench: claim; BEGIN, complete, COMMIT"),
         ("pgbench-replay", "replay", "pgbench: claim")]


def med(label, mode, c, field):
    values = [r[field] for r in runs if (r["label"], r["mode"], r["concurrency"]) == (label, mode, c)
              and r.get(field) is not None]
    return statistics.median(values) if values else None


concurrencies = sorted({r["concurrency"] for r in runs})
present = [row for row in ROWS if any(med(row[0], row[1], c, "rps") for c in concurrencies)]
names = [row[2] for row in present]

# ---- CPU per request, stacked: every row, then the in-process rows on their own scale
parts = (("cpu_server_us", "bench server", "#4C72B0"), ("cpu_db_us", "database", "#DD8452"),
         ("cpu_client_us", "load generator", "#8C8C8C"))


def stacked(rows, title, path):
    fig, axes = plt.subplots(1, len(concurrencies), figsize=(4.2 * len(concurrencies) + 3, 0.32 * len(rows) + 1.8),
                             sharey=True, squeeze=False)
    for ax, c in zip(axes[0], concurrencies):
        left = [0.0] * len(rows)
        for field, legend, color in parts:
            values = [med(label, mode, c, field) or 0 for label, mode, _ in rows]
            ax.barh(range(len(rows)), values, left=left, color=color, label=legend, height=0.7)
            left = [a + b for a, b in zip(left, values)]
        ax.set_title(f"C = {c}")
        ax.set_xlabel("CPU µs per request")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [row[2] for row in rows])
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


stacked(present, "CPU per request (user + system, /proc), medians over rounds",
        f"{CHARTS}/cpu-per-request.png")
stacked([row for row in present if row[0] in ("bare", "memory", "peer", "waiting", "grpc-bare", "grpc")],
        "CPU per request, in-process stores (user + system, /proc), medians over rounds",
        f"{CHARTS}/cpu-per-request-memory.png")

# ---- latency percentiles
fig, axes = plt.subplots(1, len(concurrencies), figsize=(4.2 * len(concurrencies) + 3, 0.32 * len(present) + 1.8),
                         sharey=True, squeeze=False)
for ax, c in zip(axes[0], concurrencies):
    p50 = [med(label, mode, c, "p50_us") or 0 for label, mode, _ in present]
    p99 = [med(label, mode, c, "p99_us") or 0 for label, mode, _ in present]
    y = range(len(present))
    ax.barh([i - 0.18 for i in y], p50, height=0.36, color="#4C72B0", label="p50")
    ax.barh([i + 0.18 for i in y], p99, height=0.36, color="#C44E52", label="p99")
    ax.set_xscale("log")
    ax.set_xlim(left=10)
    ax.set_title(f"C = {c}")
    ax.set_xlabel("latency, µs (log scale)")
    ax.grid(axis="x", alpha=0.3, which="both")
axes[0][0].set_yticks(range(len(present)), names)
axes[0][0].invert_yaxis()
axes[0][-1].legend(loc="lower right", fontsize=8)
fig.suptitle("Latency, p50 and p99 (shared cores: the load generator runs beside the server)")
fig.tight_layout()
fig.savefig(f"{CHARTS}/latency.png", dpi=110)
plt.close(fig)
