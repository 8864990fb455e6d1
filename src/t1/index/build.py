"""Building an index: the shard loop every build runs, one process or many, into a folder or a
vector database (a `ShardSink`).

Building is resumable: each shard's docs file is written, then its .npy (both atomically), and
a shard counts as done only once its .npy exists, so an interrupted build re-run with the same
arguments continues from the last complete shard.

Building is also distributed: under `torchrun` / `accelerate launch` (an initialized process
group, see `t1.distributed`) rank 0 lists the missing shards, the ranks encode disjoint shares of
them into the same folder (a filesystem they all see), and rank 0 marks the index complete once
every shard exists. A rerun after any rank died resumes like a one-process build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..atomic import check_output_folder, remove_temporaries, save_npy, write_json, write_jsonl
from ..data import Document
from ..errors import T1Error
from ..prompts import instruction_or_default
from .format import FORMAT_VERSION, SNIPPET_CHARS, corpus_hash, describe_shard_files, doc_row, shard_name
from .manifest import MANIFEST, read_manifest

SHARD_WAIT_S = 120.0  # how long rank 0 waits for another rank's shard to show on a shared filesystem
LOCK = ".t1-index.lock"  # held (fcntl) by the process writing the folder; holds its pid
# What t1 writes into an index folder; `.NAME.XXXX.tmp` and `.NAME.XXXX` are its temporaries
OWN = re.compile(r"manifest\.json|emb-\d{5,}\.npy|docs-\d{5,}\.jsonl|bm25|ann-[a-z0-9-]+\.faiss|seg-\d{6,}|bm25-\d{6,}|"
                 r"reasoning-cache\.sqlite(-wal|-shm|-journal)?|\.t1-index\.lock")
TEMPORARY = re.compile(r"\.(?P<name>.+?)\.(old\.)?[a-z0-9_]+(\.tmp)?")


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

    def acquire(self) -> None:
        """Take the sink's write lock (rank 0, for the whole build: `release` ends it)."""

    def release(self) -> None:
        """End the write lock `acquire` took, if any."""


class FolderSink(ShardSink):
    def __init__(self, folder: Path):
        self.folder = folder

    def read_manifest(self) -> dict | None:
        return read_manifest(self.folder)

    def has_shards(self) -> bool:
        return any(self.folder.glob("emb-*.npy"))

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.folder / MANIFEST, manifest)

    def done(self, i, chunk) -> bool:
        return (self.folder / shard_name(i)[0]).exists()

    def write(self, i, chunk, embeddings) -> None:
        emb_file, docs_file = shard_name(i)
        write_jsonl(self.folder / docs_file, (doc_row(d) for d in chunk))
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
        return {"files": describe_shard_files(self.folder, shards)}

    def clean(self) -> None:
        remove_temporaries(self.folder, own=lambda name: is_own(name, temporary=True))

    def acquire(self) -> None:
        self.lock = hold_lock(self.folder)
        self.lock.__enter__()

    def release(self) -> None:
        lock, self.lock = getattr(self, "lock", None), None
        if lock is not None:
            lock.__exit__(None, None, None)


def is_own(name: str, temporary: bool = False) -> bool:
    """Whether t1 wrote the entry `name` of an index folder (`temporary`: only its temporaries)."""
    match = TEMPORARY.fullmatch(name)
    if match and OWN.fullmatch(match["name"]):
        return True
    return not temporary and bool(OWN.fullmatch(name))


def check_index_folder(folder: Path) -> None:
    """Refuse a folder that holds what t1 did not write (a build would clean it or write among
    it) or a manifest.json of something else (it would be replaced)."""
    if not folder.is_dir():
        return
    foreign = sorted(name for name in os.listdir(folder) if not is_own(name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise T1Error(f"{folder}: holds files that are not a t1 index's ({shown}); an index is written into a new "
                      "or empty folder, or one t1 wrote")
    manifest = read_manifest(folder)
    if manifest is not None and not {"format_version", "model"} <= set(manifest):
        raise T1Error(f"{folder}/{MANIFEST}: not a t1 index manifest (no 'format_version' and 'model'); an index "
                      "is written into a new or empty folder, or one t1 wrote")


@contextmanager
def hold_lock(folder: Path):
    """The folder's write lock for the block: a second writer (another `t1 index` into the same
    folder) is refused at once with the holder's pid rather than waiting behind a build that may
    take hours, or mixing its shards into this one. The lock is the kernel's (fcntl), so a
    killed holder frees it."""
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise T1Error(f"{folder}: cannot write there ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise T1Error(f"{folder}: another t1 process (pid {holder}) is writing this index; wait for it to end, or "
                      "write to another folder") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)  # an index folder's bytes do not depend on who built it
        os.close(fd)


def check_unlocked(folder: Path) -> None:
    """Refuse now, before a model loads, if another process is writing `folder`."""
    if (folder / LOCK).is_file():
        with hold_lock(folder):
            pass


# Documents encoded between two moves of the progress bar: a shard (8,192 by default) takes minutes
# on a CPU; a piece of this size is still long enough for length-sorted batches.
PROGRESS_DOCS = 1024


def build_shards(sink: ShardSink, model, documents: Sequence[Document], spec: dict, *, where: str,
                 encode: Callable[[Sequence[Document]], np.ndarray], group=None,
                 show_progress_bar: bool | None = None) -> tuple[dict, bool]:
    """Encode `documents` shard by shard into `sink`, resuming, split over the ranks of `group`.

    Rank 0 checks an existing manifest against `spec` and lists the missing shards; each rank
    encodes every world-th of them; rank 0 marks the manifest complete once all exist. Returns
    (the manifest, whether it was complete before this call), the same on every rank."""
    from ..distributed import current

    group = group or current()
    shard_size = spec["shard_size"]
    if shard_size < 1:
        raise T1Error(f"shard size must be at least 1, got {shard_size}")
    starts = range(0, len(documents), shard_size)
    shards = [(i, documents[start : start + shard_size]) for i, start in enumerate(starts)]
    state = None
    if group.is_main:
        try:
            sink.acquire()
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
            chunk, parts = shards[i][1], []
            for start in range(0, len(chunk), PROGRESS_DOCS):  # the bar moves within a shard too
                parts.append(encode(chunk[start:start + PROGRESS_DOCS]))
                bar.update(len(parts[-1]))
            sink.write(i, chunk, np.concatenate(parts))
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


def write_embeddings(folder: Path, embeddings, ids: Sequence[str], titles: Sequence[str] | None,
                     snippets: Sequence[str] | None, shard_size: int, dtype: str, model_name: str) -> dict:
    """Write embeddings computed elsewhere (`Index.from_embeddings`) as the shards of a complete
    index tied to no T1 model; returns its manifest."""
    if dtype not in ("float16", "float32"):
        raise T1Error(f"dtype must be float16 or float32, got {dtype!r}")
    if shard_size < 1:
        raise T1Error(f"shard size must be at least 1, got {shard_size}")
    folder = Path(folder)
    check_writable(folder)
    with hold_lock(folder):
        return _write_embeddings(folder, embeddings, ids, titles, snippets, shard_size, dtype, model_name)


def _write_embeddings(folder, embeddings, ids, titles, snippets, shard_size, dtype, model_name) -> dict:
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
        emb_file, docs_file = shard_name(shard)
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
                "files": describe_shard_files(folder, shard)}
    write_json(folder / MANIFEST, manifest)
    return manifest


@dataclass
class BuildPlan:
    """What every store's build starts from (`plan_build`): the settings a resume must match,
    how a chunk of documents is encoded, and the processes that share the work."""

    spec: dict
    encode: Callable[[Sequence[Document]], np.ndarray]
    group: object


def plan_build(model, documents: Sequence[Document], instruction: str | None, max_length: int | None,
               shard_size: int, dtype: str, batch_size: int, group=None) -> BuildPlan:
    """The one prologue of `Index.build` and `QdrantIndex.build`: the arguments checked, the
    build's spec, and an encoder of chunks (embeddings in `dtype`) with the spec's settings."""
    from ..data import check_documents
    from ..distributed import current

    if dtype not in ("float16", "float32"):
        raise T1Error(f"dtype must be float16 or float32, got {dtype!r}")
    if not check_documents(documents):
        raise T1Error("cannot index an empty corpus")
    if batch_size < 1:
        raise T1Error(f"batch size must be at least 1, got {batch_size}")
    spec = index_spec(model, documents, instruction, max_length, shard_size, dtype)

    def encode(chunk: Sequence[Document]) -> np.ndarray:
        emb = model.encode_document([d.full_text for d in chunk], instruction=spec["instruction"],
                                    max_length=spec["max_length"], batch_size=batch_size, show_progress_bar=False)
        return emb.astype(dtype)

    return BuildPlan(spec, encode, group or current())


def index_spec(model, documents: Sequence[Document], instruction: str | None, max_length: int | None,
               shard_size: int, dtype: str) -> dict:
    """The settings that identify a build (what a resumed build must match)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": model.name_or_path, "fingerprint": model.fingerprint()},
        "engine": model.document_engine.name,  # a build never resumes with other arithmetic (`t1.encoders`)
        "instruction": instruction_or_default(instruction, model.config.document_instruction),
        "max_length": max_length or model.config.max_document_length,
        "dim": model.dim,
        "dtype": dtype,
        "count": len(documents),
        "shard_size": shard_size,
        "corpus_hash": corpus_hash(documents),
    }


def check_output(folder: str | Path, documents: Sequence[Document], shard_size: int, dtype: str,
                 inputs=()) -> None:
    """What can be checked of an index folder before the model loads: that it can be written,
    holds none of the command's `inputs` nor files t1 did not write, no other process writes
    it, and an index already there was built from the same corpus with the same layout."""
    folder = Path(check_output_folder(folder, inputs))
    check_index_folder(folder)
    if folder.is_dir():
        check_unlocked(folder)
    old = _binding(read_manifest(folder), FolderSink(folder)) if folder.is_dir() else None
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
    if what == ["engine"]:
        raise T1Error(f"{where} holds an index embedded by the {old.get('engine', 'hf')} document engine, not "
                      f"{spec['engine']}; resume with --engine {old.get('engine', 'hf')}, or use another output folder")
    if what:
        raise T1Error(f"{where} holds an index built with a different {', '.join(what)}; "
                      "use another output folder or delete this one")


def _differences(old: dict, spec: dict) -> list[str]:
    """Settings in which an existing manifest differs from a new build's. The model is
    identified by its fingerprint, not by the path it was loaded from."""
    def key(k, manifest):
        if k == "engine":
            return manifest.get(k, "hf")  # indexes older than document engines were built by hf
        return manifest.get(k, {}).get("fingerprint") if k == "model" else manifest.get(k)

    return [k for k in spec if key(k, old) != key(k, spec)]


def check_writable(folder: Path) -> None:
    check_output_folder(folder)
    check_index_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise T1Error(f"{folder}: cannot create output folder ({e.strerror})") from None
