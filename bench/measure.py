#!/usr/bin/env python3
"""Runs one load (loadgen or pgbench) and prints one JSON line: its rates and latencies, and
the CPU each process spent per request over the measured window only.

usage: measure.py loadgen|pgbench [--server PID] [--db PID] [--db-tree PID] [--psql CMD]
                  [--redis CMD] [--warmup S] [--field NAME=VALUE ...] -- COMMAND...

CPU is user + system time from /proc/PID/stat, read when the window opens and when it closes:
- loadgen marks its window itself (`measuring` and `measured` on stderr) and reads its own
  figures there; pgbench has none, so its window opens `--warmup` seconds after its start
  (its connections are open by then) and closes when it exits (its times then come from
  wait4), and its transactions are counted from its log by completion time.
- `--server PID`: the bench server, all threads.
- `--db PID`: one database process (redis-server). `--db-tree PID`: the postmaster, its live
  children, and through its cutime/cstime every child that exited during the window.
- `--psql CMD`: reads Postgres's next transaction id and WAL position around the window, so
  the row carries write transactions (commits that wrote) and WAL bytes per request.
- `--redis CMD`: reads `INFO commandstats` around the window: Redis commands per request.
"""

import glob
import json
import os
import re
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(ppid, own ticks, reaped children's ticks) of one process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def ticks(pid):
    s = stat(pid)
    return s[1] if s else 0


def kind(pid):
    """What a postmaster's child is: a session ("postgres: USER DB HOST…"), or the name of a
    background process (walwriter, autovacuum worker, checkpointer…)."""
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            title = f.read().replace("\0", " ").strip()
    except OSError:
        return "gone"
    return "sessions" if "127.0.0.1" in title else title.removeprefix("postgres: ").split(" for ")[0]


def tree_ticks(root, parts=None):
    """The postmaster's own and reaped children's ticks, plus every live child's; `parts`
    collects them by kind (children that exited are "exited", whatever they were)."""
    s = stat(root)
    if s is None:
        return 0
    total = s[1] + s[2]
    if parts is not None:
        parts["postmaster"] = parts.get("postmaster", 0) + s[1]
        parts["exited"] = parts.get("exited", 0) + s[2]
    for path in glob.glob("/proc/[0-9]*"):
        child = stat(path[6:])
        if child and child[0] == root:
            total += child[1] + child[2]
            if parts is not None:
                k = kind(path[6:])
                parts[k] = parts.get(k, 0) + child[1] + child[2]
    return total


def writes(pid):
    """The write system calls a process has made (sockets and files): a round trip to a
    database is one, so the server's extra writes over the bare handler's count them."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return int(re.search(r"^syscw: (\d+)", f.read(), re.M).group(1))
    except OSError:
        return 0


def faults_and_switches(pid):
    """Minor page faults (stat's minflt) and context switches of every thread of a process."""
    s = stat(pid)
    faults, switches = 0, 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            faults = int(f.read().rsplit(")", 1)[1].split()[7])
        for path in glob.glob(f"/proc/{pid}/task/*/status"):
            with open(path) as f:
                switches += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", f.read()))
    except OSError:
        pass
    return faults if s else 0, switches


def pg_position(psql):
    """Next transaction id, WAL position, and statements run (pg_stat_statements, less its own
    reading and this query)."""
    out = subprocess.run(
        psql + ["-tA", "-c", "SELECT pg_snapshot_xmax(pg_current_snapshot()), "
                "pg_current_wal_lsn() - '0/0'::pg_lsn, "
                "(SELECT sum(calls) FROM pg_stat_statements WHERE query NOT LIKE '%pg_snapshot_xmax%')"],
        capture_output=True, text=True, check=True).stdout.strip().split("|")
    return int(out[0]), int(float(out[1])), int(out[2] or 0)


def redis_commands(cli):
    out = subprocess.run(cli + ["INFO", "commandstats"], capture_output=True, text=True).stdout
    # Scripts' own calls (HGETALL, HSET…) are counted too: only the commands clients sent.
    return sum(int(n) for n in re.findall(r"^cmdstat_(?:evalsha|eval|script\|load|script):calls=(\d+)", out, re.M))


def main():
    args = sys.argv[1:]
    kind = args.pop(0)
    opts, fields = {}, {}
    while args and args[0] != "--":
        name, value = args.pop(0), args.pop(0)
        if name == "--field":
            k, v = value.split("=", 1)
            fields[k] = int(v) if v.lstrip("-").isdigit() else v
        else:
            opts[name[2:]] = value
    command = args[1:]
    server = int(opts["server"]) if "server" in opts else None
    db_pid = int(opts["db"]) if "db" in opts else None
    db_tree = int(opts["db-tree"]) if "db-tree" in opts else None
    psql = opts["psql"].split() if "psql" in opts else None
    redis = opts["redis"].split() if "redis" in opts else None

    def db_ticks(parts=None):
        if db_tree:
            return tree_ticks(db_tree, parts)
        return ticks(db_pid) if db_pid else 0

    before, after = {}, {}

    def open_window(client_pid):
        if psql:
            before["xid"], before["wal"], before["statements"] = pg_position(psql)
        if redis:
            before["commands"] = redis_commands(redis)
        before["parts"] = {}
        before.update(t=time.time(), server=ticks(server) if server else 0, db=db_ticks(before["parts"]),
                      client=ticks(client_pid), writes=writes(server) if server else 0)
        if server:
            before["faults"], before["switches"] = faults_and_switches(server)

    def close_window(client_ticks):
        after["parts"] = {}
        after.update(t=time.time(), server=ticks(server) if server else 0, db=db_ticks(after["parts"]),
                     client=client_ticks, writes=writes(server) if server else 0)
        if server:
            after["faults"], after["switches"] = faults_and_switches(server)
        if psql:
            after["xid"], after["wal"], after["statements"] = pg_position(psql)
        if redis:
            after["commands"] = redis_commands(redis)

    if kind == "loadgen":
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.strip() == "measuring":
                open_window(proc.pid)
            elif line.strip() == "measured":
                close_window(ticks(proc.pid))
        row = json.loads(proc.stdout.read())
        if proc.wait() != 0:
            sys.exit(f"loadgen failed: {command}")
    else:
        warmup = float(opts.get("warmup", "1"))
        prefix = opts["log-prefix"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(warmup)
        open_window(proc.pid)
        client_before = before["client"]
        _, status, usage = os.wait4(proc.pid, 0)
        raw = proc.stdout.read()
        if status != 0:
            sys.exit(f"pgbench failed:\n{raw}")
        total = round((usage.ru_utime + usage.ru_stime) * HZ)
        # Its backends end as it disconnects: let the postmaster reap them (their times move to
        # its cutime), or a backend caught between the two readings would be counted in neither.
        time.sleep(0.5)
        close_window(total)
        before["client"] = client_before
        lat, last = [], before["t"]
        for path in glob.glob(prefix + "*"):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    done = int(parts[4]) + int(parts[5]) / 1e6
                    if done >= before["t"]:
                        lat.append(int(parts[2]))
                        last = max(last, done)
            os.remove(path)
        lat.sort()
        pct = lambda p: lat[max(0, min(len(lat), -(-len(lat) * p // 100)) - 1)] if lat else 0
        seconds = max(1e-9, last - before["t"])
        row = {"requests": len(lat), "seconds": seconds, "rps": len(lat) / seconds,
               "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
               "max_us": lat[-1] if lat else 0, "status": {}, "replayed": 0, "errors": 0}

    # grpc_bench answers with gRPC statuses, counted as errors by its callers: none here.
    row.setdefault("status", {})
    row.setdefault("errors", 0)
    n = max(1, row["requests"])
    per = lambda key: (after[key] - before[key]) / HZ * 1e6 / n
    row.update(fields)
    row.update(window_s=after["t"] - before["t"], cpu_client_us=per("client"),
               cpu_server_us=per("server") if server else None,
               cpu_db_us=per("db") if (db_tree or db_pid) else None)
    if db_tree:
        # Postgres's CPU by process kind; a session or worker that ended in the window moves its
        # whole life's time to "exited", so only the sum is exact.
        row["cpu_db_parts_us"] = {
            k: (after["parts"].get(k, 0) - before["parts"].get(k, 0)) / HZ * 1e6 / n
            for k in sorted(set(before["parts"]) | set(after["parts"]))
            if after["parts"].get(k, 0) != before["parts"].get(k, 0)}
    if psql:
        row.update(xids_per_request=(after["xid"] - before["xid"]) / n,
                   statements_per_request=(after["statements"] - before["statements"]) / n,
                   wal_bytes_per_request=(after["wal"] - before["wal"]) / n)
    if redis:
        row.update(commands_per_request=(after["commands"] - before["commands"]) / n)
    if server:
        row.update(server_writes_per_request=(after["writes"] - before["writes"]) / n,
                   server_faults_per_request=(after["faults"] - before["faults"]) / n,
                   server_switches_per_request=(after["switches"] - before["switches"]) / n)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
