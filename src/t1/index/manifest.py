"""The manifest of an index (a folder's `manifest.json`, or a vector store's metadata): reading it
and checking its shape, wherever one is opened or a build resumes.

A manifest that is not a JSON object, or whose entries have the wrong type (a count that is a
string, a model that is a list, a file entry without its size), is a `T1Error` naming the entry,
never a traceback deeper in the code that trusted it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import T1Error

MANIFEST = "manifest.json"

# entry -> the types it may have (None: JSON null)
TYPES: dict[str, tuple] = {
    "format_version": (int,), "model": (dict,), "instruction": (str, None), "max_length": (int, None),
    "dim": (int,), "dtype": (str,), "count": (int,), "shard_size": (int,), "shards": (int,),
    "corpus_hash": (str,), "complete": (bool,), "files": (dict,), "bm25": (dict,), "ann": (dict,),
    "built_by": (dict,), "generation": (int,), "segments": (list,), "deleted": (list,), "retired": (dict,),
    "rows": (int,),
}
AT_LEAST = {"generation": 0, "dim": 1, "shard_size": 1, "max_length": 1, "count": 0, "shards": 0}
DTYPES = ("float16", "float32")
_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list", bool: "true or false", None: "null"}


def _is(value, kind) -> bool:
    if kind is None:
        return value is None
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _entry_problem(key: str, value) -> str | None:
    kinds = TYPES.get(key)
    if kinds is not None and not any(_is(value, kind) for kind in kinds):
        shown = json.dumps(value)
        return (f"{key!r} must be {' or '.join(_NAMES[k] for k in kinds)}, got "
                f"{shown if len(shown) <= 40 else shown[:37] + '...'}")
    if key in AT_LEAST and value is not None and value < AT_LEAST[key]:
        return f"{key!r} must be at least {AT_LEAST[key]}, got {value}"
    if key == "dtype" and value not in DTYPES:
        return f"'dtype' must be {' or '.join(DTYPES)}, got {value!r}"
    if key == "model" and not all(isinstance(value.get(k), str) for k in ("name", "fingerprint")):
        return "'model' must hold a string 'name' and 'fingerprint'"
    if key == "files":
        bad = next((n for n, f in value.items() if not (isinstance(f, dict) and _is(f.get("bytes"), int)
                                                        and isinstance(f.get("sha256"), str))), None)
        return None if bad is None else f"'files' entry {bad!r} must hold its 'bytes' and 'sha256'"
    if key == "segments" and not all(isinstance(g, dict) and isinstance(g.get("name"), str)
                                     and _is(g.get("count"), int) and _is(g.get("shards"), int) for g in value):
        return "'segments' entries must hold their 'name', 'count' and 'shards'"
    if key == "deleted" and not all(_is(p, int) for p in value):
        return "'deleted' must list row positions (integers)"
    if key == "ann":
        bad = next((k for k, a in value.items() if not (isinstance(a, dict) and isinstance(a.get("file"), str)
                                                        and _is(a.get("count"), int)
                                                        and isinstance(a.get("corpus_hash"), str))), None)
        return None if bad is None else f"'ann' entry {bad!r} must hold its 'file', 'count' and 'corpus_hash'"
    return None


def shape_problem(manifest) -> str | None:
    """What is wrong with the shape of `manifest` (entries present; missing ones are the
    caller's business), or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    return next((p for p in (_entry_problem(k, v) for k, v in manifest.items()) if p), None)


def check_shape(manifest, where) -> dict:
    """`manifest`, or a `T1Error` naming `where` and its first wrong entry."""
    problem = shape_problem(manifest)
    if problem:
        raise T1Error(f"{where}: damaged manifest: {problem}; rebuild the index")
    return dict(manifest)


def read_manifest(folder: str | Path) -> dict | None:
    """The checked manifest of an index folder, or None when it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: malformed manifest ({getattr(e, 'msg', e)})") from None
    return check_shape(manifest, path)


def describe_file(path: Path) -> dict:
    """A manifest "files" entry: the file's bytes and sha256 (an artefact other than a shard)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
