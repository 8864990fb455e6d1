"""An on-disk index of T1 document embeddings: shards of .npy, their ids, and a manifest.

Layout of an index folder::

    manifest.json        model fingerprint, instruction, max length, dim, dtype, corpus hash, count,
                         and each shard file's bytes, rows and sha256 ("files")
    emb-00000.npy        float16/float32 [rows, dim], L2-normalised
    docs-00000.jsonl     {"id", "title", "snippet"} per row, same order
    bm25/                a BM25 index of the same rows, for hybrid search (`bm25=False`: none)
    ann-hnsw.faiss       optional approximate-search structures (`t1.ann`, `t1 ann build`), listed
    ann-ivf-pq.faiss     in the manifest's "ann" entry

Building is resumable: each shard's docs file is written, then its .npy (both atomically), and
a shard counts as done only once its .npy exists, so an interrupted build re-run with the same
arguments continues from the last complete shard.

Building is also distributed: under `torchrun` / `accelerate launch` (an initialized process
group, see `t1.distributed`) rank 0 lists the missing shards, the ranks encode disjoint shares of
them into the same folder (a filesystem they all see), and rank 0 marks the index complete once
every shard exists. A rerun after any rank died resumes like a one-process build.

Opening an index checks every shard file's size and rows against the manifest (file sizes and
.npy headers only), so a damaged index is an error, not a traceback or a wrong answer;
`Index.verify` (`t1 index --verify`) also compares the sha256 checksums. Indexes written before
the manifest recorded the files are still opened (sizes checked against the .npy headers).

Exact search reads the shards in row chunks with plain file reads (no memory map), so its memory
is bounded by the chunk size (`Index.chunk_rows`), not by the index size; hits' titles and
snippets are read line by line from the docs files rather than loaded all at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .atomic import check_output_folder, remove_temporaries, save_npy, write_json, write_jsonl
from .data import Document, as_texts, check_documents
from .errors import T1Error
from .manifest import MANIFEST, describe_file, read_manifest
from .prompts import instruction_or_default
from .search import check_k, exact_search, exclusion_sets, query_matrix

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "instruction", "dim", "dtype", "count", "shard_size", "shards", "corpus_hash")
SNIPPET_CHARS = 300
SEARCH_CHUNK_ROWS = 65536
# Below 20 queries faiss scores without BLAS; there, chunks that stay in cache are ~2x faster.
FEW_QUERIES, FEW_QUERIES_CHUNK_ROWS = 20, 8192
BM25_DIR = "bm25"
SHARD_WAIT_S = 120.0  # how long rank 0 waits for another rank's shard to show on a shared filesystem


def check_built_with(manifest: dict, where, model=None, instruction: str | None = None) -> None:
    """Refuse `model` / `instruction` when the index (folder or store) was built with others."""
    if model is not None and model.fingerprint() != manifest["model"]["fingerprint"]:
        raise T1Error(f"{where}: index was built with a different model ({manifest['model']['name']}, "
                      f"fingerprint {manifest['model']['fingerprint']}); rebuild it with this model")
    if instruction is not None and instruction != manifest["instruction"]:
        raise T1Error(f"{where}: index was built with instruction {manifest['instruction']!r}, not {instruction!r}")


@dataclass(frozen=True)
class SearchRanking:
    """How a search ranks: by T1 alone, or fused with BM25 (`fusion` "rrf" or "weighted", with
    `weight` on the T1 list). `note` says why a default search is not hybrid."""

    fusion: str | None = None
    weight: float | None = None
    note: str | None = field(default=None, compare=False)

    @property
    def hybrid(self) -> bool:
        return self.fusion is not None

    def __str__(self) -> str:  # what --json and the HTTP response call it
        return f"hybrid-{self.fusion}({self.weight:g})" if self.hybrid else "dense"


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


def _doc_row(d: Document) -> dict:
    return {"id": d.id, "title": d.title, "snippet": d.text[:SNIPPET_CHARS]}


# ---------------------------------------------------------------- building, one process or many
class ShardSink:
    """Where a build puts its shards: `Index.build` writes files; a vector database
    (`t1.stores.qdrant`) writes points. The build loop (`build_shards`) is the same."""

    def read_manifest(self) -> dict | None:
        raise NotImplementedError

    def write_manifest(self, manifest: dict) -> None:
        raise NotImplementedError

    def done(self, i: int, chunk: Sequence[Document]) -> bool:
        raise NotImplementedError

    def write(self, i: int, chunk: Sequence[Document], embeddings: np.ndarray) -> None:
        raise NotImplementedError

    def has_shards(self) -> bool:
        """Whether any shard was written (a build that wrote none binds nothing)."""
        return True

    def wait_done(self, shards: list[tuple[int, Sequence[Document]]]) -> list[int]:
        """Shards still missing once the ranks reported them written."""
        return [i for i, chunk in shards if not self.done(i, chunk)]

    def describe(self, shards: int) -> dict:
        """Manifest entries of a complete build that describe what was written."""
        return {}

    def clean(self) -> None:
        """Remove what a process killed mid-write left (called while no rank writes)."""


class _FolderSink(ShardSink):
    def __init__(self, folder: Path):
        self.folder = folder

    def read_manifest(self) -> dict | None:
        return read_manifest(self.folder)

    def has_shards(self) -> bool:
        return any(self.folder.glob("emb-*.npy"))

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.folder / MANIFEST, manifest)

    def done(self, i, chunk) -> bool:
        return (self.folder / _shard_name(i)[0]).exists()

    def write(self, i, chunk, embeddings) -> None:
        emb_file, docs_file = _shard_name(i)
        write_jsonl(self.folder / docs_file, (_doc_row(d) for d in chunk))
        save_npy(self.folder / emb_file, embeddings)

    def wait_done(self, shards) -> list[int]:
        # Another node's rename may take a moment to show here (NFS attribute caches).
        deadline = time.monotonic() + SHARD_WAIT_S
        missing = super().wait_done(shards)
        while missing and time.monotonic() < deadline:
            time.sleep(1.0)
            os.listdir(self.folder)  # refreshes the directory cache on NFS
            missing = [i for i in missing if not self.done(i, shards[i][1])]
        return missing

    def describe(self, shards: int) -> dict:
        return {"files": _describe_files(self.folder, shards)}

    def clean(self) -> None:
        remove_temporaries(self.folder)


def build_shards(sink: ShardSink, model, documents: Sequence[Document], spec: dict, *, where: str,
                 encode: Callable[[Sequence[Document]], np.ndarray], group=None,
                 show_progress_bar: bool | None = None) -> tuple[dict, bool]:
    """Encode `documents` shard by shard into `sink`, resuming, split over the ranks of `group`.

    Rank 0 checks an existing manifest against `spec` and lists the missing shards; each rank
    encodes every world-th of them; rank 0 marks the manifest complete once all exist. Returns
    (the manifest, whether it was complete before this call), the same on every rank."""
    from .distributed import current

    group = group or current()
    shard_size = spec["shard_size"]
    if shard_size < 1:
        raise T1Error(f"shard size must be at least 1, got {shard_size}")
    starts = range(0, len(documents), shard_size)
    shards = [(i, documents[start : start + shard_size]) for i, start in enumerate(starts)]
    state = None
    if group.is_main:
        try:
            old = _binding(sink.read_manifest(), sink)
            if old is not None:
                _refuse_other(old, spec, where)
            if old is not None and old.get("complete"):
                state = ("complete", old, [])
            else:
                sink.clean()
                sink.write_manifest({**spec, "complete": False})
                state = ("build", None, [i for i, chunk in shards if not sink.done(i, chunk)])
        except T1Error as e:
            state = ("error", str(e), [])
    state = group.broadcast(state)
    if state[0] == "error":
        raise T1Error(state[1])
    if state[0] == "complete":
        return state[1], True
    mine = state[2][group.rank :: group.world]
    with tqdm(total=sum(len(shards[i][1]) for i in mine), desc="Indexing", unit="doc",
              disable=show_progress_bar is False or not group.is_main) as bar:  # closed before an error prints
        for i in mine:
            chunk = shards[i][1]
            sink.write(i, chunk, encode(chunk))
            bar.update(len(chunk))
    written = group.all_gather(mine)  # every rank has finished its share
    manifest = None
    if group.is_main:
        missing = sink.wait_done(shards)
        if missing:
            manifest = f"{where}: shards {missing[:5]} are missing after every rank finished; re-run to resume"
        else:
            manifest = {**spec, "complete": True, "shards": len(shards), **sink.describe(len(shards))}
            if group.world > 1:
                manifest["built_by"] = {"world_size": group.world, "shards_per_rank": [len(w) for w in written]}
            sink.write_manifest(manifest)
    manifest = group.broadcast(manifest)
    if isinstance(manifest, str):
        raise T1Error(manifest)
    return manifest, False


# ---------------------------------------------------------------- searching, whatever holds the vectors
class Searchable:
    """What every searchable collection of T1 document embeddings offers on top of its own
    `search` (an index folder, `Index`; a vector database, `t1.stores.qdrant.QdrantIndex`):
    multi-trace fusion, adaptive reasoning and query encoding."""

    has_bm25 = False

    def search(self, query_embeddings, k: int = 10, exclude=None, **kwargs) -> list[list[Hit]]:
        raise NotImplementedError

    @property
    def no_bm25(self) -> str:
        """Why this has no BM25 index, and how to get one."""
        return f"{self.folder} has no BM25 index: only an index folder (`t1 index --out FOLDER`) has one"

    @property
    def bm25(self):
        raise T1Error(f"hybrid search needs BM25: {self.no_bm25}")

    def ranking(self, model=None, hybrid: bool | str | None = None, fusion: str | None = None,
                fusion_weight: float | None = None) -> SearchRanking:
        """Which ranking a search with these settings uses (`t1.query.choose_ranking`)."""
        from .query import choose_ranking
        from .settings import QuerySettings

        return choose_ranking(self, model, QuerySettings(hybrid=hybrid, fusion=fusion, fusion_weight=fusion_weight))

    def search_ranked(self, ranking: SearchRanking, embeddings: np.ndarray, texts: Sequence[str], k: int = 10,
                      exclude=None, trace_embeddings: np.ndarray | None = None, backend: str = "auto"):
        """Search encoded queries as `ranking` says. `trace_embeddings` ([queries, traces, dim]):
        the traces' lists fused by reciprocal rank take the place of the mean `embeddings`."""
        if ranking.hybrid:
            dense = embeddings if trace_embeddings is None else trace_embeddings
            return self.search_hybrid(dense, list(texts), k, exclude, ranking.fusion, ranking.weight)
        if trace_embeddings is not None:
            return self.search_traces(trace_embeddings, k, exclude)
        return self.search(embeddings, k=k, exclude=exclude, backend=backend)

    def search_hybrid(self, query_embeddings, query_texts, k=10, exclude=None, fusion="rrf", weight=0.5,
                      depth=100) -> list[list[Hit]]:
        return self.bm25  # raises

    def search_traces(self, trace_embeddings: np.ndarray, k: int = 10, exclude=None,
                      depth: int = 100) -> list[list[Hit]]:
        """Score-level fusion of several traces per query: each trace's embedding ([queries,
        traces, dim]) is searched `depth` deep, and the lists are fused by reciprocal rank."""
        from .fusion import fuse

        per_trace = [self.search(trace_embeddings[:, t], k=max(k, depth), exclude=exclude)
                     for t in range(trace_embeddings.shape[1])]
        out = []
        for q in range(trace_embeddings.shape[0]):
            found = {h.id: h for hits in per_trace for h in hits[q]}
            fused = fuse([{h.id: h.score for h in hits[q]} for hits in per_trace], "rrf", k=k)
            out.append([Hit(i, float(s), found[i].title, found[i].snippet) for i, s in fused])
        return out

    def search_queries(self, model, queries: Sequence[str], k: int = 10, exclude=None, backend: str = "auto",
                       **options):
        """Encode `queries` with `model` (reasoning first, by default) and search: `t1.query.search`
        with `options` as its `QuerySettings` (`reasoning`, also a list of given traces;
        `max_new_tokens`, `instruction`, `num_traces`, `temperature`, `top_p`, `trace_fusion`,
        `hybrid`, `fusion`, `fusion_weight`, `margin` for reasoning "auto") and its run options
        (`cache`, `query_ids`, `batch_size`, `show_progress_bar`). A warning says when the
        default hybrid ranking is off for want of BM25. Returns (hits per query, reasoning texts)."""
        from .query import search, split_options

        settings, run, given = split_options(options)
        queries, _ = as_texts(queries, "queries")  # one string is one query, not its characters
        results = search(model, self, queries, settings, k=k, exclude=exclude, given=given, backend=backend, **run)
        if results.ranking.note:
            warnings.warn(results.ranking.note, stacklevel=2)
        return results.hits, results.reasoning


# ---------------------------------------------------------------- the index folder
class _NpyShard:
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


class Index(Searchable):
    """A complete index folder. Searches are exact unless the folder holds an approximate
    structure (`t1 ann build`): then they go through it, as `use_ann` sets (default "auto")."""

    def __init__(self, folder: str | Path, manifest: dict):
        self.folder = Path(folder)
        self.manifest = manifest
        # rows per exact-search chunk (what bounds its memory); None: SEARCH_CHUNK_ROWS, or
        # FEW_QUERIES_CHUNK_ROWS for a few queries
        self.chunk_rows: int | None = None
        self._ann_setting = {"ann": "auto", "ef_search": None, "nprobe": None, "refine": None}
        self._ann_loaded: dict = {}
        self._line_offsets: dict[int, np.ndarray] = {}

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
        bm25: bool = True,
        group=None,
    ) -> "Index":
        """Encode `documents` with `model` into `folder`, resuming a build interrupted earlier.
        With `bm25` (the default), also store a BM25 index of the documents, for hybrid search;
        a complete index that lacks one gets it added without re-encoding.

        Under torchrun / accelerate (an initialized process group, or `group`, a
        `t1.distributed.Group`), every rank calls this with the same arguments and encodes its
        share of the shards; every rank gets the complete index, and rank 0 adds BM25."""
        from .distributed import current

        if dtype not in ("float16", "float32"):
            raise T1Error(f"dtype must be float16 or float32, got {dtype!r}")
        if not check_documents(documents):
            raise T1Error("cannot index an empty corpus")
        if batch_size < 1:
            raise T1Error(f"batch size must be at least 1, got {batch_size}")
        group = group or current()
        folder = Path(folder)
        _check_writable(folder)
        spec = index_spec(model, documents, instruction, max_length, shard_size, dtype)

        def encode(chunk):
            emb = model.encode_document([d.full_text for d in chunk], instruction=spec["instruction"],
                                        max_length=spec["max_length"], batch_size=batch_size, show_progress_bar=False)
            return emb.astype(dtype)

        manifest, _ = build_shards(_FolderSink(folder), model, documents, spec, where=str(folder), encode=encode,
                                   group=group, show_progress_bar=show_progress_bar)
        index = cls(folder, manifest)
        if bm25 and not index.has_bm25 and group.is_main:
            index._add_bm25(documents)
        return index

    @classmethod
    def from_embeddings(cls, folder: str | Path, embeddings: np.ndarray | Iterable[np.ndarray], ids: Sequence[str],
                        titles: Sequence[str] | None = None, snippets: Sequence[str] | None = None,
                        shard_size: int = 8192, dtype: str = "float16", model_name: str = "external") -> "Index":
        """An index of embeddings computed elsewhere (one array, or an iterable of row blocks so
        that a large set never sits in memory at once). It is searched like any index; it is
        tied to no T1 model (`Index.open(..., model=...)` refuses it)."""
        if dtype not in ("float16", "float32"):
            raise T1Error(f"dtype must be float16 or float32, got {dtype!r}")
        if shard_size < 1:
            raise T1Error(f"shard size must be at least 1, got {shard_size}")
        folder = Path(folder)
        _check_writable(folder)
        if isinstance(embeddings, np.ndarray):
            embeddings = [embeddings]
        titles = titles if titles is not None else [""] * len(ids)
        snippets = snippets if snippets is not None else [""] * len(ids)
        n, shard, dim, left = 0, 0, None, None

        def flush(rows: np.ndarray) -> None:
            nonlocal shard
            start = shard * shard_size
            if start + len(rows) > len(ids):
                raise T1Error(f"more embeddings than the {len(ids)} ids")
            emb_file, docs_file = _shard_name(shard)
            write_jsonl(folder / docs_file, ({"id": ids[i], "title": titles[i], "snippet": snippets[i][:SNIPPET_CHARS]}
                                             for i in range(start, start + len(rows))))
            save_npy(folder / emb_file, rows.astype(dtype))
            shard += 1

        for block in embeddings:
            block = np.atleast_2d(np.asarray(block))
            dim = block.shape[1] if dim is None else dim
            if block.shape[1] != dim:
                raise T1Error(f"embedding blocks have dimensions {dim} and {block.shape[1]}")
            n += len(block)
            rows = block if left is None or not len(left) else np.concatenate([left, block])
            start = 0
            while len(rows) - start >= shard_size:
                flush(rows[start : start + shard_size])
                start += shard_size
            left = rows[start:].copy()
        if left is not None and len(left):
            flush(left)
        if n != len(ids) or n == 0:
            raise T1Error(f"got {n} embeddings for {len(ids)} ids")
        h = hashlib.sha256()
        for i in ids:
            h.update(i.encode())
            h.update(b"\0")
        manifest = {"format_version": FORMAT_VERSION, "model": {"name": model_name, "fingerprint": model_name},
                    "instruction": None, "max_length": None, "dim": dim, "dtype": dtype, "count": n,
                    "shard_size": shard_size, "corpus_hash": h.hexdigest()[:16], "complete": True, "shards": shard,
                    "files": _describe_files(folder, shard)}
        write_json(folder / MANIFEST, manifest)
        return cls(folder, manifest)

    def _add_bm25(self, documents: Sequence[Document]) -> None:
        from .bm25 import BM25Index

        BM25Index().index([d.full_text for d in documents]).save(self.folder / BM25_DIR)
        self.manifest["bm25"] = BM25Index().settings
        self.record_files(sorted(p.relative_to(self.folder).as_posix() for p in (self.folder / BM25_DIR).iterdir()))

    def record_files(self, names: Sequence[str]) -> None:
        """Enter artefacts beside the shards (BM25's files, an ANN structure) in the manifest with
        their size and checksum, so that opening and `--verify` check them, and write it."""
        if "files" in self.manifest:  # an index from before checksums: nothing is recorded
            tops = {name.split("/")[0] for name in names}  # a rebuilt bm25/ replaces all of the old
            files = {n: f for n, f in self.manifest["files"].items() if n.split("/")[0] not in tops}
            self.manifest["files"] = {**files, **{name: describe_file(self.folder / name) for name in names}}
        write_json(self.folder / MANIFEST, self.manifest)

    @property
    def has_bm25(self) -> bool:
        return "bm25" in self.manifest and (self.folder / BM25_DIR).is_dir()

    @property
    def no_bm25(self) -> str:
        return (f"{self.folder} has no BM25 index; add one with `t1 index --corpus CORPUS --out {self.folder}` "
                "(the same arguments, without --no-bm25: nothing is re-encoded)")

    @cached_property
    def bm25(self):
        from .bm25 import BM25Index

        if not self.has_bm25:
            raise T1Error(f"hybrid search needs BM25: {self.no_bm25}")
        folder = self.folder / BM25_DIR
        try:
            index = BM25Index.load(folder)
        except (FileNotFoundError, ValueError, KeyError, TypeError, EOFError) as e:
            raise _damaged_bm25(folder, f"{type(e).__name__}: {e}") from None
        if index.count != len(self):
            raise _damaged_bm25(folder, f"{index.count} documents, the index {len(self)}")
        return index

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, folder: str | Path, model=None, instruction: str | None = None) -> "Index":
        """Open a complete index; with `model`, refuse one built by a different model. Every
        shard file's size and rows are checked against the manifest (no file is read whole)."""
        index = cls._read(folder).check(model, instruction)
        problems = index._problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise T1Error(f"{folder}: damaged index: {problems[0]}{more}; rebuild it (`t1 index --verify {folder}` "
                          "lists every problem)")
        return index

    def check(self, model=None, instruction: str | None = None) -> "Index":
        """Refuse `model` / `instruction` when the index was built with others."""
        check_built_with(self.manifest, self.folder, model, instruction)
        return self

    @classmethod
    def _read(cls, folder: str | Path) -> "Index":
        """The index whose manifest is complete and has every key, its files unchecked."""
        folder = Path(folder)
        path = folder / MANIFEST
        manifest = read_manifest(folder)
        if manifest is None:
            raise T1Error(f"{folder}: not a t1 index (no {MANIFEST})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise T1Error(f"{folder}: index format {manifest.get('format_version')} is not supported (expected {FORMAT_VERSION})")
        if not manifest.get("complete"):
            raise T1Error(f"{folder}: index is incomplete; re-run `t1 index` with the same arguments to resume")
        missing = [k for k in REQUIRED_KEYS if k not in manifest]
        if missing:
            raise T1Error(f"{path}: damaged manifest: no {missing[0]!r} entry; rebuild the index")
        count, shard_size, shards = manifest["count"], manifest["shard_size"], manifest["shards"]
        if shards != -(-count // max(shard_size, 1)):
            raise T1Error(f"{path}: damaged manifest: {shards} shards cannot hold {count} documents in shards of "
                          f"{shard_size}; rebuild the index")
        return cls(folder, manifest)

    @classmethod
    def verify(cls, folder: str | Path) -> str:
        """Check every shard file of the index in `folder`: presence, size, rows and sha256 (reads
        every byte). Returns a one-line report; a damaged index is a `T1Error` naming its problems."""
        index = cls._read(folder)
        problems = index._problems(deep=True)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise T1Error(f"{folder}: damaged index: {shown}")
        what = f"{len(index)} documents in {index.manifest['shards']} shards"
        if "files" not in index.manifest:
            return (f"{what}: files present, sizes and rows match; no checksums to compare (the index was "
                    "written before t1 recorded them)")
        return f"{what}: files present, sizes, rows and sha256 checksums match"

    def _problems(self, deep: bool = False) -> list[str]:
        """What is wrong with the index's files: its shards, and the artefacts beside them."""
        return self._shard_problems(deep) + self._artefact_problems(deep)

    def _artefact_problems(self, deep: bool) -> list[str]:
        """What is wrong with the files the manifest records beside the shards (BM25's, an ANN
        structure): missing, another size, or (`deep`) another sha256 checksum."""
        shard_files = {name for i in range(self.manifest["shards"]) for name in _shard_name(i)}
        problems = []
        for name, want in (self.manifest.get("files") or {}).items():
            path = self.folder / name
            if name in shard_files:
                continue
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif path.stat().st_size != want["bytes"]:
                problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {want['bytes']}")
            elif deep and describe_file(path)["sha256"] != want["sha256"]:
                problems.append(f"{name} does not match its sha256 checksum")
        return problems

    def _shard_problems(self, deep: bool) -> list[str]:
        """What is wrong with the shard files: missing, wrong size or rows, a .npy of another shape
        (cheap: file sizes and .npy headers). `deep` also counts docs rows and compares the
        sha256 checksums recorded at build time (reading every file)."""
        files, problems = self.manifest.get("files"), []
        for i, paths in enumerate(self._shards()):
            rows = self._shard_rows(i)
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
                        shard = _NpyShard(path)
                    except T1Error as e:
                        problems.append(str(e).replace(f"{path}: ", f"{name}: "))
                        continue
                    if shard.rows != rows or shard.dim != self.manifest["dim"]:
                        problems.append(f"{name} holds {shard.rows} x {shard.dim} embeddings, expected "
                                        f"{rows} x {self.manifest['dim']}")
                    elif size < shard.nbytes:
                        problems.append(f"{name} is truncated ({size} of {shard.nbytes} bytes)")
                if deep and (want is not None or path.suffix != ".npy"):
                    found = _describe_file(path)
                    if path.suffix != ".npy" and found["rows"] != rows:
                        problems.append(f"{name} has {found['rows']} rows, expected {rows}")
                    elif want is not None and found["sha256"] != want["sha256"]:
                        problems.append(f"{name} does not match its sha256 checksum")
        return problems

    def _shard_rows(self, i: int) -> int:
        """How many rows shard `i` holds (every shard is full but the last)."""
        return min(self.manifest["shard_size"], self.manifest["count"] - i * self.manifest["shard_size"])

    def __len__(self) -> int:
        return self.manifest["count"]

    def _shards(self):
        for i in range(self.manifest["shards"]):
            emb_file, docs_file = _shard_name(i)
            yield self.folder / emb_file, self.folder / docs_file

    @cached_property
    def _docs(self) -> list[dict]:
        """Every row's {"id", "title", "snippet"} (loads them all; searching does not need this)."""
        return [row for i in range(self.manifest["shards"]) for row in self._docs_rows(i)]

    def _docs_rows(self, i: int) -> list[dict]:
        """The rows of shard i's docs file, checked against the manifest's count."""
        docs_file = self.folder / _shard_name(i)[1]
        with open(docs_file, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        if len(rows) != self._shard_rows(i):
            raise T1Error(f"{docs_file}: {len(rows)} rows, expected {self._shard_rows(i)}; the index is damaged, "
                          "rebuild it")
        return rows

    @cached_property
    def ids(self) -> list[str]:
        return [d["id"] for d in self._docs] if "_docs" in self.__dict__ else [
            row["id"] for i in range(self.manifest["shards"]) for row in self._docs_rows(i)]

    @cached_property
    def _position(self) -> dict[str, int]:
        return {doc_id: i for i, doc_id in enumerate(self.ids)}

    def embeddings(self) -> np.ndarray:
        """All embeddings as one float32 array (loads the whole index into memory)."""
        return np.concatenate([np.load(e).astype(np.float32) for e, _ in self._shards()])

    @cached_property
    def _npy(self) -> list[_NpyShard]:
        return [_NpyShard(e) for e, _ in self._shards()]

    @cached_property
    def _shard_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([s.rows for s in self._npy])]).astype(np.int64)

    def _chunks(self, chunk_rows: int | None = None):
        """(global row offset, rows) blocks of at most `chunk_rows` rows, read from the shards."""
        chunk_rows = chunk_rows or self.chunk_rows or SEARCH_CHUNK_ROWS
        if chunk_rows < 1:
            raise T1Error(f"chunk rows must be at least 1, got {chunk_rows}")
        for shard, offset in zip(self._npy, self._shard_starts):
            for start, rows in shard.chunks(chunk_rows):
                yield int(offset) + start, rows

    def _records(self, positions: Iterable[int]) -> dict[int, dict]:
        """{"id", "title", "snippet"} of the rows at `positions`, read from the docs files."""
        positions = sorted({int(p) for p in positions})
        if "_docs" in self.__dict__:
            return {p: self._docs[p] for p in positions}
        out = {}
        shard_of = np.searchsorted(self._shard_starts, positions, side="right") - 1
        for s in sorted(set(shard_of.tolist())):
            docs_file = self.folder / _shard_name(s)[1]
            offsets = self._line_offsets.get(s)
            if offsets is None:
                offsets = self._line_offsets[s] = _line_offsets(docs_file)
                if len(offsets) != self._shard_rows(s):
                    raise T1Error(f"{docs_file}: {len(offsets)} rows, expected {self._shard_rows(s)}; the index is "
                                  "damaged, rebuild it")
            with open(docs_file, "rb") as f:
                for p, sp in zip(positions, shard_of):
                    if sp == s:
                        f.seek(offsets[p - self._shard_starts[s]])
                        out[p] = json.loads(f.readline())
        return out

    # ---------------------------------------------------------------- approximate search settings
    @property
    def ann_kinds(self) -> list[str]:
        """The approximate-search structures this index holds ("hnsw", "ivf-pq")."""
        return [k for k, info in self.manifest.get("ann", {}).items() if (self.folder / info["file"]).exists()]

    def use_ann(self, ann: str = "auto", ef_search: int | None = None, nprobe: int | None = None,
                refine: int | None = None) -> "Index":
        """How later searches run: "auto" (the default: HNSW if built, else IVF-PQ if built,
        else exact), "exact", "hnsw" or "ivf-pq", with the structure's search settings
        (None: those stored when it was built). Returns the index."""
        from .ann import check_search_settings

        check_search_settings(ann, ef_search, nprobe, refine)
        self._ann_setting = {"ann": ann, "ef_search": ef_search, "nprobe": nprobe, "refine": refine}
        return self

    def _resolve_ann(self, ann: str | None) -> str | None:
        from .ann import KINDS

        ann = self._ann_setting["ann"] if ann is None else ann
        if ann == "exact":
            return None
        kinds = self.ann_kinds
        if ann == "auto":
            return next((k for k in KINDS if k in kinds), None)
        if ann not in KINDS:
            raise T1Error(f"ann must be auto, exact, {' or '.join(KINDS)}; got {ann!r}")
        if ann not in kinds:
            raise T1Error(f"{self.folder}: no {ann} structure; build it with `t1 ann build --index {self.folder} "
                          f"--kind {ann}`")
        return ann

    def ann_index(self, kind: str):
        """The loaded faiss structure `kind` (read once, then kept)."""
        if kind not in self._ann_loaded:
            from .ann import load

            self._ann_loaded[kind] = load(self, kind)
        return self._ann_loaded[kind]

    # ---------------------------------------------------------------- searching
    def search_positions(self, query_embeddings: np.ndarray, k: int = 10, exclude=None, backend: str = "auto",
                         ann: str | None = None, ef_search: int | None = None, nprobe: int | None = None,
                         refine: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row positions), each [queries, k], best first; -1 where fewer than k rows
        qualify. Exact, or approximate through a faiss structure (see `use_ann`)."""
        query_embeddings = query_matrix(query_embeddings)
        k = check_k(k, len(self))
        if query_embeddings.shape[1] != self.manifest["dim"]:
            raise T1Error(f"query embeddings have dimension {query_embeddings.shape[1]}, index has {self.manifest['dim']}")
        excluded = self._excluded(exclude, len(query_embeddings))
        kind = self._resolve_ann(ann)
        if kind is None:
            rows = self.chunk_rows or (FEW_QUERIES_CHUNK_ROWS if len(query_embeddings) < FEW_QUERIES else None)
            return exact_search(query_embeddings, self._chunks(rows), k, excluded, backend)
        from .ann import search as ann_search

        setting = self._ann_setting
        return ann_search(self.ann_index(kind), self.manifest["ann"][kind], query_embeddings, k, excluded,
                          ef_search=ef_search or setting["ef_search"], nprobe=nprobe or setting["nprobe"],
                          refine=refine or setting["refine"])

    def search(
        self,
        query_embeddings: np.ndarray,
        k: int = 10,
        exclude: Sequence[set[str] | Sequence[str]] | None = None,
        backend: str = "auto",
        ann: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        refine: int | None = None,
    ) -> list[list[Hit]]:
        """Top-k by inner product for each query embedding (rows of a 2-D array); `exclude[q]`
        lists document ids removed from query q's candidates before the cut. Exact (`backend`
        numpy or faiss) unless an approximate structure is in use (`ann`, `use_ann`)."""
        scores, positions = self.search_positions(query_embeddings, k, exclude, backend, ann, ef_search, nprobe,
                                                  refine)
        records = self._records(p for row in positions for p in row if p >= 0)
        return [[_make_hit(records[p], s) for s, p in zip(row_s, row_p) if p >= 0]
                for row_s, row_p in zip(scores, positions)]

    def _hit(self, position: int, score: float) -> Hit:
        return _make_hit(self._records([position])[position], score)

    def _excluded(self, exclude, n_queries: int) -> list[np.ndarray] | None:
        """Per-query row positions of the excluded ids (ids not in the index are ignored)."""
        exclude = exclusion_sets(exclude, n_queries)
        if exclude is None or not any(exclude):
            return None
        return [np.array(sorted(self._position[i] for i in ex if i in self._position), dtype=np.int64) for ex in exclude]

    def search_hybrid(self, query_embeddings: np.ndarray, query_texts: Sequence[str], k: int = 10, exclude=None,
                      fusion: str = "rrf", weight: float = 0.5, depth: int = 100) -> list[list[Hit]]:
        """Dense and BM25 top-`depth` lists, exclusions removed from both, fused (`t1.fusion`)
        with `weight` on the dense list and 1 - weight on BM25. Trace embeddings ([queries,
        traces, dim]) give the dense list of `search_traces`."""
        from .fusion import fuse

        if not 0.0 <= weight <= 1.0:
            raise T1Error(f"fusion weight must be between 0 and 1, got {weight}")
        depth = max(depth, k)
        if np.ndim(query_embeddings) == 3:
            dense = self.search_traces(query_embeddings, k=depth, exclude=exclude, depth=depth)
        else:
            dense = self.search(query_embeddings, k=depth, exclude=exclude)
        excluded = self._excluded(exclude, len(query_texts))
        sparse = self.bm25.search(list(query_texts), depth, excluded)
        out = []
        for d_hits, s_hits in zip(dense, sparse):
            fused = fuse([{h.id: h.score for h in d_hits}, {self.ids[i]: s for i, s in s_hits}], fusion,
                         [weight, 1.0 - weight], k)
            records = self._records(self._position[i] for i, _ in fused)
            out.append([_make_hit(records[self._position[i]], s) for i, s in fused])
        return out


def _damaged_bm25(folder: Path, why: str) -> T1Error:
    return T1Error(f"{folder}: damaged BM25 index ({why.splitlines()[0][:120]}); delete the folder and run `t1 "
                   "index` again with the same arguments to rebuild it (nothing is re-encoded)")


def _make_hit(doc: dict, score: float) -> Hit:
    return Hit(doc["id"], float(score), doc.get("title", ""), doc.get("snippet", ""))


def _line_offsets(path: Path) -> np.ndarray:
    """Byte offset of each line of a file."""
    offsets, pos = [], 0
    with open(path, "rb") as f:
        for line in f:
            offsets.append(pos)
            pos += len(line)
    return np.array(offsets, dtype=np.int64)


def index_spec(model, documents: Sequence[Document], instruction: str | None, max_length: int | None,
               shard_size: int, dtype: str) -> dict:
    """The settings that identify a build (what a resumed build must match)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": model.name_or_path, "fingerprint": model.fingerprint()},
        "instruction": instruction_or_default(instruction, model.config.document_instruction),
        "max_length": max_length or model.config.max_document_length,
        "dim": model.dim,
        "dtype": dtype,
        "count": len(documents),
        "shard_size": shard_size,
        "corpus_hash": corpus_hash(documents),
    }


def check_output(folder: str | Path, documents: Sequence[Document], shard_size: int, dtype: str) -> None:
    """What can be checked of an index folder before the model loads: that it can be written,
    and that an index already there was built from the same corpus with the same layout."""
    folder = Path(check_output_folder(folder))
    old = _binding(read_manifest(folder), _FolderSink(folder)) if folder.is_dir() else None
    if old is not None:
        _refuse_other(old, {"format_version": FORMAT_VERSION, "dtype": dtype, "count": len(documents),
                            "shard_size": shard_size, "corpus_hash": corpus_hash(documents)}, str(folder))


def _binding(old: dict | None, sink: ShardSink) -> dict | None:
    """The manifest a new build must match: none when the last build failed before writing a
    shard (`t1 index --max-length 1`), so that the corrected command starts afresh."""
    if old is not None and not old.get("complete") and not sink.has_shards():
        return None
    return old


def _refuse_other(old: dict, spec: dict, where: str) -> None:
    what = _differences(old, spec)
    if what:
        raise T1Error(f"{where} holds an index built with a different {', '.join(what)}; "
                      "use another output folder or delete this one")


def _differences(old: dict, spec: dict) -> list[str]:
    """Settings in which an existing manifest differs from a new build's. The model is
    identified by its fingerprint, not by the path it was loaded from."""
    def key(k, manifest):
        return manifest.get(k, {}).get("fingerprint") if k == "model" else manifest.get(k)

    return [k for k in spec if key(k, old) != key(k, spec)]


def _describe_files(folder: Path, shards: int) -> dict:
    """The manifest's "files" entry: bytes, rows and sha256 of every shard file."""
    return {name: _describe_file(folder / name) for i in range(shards) for name in _shard_name(i)}


def _describe_file(path: Path) -> dict:
    h, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            lines += block.count(b"\n")
    rows = _NpyShard(path).rows if path.suffix == ".npy" else lines
    return {"bytes": path.stat().st_size, "rows": rows, "sha256": h.hexdigest()}


def _check_writable(folder: Path) -> None:
    check_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise T1Error(f"{folder}: cannot create output folder ({e.strerror})") from None
