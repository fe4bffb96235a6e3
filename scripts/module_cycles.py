#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a cycle.

A module's dependencies are the top-level modules it names as `crate::<module>` (in `use`
items and paths) or, inside a module folder, as `super::<sibling>`; test modules are left out
(`#[cfg(test)] mod tests`, `tests.rs`, `*/tests/*`). Usage: module_cycles.py crates/gateway/src
"""

import re
import sys
from pathlib import Path


def top_module(src: Path, file: Path) -> str:
    rel = file.relative_to(src).with_suffix("")
    return rel.parts[0]


def strip_tests(text: str) -> str:
    # Drop everything from a `#[cfg(test)]` module on: tests sit at the end of a file.
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def graph(src: Path) -> dict[str, set[str]]:
    mods = {top_module(src, f) for f in src.rglob("*.rs")} - {"lib", "main"}
    deps: dict[str, set[str]] = {m: set() for m in mods}
    for f in src.rglob("*.rs"):
        m = top_module(src, f)
        if m in ("lib", "main") or "tests" in f.relative_to(src).parts or f.stem == "tests":
            continue
        text = strip_tests(f.read_text())
        text = re.sub(r"//.*", "", text)
        names = set(re.findall(r"\bcrate::(\w+)", text))
        # `use crate::{a::X, b}` lists modules inside braces.
        for group in re.findall(r"\bcrate::\{([^;]*)\}", text):
            names |= set(re.findall(r"(?:^|[,{]\s*)(\w+)", group))
        deps[m] |= {n for n in names if n in mods and n != m}
    return deps


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(deps[n]):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(deps):
        if n not in state:
            visit(n)
    return found


def main() -> int:
    bad = 0
    for arg in sys.argv[1:]:
        src = Path(arg)
        for c in cycles(graph(src)):
            print(f"{src}: module cycle: {' -> '.join(c)}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
