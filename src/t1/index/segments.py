"""The generations of an index folder: which segments, tombstones and BM25 a manifest names.

Lucene's design, on files. A fresh build is generation 0: its shards at the top of the folder
(the *base* segment, the layout `format.py` describes) and `bm25/`. Each update
(`t1.index.update`) writes what it adds into a new, never-rewritten segment folder
(`seg-000007/`: `emb-*.npy` and `docs-*.jsonl` shards), records deleted and replaced rows as
tombstones (their row positions, in the manifest's "deleted"), writes the BM25 index of the
live documents into a new `bm25-000007/`, and then switches generations by replacing
`manifest.json` atomically (one rename). Rows are numbered across segments (base first, then
each segment in order), so a position never changes until a compaction.

Why this shape: a reader holds the manifest it opened, and every file that manifest names stays
as it was (segments and BM25 folders are written once, under new names), so a reader opened on
generation N keeps seeing N until it reopens; a writer killed at any point has either replaced
the manifest (N+1, complete) or not (N: what it wrote is unreferenced, and the next writer
removes it). Files a new generation no longer names (a compacted segment, an old BM25) are
*retired*: recorded with the time, and deleted by a later writer once `retire_grace_s()` has
passed, so that readers still on the old generation have time to reopen.

Manifest entries beyond a fresh build's: "generation" (N), "segments" ([{"name", "count",
"shards"}], after the base), "deleted" (sorted row positions), "retired" ({file: unix time}),
and "bm25"'s "dir". A manifest without them is generation 0: indexes built before this change
open and search as before.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .format import BM25_DIR, NpyShard, describe_shard_file, shard_name, shard_rows

RETIRE_GRACE_S = 600.0  # how long retired files stay for readers of older generations
RETIRE_ENV = "T1_INDEX_RETIRE_S"
# what the generations after the first write (never rewritten: a new generation gets new names)
GENERATION_FILE = re.compile(r"seg-\d{6,}|bm25-\d{6,}|ann-[a-z0-9-]+-g\d{6,}\.faiss")


def retire_grace_s() -> float:
    return float(os.environ.get(RETIRE_ENV, RETIRE_GRACE_S))


def generation(manifest: dict) -> int:
    return manifest.get("generation", 0)


def segment_name(gen: int) -> str:
    return f"seg-{gen:06d}"


def bm25_dir(manifest: dict) -> str:
    return (manifest.get("bm25") or {}).get("dir", BM25_DIR)


def shard_table(folder: Path, manifest: dict) -> list[tuple[Path, Path, int]]:
    """(.npy path, docs path, rows) of every shard of every segment, in row order."""
    table = [(folder / e, folder / d, shard_rows(manifest, i))
             for i in range(manifest["shards"]) for e, d in [shard_name(i)]]
    size = manifest["shard_size"]
    for seg in manifest.get("segments", []):
        for i in range(seg["shards"]):
            e, d = shard_name(i)
            table.append((folder / seg["name"] / e, folder / seg["name"] / d, min(size, seg["count"] - i * size)))
    return table


def total_rows(manifest: dict) -> int:
    """Rows of every segment, deleted ones included (positions run from 0 to this)."""
    return manifest["count"] + sum(seg["count"] for seg in manifest.get("segments", []))


def deleted(manifest: dict) -> np.ndarray:
    return np.asarray(manifest.get("deleted", []), dtype=np.int64)


def live_positions(manifest: dict) -> np.ndarray:
    """Row positions of the live documents, in order (the rows of the generation's BM25)."""
    keep = np.ones(total_rows(manifest), dtype=bool)
    keep[deleted(manifest)] = False
    return np.flatnonzero(keep)


def referenced(manifest: dict) -> set[str]:
    """Top-level entries of the folder that generation's manifest names."""
    names = {"manifest.json", bm25_dir(manifest) if "bm25" in manifest else None}
    names |= {seg["name"] for seg in manifest.get("segments", [])}
    names |= {name.split("/")[0] for name in manifest.get("files", {})}
    names |= {info["file"] for info in manifest.get("ann", {}).values()}
    names |= {p for i in range(manifest["shards"]) for p in shard_name(i)}
    return names - {None}


def segment_problems(folder: Path, manifest: dict, deep: bool) -> list[str]:
    """What is wrong with the segments of a generation after the base: missing shards, rows
    that do not match, tombstones out of range (sizes and checksums of their files are checked
    with the other recorded files)."""
    problems = []
    for seg in manifest.get("segments", []):
        for emb, docs, rows in shard_table(folder, {"count": 0, "shards": 0, "shard_size": manifest["shard_size"],
                                                    "segments": [seg]}):
            name = f"{seg['name']}/{emb.name}"
            if not emb.is_file() or not docs.is_file():
                problems.append(f"{seg['name']}/{(docs if emb.is_file() else emb).name} is missing")
                continue
            shard = NpyShard(emb)
            if shard.rows != rows or shard.dim != manifest["dim"]:
                problems.append(f"{name} holds {shard.rows} x {shard.dim} embeddings, expected {rows} x "
                                f"{manifest['dim']}")
            if deep and describe_shard_file(docs)["rows"] != rows:
                problems.append(f"{seg['name']}/{docs.name} has a wrong number of rows, expected {rows}")
    dead = deleted(manifest)
    if len(dead) and (dead.min() < 0 or dead.max() >= total_rows(manifest) or np.any(np.diff(dead) <= 0)):
        problems.append("the manifest's deleted rows are out of range or not sorted")
    return problems


def remove_unreferenced(folder: Path, manifest: dict, now: float | None = None) -> dict:
    """Delete what no generation needs (under the write lock): segments and BM25 folders a killed
    writer left unreferenced, and retired files past their grace. Returns the "retired" entry
    still to keep."""
    now = time.time() if now is None else now
    keep = referenced(manifest)
    retired = dict(manifest.get("retired", {}))
    for name in list(retired):
        if now - retired[name] >= retire_grace_s() and name not in keep:
            _remove(folder / name)
            del retired[name]
    for path in folder.iterdir():
        if GENERATION_FILE.fullmatch(path.name) and path.name not in keep and path.name not in retired:
            _remove(path)
    return retired


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
