"""Updating an index folder in place: upsert, delete, compact, each one new generation.

Every change runs under the folder's write lock (`build.hold_lock`: a second writer is refused
at once, naming the holder) against the newest manifest read under that lock, in this order:

1. files a killed writer left, and retired files past their grace, are removed
   (`segments.remove_unreferenced`);
2. `upsert` encodes the new and changed documents into a new segment folder, written whole or
   not at all (`atomic_folder`) — test hook point "after-segment";
3. the BM25 index of the live documents is written into a new `bm25-NNNNNN/` — "after-bm25";
4. the manifest of generation N+1 replaces `manifest.json` in one rename — "after-manifest".

A kill before step 4 leaves generation N (the new folders are unreferenced, and the next writer
deletes them); after it, generation N+1. Rerunning the command finishes the job: an upsert
skips what N+1 already holds (by content hash).

BM25 stays exact — the scores of a fresh build of the live documents — by re-indexing the
words of every live document at each commit (`BM25Index.index_words`, bm25s), from the words
the previous generation's BM25 kept (`t1_tokens.jsonl`) plus the new documents' words. Why this
route: bm25s stores each (document, term) score, and those depend on the document count, the
document frequencies and the average length, so any commit changes the stored scores of every
document anyway; merging per-segment term statistics at query time instead would re-implement
bm25s's scoring. Of the two ways to re-index, tokenising the texts again would need the full
texts, which an index folder does not keep (only 300-character snippets), and is slower:
measured on SciFact's 5,183 abstracts (`benchmarks/living_index.py`, three runs on 2 CPU cores
shared with other jobs), re-indexing the kept words took 0.5-1.1 s (reading them 0.12-0.17 s,
bm25s indexing 0.3-0.8 s, saving 0.1 s) against 1.1-1.9 s when tokenising again (0.75-0.9 s of it
tokenising); a whole commit of one document into a 4,082-document index took 0.9-1.2 s. Compaction keeps the BM25
as it is: it indexes the live documents in the order the compacted rows take.

Dense scores need nothing: a document's embedding does not depend on the others. An approximate
structure (`t1.index.ann`) covers the rows it was built over; rows added later are searched
exactly and merged, and deleted rows are excluded as excluded ids are; `compact` rebuilds it.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..atomic import atomic_folder, remove_temporaries, save_npy, write_json, write_jsonl
from ..data import Document, check_documents
from ..errors import T1Error
from .ann import MIN_IVF_ROWS
from .ann import build as build_ann
from .build import hold_lock, is_own
from .format import check_built_with, content_hash, corpus_hash, describe_shard_file, doc_row, shard_name
from .manifest import MANIFEST, describe_file
from .segments import (
    bm25_dir,
    deleted,
    generation,
    live_positions,
    referenced,
    remove_unreferenced,
    retire_grace_s,
    segment_name,
    total_rows,
)

DIE_ENV = "T1_TEST_DIE_AT"  # tests: SIGKILL this process at a named point of an update


@dataclass
class UpdateReport:
    """What an update did: the ids in each outcome, and the generation it committed."""

    generation: int
    documents: int  # live documents after it
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    compacted: bool = False
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.deleted or self.compacted)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        parts = [f"{len(getattr(self, k))} {k.replace('_', ' ')}" for k in
                 ("added", "replaced", "unchanged", "deleted", "not_found")]
        missing = f" (not found: {', '.join(self.not_found[:5])}{' ...' if len(self.not_found) > 5 else ''})"
        what = "compacted" if self.compacted else ", ".join(parts)
        return (f"{what}{missing if self.not_found else ''}; generation {self.generation}, {self.documents} "
                "documents")


def _die_at(point: str) -> None:
    if os.environ.get(DIE_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def check_same_build(manifest: dict, where, model, instruction: str | None = None) -> None:
    """An update embeds with what the index was built with: the same model (fingerprint), the
    same document engine, the same instruction; anything else is refused, naming it."""
    check_built_with(manifest, where, model, instruction)
    built, given = manifest.get("engine", "hf"), model.document_engine.name
    if given != built:
        raise T1Error(f"{where}: index was embedded by the {built} document engine, not {given}; update it with "
                      f"--engine {built}")


def check_batch(documents: Sequence[Document]) -> None:
    """`documents` are `Document`s, each id once."""
    check_documents(documents)
    first: dict[str, int] = {}
    for i, d in enumerate(documents):
        if d.id in first:
            raise T1Error(f"documents[{i}]: id {d.id!r} is given twice (first at documents[{first[d.id]}])")
        first[d.id] = i


def sort_changes(documents: Sequence[Document], known: dict[str, str | None], report: UpdateReport) -> list[Document]:
    """The documents to encode: those whose id is not `known` (added) and those whose content
    hash differs from the known one (replaced); the others are unchanged. Fills `report`."""
    new = []
    for d in documents:
        if d.id not in known:
            report.added.append(d.id)
        elif known[d.id] == content_hash(d):
            report.unchanged.append(d.id)
            continue
        else:
            report.replaced.append(d.id)
        new.append(d)
    return new


def document_encoder(model, manifest: dict, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    """texts -> embeddings as the index (or store) of `manifest` embedded its documents."""
    def encode(texts: list[str]) -> np.ndarray:
        return model.encode_document(texts, instruction=manifest["instruction"], max_length=manifest["max_length"],
                                     batch_size=batch_size, show_progress_bar=False)

    return encode


# ---------------------------------------------------------------- the three changes
def upsert(index, model, documents: Sequence[Document], batch_size: int = 32, instruction: str | None = None,
           encode: Callable[[list[str]], np.ndarray] | None = None) -> UpdateReport:
    """Add the documents whose ids are new, re-encode those whose title or text changed, skip
    the unchanged; one new generation (none when nothing changed)."""
    start = time.perf_counter()
    check_batch(documents)
    with hold_lock(index.folder):
        cur = _newest(index)
        check_same_build(cur.manifest, cur.folder, model, instruction)
        _words_of(cur)  # refuse an old BM25 before anything is encoded
        known = {row["id"]: row.get("hash") for row in (cur._docs[p] for p in cur._live)}
        report = UpdateReport(cur.generation, len(cur))
        new = sort_changes(documents, known, report)
        if not new:
            return _done(report, start)
        m = cur.manifest
        encode = encode or document_encoder(model, m, batch_size)
        rows = [doc_row(d) for d in new]
        embeddings = [np.asarray(encode([d.full_text for d in new]), dtype=m["dtype"])]
        words = _tokenize(cur, new)
        gone = [cur._position[i] for i in report.replaced]
        return _done(_commit(cur, rows, embeddings, words, gone, report), start)


def delete(index, ids: Iterable[str]) -> UpdateReport:
    """Tombstone the documents with these ids; one new generation (none when none is found)."""
    start = time.perf_counter()
    ids = list(dict.fromkeys(ids))
    bad = next((i for i in ids if not isinstance(i, str) or not i), None)
    if bad is not None:
        raise T1Error(f"document ids to delete must be non-empty strings, got {bad!r}")
    with hold_lock(index.folder):
        cur = _newest(index)
        report = UpdateReport(cur.generation, len(cur))
        report.deleted = [i for i in ids if i in cur._position]
        report.not_found = [i for i in ids if i not in cur._position]
        if not report.deleted:
            return _done(report, start)
        gone = [cur._position[i] for i in report.deleted]
        return _done(_commit(cur, [], [], [], gone, report), start)


def compact(index) -> UpdateReport:
    """Merge the live rows of every segment into one new segment (tombstones dropped), keep the
    BM25 (already that of the live documents, in this order), and rebuild each approximate
    structure over the result."""
    start = time.perf_counter()
    with hold_lock(index.folder):
        cur = _newest(index)
        report = UpdateReport(cur.generation, len(cur), compacted=True)
        if not cur.manifest.get("segments") and not len(cur._dead):
            report.compacted = False
            return _done(report, start)
        live = set(cur._live.tolist())
        rows = [r for p, r in enumerate(cur._docs) if p in live]

        def blocks():
            for (offset, chunk) in cur.chunks():
                keep = [i for i in range(len(chunk)) if offset + i in live]
                yield chunk[keep].copy()

        m = _next_manifest(cur)
        seg = _write_segment(cur, m, rows, blocks())
        m.update(count=0, shards=0, segments=[seg], deleted=[], ann={},
                 corpus_hash=corpus_hash([Document(r["id"], r.get("hash", ""), r.get("title", "")) for r in rows]))
        if "files" in m:  # what the compacted generation holds: its segment and its BM25
            m["files"] = {**{n: f for n, f in m["files"].items() if n.split("/")[0] == bm25_dir(m)},
                          **_segment_files(cur.folder, seg)}
        kinds = [k for k in cur.manifest.get("ann", {}) if k != "ivf-pq" or len(rows) >= MIN_IVF_ROWS]
        for kind in kinds:  # built before the switch: the new generation has its structures at once
            params = cur.manifest["ann"][kind].get("params", {})
            info = build_ann(type(cur)(cur.folder, m), kind, record=False,
                             **{k: v for k, v in params.items() if k in ("m", "ef_construction")},
                             show_progress_bar=False)
            m["ann"][kind] = info
            if "files" in m:
                m["files"][info["file"]] = describe_file(cur.folder / info["file"])
        report = _switch(cur, m, report)
        return _done(report, start)


# ---------------------------------------------------------------- the steps
def _newest(index):
    """The folder's newest generation, read under the lock (not the caller's, maybe older)."""
    cur = type(index).open(index.folder)
    remove_temporaries(cur.folder, own=lambda name: is_own(name, temporary=True))  # a killed writer's
    cur.manifest["retired"] = remove_unreferenced(cur.folder, cur.manifest)
    return cur


def _words_of(cur) -> list[list[str]] | None:
    """The words of each live document, as the generation's BM25 kept them (None: no BM25)."""
    if "bm25" not in cur.manifest:
        return None
    if not len(cur):
        return []
    from .bm25 import BM25Index

    words = BM25Index.load_words(cur.folder / bm25_dir(cur.manifest))
    if words is None:
        raise T1Error(f"{cur.folder}: its BM25 index was built before t1 kept the words of each document, which an "
                      f"update needs to keep BM25 exact; delete {cur.folder / bm25_dir(cur.manifest)} and run `t1 "
                      f"index --corpus CORPUS --out {cur.folder}` once (nothing is re-encoded), then update")
    if len(words) != len(cur):
        raise T1Error(f"{cur.folder}: damaged BM25 index ({len(words)} rows of words, {len(cur)} documents); delete "
                      f"{cur.folder / bm25_dir(cur.manifest)} and rebuild the index")
    return words


def _bm25(cur):
    """A BM25 index with the settings the generation's was built with (the defaults for those it
    does not record)."""
    from .bm25 import BM25Index

    s = cur.manifest["bm25"]
    return BM25Index(**{k: s[k] for k in ("k1", "b", "stemmer", "stopwords") if k in s})


def _tokenize(cur, documents: Sequence[Document]) -> list[list[str]]:
    return _bm25(cur).tokenize([d.full_text for d in documents]) if "bm25" in cur.manifest else []


def _next_manifest(cur) -> dict:
    m = copy.deepcopy(cur.manifest)
    m["generation"] = cur.generation + 1
    return m


def _write_segment(cur, m: dict, rows: list[dict], blocks: Iterable[np.ndarray]) -> dict:
    """Rows and their embeddings as segment `seg-<generation>`, in shards, whole or not at all."""
    name, size = segment_name(m["generation"]), m["shard_size"]
    emb = np.concatenate([np.asarray(b, dtype=m["dtype"]).reshape(-1, m["dim"]) for b in blocks] or
                         [np.empty((0, m["dim"]), m["dtype"])])
    if len(emb) != len(rows):
        raise T1Error(f"{cur.folder}: {len(emb)} embeddings for {len(rows)} documents")
    shards = -(-len(rows) // size)
    with atomic_folder(cur.folder / name) as tmp:
        for i in range(shards):
            e, d = shard_name(i)
            write_jsonl(tmp / d, rows[i * size : (i + 1) * size])
            save_npy(tmp / e, emb[i * size : (i + 1) * size])
    _die_at("after-segment")
    return {"name": name, "count": len(rows), "shards": shards}


def _segment_files(folder: Path, seg: dict) -> dict:
    return {f"{seg['name']}/{n}": describe_shard_file(folder / seg["name"] / n)
            for i in range(seg["shards"]) for n in shard_name(i)}


def _commit(cur, rows, embeddings, words, gone: list[int], report: UpdateReport) -> UpdateReport:
    """Generation N+1: a segment of `rows` (if any), `gone` rows tombstoned, BM25 re-indexed."""
    m = _next_manifest(cur)
    if rows:
        seg = _write_segment(cur, m, rows, embeddings)
        m["segments"] = [*m.get("segments", []), seg]
        if "files" in m:
            m["files"].update(_segment_files(cur.folder, seg))
    m["deleted"] = sorted({*m.get("deleted", []), *gone})
    if "bm25" in m:
        old = dict(zip(cur._live.tolist(), _words_of(cur)))
        first = total_rows(cur.manifest)
        old.update({first + j: w for j, w in enumerate(words)})
        live = [old[p] for p in live_positions(m).tolist()]
        name = f"bm25-{m['generation']:06d}"
        if live:
            _bm25(cur).index_words(live).save(cur.folder / name)
        m["bm25"] = {**m["bm25"], "dir": name}
        if "files" in m:
            m["files"] = {n: f for n, f in m["files"].items() if n.split("/")[0] != bm25_dir(cur.manifest)}
            if live:
                m["files"].update({p.relative_to(cur.folder).as_posix(): describe_file(p)
                                   for p in sorted((cur.folder / name).iterdir())})
        _die_at("after-bm25")
    return _switch(cur, m, report)


def _switch(cur, m: dict, report: UpdateReport) -> UpdateReport:
    """Replace the manifest (the one atomic step), retiring what generation N named and N+1
    does not; return the report of generation N+1."""
    now = time.time()
    retired = dict(cur.manifest.get("retired", {}))
    retired.update({name: now for name in referenced(cur.manifest) - referenced(m)})
    m["retired"] = retired
    write_json(cur.folder / MANIFEST, m)
    _die_at("after-manifest")
    report.generation = m["generation"]
    report.documents = total_rows(m) - len(deleted(m))
    return report


def _done(report: UpdateReport, start: float) -> UpdateReport:
    report.seconds = round(time.perf_counter() - start, 3)
    return report


__all__ = ["UpdateReport", "compact", "delete", "generation", "retire_grace_s", "upsert"]
