"""README's architecture table matches the tree (issue #35): every module and subpackage at the
top of `src/t1/` has a row, and every `t1/...` path a row names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "t1"


def table_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `t1/")]
    return {p.rstrip("/") for row in rows for p in re.findall(r"`(t1/[^`]+)`", row)}


def test_every_top_level_module_and_package_has_a_row():
    named = table_paths()
    tree = {f"t1/{p.name}" for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    tree |= {f"t1/{p.name}" for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert not tree - named, f"no README row for {sorted(tree - named)}"


def test_every_row_names_a_path_that_exists():
    missing = sorted(p for p in table_paths() if not (SRC.parent / p).exists())
    assert not missing, f"README names paths that do not exist: {missing}"
