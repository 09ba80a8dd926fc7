#!/usr/bin/env python3
"""The crate's module graph, from the `use` paths in src/ (the library's modules, not src/bin or src/main.rs).

Prints the edges between top-level modules (a folder and its files count as one) and between sibling files of a
folder, and every cycle in either graph; exits 1 if there is one. A parent's `mod` declarations and a child's use of
its own parent (`super::`) are the tree itself, not edges. `python3 .ci/modgraph.py [--quiet]`.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
USE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def module_of(rel):
    """src-relative file path -> module path as a tuple."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def files():
    out = {}
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if not n.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, n), ROOT)
            if rel.startswith("bin" + os.sep) or rel == "main.rs" or n.endswith("_tests.rs") or n == "tests.rs":
                continue
            out[rel] = module_of(rel)
    return out


def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { ... }` blocks and comments: test code may reach anywhere.
    text = re.sub(r"//[^\n]*", "", text)
    i = text.find("#[cfg(test)]")
    while i != -1:
        j = text.find("{", i)
        semi = text.find(";", i)
        if j == -1 or (semi != -1 and semi < j):
            i = text.find("#[cfg(test)]", i + 1)
            continue
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        text = text[:i] + text[k + 1 :]
        i = text.find("#[cfg(test)]")
    return text


def targets(mod, text, known):
    """Modules this file's paths name (the longest known prefix of each path)."""
    found = set()
    for m in USE.finditer(text):
        root, rest = m.group(1), m.group(2)
        segs = [s for s in rest.split("::") if s and s != "{"]
        if root == "crate":
            base = []
        else:
            base = list(mod[:-1])
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
        path = tuple(base + segs)
        best = None
        for n in range(len(path), 0, -1):
            if path[:n] in known:
                best = path[:n]
                break
        if best is None and root == "super":
            best = tuple(base)
        if best:
            found.add(best)
    return found


def cycles(graph):
    """Every elementary cycle's node set, found by strongly connected components (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    quiet = "--quiet" in sys.argv
    fs = files()
    known = set(fs.values())
    top, siblings = {}, {}
    for rel, mod in fs.items():
        with open(os.path.join(ROOT, rel)) as f:
            text = strip_tests(f.read())
        for t in targets(mod, text, known):
            if t == mod or t == mod[: len(t)] or mod == t[: len(mod)]:
                continue  # itself, an ancestor (super::), or a descendant (its own submodules)
            if mod and t and mod[0] != t[0]:
                top.setdefault(mod[0], set()).add(t[0])
            elif len(mod) == len(t) and mod[:-1] == t[:-1]:
                siblings.setdefault(mod, set()).add(t)
    if not quiet:
        print("top-level modules:")
        for a in sorted(top):
            print(f"  {a} -> {', '.join(sorted(top[a]))}")
        print("sibling files:")
        for a in sorted(siblings):
            print(f"  {'::'.join(a)} -> {', '.join('::'.join(t) for t in sorted(siblings[a]))}")
    bad = cycles(top) + [["::".join(m) for m in c] for c in cycles(siblings)]
    for c in bad:
        print("cycle: " + " <-> ".join(c))
    if bad:
        sys.exit(1)
    print("no import cycle")


main()
