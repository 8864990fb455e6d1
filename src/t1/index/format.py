"""The index folder's format: its files, their names and rows, and what the manifest binds.

Layout of an index folder::

    manifest.json        model fingerprint, instruction, max length, dim, dtype, corpus hash, count,
                         and each shard file's bytes, rows and sha256 ("files")
    emb-00000.npy        float16/float32 [rows, dim], L2-normalised
    docs-00000.jsonl     {"id", "title", "snippet"} per row, same order
    bm25/                a BM25 index of the same rows, for hybrid search (`bm25=False`: none)
    ann-hnsw.faiss       optional approximate-search structures (`t1.index.ann`, `t1 ann build`), listed
    ann-ivf-pq.faiss     in the manifest's "ann" entry
    seg-000001/          after `t1 index --update` / `--delete` / `--compact`: segments, their BM25 and
    bm25-000001/         tombstones (`t1.index.segments`); a fresh build is generation 0, this layout alone

A shard's .npy is read with plain reads (`NpyShard`), so what a search reads is all that is
resident; every shard file's bytes, rows and sha256 go into the manifest ("files").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import Document
from ..errors import T1Error
from .manifest import describe_file

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "instruction", "dim", "dtype", "count", "shard_size", "shards", "corpus_hash")
SNIPPET_CHARS = 300
BM25_DIR = "bm25"


def check_built_with(manifest: dict, where, model=None, instruction: str | None = None) -> None:
    """Refuse `model` / `instruction` when the index (folder or store) was built with others."""
    built = manifest["model"]["fingerprint"]
    if model is not None and model.fingerprint() != built:
        sampled = getattr(model, "sampled_fingerprint", None)
        if sampled is not None and sampled() == built:
            raise T1Error(f"{where}: index was built by this model before fingerprints covered every weight (its "
                          f"old sampled fingerprint {built}); rebuild it once (delete the folder, run t1 index)")
        raise T1Error(f"{where}: index was built with a different model ({manifest['model']['name']}, "
                      f"fingerprint {built}); rebuild it with this model")
    if instruction is not None and instruction != manifest["instruction"]:
        raise T1Error(f"{where}: index was built with instruction {manifest['instruction']!r}, not {instruction!r}")


def corpus_hash(documents: Sequence[Document]) -> str:
    h = hashlib.sha256()
    for d in documents:
        for part in (d.id, d.title, d.text):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def shard_name(i: int) -> tuple[str, str]:
    return f"emb-{i:05d}.npy", f"docs-{i:05d}.jsonl"


def content_hash(d: Document) -> str:
    """What an update compares to tell a changed document from an unchanged one (title and text)."""
    return hashlib.sha256(f"{d.title}\0{d.text}".encode()).hexdigest()[:16]


def doc_row(d: Document) -> dict:
    """A row of a docs file; "hash" (`content_hash`) lets `t1 index --update` skip unchanged
    documents (rows written before t1 recorded it count as changed)."""
    return {"id": d.id, "title": d.title, "snippet": d.text[:SNIPPET_CHARS], "hash": content_hash(d)}


def shard_rows(manifest: dict, i: int) -> int:
    """How many rows shard `i` holds (every shard is full but the last)."""
    return min(manifest["shard_size"], manifest["count"] - i * manifest["shard_size"])


def shard_paths(folder: Path, manifest: dict):
    """(.npy, docs) paths of every shard, in order."""
    for i in range(manifest["shards"]):
        emb_file, docs_file = shard_name(i)
        yield folder / emb_file, folder / docs_file


class NpyShard:
    """Row ranges of a .npy file read with plain reads: what is read is all that is resident."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                fmt = np.lib.format
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
        except (ValueError, EOFError) as e:
            raise T1Error(f"{path}: not a .npy array ({e})") from None
        if fortran or len(shape) != 2:
            raise T1Error(f"{path}: not a C-ordered 2-D array")
        self.rows, self.dim = shape
        self.dtype = np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        """The file size its header implies."""
        return self.offset + self.rows * self.dim * self.dtype.itemsize

    def chunks(self, chunk_rows: int):
        row_bytes = self.dim * self.dtype.itemsize
        buf = np.empty((min(chunk_rows, self.rows), self.dim), dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            for start in range(0, self.rows, chunk_rows):
                n = min(chunk_rows, self.rows - start)
                view = buf[:n]
                got = f.readinto(memoryview(view).cast("B"))
                if got != n * row_bytes:
                    raise T1Error(f"{self.path}: truncated shard")
                yield start, view


def describe_shard_files(folder: Path, shards: int) -> dict:
    """The manifest's "files" entry: bytes, rows and sha256 of every shard file."""
    return {name: describe_shard_file(folder / name) for i in range(shards) for name in shard_name(i)}


def describe_shard_file(path: Path) -> dict:
    h, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            lines += block.count(b"\n")
    rows = NpyShard(path).rows if path.suffix == ".npy" else lines
    return {"bytes": path.stat().st_size, "rows": rows, "sha256": h.hexdigest()}


def line_offsets(path: Path) -> np.ndarray:
    """Byte offset of each line of a file."""
    offsets, pos = [], 0
    with open(path, "rb") as f:
        for line in f:
            offsets.append(pos)
            pos += len(line)
    return np.array(offsets, dtype=np.int64)


# ---------------------------------------------------------------- verification
def folder_problems(folder: Path, manifest: dict, deep: bool = False) -> list[str]:
    """What is wrong with an index folder's files: its shards, and the artefacts beside them
    (cheap: sizes, rows and .npy headers; `deep`: also every file's sha256)."""
    return _shard_problems(folder, manifest, deep) + _artefact_problems(folder, manifest, deep)


def _artefact_problems(folder: Path, manifest: dict, deep: bool) -> list[str]:
    """What is wrong with the files the manifest records beside the shards (BM25's, an ANN
    structure): missing, another size, or (`deep`) another sha256 checksum."""
    shard_files = {name for i in range(manifest["shards"]) for name in shard_name(i)}
    problems = []
    for name, want in (manifest.get("files") or {}).items():
        path = folder / name
        if name in shard_files:
            continue
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != want["bytes"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {want['bytes']}")
        elif deep and describe_file(path)["sha256"] != want["sha256"]:
            problems.append(f"{name} does not match its sha256 checksum")
    return problems


def _shard_problems(folder: Path, manifest: dict, deep: bool) -> list[str]:
    """What is wrong with the shard files: missing, wrong size or rows, a .npy of another shape
    (cheap: file sizes and .npy headers). `deep` also counts docs rows and compares the
    sha256 checksums recorded at build time (reading every file)."""
    files, problems = manifest.get("files"), []
    for i, paths in enumerate(shard_paths(folder, manifest)):
        rows = shard_rows(manifest, i)
        for path in paths:
            name = path.name
            if not path.is_file():
                problems.append(f"{name} is missing")
                continue
            size, want = path.stat().st_size, (files or {}).get(name)
            if files is not None and want is None:
                problems.append(f"{name} is not in the manifest")
            elif want is not None and size != want["bytes"]:
                problems.append(f"{name} has {size} bytes, the manifest says {want['bytes']}")
            if path.suffix == ".npy":
                try:
                    shard = NpyShard(path)
                except T1Error as e:
                    problems.append(str(e).replace(f"{path}: ", f"{name}: "))
                    continue
                if shard.rows != rows or shard.dim != manifest["dim"]:
                    problems.append(f"{name} holds {shard.rows} x {shard.dim} embeddings, expected "
                                    f"{rows} x {manifest['dim']}")
                elif size < shard.nbytes:
                    problems.append(f"{name} is truncated ({size} of {shard.nbytes} bytes)")
            if deep and (want is not None or path.suffix != ".npy"):
                found = describe_shard_file(path)
                if path.suffix != ".npy" and found["rows"] != rows:
                    problems.append(f"{name} has {found['rows']} rows, expected {rows}")
                elif want is not None and found["sha256"] != want["sha256"]:
                    problems.append(f"{name} does not match its sha256 checksum")
    return problems
