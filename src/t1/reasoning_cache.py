"""A persistent cache of generated reasoning: re-running a search or an evaluation with another
k, fusion weight or metric generates nothing.

An entry is keyed by everything that decides the trace and its embedding: the model fingerprint,
the exact prompt token ids (instruction, query, chat template and truncation included), every
decoding setting, and the sample number when several traces are drawn per query. A trace is
therefore never served for another model, instruction or decoding setting. The store is SQLite:
each batch is one transaction, so a process killed mid-way keeps every batch it finished and
never leaves half an entry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import write_jsonl
from .errors import T1Error

logger = logging.getLogger(__name__)

FILE_NAME = "reasoning-cache.sqlite"
COLUMNS = ("key", "model", "query_id", "instruction", "query", "reasoning", "ended", "embedding", "settings", "created")
# Traces of another writer (`t1.reasoners`): text only, keyed by the writer's identity and the
# messages it was sent, so any T1 model can embed them.
WRITTEN = ("key", "writer", "query_id", "instruction", "query", "reasoning", "ended", "settings", "created")


def _create_tables(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE IF NOT EXISTS traces (key TEXT PRIMARY KEY, {', '.join(COLUMNS[1:])})")
    db.execute(f"CREATE TABLE IF NOT EXISTS written (key TEXT PRIMARY KEY, {', '.join(WRITTEN[1:])})")


def _read_only(e: BaseException) -> bool:
    """Whether opening failed because the cache's file or folder cannot be written (a read-only
    mount, permissions, an immutable file), not because it is damaged or locked."""
    if isinstance(e, OSError):
        return e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    return any(s in str(e) for s in ("readonly", "unable to open database file"))


class ReasoningCache:
    """The cache file at `path` (a folder holds it as FILE_NAME). One that cannot be written (a
    read-only, mounted or archived index) is read as it is, and the traces generated meanwhile
    are kept in memory for the run, with one warning: a search of such an index still works."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path / FILE_NAME if path.is_dir() or not path.suffix else path
        self.memory = None  # where new traces go when the file cannot take them
        try:
            self.db = self._connect()
        except (OSError, sqlite3.Error) as e:
            if not _read_only(e):
                raise T1Error(f"{self.path}: cannot open the reasoning cache ({e}); fix it, name another file with "
                              "--reasoning-cache, or pass --no-reasoning-cache") from None
            self.db = self._connect_read_only()
            self.memory = sqlite3.connect(":memory:")
            _create_tables(self.memory)
            logger.warning("%s: the reasoning cache cannot be written (%s); its traces are used, and new ones are "
                           "kept for this run only (--no-reasoning-cache: none at all)", self.path, e)
        columns = tuple(row[1] for row in self.db.execute("PRAGMA table_info(traces)")) if self.db else COLUMNS
        if columns != COLUMNS:
            raise T1Error(f"{self.path}: not a t1 reasoning cache (its table 'traces' has the columns "
                          f"{', '.join(columns)}); name another file with --reasoning-cache")

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            _create_tables(db)
            db.execute("BEGIN IMMEDIATE")  # can it be written? (a read-only file opens, then refuses)
            db.execute("ROLLBACK")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _connect_read_only(self) -> sqlite3.Connection | None:
        """The file opened read-only (immutable where even SQLite's WAL index cannot be made
        beside it), or None when there is no file to read."""
        if not self.path.is_file():
            return None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True)
                db.execute("SELECT COUNT(*) FROM traces").fetchone()
                return db
            except sqlite3.Error as e:
                problem = e
        raise T1Error(f"{self.path}: cannot read the reasoning cache ({problem}); pass --no-reasoning-cache") from None

    @staticmethod
    def key(fingerprint: str, prompt_ids: Sequence[int], settings: dict, sample: int = 0) -> str:
        blob = json.dumps([fingerprint, list(prompt_ids), settings, sample], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, tuple[str, bool, np.ndarray]]:
        """{key: (reasoning, ended, raw embedding)} for the keys that are cached."""
        return {key: (reasoning, bool(ended), np.frombuffer(blob, dtype=np.float32).copy())
                for key, reasoning, ended, blob in self._select("traces", "reasoning, ended, embedding", keys)}

    def _select(self, table: str, columns: str, keys: Sequence[str]):
        """Rows (key, columns...) of `table` for `keys`, from the file and the run's memory."""
        with self._errors("read"):
            for db in (self.db, self.memory):
                for start in range(0, len(keys), 500) if db is not None else ():
                    part = list(keys[start: start + 500])
                    yield from db.execute(f"SELECT key, {columns} FROM {table} WHERE key IN "
                                          f"({','.join('?' * len(part))})", part)

    @contextmanager
    def _errors(self, doing: str):
        """SQLite's errors (a full disk, a read-only or locked file) as one line naming the file."""
        try:
            yield
        except sqlite3.Error as e:
            raise T1Error(f"{self.path}: cannot {doing} the reasoning cache ({e}); fix it and re-run the same "
                          "command (finished batches are kept), or pass --no-reasoning-cache") from None

    def put(self, rows: Iterable[dict]) -> None:
        """Store rows (dicts with the COLUMNS but `created`) in one transaction."""
        now = time.time()
        values = []
        for row in rows:
            row = {**row, "ended": int(row["ended"]), "settings": json.dumps(row["settings"], sort_keys=True),
                   "embedding": np.asarray(row["embedding"], dtype=np.float32).tobytes(), "created": now}
            values.append(tuple(row.get(c) for c in COLUMNS))
        with self._errors("write"), self._writable as db:
            db.executemany(f"INSERT OR REPLACE INTO traces VALUES ({', '.join('?' * len(COLUMNS))})", values)

    def get_written(self, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """{key: (reasoning, ended)} of the writer traces that are cached."""
        return {key: (reasoning, bool(ended)) for key, reasoning, ended in self._select("written", "reasoning, ended",
                                                                                        keys)}

    def put_written(self, rows: Iterable[dict]) -> None:
        """Store writer traces (dicts with the WRITTEN columns but `created`) in one transaction."""
        now = time.time()
        values = [tuple({**row, "ended": int(row["ended"]), "settings": json.dumps(row["settings"], sort_keys=True),
                         "created": now}.get(c) for c in WRITTEN) for row in rows]
        with self._errors("write"), self._writable as db:
            db.executemany(f"INSERT OR REPLACE INTO written VALUES ({', '.join('?' * len(WRITTEN))})", values)

    def close(self) -> None:
        """Close the file (SQLite then folds its write-ahead log in and removes it)."""
        for db in (self.db, self.memory):
            if db is not None:
                db.close()

    @property
    def _writable(self) -> sqlite3.Connection:
        """Where new traces go: the file, or the run's memory when the file is read-only."""
        return self.memory if self.memory is not None else self.db

    def __len__(self) -> int:
        return sum(db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] for db in (self.db, self.memory) if db)

    def export(self, out: str | Path, model: str | None = None) -> int:
        """Write the cached traces as JSONL `{id, query, reasoning, ...}`, the layout of BRIGHT's
        `<model>_reason` sets, so they can be published and replayed in mode `given`. T1's own
        traces name their `model`; another writer's name it as `writer` (kind, source, model,
        prompt). `model` keeps the traces of one T1 model or one writer (its source or model)."""
        sql = "SELECT model, query_id, instruction, query, reasoning, ended, settings FROM traces"
        rows = self.db.execute(sql + (" WHERE model = ?" if model else "") + " ORDER BY rowid",
                               (model,) if model else ())
        records = [{"id": qid if qid is not None else f"q{i}", "query": q, "reasoning": r, "instruction": ins,
                    "model": m, "ended": bool(e), "settings": json.loads(s)}
                   for i, (m, qid, ins, q, r, e, s) in enumerate(rows, 1)]
        sql = "SELECT writer, query_id, instruction, query, reasoning, ended, settings FROM written ORDER BY rowid"
        for w, qid, ins, q, r, e, s in self.db.execute(sql):
            writer = json.loads(w)
            if model and model not in (writer.get("source"), writer.get("model")):
                continue
            records.append({"id": qid if qid is not None else f"q{len(records) + 1}", "query": q, "reasoning": r,
                            "instruction": ins, "writer": writer, "ended": bool(e), "settings": json.loads(s)})
        write_jsonl(out, records)
        return len(records)
