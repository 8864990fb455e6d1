"""An on-disk index of T1 document embeddings: shards of .npy, their ids, and a manifest.

Layout of an index folder::

    manifest.json        model fingerprint, instruction, max length, dim, dtype, corpus hash, count
    emb-00000.npy        float16/float32 [rows, dim], L2-normalised
    docs-00000.jsonl     {"id", "title", "snippet"} per row, same order
    bm25/                optional (`bm25=True`): a BM25 index of the same rows, for hybrid search

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
BM25_DIR = "bm25"


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
        bm25: bool = False,
    ) -> "Index":
        """Encode `documents` with `model` into `folder`, resuming a build interrupted earlier.
        With `bm25`, also store a BM25 index of the documents; a complete index that lacks one
        gets it added without re-encoding."""
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
                index = cls(folder, old)
                if bm25 and not index.has_bm25:
                    index._add_bm25(documents)
                return index
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
        index = cls(folder, manifest)
        if bm25:
            index._add_bm25(documents)
        return index

    def _add_bm25(self, documents: Sequence[Document]) -> None:
        from .bm25 import BM25Index

        BM25Index().index([d.full_text for d in documents]).save(self.folder / BM25_DIR)
        self.manifest["bm25"] = BM25Index().settings
        write_json(self.folder / MANIFEST, self.manifest)

    @property
    def has_bm25(self) -> bool:
        return "bm25" in self.manifest and (self.folder / BM25_DIR).is_dir()

    @cached_property
    def bm25(self):
        from .bm25 import BM25Index

        if not self.has_bm25:
            raise T1Error(f"{self.folder}: no BM25 index for hybrid search; add one with "
                          "`t1 index --bm25` and the same arguments (nothing is re-encoded)")
        return BM25Index.load(self.folder / BM25_DIR)

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
        excluded = self._excluded(exclude, len(query_embeddings))
        scores, positions = exact_search(query_embeddings, self._chunks(), k, excluded, backend)
        return [[self._hit(p, s) for s, p in zip(row_s, row_p) if p >= 0] for row_s, row_p in zip(scores, positions)]

    def _hit(self, position: int, score: float) -> Hit:
        doc = self._docs[position]
        return Hit(doc["id"], float(score), doc.get("title", ""), doc.get("snippet", ""))

    def _excluded(self, exclude, n_queries: int) -> list[np.ndarray] | None:
        """Per-query row positions of the excluded ids (ids not in the index are ignored)."""
        if exclude is None:
            return None
        if len(exclude) != n_queries:
            raise T1Error(f"got {len(exclude)} exclusion lists for {n_queries} queries")
        return [np.array(sorted(self._position[i] for i in ex if i in self._position), dtype=np.int64) for ex in exclude]

    def search_hybrid(self, query_embeddings: np.ndarray, query_texts: Sequence[str], k: int = 10, exclude=None,
                      fusion: str = "rrf", weight: float = 0.5, depth: int = 100) -> list[list[Hit]]:
        """Dense and BM25 top-`depth` lists, exclusions removed from both, fused (`t1.fusion`)
        with `weight` on the dense list and 1 - weight on BM25."""
        from .fusion import fuse

        if not 0.0 <= weight <= 1.0:
            raise T1Error(f"fusion weight must be between 0 and 1, got {weight}")
        depth = max(depth, k)
        dense = self.search(query_embeddings, k=depth, exclude=exclude)
        excluded = self._excluded(exclude, len(query_texts))
        sparse = self.bm25.search(list(query_texts), depth, excluded)
        out = []
        for d_hits, s_hits in zip(dense, sparse):
            fused = fuse([{h.id: h.score for h in d_hits}, {self.ids[i]: s for i, s in s_hits}], fusion,
                         [weight, 1.0 - weight], k)
            out.append([self._hit(self._position[i], s) for i, s in fused])
        return out

    def search_traces(self, trace_embeddings: np.ndarray, k: int = 10, exclude=None,
                      depth: int = 100) -> list[list[Hit]]:
        """Score-level fusion of several traces per query: each trace's embedding ([queries,
        traces, dim]) is searched `depth` deep, and the lists are fused by reciprocal rank."""
        from .fusion import fuse

        per_trace = [self.search(trace_embeddings[:, t], k=max(k, depth), exclude=exclude)
                     for t in range(trace_embeddings.shape[1])]
        out = []
        for q in range(trace_embeddings.shape[0]):
            fused = fuse([{h.id: h.score for h in hits[q]} for hits in per_trace], "rrf", k=k)
            out.append([self._hit(self._position[i], s) for i, s in fused])
        return out

    def search_adaptive(self, model, queries: Sequence[str], k: int = 10, exclude=None, margin: float = 0.02,
                        query_ids: Sequence[str] | None = None, **encode_kwargs):
        """Reasoning only where it is worth its cost (`reasoning="auto"`). Every query is first
        embedded without reasoning (one forward pass); when its best document leads the second
        by at least `margin` in cosine, the embedding is confident and its ranking is kept;
        otherwise the model reasons and the query is searched again. Returns (hits, reasoning
        texts, "" where the model did not reason)."""
        queries = list(queries)
        quick = model.encode_query(queries, reasoning="none", instruction=encode_kwargs.get("instruction"),
                                   batch_size=encode_kwargs.get("batch_size", 8))
        first = self.search(quick.embeddings, k=max(k, 2), exclude=exclude)
        unsure = [i for i, h in enumerate(first) if len(h) > 1 and h[0].score - h[1].score < margin]
        hits, reasoning = [h[:k] for h in first], [""] * len(queries)
        if unsure:
            deep = model.encode_query([queries[i] for i in unsure], reasoning="generate",
                                      query_ids=None if query_ids is None else [query_ids[i] for i in unsure],
                                      **encode_kwargs)
            again = self.search(deep.embeddings, k=k, exclude=None if exclude is None else [exclude[i] for i in unsure])
            for j, i in enumerate(unsure):
                hits[i], reasoning[i] = again[j], deep.reasoning[j]
        return hits, reasoning

    def search_queries(self, model, queries: Sequence[str], k: int = 10, exclude=None, backend: str = "auto",
                       hybrid: str | None = None, fusion_weight: float = 0.5, trace_fusion: str = "mean",
                       **encode_kwargs):
        """Encode `queries` with `model` (reasoning first, by default) and search; `hybrid`
        ("rrf" or "weighted") fuses the result with BM25; with several traces per query
        (`num_traces`), `trace_fusion` "mean" searches their mean embedding and "rrf" fuses
        their result lists. Returns (hits per query, reasoning texts)."""
        if trace_fusion not in ("mean", "rrf"):
            raise T1Error(f"trace fusion must be 'mean' or 'rrf', got {trace_fusion!r}")
        if hybrid:
            self.bm25  # fail before the (slow) reasoning when there is no BM25 index
        if encode_kwargs.get("reasoning") == "auto":
            if hybrid:
                raise T1Error("reasoning 'auto' does not combine with hybrid search yet")
            encode_kwargs.pop("reasoning")
            return self.search_adaptive(model, queries, k, exclude, **encode_kwargs)
        encode_kwargs.pop("margin", None)
        encoded = model.encode_query(list(queries), **encode_kwargs)
        if hybrid:
            hits = self.search_hybrid(encoded.embeddings, list(queries), k, exclude, hybrid, fusion_weight)
        elif trace_fusion == "rrf" and encoded.trace_embeddings is not None:
            hits = self.search_traces(encoded.trace_embeddings, k, exclude)
        else:
            hits = self.search(encoded.embeddings, k=k, exclude=exclude, backend=backend)
        return hits, encoded.reasoning


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
