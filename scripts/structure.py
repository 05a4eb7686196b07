#!/usr/bin/env python3
"""The project's file structure, counted: arrows, circles and arrows that run back up.

A unit is a source file with its header (proxy/session.c and proxy/session.h are one unit; a
header without a .c, such as proxy/proxy.h, is a unit of its own). Unit A has an arrow to unit B
when a file of A includes B's header, or names a function, a global or a macro that B defines and
exports (not static): the definitions come from Universal Ctags (Debian's universal-ctags), the
names from each file's tokens with comments, strings and character constants left out.

Printed: the units by floor (a unit's floor is one above the highest floor it points to, so that
every arrow outside a circle runs down), every circle (a set of units that reach each other) with
the names that tie it, the arrows inside each top folder, and those that run back up: inside a
circle, arrows between units of one floor. The figures for issue 15 (no circle; fewer than 5 % of
the arrows inside proxy/ running back up; nothing in protocol/ or config/ pointing to another
folder) are checked at the end; --check makes a failed one exit 1.

    python3 scripts/structure.py [--check] [--json]
"""
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ["protocol", "config", "switchover", "proxy"]
# Folders that must not point into any other folder of the project.
LEAVES = ["protocol", "config"]


def sources():
    out = []
    for top in FOLDERS:
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    out.append(os.path.relpath(os.path.join(d, f), ROOT))
    return sorted(out)


def unit_of(path):
    return os.path.splitext(path)[0]


def definitions(files):
    """name -> unit, for every exported function, variable and macro (static ones left out)."""
    cmd = ["ctags", "--output-format=json", "--languages=C", "--kinds-C=fvdx", "--fields=+nS",
           "--extras=-F", "-f", "-"] + files
    try:
        raw = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("structure.py: ctags not found; install Debian's universal-ctags")
    defs = defaultdict(set)
    for line in raw.splitlines():
        t = json.loads(line)
        if t.get("_type") != "tag":
            continue
        kind = t.get("kind")
        path = t["path"]
        if kind in ("function", "variable") and path.endswith(".h"):
            continue  # declared in a header, defined in its .c
        if kind == "externvar":
            continue
        if kind in ("function", "variable") and is_static(path, t):
            continue
        defs[t["name"]].add(unit_of(path))
    return defs


_static_cache = {}


def is_static(path, tag):
    if path not in _static_cache:
        with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
            _static_cache[path] = f.read().splitlines()
    lines = _static_cache[path]
    n = tag.get("line", 0)
    k = n - 1
    if 0 <= k < len(lines) and lines[k].lstrip().startswith("}"):
        # "} name;" closes a struct: the storage class is where its brace opened.
        depth = 0
        while k >= 0:
            depth += lines[k].count("}") - lines[k].count("{")
            if depth <= 0:
                break
            k -= 1
        return k >= 0 and re.match(r"\s*static\b", lines[k]) is not None
    # The storage class is on the definition's line or, for "static type\nname(", the one above.
    for k in (n - 1, n - 2):
        if 0 <= k < len(lines):
            text = lines[k]
            if re.match(r"\s*static\b", text):
                return True
            if tag["name"] in text and k == n - 1 and not re.match(r"\s*\w+\s*\**\s*$", text):
                break
    return False


# Each binary's entry point: two programs' mains are not one function.
PROGRAM_ENTRIES = {"main"}
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STRIP = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def arrows(files, defs):
    known = {unit_of(f) for f in files}
    edges = defaultdict(set)  # (a, b) -> names
    for f in files:
        a = unit_of(f)
        with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for inc in INCLUDE.findall(text):
            cands = [os.path.normpath(os.path.join(os.path.dirname(f), inc)), os.path.normpath(inc)]
            cands += [os.path.normpath(os.path.join(top, inc)) for top in FOLDERS]
            for c in cands:
                u = unit_of(c)
                if u in known and os.path.exists(os.path.join(ROOT, c)):
                    if u != a:
                        edges[(a, u)].add("#include \"%s\"" % inc)
                    break
        if f.endswith(".h"):
            continue  # a header's names are declarations; its own arrows are its includes
        body = STRIP.sub(" ", text)
        for name in set(TOKEN.findall(body)) - PROGRAM_ENTRIES:
            for u in defs.get(name, ()):
                if u != a:
                    edges[(a, u)].add(name)
    return edges


def circles(nodes, edges):
    """Tarjan's strongly connected components; returns the list of components."""
    succ = defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return comps


def floors(nodes, edges, comps):
    comp_of = {v: i for i, c in enumerate(comps) for v in c}
    succ = defaultdict(set)
    for a, b in edges:
        if comp_of[a] != comp_of[b]:
            succ[comp_of[a]].add(comp_of[b])
    memo = {}

    def floor(c):
        if c not in memo:
            memo[c] = 1 + max((floor(d) for d in succ[c]), default=0)
        return memo[c]

    return {v: floor(comp_of[v]) for v in nodes}, comp_of


def main():
    check = "--check" in sys.argv
    as_json = "--json" in sys.argv
    files = sources()
    defs = definitions(files)
    edges = arrows(files, defs)
    nodes = {unit_of(f) for f in files}
    comps = circles(nodes, edges)
    floor, comp_of = floors(nodes, edges, comps)
    rings = [c for c in comps if len(c) > 1]
    top = lambda u: u.split("/")[0]
    per_folder = defaultdict(lambda: [0, 0])  # folder -> [arrows inside, back up]
    back = []
    for (a, b) in sorted(edges):
        if top(a) == top(b):
            per_folder[top(a)][0] += 1
            if comp_of[a] == comp_of[b]:
                per_folder[top(a)][1] += 1
                back.append((a, b))
    leaks = sorted((a, b) for (a, b) in edges if top(a) in LEAVES and top(b) != top(a))
    results = {
        "units": len(nodes),
        "arrows": len(edges),
        "circles": [{"units": c} for c in rings],
        "inside": {k: {"arrows": v[0], "back_up": v[1]} for k, v in sorted(per_folder.items())},
        "leaves_pointing_out": ["%s -> %s" % e for e in leaks],
    }
    p = per_folder.get("proxy", [0, 0])
    share = 100.0 * p[1] / p[0] if p[0] else 0.0
    checks = [
        ("no circle", not rings),
        ("arrows inside proxy/ running back up: %.1f %% (under 5 %%)" % share, share < 5.0),
        ("nothing in %s points to another folder" % " or ".join(LEAVES), not leaks),
    ]
    if as_json:
        results["checks"] = {name: ok for name, ok in checks}
        print(json.dumps(results, indent=2))
    else:
        print("units %d, arrows %d, circles %d" % (len(nodes), len(edges), len(rings)))
        print()
        for u in sorted(nodes, key=lambda u: (-floor[u], u)):
            print("  floor %2d  %s" % (floor[u], u))
        for i, c in enumerate(rings, 1):
            print("\ncircle %d: %d units: %s" % (i, len(c), ", ".join(c)))
            for (a, b) in sorted(edges):
                if a in c and b in c:
                    names = sorted(edges[(a, b)])
                    more = " and %d more" % (len(names) - 6) if len(names) > 6 else ""
                    print("  %s -> %s: %s%s" % (a, b, ", ".join(names[:6]), more))
        print("\narrows inside each folder (and running back up):")
        for k, v in sorted(per_folder.items()):
            print("  %-11s %3d  (%d back up)" % (k + "/", v[0], v[1]))
        for a, b in leaks:
            print("  leaves its folder: %s -> %s: %s" % (a, b, ", ".join(sorted(edges[(a, b)]))))
        print()
        for name, ok in checks:
            print("  %s %s" % ("ok  " if ok else "FAIL", name))
    if check and not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
