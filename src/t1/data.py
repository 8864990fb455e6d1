"""Reading corpora, queries and relevance judgements (BEIR layout, JSONL, CSV, parquet).

Every reader validates as it goes and raises `T1Error` naming the file, the line and the field,
so a malformed row is reported instead of silently skipped.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import T1Error

ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_FIELDS = ("text", "content", "contents", "body")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """Title and text as one passage (title on its own line when present)."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise T1Error(f"{path}: no such file")
    if path.is_dir():
        raise T1Error(f"{path}: is a folder, expected a file")
    return path


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line is a `T1Error`."""
    path = _require_file(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise T1Error(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise T1Error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _field(obj: dict, names: tuple[str, ...], where: str, what: str) -> str:
    for name in names:
        if name in obj and obj[name] is not None:
            return str(obj[name])
    raise T1Error(f"{where}: missing field {what!r} (expected one of {', '.join(names)})")


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs from a JSONL, CSV/TSV or parquet file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, obj in read_jsonl(path):
            yield f"{path}:{lineno}", obj
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for lineno, row in enumerate(reader, 2):
                yield f"{path}:{lineno}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}:row {i}", row
    else:
        raise T1Error(f"{path}: unsupported format {suffix!r} (use .jsonl, .csv, .tsv or .parquet)")


def load_corpus(path: str | Path) -> list[Document]:
    """Documents from BEIR `corpus.jsonl` (`_id`, `title`, `text`) or JSONL/CSV/parquet with
    `id` and `text` (or `content`, as BRIGHT's documents). Ids must be unique."""
    path = _require_file(path)
    docs, seen = [], set()
    for where, row in _rows(path):
        doc_id = _field(row, ID_FIELDS, where, "id")
        if doc_id in seen:
            raise T1Error(f"{where}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        docs.append(Document(doc_id, _field(row, TEXT_FIELDS, where, "text"), str(row.get("title") or "")))
    if not docs:
        raise T1Error(f"{path}: no documents")
    return docs


def load_queries(path: str | Path) -> dict[str, str]:
    """Queries from BEIR `queries.jsonl` (`_id`, `text`), JSONL/CSV with `id`/`query`, or a plain
    text file (one query a line, ids q1, q2, ...)."""
    path = _require_file(path)
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        queries = {f"q{i}": q for i, q in enumerate((q for q in lines if q), 1)}
    else:
        queries = {}
        for where, row in _rows(path):
            qid = _field(row, ID_FIELDS + ("qid", "query_id"), where, "id")
            text = _field(row, ("text", "query"), where, "text")
            if not text.strip():
                raise T1Error(f"{where}: empty query")
            queries[qid] = text
    if not queries:
        raise T1Error(f"{path}: no queries")
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC/BEIR qrels: `query-id corpus-id score` (tab-separated, optional header) or the
    4-column TREC form `qid 0 docid rel`."""
    path = _require_file(path)
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            if len(parts) == 4:
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise T1Error(f"{path}:{lineno}: expected 'query-id corpus-id score', got {line.strip()!r}")
            try:
                score = int(float(parts[2]))
            except ValueError:
                raise T1Error(f"{path}:{lineno}: score {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    if not qrels:
        raise T1Error(f"{path}: no relevance judgements")
    return qrels


@dataclass
class BeirDataset:
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv. Only queries with
    judgements in the split are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        raise T1Error(f"{folder}: no such folder (expected a BEIR dataset folder)")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    queries = load_queries(folder / "queries.jsonl")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise T1Error(f"{folder}/qrels/{split}.tsv: query ids not in queries.jsonl, e.g. {missing[0]!r}")
    return BeirDataset(load_corpus(folder / "corpus.jsonl"), {q: queries[q] for q in qrels}, qrels)
