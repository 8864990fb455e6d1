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


# The layers above the core: the commands and services built on it. Everything else is the core.
ABOVE = ("evaluation", "serve", "training", "integrations", "cli", "cli_args")
CORE = [p for p in MODULES if p.relative_to(SRC).parts[0].removesuffix(".py") not in ABOVE]
STORAGE = [p for p in MODULES if p.relative_to(SRC).parts[0] in ("index", "stores")]
# `Searchable.search_queries` (`Index.search_queries`) is the one-call "embed with this model and
# search" that users of sentence-transformers expect on a collection; it hands the work to the
# query pipeline, importing it only when called. No other storage module reaches upward.
CONVENIENCE = {"index/searchable.py": {"t1.query", "t1.settings"}}


def test_the_layers_cover_every_module():
    assert len(CORE) > 30 and len(STORAGE) > 10 and SRC / "index" / "folder.py" in STORAGE


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(SRC)))
def test_the_core_imports_nothing_above_it(path):
    above = tuple(f"t1.{name}" for name in ABOVE)
    assert not {n for n in imported(path) if n.startswith(above) and n.split(".")[1] in ABOVE}


@pytest.mark.parametrize("path", STORAGE, ids=lambda p: str(p.relative_to(SRC)))
def test_storage_leaves_queries_to_the_pipeline(path):
    """How queries are embedded and ranked is `t1.query`'s: the storage modules never encode them."""
    allowed = CONVENIENCE.get(str(path.relative_to(SRC)), set())
    upward = ("t1.query", "t1.model", "t1.settings", "t1.generation", "t1.reasoners", "t1.reasoning")
    assert not {n for n in imported(path) if n.startswith(upward) and n.rsplit(".", 1)[0] not in allowed
                and n not in allowed}


def test_no_module_imports_itself_through_others():
    """No cycle among t1's modules, lazy imports inside functions included
    (`scripts/import_graph.py`, which also prints the graph by layer)."""
    script = SRC.parents[1] / "scripts" / "import_graph.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "module cycles: 0" in result.stdout
