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

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import write_jsonl
from .errors import T1Error

FILE_NAME = "reasoning-cache.sqlite"
COLUMNS = ("key", "model", "query_id", "instruction", "query", "reasoning", "ended", "embedding", "settings", "created")
# Traces of another writer (`t1.reasoners`): text only, keyed by the writer's identity and the
# messages it was sent, so any T1 model can embed them.
WRITTEN = ("key", "writer", "query_id", "instruction", "query", "reasoning", "ended", "settings", "created")


class ReasoningCache:
    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path / FILE_NAME if path.is_dir() or not path.suffix else path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS traces (key TEXT PRIMARY KEY, {', '.join(COLUMNS[1:])})")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS written (key TEXT PRIMARY KEY, {', '.join(WRITTEN[1:])})")
            columns = tuple(row[1] for row in self.db.execute("PRAGMA table_info(traces)"))
        except (OSError, sqlite3.Error) as e:
            raise T1Error(f"{self.path}: cannot open the reasoning cache ({e})") from None
        if columns != COLUMNS:
            raise T1Error(f"{self.path}: not a t1 reasoning cache (its table 'traces' has the columns "
                          f"{', '.join(columns)}); name another file with --reasoning-cache")

    @staticmethod
    def key(fingerprint: str, prompt_ids: Sequence[int], settings: dict, sample: int = 0) -> str:
        blob = json.dumps([fingerprint, list(prompt_ids), settings, sample], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, tuple[str, bool, np.ndarray]]:
        """{key: (reasoning, ended, raw embedding)} for the keys that are cached."""
        found = {}
        with self._errors("read"):
            for start in range(0, len(keys), 500):
                part = list(keys[start: start + 500])
                marks = ",".join("?" * len(part))
                for key, reasoning, ended, blob in self.db.execute(
                        f"SELECT key, reasoning, ended, embedding FROM traces WHERE key IN ({marks})", part):
                    found[key] = (reasoning, bool(ended), np.frombuffer(blob, dtype=np.float32).copy())
        return found

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
        with self._errors("write"), self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO traces VALUES ({', '.join('?' * len(COLUMNS))})", values)

    def get_written(self, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """{key: (reasoning, ended)} of the writer traces that are cached."""
        found = {}
        with self._errors("read"):
            for start in range(0, len(keys), 500):
                part = list(keys[start: start + 500])
                marks = ",".join("?" * len(part))
                for key, reasoning, ended in self.db.execute(
                        f"SELECT key, reasoning, ended FROM written WHERE key IN ({marks})", part):
                    found[key] = (reasoning, bool(ended))
        return found

    def put_written(self, rows: Iterable[dict]) -> None:
        """Store writer traces (dicts with the WRITTEN columns but `created`) in one transaction."""
        now = time.time()
        values = [tuple({**row, "ended": int(row["ended"]), "settings": json.dumps(row["settings"], sort_keys=True),
                         "created": now}.get(c) for c in WRITTEN) for row in rows]
        with self._errors("write"), self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO written VALUES ({', '.join('?' * len(WRITTEN))})", values)

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM traces").fetchone()[0]

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
