"""Reading corpora, queries and relevance judgements (BEIR layout, JSONL, CSV, parquet).

Every reader validates as it goes and raises `T1Error` naming the file, the line and the field,
so a malformed row is reported instead of silently skipped.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .errors import T1Error

logger = logging.getLogger(__name__)

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


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) of a UTF-8 text file; a line that is not UTF-8 is a `T1Error`."""
    path = _require_file(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise T1Error(f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                              f"{e.start + 1})") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line is a `T1Error`."""
    for lineno, line in read_lines(path):
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


def read_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs from a JSONL, CSV/TSV or parquet file; a row that is not an object
    (JSON) or a file that cannot be read (parquet) is a `T1Error` naming the file and line."""
    path = _require_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, obj in read_jsonl(path):
            yield f"{path}:{lineno}", obj
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader((line for _, line in read_lines(path)), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", row
        except csv.Error as e:
            raise T1Error(f"{path}:{reader.line_num}: malformed {suffix[1:].upper()} ({e})") from None
    elif suffix == ".parquet":
        yield from read_parquet(path)
    else:
        raise T1Error(f"{path}: unsupported format {suffix!r} (use .jsonl, .csv, .tsv or .parquet)")


def read_parquet(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs of a parquet file; a truncated or corrupt file is a `T1Error`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _require_file(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = first.rsplit("': ", 1)[-1]  # pyarrow repeats the path: "... input source '<path>': <reason>"
        raise T1Error(f"{path}: not a readable parquet file ({reason})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row


def unique_id(seen, key: str, where: str, what: str = "query id") -> str:
    """`key`, once checked absent from `seen` (the ids read so far: a set or a mapping)."""
    if key in seen:
        raise T1Error(f"{where}: duplicate {what} {key!r}")
    return key


def load_corpus(path: str | Path) -> list[Document]:
    """Documents from BEIR `corpus.jsonl` (`_id`, `title`, `text`) or JSONL/CSV/parquet with
    `id` and `text` (or `content`, as BRIGHT's documents). Ids must be unique."""
    path = _require_file(path)
    docs, seen = [], set()
    for where, row in read_rows(path):
        doc_id = unique_id(seen, _field(row, ID_FIELDS, where, "id"), where, "document id")
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
        lines = [line.strip() for _, line in read_lines(path)]
        queries = {f"q{i}": q for i, q in enumerate((q for q in lines if q), 1)}
    else:
        queries = {}
        for where, row in read_rows(path):
            qid = _field(row, ID_FIELDS + ("qid", "query_id"), where, "id")
            text = _field(row, ("text", "query"), where, "text")
            if not text.strip():
                raise T1Error(f"{where}: empty query")
            queries[unique_id(queries, qid, where)] = text
    if not queries:
        raise T1Error(f"{path}: no queries")
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC/BEIR qrels: `query-id corpus-id score` (tab-separated, optional header) or the
    4-column TREC form `qid 0 docid rel`."""
    path = _require_file(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in read_lines(path):
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
        except (ValueError, OverflowError):
            raise T1Error(f"{path}:{lineno}: score {parts[2]!r} is not a number") from None
        add_judgement(qrels, parts[0], parts[1], score, f"{path}:{lineno}")
    if not qrels:
        raise T1Error(f"{path}: no relevance judgements")
    return qrels


def add_judgement(qrels: dict[str, dict[str, int]], query_id: str, doc_id: str, score: int, where: str) -> None:
    """Record one judgement; the same pair judged twice with different scores is an error (which
    one counts would depend on line order)."""
    old = qrels.setdefault(query_id, {}).get(doc_id)
    if old is not None and old != score:
        raise T1Error(f"{where}: query {query_id!r} judges document {doc_id!r} again, with score {score} "
                      f"after {old}")
    qrels[query_id][doc_id] = score


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
    corpus = load_corpus(folder / "corpus.jsonl")
    check_judged(qrels, corpus, f"{folder}/qrels/{split}.tsv", "corpus.jsonl")
    return BeirDataset(corpus, {q: queries[q] for q in qrels}, qrels)


def check_judged(qrels: dict[str, dict[str, int]], corpus: Sequence[Document], where: str, corpus_name: str) -> None:
    """Judged documents absent from the corpus can never be retrieved, so they silently count as
    misses: a warning with their number and an example, and an error when none is present."""
    ids = {d.id for d in corpus}
    judged = {doc for docs in qrels.values() for doc in docs}
    absent = sorted(judged - ids)
    if len(absent) == len(judged):
        raise T1Error(f"{where}: none of the {len(judged)} judged documents is in {corpus_name} (e.g. "
                      f"{absent[0]!r}); are the qrels of another corpus?")
    if absent:
        logger.warning("%s: %d of %d judged documents are not in %s (e.g. %r); they count as never retrieved",
                       where, len(absent), len(judged), corpus_name, absent[0])
