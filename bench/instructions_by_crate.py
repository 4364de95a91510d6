#!/usr/bin/env python3
"""Instructions per request by crate, from two callgrind profiles of the same program that
differ only in how many requests they served.

usage: instructions_by_crate.py FEWER.out MORE.out REQUESTS_BETWEEN [TOP_FUNCTIONS]
"""

import collections
import re
import signal
import subprocess
import sys


def self_costs(path):
    """Each function's own instructions (callgrind_annotate's exclusive counts)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r"\[/[^\]]*\]", "", m.group(2)).strip()
            costs[name] += int(m.group(1).replace(",", ""))
    return costs


def crate(function):
    """The crate a function belongs to; glibc's allocator and its copies apart."""
    if function.startswith("./"):
        return "glibc malloc/free" if "malloc" in function or "arena" in function else "glibc (memcpy, …)"
    name = function.split(":", 1)[1] if function.startswith("???:") else function
    m = re.match(r"[<&\s]*(?:mut\s+)?([A-Za-z0-9_]+)", name)
    first = m.group(1) if m else name
    return "std, core, alloc" if first in ("core", "alloc", "std") else first


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly, when piped into `head`
    fewer, more, requests = sys.argv[1], sys.argv[2], float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    a, b = self_costs(fewer), self_costs(more)
    per = {name: (b[name] - a[name]) / requests for name in set(a) | set(b)}
    by_crate = collections.Counter()
    for name, cost in per.items():
        by_crate[crate(name)] += cost
    total = sum(per.values())
    print(f"{total:10.0f}  instructions per request")
    for name, cost in by_crate.most_common(20):
        print(f"{cost:10.0f}  {100 * cost / total:5.1f}%  {name}")
    for name, cost in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{cost:10.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
