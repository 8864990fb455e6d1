"""An on-disk index of T1 document embeddings: shards of .npy, their ids, and a manifest.

Layout of an index folder::

    manifest.json        model fingerprint, instruction, max length, dim, dtype, corpus hash, count
    emb-00000.npy        float16/float32 [rows, dim], L2-normalised
    docs-00000.jsonl     {"id", "title", "snippet"} per row, same order

Building is resumable: each shard's docs file is written, then its .npy (both atomically), and
a shard counts as done only once its .npy exists, so an interrupted build re-run with the same
arguments continues from the last complete shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .atomic import save_npy, write_json, write_jsonl
from .data import Document
from .errors import T1Error
from .search import exact_search

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SNIPPET_CHARS = 300
SEARCH_CHUNK_ROWS = 65536


@dataclass
class Hit:
    id: str
    score: float
    title: str = ""
    snippet: str = ""


def corpus_hash(documents: Sequence[Document]) -> str:
    h = hashlib.sha256()
    for d in documents:
        for part in (d.id, d.title, d.text):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def _shard_name(i: int) -> tuple[str, str]:
    return f"emb-{i:05d}.npy", f"docs-{i:05d}.jsonl"


class Index:
    def __init__(self, folder: str | Path, manifest: dict):
        self.folder = Path(folder)
        self.manifest = manifest

    # ---------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        model,
        documents: Sequence[Document],
        folder: str | Path,
        instruction: str | None = None,
        max_length: int | None = None,
        shard_size: int = 8192,
        dtype: str = "float16",
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> "Index":
        """Encode `documents` with `model` into `folder`, resuming a build interrupted earlier."""
        if dtype not in ("float16", "float32"):
            raise T1Error(f"dtype must be float16 or float32, got {dtype!r}")
        if not documents:
            raise T1Error("cannot index an empty corpus")
        folder = Path(folder)
        _check_writable(folder)
        instruction = model.config.document_instruction if instruction is None else instruction
        max_length = max_length or model.config.max_document_length
        spec = {
            "format_version": FORMAT_VERSION,
            "model": {"name": model.name_or_path, "fingerprint": model.fingerprint()},
            "instruction": instruction,
            "max_length": max_length,
            "dim": model.dim,
            "dtype": dtype,
            "count": len(documents),
            "shard_size": shard_size,
            "corpus_hash": corpus_hash(documents),
        }
        path = folder / MANIFEST
        if path.exists():
            old = json.loads(path.read_text())
            what = _differences(old, spec)
            if what:
                raise T1Error(f"{folder} holds an index built with a different {', '.join(what)}; "
                              "use another output folder or delete this one")
            if old.get("complete"):
                return cls(folder, old)
        manifest = {**spec, "complete": False}
        write_json(path, manifest)

        shards = range(0, len(documents), shard_size)
        bar = tqdm(total=len(documents), desc="Indexing", unit="doc",
                   disable=show_progress_bar is False)
        for i, start in enumerate(shards):
            emb_file, docs_file = _shard_name(i)
            chunk = documents[start : start + shard_size]
            if not (folder / emb_file).exists():
                write_jsonl(folder / docs_file, ({"id": d.id, "title": d.title, "snippet": d.text[:SNIPPET_CHARS]} for d in chunk))
                emb = model.encode_document([d.full_text for d in chunk], instruction=instruction,
                                            max_length=max_length, batch_size=batch_size, show_progress_bar=False)
                save_npy(folder / emb_file, emb.astype(dtype))
            bar.update(len(chunk))
        bar.close()
        manifest["complete"] = True
        manifest["shards"] = len(shards)
        write_json(path, manifest)
        return cls(folder, manifest)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, folder: str | Path, model=None, instruction: str | None = None) -> "Index":
        """Open a complete index; with `model`, refuse one built by a different model."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.exists():
            raise T1Error(f"{folder}: not a t1 index (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise T1Error(f"{path}: malformed manifest ({e.msg})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise T1Error(f"{folder}: index format {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})")
        if not manifest.get("complete"):
            raise T1Error(f"{folder}: index is incomplete; re-run `t1 index` with the same arguments to resume")
        if model is not None and model.fingerprint() != manifest["model"]["fingerprint"]:
            raise T1Error(f"{folder}: index was built with a different model ({manifest['model']['name']}, "
                          f"fingerprint {manifest['model']['fingerprint']}); rebuild it with this model")
        if instruction is not None and instruction != manifest["instruction"]:
            raise T1Error(f"{folder}: index was built with instruction {manifest['instruction']!r}, not {instruction!r}")
        return cls(folder, manifest)

    def __len__(self) -> int:
        return self.manifest["count"]

    def _shards(self):
        for i in range(self.manifest["shards"]):
            emb_file, docs_file = _shard_name(i)
            yield self.folder / emb_file, self.folder / docs_file

    @cached_property
    def _docs(self) -> list[dict]:
        rows = []
        for _, docs_file in self._shards():
            with open(docs_file, encoding="utf-8") as f:
                rows.extend(json.loads(line) for line in f)
        return rows

    @cached_property
    def ids(self) -> list[str]:
        return [d["id"] for d in self._docs]

    @cached_property
    def _position(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.ids)}

    def embeddings(self) -> np.ndarray:
        """All embeddings as one float32 array (loads the whole index into memory)."""
        return np.concatenate([np.load(e).astype(np.float32) for e, _ in self._shards()])

    def _chunks(self):
        offset = 0
        for emb_file, _ in self._shards():
            emb = np.load(emb_file, mmap_mode="r")
            for start in range(0, len(emb), SEARCH_CHUNK_ROWS):
                yield offset + start, emb[start : start + SEARCH_CHUNK_ROWS]
            offset += len(emb)

    # ---------------------------------------------------------------- searching
    def search(
        self,
        query_embeddings: np.ndarray,
        k: int = 10,
        exclude: Sequence[set[str] | Sequence[str]] | None = None,
        backend: str = "auto",
    ) -> list[list[Hit]]:
        """Exact top-k by inner product for each query embedding (rows of a 2-D array);
        `exclude[q]` lists document ids removed from query q's candidates before the cut."""
        query_embeddings = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        if query_embeddings.shape[1] != self.manifest["dim"]:
            raise T1Error(f"query embeddings have dimension {query_embeddings.shape[1]}, index has {self.manifest['dim']}")
        excluded = None
        if exclude is not None:
            if len(exclude) != len(query_embeddings):
                raise T1Error(f"got {len(exclude)} exclusion lists for {len(query_embeddings)} queries")
            excluded = [np.array(sorted(self._position[i] for i in ex if i in self._position), dtype=np.int64) for ex in exclude]
        scores, positions = exact_search(query_embeddings, self._chunks(), k, excluded, backend)
        docs = self._docs
        return [
            [Hit(docs[p]["id"], float(s), docs[p].get("title", ""), docs[p].get("snippet", "")) for s, p in zip(row_s, row_p) if p >= 0]
            for row_s, row_p in zip(scores, positions)
        ]

    def search_queries(self, model, queries: Sequence[str], k: int = 10, exclude=None, backend: str = "auto", **encode_kwargs):
        """Encode `queries` with `model` (reasoning first, by default) and search.
        Returns (hits per query, reasoning texts)."""
        encoded = model.encode_query(list(queries), **encode_kwargs)
        return self.search(encoded.embeddings, k=k, exclude=exclude, backend=backend), encoded.reasoning


def _differences(old: dict, spec: dict) -> list[str]:
    """Settings in which an existing manifest differs from a new build's. The model is
    identified by its fingerprint, not by the path it was loaded from."""
    def key(k, manifest):
        return manifest.get(k, {}).get("fingerprint") if k == "model" else manifest.get(k)

    return [k for k in spec if key(k, old) != key(k, spec)]


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise T1Error(f"{folder}: cannot create output folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise T1Error(f"{folder}: output folder is not writable")
