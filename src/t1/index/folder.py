"""An on-disk index of T1 document embeddings (`Index`): shards of .npy, their ids, and a manifest;
its format is `format.py`, its build `build.py`.

Opening an index checks every shard file's size and rows against the manifest (file sizes and
.npy headers only), so a damaged index is an error, not a traceback or a wrong answer;
`Index.verify` (`t1 index --verify`) also compares the sha256 checksums. Indexes written before
the manifest recorded the files are still opened (sizes checked against the .npy headers).

An index folder is also updated in place (`update`, `delete`, `compact`; `t1.index.update`):
each update is a new *generation* of segments and tombstones (`t1.index.segments`). An `Index`
object is one generation, whatever writers do meanwhile; `reopen` returns the newest.

Exact search reads the shards in row chunks with plain file reads (no memory map), so its memory
is bounded by the chunk size (`Index.chunk_rows`), not by the index size; hits' titles and
snippets are read line by line from the docs files rather than loaded all at once.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..atomic import write_json
from ..data import Document
from ..errors import T1Error
from .build import FolderSink, build_shards, check_writable, plan_build, write_embeddings
from .format import BM25_DIR, FORMAT_VERSION, REQUIRED_KEYS, NpyShard, check_built_with, folder_problems, line_offsets
from .manifest import MANIFEST, describe_file, read_manifest
from .search import best_first, check_k, exact_search, exclusion_sets, query_matrix
from .searchable import Hit, Searchable
from .segments import bm25_dir, deleted, generation, live_positions, segment_problems, shard_table, total_rows

SEARCH_CHUNK_ROWS = 65536
# Below 20 queries faiss scores without BLAS; there, chunks that stay in cache are ~2x faster.
FEW_QUERIES, FEW_QUERIES_CHUNK_ROWS = 20, 8192


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
        self._stamp = _stamp(self.folder)  # what `reopen` compares to tell whether a writer committed

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
        folder = Path(folder)
        plan = plan_build(model, documents, instruction, max_length, shard_size, dtype, batch_size, group)
        check_writable(folder)
        sink = FolderSink(folder)
        try:  # rank 0 holds the folder's write lock from the manifest check to the last file
            manifest, _ = build_shards(sink, model, documents, plan.spec, where=str(folder), encode=plan.encode,
                                       group=plan.group, show_progress_bar=show_progress_bar)
            index = cls(folder, manifest)
            if bm25 and not index.has_bm25 and plan.group.is_main:
                index._add_bm25(documents)
        finally:
            sink.release()
        return index

    @classmethod
    def from_embeddings(cls, folder: str | Path, embeddings: np.ndarray | Iterable[np.ndarray], ids: Sequence[str],
                        titles: Sequence[str] | None = None, snippets: Sequence[str] | None = None,
                        shard_size: int = 8192, dtype: str = "float16", model_name: str = "external") -> "Index":
        """An index of embeddings computed elsewhere (one array, or an iterable of row blocks so
        that a large set never sits in memory at once). It is searched like any index; it is
        tied to no T1 model (`Index.open(..., model=...)` refuses it)."""
        folder = Path(folder)
        return cls(folder, write_embeddings(folder, embeddings, ids, titles, snippets, shard_size, dtype, model_name))

    def _add_bm25(self, documents: Sequence[Document]) -> None:
        from .bm25 import BM25Index

        if self.manifest.get("segments") or self.manifest.get("deleted"):
            raise T1Error(f"{self.folder}: an updated index gets BM25 from its updates; compact it first")
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
        return "bm25" in self.manifest and (not len(self) or (self.folder / bm25_dir(self.manifest)).is_dir())

    @property
    def no_bm25(self) -> str:
        return (f"{self.folder} has no BM25 index; add one with `t1 index --corpus CORPUS --out {self.folder}` "
                "(the same arguments, without --no-bm25: nothing is re-encoded)")

    @cached_property
    def bm25(self):
        from .bm25 import BM25Index

        if not self.has_bm25:
            raise T1Error(f"hybrid search needs BM25: {self.no_bm25}")
        if not len(self):
            return None  # every document deleted: nothing to index, nothing found
        folder = self.folder / bm25_dir(self.manifest)
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
        problems = folder_problems(index.folder, index.manifest) + segment_problems(index.folder, index.manifest, False)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise T1Error(f"{folder}: damaged index: {problems[0]}{more}; rebuild it (`t1 index --verify {folder}` "
                          "lists every problem)")
        return index

    def reopen(self) -> "Index":
        """The folder's newest generation: this object when no writer has committed since it was
        opened (one `stat` of the manifest, cheap enough for every request), else a new `Index`
        (opened and checked; its search settings carried over). This object keeps reading its own
        generation: a writer never rewrites the files a generation names."""
        if _stamp(self.folder) == self._stamp:
            return self
        fresh = type(self).open(self.folder)
        fresh.chunk_rows, fresh._ann_setting = self.chunk_rows, dict(self._ann_setting)
        return fresh

    # ---------------------------------------------------------------- updating (`t1.index.update`)
    def update(self, model, documents: Sequence[Document], batch_size: int = 32, instruction: str | None = None,
               encode=None):
        """Add new documents and replace changed ones (by id; a document whose title and text are
        unchanged is skipped), with the model, instruction and document engine the index was
        built with (any other is refused), as a new generation. Returns an `UpdateReport`; this
        object keeps reading its generation (`reopen` for the new one). `encode` (texts ->
        embeddings) replaces the model's own encoding, for a caller that runs the model elsewhere."""
        from .update import upsert

        return upsert(self, model, documents, batch_size=batch_size, instruction=instruction, encode=encode)

    def delete(self, ids: Iterable[str]):
        """Delete documents by id, as a new generation (tombstones). Returns an `UpdateReport`
        (ids not in the index are its `not_found`)."""
        from .update import delete

        return delete(self, ids)

    def compact(self):
        """Merge every segment into one, drop the deleted rows, and rebuild each approximate
        structure once over the result, as a new generation. Returns an `UpdateReport`."""
        from .update import compact

        return compact(self)

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
        problems = folder_problems(index.folder, index.manifest, deep=True) + segment_problems(
            index.folder, index.manifest, True)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise T1Error(f"{folder}: damaged index: {shown}")
        segments = len(index.manifest.get("segments", []))
        what = (f"{len(index)} documents in {len(index._table)} shards, embedded by the "
                f"{index.manifest.get('engine', 'hf')} document engine")
        if generation(index.manifest):
            what += (f", generation {generation(index.manifest)} ({segments} segments after the base, "
                     f"{len(deleted(index.manifest))} deleted rows)")
        if "files" not in index.manifest:
            return (f"{what}: files present, sizes and rows match; no checksums to compare (the index was "
                    "written before t1 recorded them)")
        return f"{what}: files present, sizes, rows and sha256 checksums match"

    @cached_property
    def _table(self) -> list[tuple[Path, Path, int]]:
        """(.npy, docs file, rows) of every shard of every segment, in row order."""
        return shard_table(self.folder, self.manifest)

    def _shard_rows(self, i: int) -> int:
        return self._table[i][2]

    def __len__(self) -> int:
        """The live documents (rows of every segment, less the deleted)."""
        return self.rows - len(self._dead)

    @property
    def rows(self) -> int:
        """Row positions in use, deleted rows included (what an ANN structure covers)."""
        return total_rows(self.manifest)

    @cached_property
    def _dead(self) -> np.ndarray:
        return deleted(self.manifest)

    @cached_property
    def _live(self) -> np.ndarray:
        """Row positions of the live documents, in order: the rows of this generation's BM25."""
        return np.arange(self.rows) if not len(self._dead) else live_positions(self.manifest)

    @property
    def generation(self) -> int:
        """Which generation of the folder this object reads (0: as built; each update adds 1)."""
        return generation(self.manifest)

    def _shards(self):
        return ((e, d) for e, d, _ in self._table)

    @cached_property
    def _docs(self) -> list[dict]:
        """Every row's {"id", "title", "snippet"} (loads them all; searching does not need this)."""
        return [row for i in range(len(self._table)) for row in self._docs_rows(i)]

    def _docs_rows(self, i: int) -> list[dict]:
        """The rows of shard i's docs file, checked against the manifest's count."""
        docs_file = self._table[i][1]
        with open(docs_file, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        if len(rows) != self._shard_rows(i):
            raise T1Error(f"{docs_file}: {len(rows)} rows, expected {self._shard_rows(i)}; the index is damaged, "
                          "rebuild it")
        return rows

    @cached_property
    def _row_ids(self) -> list[str]:
        """The id of every row, deleted rows included."""
        return [d["id"] for d in self._docs] if "_docs" in self.__dict__ else [
            row["id"] for i in range(len(self._table)) for row in self._docs_rows(i)]

    @cached_property
    def ids(self) -> list[str]:
        """The ids of the live documents, in row order (the order of the BM25 rows)."""
        return self._row_ids if not len(self._dead) else [self._row_ids[p] for p in self._live]

    @cached_property
    def _position(self) -> dict[str, int]:
        """Row position of each live document's id."""
        return {doc_id: int(p) for doc_id, p in zip(self.ids, self._live)}

    def embeddings(self) -> np.ndarray:
        """All embeddings as one float32 array (loads the whole index into memory)."""
        return np.concatenate([np.load(e).astype(np.float32) for e, _ in self._shards()])

    @cached_property
    def _npy(self) -> list[NpyShard]:
        return [NpyShard(e) for e, _ in self._shards()]

    @cached_property
    def _shard_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([s.rows for s in self._npy])]).astype(np.int64)

    def chunks(self, chunk_rows: int | None = None):
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
            docs_file = self._table[s][1]
            offsets = self._line_offsets.get(s)
            if offsets is None:
                offsets = self._line_offsets[s] = line_offsets(docs_file)
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

    def resolve_ann(self, ann: str | None) -> str | None:
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

    def add_ann(self, kind: str, info: dict) -> None:
        """Enter a structure `t1.index.ann.build` wrote in the manifest (with its file's size and
        checksum) and drop any copy of the old one loaded."""
        from .build import hold_lock

        with hold_lock(self.folder):  # no update may commit between this check and the write
            if generation(read_manifest(self.folder) or {}) != self.generation:
                raise T1Error(f"{self.folder}: the index was updated while the {kind} structure was built over an "
                              "older generation; build it again")
            self.manifest.setdefault("ann", {})[kind] = info
            self.record_files([info["file"]])
        self._ann_loaded.pop(kind, None)

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
        kind = self.resolve_ann(ann)
        rows = self.chunk_rows or (FEW_QUERIES_CHUNK_ROWS if len(query_embeddings) < FEW_QUERIES else None)
        if kind is None:
            return exact_search(query_embeddings, self.chunks(rows), k, excluded, backend)
        from .ann import search as ann_search

        setting, info = self._ann_setting, self.manifest["ann"][kind]
        covered = info["count"]  # rows added by later updates are searched exactly, then merged
        scores, positions = ann_search(self.ann_index(kind), info, query_embeddings, k,
                                       None if excluded is None else [e[e < covered] for e in excluded],
                                       ef_search=ef_search or setting["ef_search"], nprobe=nprobe or setting["nprobe"],
                                       refine=refine or setting["refine"])
        if covered == self.rows:
            return scores, positions
        tail = ((o, c) for o, c in self.chunks(rows) if o + len(c) > covered)
        tail = ((max(o, covered), c[max(0, covered - o):]) for o, c in tail)
        more_s, more_p = exact_search(query_embeddings, tail, k, excluded, backend)
        scores, positions = best_first(np.concatenate([scores, more_s], 1), np.concatenate([positions, more_p], 1), k)
        positions[~np.isfinite(scores)] = -1
        return scores, positions

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
        """Per-query row positions of the excluded ids (ids not in the index are ignored), and
        of the deleted rows (tombstones), which no query gets."""
        exclude = exclusion_sets(exclude, n_queries)
        if exclude is None or not any(exclude):
            return None if not len(self._dead) else [self._dead] * n_queries
        out = [np.array(sorted(self._position[i] for i in ex if i in self._position), dtype=np.int64) for ex in exclude]
        return out if not len(self._dead) else [np.union1d(e, self._dead) for e in out]

    def _excluded_live(self, exclude, n_queries: int) -> list[np.ndarray] | None:
        """The excluded ids as rows of this generation's BM25 (the live documents, in order)."""
        exclude = exclusion_sets(exclude, n_queries)
        if exclude is None or not any(exclude):
            return None
        return [np.searchsorted(self._live, sorted(self._position[i] for i in ex if i in self._position)).astype(
            np.int64) for ex in exclude]

    def search_hybrid(self, query_embeddings: np.ndarray, query_texts: Sequence[str], k: int = 10, exclude=None,
                      fusion: str = "rrf", weight: float = 0.5, depth: int = 100) -> list[list[Hit]]:
        """Dense and BM25 top-`depth` lists, exclusions removed from both, fused (`t1.index.fusion`)
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
        excluded = self._excluded_live(exclude, len(query_texts))
        bm25 = self.bm25
        sparse = bm25.search(list(query_texts), min(depth, len(self)), excluded) if bm25 else [[]] * len(dense)
        out = []
        for d_hits, s_hits in zip(dense, sparse):
            fused = fuse([{h.id: h.score for h in d_hits}, {self.ids[i]: s for i, s in s_hits}], fusion,
                         [weight, 1.0 - weight], k)
            records = self._records(self._position[i] for i, _ in fused)
            out.append([_make_hit(records[self._position[i]], s) for i, s in fused])
        return out


def open_built(folder: str | Path):
    """The index in `folder`, or None where none was built yet (the vector stores' first add
    builds it)."""
    return Index.open(folder) if (Path(folder) / MANIFEST).is_file() else None


def upsert_or_build(index, model, documents: Sequence[Document], folder: str | Path, instruction: str | None = None):
    """`index` with `documents` upserted; where there is no index yet (None), one built from them
    in `folder`. What the LangChain and LlamaIndex vector stores' add does."""
    if index is None:
        return Index.build(model, documents, folder, instruction=instruction, show_progress_bar=False)
    index.update(model, documents)
    return index


def _stamp(folder: Path) -> tuple | None:
    """What changes when a writer replaces the manifest (a rename gives it a new inode)."""
    try:
        st = (folder / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _damaged_bm25(folder: Path, why: str) -> T1Error:
    return T1Error(f"{folder}: damaged BM25 index ({why.splitlines()[0][:120]}); delete the folder and run `t1 "
                   "index` again with the same arguments to rebuild it (nothing is re-encoded)")


def _make_hit(doc: dict, score: float) -> Hit:
    return Hit(doc["id"], float(score), doc.get("title", ""), doc.get("snippet", ""))
