"""Imports point one way: the CLI on top, the commands of each package below it, the model and
the index format at the bottom (issue #20, item 2)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "t1"


def imported(path: Path) -> set[str]:
    """The t1 modules `path` imports, anywhere in it (functions included), as dotted names."""
    package = ["t1", *path.relative_to(SRC).with_suffix("").parts[:-1]]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out |= {name} | {f"{name}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {n for n in out if n == "t1" or n.startswith("t1.")}


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__main__.py" and p != SRC / "cli.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_below_the_cli_imports_it(path):
    assert not {n for n in imported(path) if n == "t1.cli" or n.startswith("t1.cli.")}


@pytest.mark.parametrize("name", ["model.py", "index.py", "index_build.py", "index_format.py", "searchable.py",
                                  "query.py", "settings.py", "prompts.py", "reasoning.py", "data.py", "manifest.py",
                                  "bright_tasks.py", "cli_args.py", "hits.py"])
def test_the_core_imports_nothing_above_it(name):
    above = ("t1.evaluation", "t1.serve", "t1.training", "t1.integrations", "t1.cli")
    assert not {n for n in imported(SRC / name) if n.startswith(above) and not n.startswith("t1.cli_args")}


@pytest.mark.parametrize("name", ["index.py", "index_build.py", "index_format.py", "search.py", "ann.py",
                                  "stores/qdrant.py"])
def test_storage_leaves_queries_to_the_pipeline(name):
    """How queries are embedded and ranked is `t1.query`'s: the storage modules never encode them."""
    assert not {n for n in imported(SRC / name) if n.startswith(("t1.query", "t1.model"))}


def test_no_module_imports_itself_through_others():
    """No cycle among t1's modules, lazy imports inside functions included
    (`scripts/import_graph.py`, which also prints the graph by layer)."""
    script = SRC.parents[1] / "scripts" / "import_graph.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "module cycles: 0" in result.stdout
