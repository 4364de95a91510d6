#!/usr/bin/env python3
"""Writes pgbench scripts that run the Postgres store's own statements, read from its source.

usage: pgbench_scripts.py ROOT OUT

The statements are `Dialect for Postgres` constants in idem-runtime/src/stores/sql/postgres.rs,
some built with `concat!` from the file's `macro_rules!` (the claim's shared parts); they are
expanded here the way rustc would. The completion of a transactional run adds
`AND response_status IS NULL`, as statements.rs does. Values are the bench server's: the
unscoped scope (''), a handler name, the key, a SHA-256 fingerprint, a 128-bit owner token, a
30 s lease and a 24 h TTL, and the 1 KiB request's 201 answer.

Writes pg_first.sql (claim, then complete: two autocommit statements, as the store runs
them), pg_replay.sql (the claim of a completed key) and pg_tx.sql (a transactional first call:
the claim, committed on its own as the store does, then BEGIN, the completion if still in
progress, COMMIT).
"""

import re
import sys

ROOT, OUT = sys.argv[1], sys.argv[2]
SRC = open(f"{ROOT}/idem-runtime/src/stores/sql/postgres.rs").read()


def macros(src):
    """name -> (parameter names, transcriber text) for each one-rule `macro_rules!`."""
    found = {}
    for m in re.finditer(r"macro_rules!\s*(\w+)\s*\{\s*\((.*?)\)\s*=>\s*\{", src, re.S):
        params = re.findall(r"\$(\w+):literal", m.group(2))
        found[m.group(1)] = (params, balanced(src, m.end() - 1)[1:-1])
    return found


def balanced(src, start):
    """The bracketed text starting at src[start] (an opening bracket), string literals skipped."""
    depth, i = 0, start
    while True:
        c = src[i]
        if c == '"':
            i = string_end(src, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return src[start:i + 1]
        i += 1


def string_end(src, i):
    i += 1
    while src[i] != '"':
        i += 2 if src[i] == "\\" else 1
    return i + 1


def split_args(text):
    """Top-level comma-separated parts of a macro call's arguments."""
    parts, depth, cur, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if c == '"':
            end = string_end(text, i)
            cur += text[i:end]
            i = end
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur.strip():
        parts.append(cur)
    return parts


MACROS = macros(SRC)


def expand(text, env):
    """The string a `concat!`-style expression yields."""
    out, i = "", 0
    while i < len(text):
        c = text[i]
        if c == '"':
            end = string_end(text, i)
            out += text[i + 1:end - 1].encode().decode("unicode_escape")
            i = end
            continue
        m = re.match(r"\$\(\s*\$(\w+)\s*,?\s*\)\?", text[i:])
        if m:  # an optional literal argument
            out += env.get(m.group(1), "")
            i += m.end()
            continue
        m = re.match(r"\$(\w+)", text[i:])
        if m:
            out += env[m.group(1)]
            i += m.end()
            continue
        m = re.match(r"(\w+)!\s*", text[i:])
        if m:
            call = balanced(text, i + m.end())
            args = [expand(a, env) for a in split_args(call[1:-1])]
            if m.group(1) == "concat":
                out += "".join(args)
            else:
                params, body = MACROS[m.group(1)]
                out += expand(body, dict(zip(params, args)))
            i += m.end() + len(call)
            continue
        i += 1
    return out


def const(name):
    impl = SRC[SRC.index("impl Dialect for Postgres"):]
    m = re.search(r"const %s: &'static str =\s*" % name, impl)
    end = impl.index(";\n", m.end())
    return expand(impl[m.end():end], {}).replace("{table}", "idempotency_keys").strip()


fp = "'" + "ab" * 32 + "'"
token = "'" + "cd" * 16 + "'"
common = {1: "''", 2: "'pgbench::handler'", 3: ":k", 4: fp, 5: token}


def fill(sql, values):
    return re.sub(r"\$(\d+)", lambda m: str(values[int(m.group(1))]), sql)


claim = fill(const("CLAIM"), {**common, 6: "30000000", 7: "86400000000"})
# COMPLETE binds the token as $4 (not the fingerprint) and the response from $5.
complete = fill(const("COMPLETE"), {**common, 4: token, 5: "201",
                                    6: "'[[\"content-type\",\"application/json\"]]'",
                                    7: "'{\"received\":1024}'::bytea", 8: "86400000000"})
one_line = lambda s: " ".join(s.split()) + ";\n"
with open(f"{OUT}/pg_first.sql", "w") as f:
    f.write("\\set k random(1, 1000000000000)\n" + one_line(claim) + one_line(complete))
with open(f"{OUT}/pg_tx.sql", "w") as f:
    f.write("\\set k random(1, 1000000000000)\n" + one_line(claim) + "BEGIN;\n"
            + one_line(complete + " AND response_status IS NULL") + "COMMIT;\n")
with open(f"{OUT}/pg_replay.sql", "w") as f:
    f.write("\\set k random(1, 1000)\n" + one_line(claim.replace("'pgbench::handler'", "'pgbench::replay'")))

# The same statements with every value bound as a parameter, as the store binds them (pgbench
# sends `:name` variables as parameters with -M prepared; run.sh defines them with -D): what
# planning a statement with parameters instead of constants costs the database.
bound = {1: ":scope", 2: ":handler", 3: ":k", 4: ":fp", 5: ":token"}
claim_b = fill(const("CLAIM"), {**bound, 6: ":lease", 7: ":ttl"})
complete_b = fill(const("COMPLETE"), {**bound, 4: ":token", 5: ":status", 6: ":headers",
                                      7: ":body", 8: ":ttl"})
with open(f"{OUT}/pg_first_bound.sql", "w") as f:
    f.write("\\set k random(1, 1000000000000)\n" + one_line(claim_b) + one_line(complete_b))
with open(f"{OUT}/pg_replay_bound.sql", "w") as f:
    f.write("\\set k random(1, 1000)\n" + one_line(claim_b).replace(":handler", ":replay_handler"))
