"""The shape of the t1 package in numbers (issue #35's before-and-after figures).

    python3 scripts/code_shape.py [--json]

Prints the modules at the top level of `src/t1/`, the largest module and class (lines), and the
widest public function or method (parameters, `self`/`cls` not counted, `*args`/`**kwargs`
counted once each). Public: no name part starts with "_" (dunder methods such as `__init__`
count as public).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "t1"


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _width(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    if names and names[0].arg in ("self", "cls"):
        names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def measure() -> dict:
    modules = sorted(p for p in SRC.rglob("*.py"))
    top = [p.stem for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    lines = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in modules}
    classes, functions = {}, {}
    for path in modules:
        rel = str(path.relative_to(SRC))
        tree = ast.parse(path.read_text())

        def visit(node, prefix, public):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    name = f"{prefix}{child.name}"
                    classes[f"{rel}:{name}"] = child.end_lineno - child.lineno + 1
                    visit(child, f"{name}.", public and _public(child.name))
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if public and _public(child.name) and not prefix.count("<"):
                        functions[f"{rel}:{prefix}{child.name}"] = _width(child)

        visit(tree, "", True)
    biggest = lambda d: max(d.items(), key=lambda kv: kv[1])  # noqa: E731
    return {"top_level_modules": len(top), "modules": len(modules), "largest_module": biggest(lines),
            "largest_class": biggest(classes), "widest_public_function": biggest(functions),
            "widest_five": sorted(functions.items(), key=lambda kv: -kv[1])[:5]}


def main() -> int:
    shape = measure()
    if "--json" in sys.argv[1:]:
        print(json.dumps(shape, indent=1))
        return 0
    print(f"modules at the top of src/t1/: {shape['top_level_modules']} (of {shape['modules']})")
    print("largest module: {} ({} lines)".format(*shape["largest_module"]))
    print("largest class: {} ({} lines)".format(*shape["largest_class"]))
    print("widest public function: {} ({} parameters)".format(*shape["widest_public_function"]))
    for name, width in shape["widest_five"][1:]:
        print(f"  then {name} ({width})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
