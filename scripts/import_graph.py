"""The import graph of the t1 package, by layer, and any cycle in it.

    python3 scripts/import_graph.py            # layer -> layers it imports; cycles between modules

Every `import` / `from ... import` of a t1 module counts, at the top of a file or inside a
function (a lazy import is still a dependency). A layer is a top-level module or subpackage
(`t1.evaluation`, `t1.index`, ...). Exits 1 when modules import each other in a cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("t1"):
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    files = {module_name(p): p for p in (SRC / "t1").rglob("*.py")}
    graph = {name: imports(path, name, set(files)) for name, path in files.items()}
    layer = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    layers: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        layers[layer(name)].update(layer(t) for t in targets if layer(t) != layer(name))
    for name in sorted(layers):
        print(f"{name} -> {', '.join(sorted(layers[name])) or '-'}")
    found = cycles(graph)
    print(f"\nmodule cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
