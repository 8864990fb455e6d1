"""Reading corpora, queries and relevance judgements (BEIR layout, JSONL, CSV, parquet).

Every reader validates as it goes and raises `T1Error` naming the file, the line and the field,
so a malformed row is reported instead of silently skipped.
"""

from __future__ import annotations

import codecs
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
GRADE_LIMIT = 2**31  # pytrec_eval keeps a relevance grade in a C int


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
    """Yield (line number, line) of a UTF-8 text file, without a leading byte-order mark (so every
    format handles one alike); a line that is not UTF-8 is a `T1Error`."""
    path = _require_file(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
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
        obj = parse_json(line, f"{path}:{lineno}")
        if not isinstance(obj, dict):
            raise T1Error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def parse_json(text: str, where: str):
    """The JSON value of `text`; malformed or deeply nested JSON (Python's parser recurses) is a
    `T1Error` naming `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise T1Error(f"{where}: malformed JSON ({e.msg}, line {e.lineno} column {e.colno})"
                      if e.lineno > 1 else f"{where}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise T1Error(f"{where}: malformed JSON (nested too deeply)") from None


def surrogate_problem(text: str) -> str | None:
    """Why `text` is not Unicode text (a lone surrogate such as \\ud800, which JSON escapes and
    undecodable command-line bytes produce, and which no file or tokenizer can take), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds a lone surrogate ({text[e.start]!a} at character {e.start + 1}), not Unicode text"
    return None


def _field(obj: dict, names: tuple[str, ...], where: str, what: str) -> tuple[str, object]:
    """(name, value) of the first of `names` that `obj` holds."""
    for name in names:
        if name in obj and obj[name] is not None:
            return name, obj[name]
    raise T1Error(f"{where}: missing field {what!r} (expected one of {', '.join(names)})")


def check_id(value, where: str, what: str = "id") -> str:
    """An id as a string: a non-empty string without whitespace, or an integer (its digits). An
    id with a space would make an invalid TREC run file; a JSON object or list is no id."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise T1Error(f"{where}: {what} must be a string, got {_kind(value)}")
    text = str(value)
    if not text:
        raise T1Error(f"{where}: empty {what}")
    if surrogate_problem(text):
        raise T1Error(f"{where}: {what} {surrogate_problem(text)}")
    if any(c.isspace() for c in text):
        raise T1Error(f"{where}: {what} {text!r} contains whitespace (TREC run files cannot hold it)")
    return text


def check_text(value, where: str, what: str) -> str:
    """`value` when it is a string (a JSON object, list or number is not a text)."""
    if not isinstance(value, str):
        raise T1Error(f"{where}: field {what!r} must be a string, got {_kind(value)}")
    if surrogate_problem(value):
        raise T1Error(f"{where}: field {what!r} {surrogate_problem(value)}")
    return value


def as_texts(value, what: str) -> tuple[list[str], bool]:
    """(the texts, whether a single string was given) of a Python API argument that takes a
    string or a sequence of strings; anything else is a `TypeError` naming `what`."""
    if isinstance(value, str):
        if surrogate_problem(value):
            raise ValueError(f"{what} {surrogate_problem(value)}")
        return [value], True
    if value is None or isinstance(value, (bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{what} must be a string or a list of strings, got {_kind(value)}")
    texts = list(value)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] must be a string, got {_kind(texts[bad])}")
    bad = next((i for i, t in enumerate(texts) if surrogate_problem(t)), None)
    if bad is not None:
        raise ValueError(f"{what}[{bad}] {surrogate_problem(texts[bad])}")
    return texts, False


def check_documents(documents) -> Sequence[Document]:
    """`documents` when it is a sequence of `Document`s (what `load_corpus` returns)."""
    bad = next((d for d in documents if not isinstance(d, Document)), None)
    if bad is not None:
        raise TypeError(f"documents must be t1.data.Document objects (as load_corpus returns), got {_kind(bad)}")
    for d in documents:
        for what in ("id", "title", "text"):
            if not isinstance(getattr(d, what), str) or surrogate_problem(getattr(d, what)):
                raise ValueError(f"document {d.id!r}: {what} must be Unicode text, got {getattr(d, what)!a}")
    return documents


def _kind(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _id_field(obj: dict, names: tuple[str, ...], where: str, what: str) -> str:
    return check_id(_field(obj, names, where, "id")[1], where, what)


def _text_field(obj: dict, names: tuple[str, ...], where: str) -> str:
    name, value = _field(obj, names, where, "text")
    return check_text(value, where, name)


def read_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs from a JSONL, CSV/TSV or parquet file; a row that is not an object
    (JSON) or a file that cannot be read (parquet) is a `T1Error` naming the file and line."""
    path = _require_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, obj in read_jsonl(path):
            yield f"{path}:{lineno}", obj
    elif suffix in (".csv", ".tsv"):
        yield from read_csv(path, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        yield from read_parquet(path)
    else:
        raise T1Error(f"{path}: unsupported format {suffix!r} (use .jsonl, .csv, .tsv or .parquet)")


def read_csv(path: Path, delimiter: str) -> Iterator[tuple[str, dict]]:
    """(location of the row's first line, row) pairs of a CSV/TSV file with a header. A row with
    more or fewer fields than the header, a quote left open (CSV), or a header naming a column
    twice or not at all is a `T1Error`. TSV has no quoting (IANA's text/tab-separated-values):
    each line is a row, split at its tabs, so a passage that begins with a quote stays one row."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    if kind == "TSV":
        rows = ((lineno, line.rstrip("\r\n").split("\t")) for lineno, line in read_lines(path))
        rows = ((lineno, fields) for lineno, fields in rows if fields != [""])
    else:
        rows = _csv_rows(path, delimiter)
    header = None
    for lineno, fields in rows:
        if header is None:
            header = _check_header(fields, f"{path}:{lineno}", kind)
            continue
        if len(fields) != len(header):
            raise T1Error(f"{path}:{lineno}: malformed {kind} ({len(fields)} fields, the header has "
                          f"{len(header)})")
        yield f"{path}:{lineno}", dict(zip(header, fields))


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank CSV row, quotes as RFC 4180 reads them."""
    reader = csv.reader((line for _, line in read_lines(path)), delimiter=delimiter, strict=True)
    start = 1
    try:
        for fields in reader:
            if fields:
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as e:
        hint = "; a quote is never closed" if "end of data" in str(e) else ""
        raise T1Error(f"{path}:{start}: malformed CSV ({e}{hint})") from None


def _check_header(header: list[str], where: str, kind: str) -> list[str]:
    """A header's column names: each given, none twice (a second one would replace the first)."""
    names = [name.strip() for name in header]
    if "" in names:
        raise T1Error(f"{where}: malformed {kind} header (column {names.index('') + 1} has no name)")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise T1Error(f"{where}: malformed {kind} header (column {twice!r} appears twice)")
    return names


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


def load_corpus(path: str | Path, skip_empty: bool = False) -> list[Document]:
    """Documents from BEIR `corpus.jsonl` (`_id`, `title`, `text`) or JSONL/CSV/parquet with
    `id` and `text` (or `content`, as BRIGHT's documents). Ids must be unique. Documents with no
    text (BEIR's Cranfield has two) are kept, as Pyserini and bm25s keep them, with one warning
    (`skip_empty` leaves them out): refusing a public corpus for them would help no one."""
    path = _require_file(path)
    docs, seen, empty = [], set(), []
    for where, row in read_rows(path):
        doc_id = unique_id(seen, _id_field(row, ID_FIELDS, where, "document id"), where, "document id")
        seen.add(doc_id)
        title = row.get("title")
        doc = Document(doc_id, _text_field(row, TEXT_FIELDS, where),
                       "" if title is None else check_text(title, where, "title"))
        if not doc.full_text.strip():
            empty.append(doc_id)
            if skip_empty:
                continue
        docs.append(doc)
    if len(empty) == len(seen):  # nothing to search
        raise T1Error(f"{path}: no documents" + (" with text" if empty else ""))
    if empty:
        shown = ", ".join(empty[:10]) + (f" ... ({len(empty) - 10} more)" if len(empty) > 10 else "")
        what = "left out (--skip-empty)" if skip_empty else "indexed as empty texts; --skip-empty leaves them out"
        logger.warning("%s: %d document%s no text: %s (%s)", path, len(empty),
                       " has" if len(empty) == 1 else "s have", shown, what)
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
            qid = _id_field(row, ID_FIELDS + ("qid", "query_id"), where, "query id")
            text = _text_field(row, ("text", "query"), where)
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
        if lineno == 1 and not _is_number(parts[-1]):
            continue  # header
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise T1Error(f"{path}:{lineno}: expected 'query-id corpus-id score', got {line.strip()!r}")
        add_judgement(qrels, parts[0], parts[1], qrels_score(parts[2], f"{path}:{lineno}"), f"{path}:{lineno}")
    if not qrels:
        raise T1Error(f"{path}: no relevance judgements")
    return qrels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def qrels_score(value, where: str) -> int:
    """A relevance grade as pytrec_eval and trec_eval take it: an integer (0 not relevant, 1, 2 ...
    graded). "1.0" is read as 1; a fraction such as 0.7 is an error, never truncated to 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise T1Error(f"{where}: score {value!r} is not a number") from None
    if not number.is_integer():
        raise T1Error(f"{where}: score {value!r} is not an integer (relevance grades are 0, 1, 2 ...; "
                      "round or threshold fractional scores first)")
    if not -GRADE_LIMIT <= number < GRADE_LIMIT:
        raise T1Error(f"{where}: score {value!r} is out of range (relevance grades are small integers; "
                      f"pytrec_eval takes at most {GRADE_LIMIT - 1})")
    return int(number)


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
