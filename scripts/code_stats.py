#!/usr/bin/env python3
"""Size figures issue 16 asks for, before and after a change.

    python3 scripts/code_stats.py [--top N] [--json FILE]

Per source file: lines outside `#[cfg(test)]` modules (and `tests.rs` files). Per function: lines
from its `fn` line to its closing brace (tests excluded). Also the number
of integration-test binaries cargo builds. Brace matching skips strings,
chars and comments well enough for our code; it is a measuring tape, not
a parser.
"""

import argparse
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def strip(line, state):
    """The line with strings, chars and comments blanked; `state` carries
    an open block comment or raw/normal string across lines."""
    out = []
    i = 0
    n = len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        if state["str"]:
            if line[i] == "\\" and not state["raw"]:
                i += 2
                continue
            if line[i] == '"' and line[i + 1:i + 1 + state["hashes"]] == "#" * state["hashes"]:
                state["str"] = False
                i += 1 + state["hashes"]
                continue
            i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state.update(str=True, raw=True, hashes=len(m.group(1)))
            i += len(m.group(0))
            continue
        if c == '"':
            state.update(str=True, raw=False, hashes=0)
            i += 1
            continue
        m = re.match(r"b?'(\\.|[^\\'])'", line[i:]) or re.match(r"b?'\\u\{[0-9a-fA-F]+\}'", line[i:])
        if m:
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def scan(path):
    """(code lines outside tests, [(fn name, start line, length)])."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    state = {"block": False, "str": False, "raw": False, "hashes": 0}
    depth = 0
    test_depth = None  # depth at which a #[cfg(test)] item opened
    pending_test = False
    code = 0
    fns = []
    open_fns = []  # (name, start, depth before its body)
    for no, raw in enumerate(lines, 1):
        s = strip(raw, state)
        in_test = test_depth is not None
        if not in_test and s.strip().startswith("#[cfg(test)]"):
            pending_test = True
        if not in_test and raw.strip():
            code += 1
        m = FN.match(s)
        if m and not in_test and not pending_test:
            open_fns.append((m.group(6), no, depth))
        for ch in s:
            if ch == "{":
                if pending_test and test_depth is None:
                    test_depth = depth
                    pending_test = False
                depth += 1
            elif ch == "}":
                depth -= 1
                if test_depth is not None and depth == test_depth:
                    test_depth = None
                while open_fns and depth == open_fns[-1][2]:
                    name, start, _ = open_fns.pop()
                    fns.append((name, start, no - start + 1))
            elif ch == ";" and open_fns and depth == open_fns[-1][2]:
                open_fns.pop()  # a declaration without a body
                if pending_test and test_depth is None:
                    pending_test = False
        if pending_test and s.strip().endswith(";") and "{" not in s:
            pending_test = False  # e.g. `#[cfg(test)] use ...;`
    return code, fns


def imports():
    """Top-level module -> the top-level modules its code (not comments,
    not tests) names through `crate::`."""
    graph = {}
    for root, _, names in os.walk(os.path.join(REPO, "src")):
        for n in names:
            if not n.endswith(".rs") or n == "tests.rs":
                continue
            path = os.path.join(root, n)
            top = os.path.relpath(path, os.path.join(REPO, "src")).split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            if top in ("main", "lib"):
                continue
            text = open(path, encoding="utf-8").read()
            cut = text.find("#[cfg(test)]\nmod tests {")
            if cut >= 0:
                text = text[:cut]
            code = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
            used = set(re.findall(r"crate::(\w+)", code))
            for group in re.findall(r"crate::\{([^}]*)\}", code):
                used.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            graph.setdefault(top, set()).update(used - {top, "self"})
    return graph


def cycles(graph):
    """Pairs of modules that import each other, directly or through others."""
    reach = {}
    for m in graph:
        seen, stack = set(), [m]
        while stack:
            for n in graph.get(stack.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        reach[m] = seen
    return sorted({tuple(sorted((a, b))) for a in graph for b in reach[a]
                   if a != b and a in reach.get(b, ())})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args()
    files = []
    fns = []
    for root, _, names in os.walk(os.path.join(REPO, "src")):
        for n in names:
            # A `tests.rs` is a unit-test module kept out of its parent.
            if n.endswith(".rs") and n != "tests.rs":
                path = os.path.join(root, n)
                rel = os.path.relpath(path, REPO)
                code, f = scan(path)
                files.append((rel, code))
                fns.extend((rel, name, start, length) for name, start, length in f)
    files.sort(key=lambda x: -x[1])
    fns.sort(key=lambda x: -x[3])
    tests = os.path.join(REPO, "tests")
    cargo = open(os.path.join(REPO, "Cargo.toml"), encoding="utf-8").read()
    if re.search(r"^autotests\s*=\s*false", cargo, re.M):
        binaries = len(re.findall(r"^\[\[test\]\]", cargo, re.M))
    else:
        binaries = len([n for n in os.listdir(tests) if n.endswith(".rs")])
        binaries += len([n for n in os.listdir(tests)
                         if os.path.isfile(os.path.join(tests, n, "main.rs"))])
    over600 = [f for f in files if f[1] > 600]
    over80 = [f for f in fns if f[3] > 80]
    print(f"source files: {len(files)}, lines outside tests: {sum(c for _, c in files)}")
    print(f"files over 600 lines: {len(over600)}; functions over 80 lines: {len(over80)}")
    print(f"integration-test binaries: {binaries}")
    loops = cycles(imports())
    print(f"module cycles: {len(loops)}" + "".join(f"\n  {x} <-> {y}" for x, y in loops))
    print(f"\nlargest files (lines outside tests):")
    for rel, code in files[:a.top]:
        print(f"  {code:5}  {rel}")
    print(f"\nlongest functions:")
    for rel, name, start, length in fns[:a.top]:
        print(f"  {length:5}  {rel}:{start} {name}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"files": files, "functions": fns, "test_binaries": binaries}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
