"""Evaluation data: BEIR collections and the BRIGHT benchmark, from local files or the hub.

BEIR: a folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv, or a hub id such as
`BeIR/scifact` (qrels from `BeIR/scifact-qrels`).

BRIGHT: the hub dataset `xlangai/BRIGHT`, or a local copy in the same layout::

    ROOT/examples/<task>.jsonl              (or .parquet, or <task>-00000-of-00001.parquet)
    ROOT/documents/<task>.jsonl|.parquet    short documents ({"id", "content"})
    ROOT/long_documents/<task>.jsonl|...    long documents
    ROOT/<model>_reason/<task>.jsonl|...    e.g. gpt4_reason: reasoning that replaces the query

BRIGHT rules applied here: gold documents have relevance 1; `excluded_ids` are removed from the
query's candidates before the top-k cut; the literal "N/A" in any id list means "none".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bright_tasks import BRIGHT_TASKS, bright_instruction
from ..data import (
    Document,
    add_judgement,
    check_id,
    check_judged,
    check_text,
    load_beir,
    load_corpus,
    qrels_score,
    read_jsonl,
    read_rows,
    unique_id,
)
from ..errors import T1Error

BRIGHT_HUB = "xlangai/BRIGHT"
NA = "N/A"


@dataclass
class EvalData:
    """Everything one evaluation needs. `excluded[qid]` are removed before the top-k cut;
    `reasoning[qid]`, when set, is a given reasoning trace (T1 mode `given`; other retrievers
    search with it in place of the query, as BRIGHT's reasoning-query setting does)."""

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]] = field(default_factory=dict)
    reasoning: dict[str, str] | None = None
    query_instruction: str | None = None


# ---------------------------------------------------------------------------- sources
def is_bright_source(source: str) -> bool:
    path = Path(source)
    if path.is_dir():
        return (path / "examples").is_dir()
    return source.lower() in ("bright", BRIGHT_HUB.lower())


def local_files(root: Path, config: str, task: str) -> list[Path]:
    """The file(s) of one config/task in a local BRIGHT copy (empty when absent)."""
    folder = root / config
    for suffix in (".jsonl", ".parquet"):
        if (folder / f"{task}{suffix}").is_file():
            return [folder / f"{task}{suffix}"]
    return sorted(folder.glob(f"{task}-*.parquet"))


def _hub_rows(repo: str, config: str, task: str) -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(repo, config, split=task))
    except Exception as e:  # the hub raises many types: offline, missing config, bad split ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise T1Error(f"cannot load {repo} config {config!r} split {task!r} from the Hugging Face hub "
                      f"({first}); download it and pass the local folder instead") from None


def _rows(source: str, config: str, task: str) -> list[tuple[str, dict]]:
    """(location, row) pairs of one BRIGHT config/task, local or from the hub."""
    root = Path(source)
    if not root.is_dir():
        repo = BRIGHT_HUB if source.lower() == "bright" else source
        return [(f"{repo}/{config}/{task} row {i}", row) for i, row in enumerate(_hub_rows(repo, config, task))]
    files = local_files(root, config, task)
    if not files:
        raise T1Error(f"{root / config}: no {task}.jsonl or {task}.parquet")
    return [pair for path in files for pair in read_rows(path)]


def _id_list(row: dict, key: str, where: str) -> list[str]:
    value = row.get(key)
    if value is None:
        raise T1Error(f"{where}: missing field {key!r}")
    if isinstance(value, str):
        value = [value]
    try:
        return [str(v) for v in value if str(v) != NA]
    except TypeError:
        raise T1Error(f"{where}: field {key!r} must be a list of ids, got {type(value).__name__}") from None


@dataclass
class BrightExamples:
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]]


def load_bright_examples(source: str, task: str, long: bool = False, config: str = "examples") -> BrightExamples:
    """Queries, judgements (gold = 1) and exclusions of one task. A query whose gold list is
    only "N/A" (no long documents for it) is dropped; a gold id that is also excluded is an error."""
    if task not in BRIGHT_TASKS:
        raise T1Error(f"unknown BRIGHT task {task!r} (expected one of {', '.join(BRIGHT_TASKS)})")
    gold_key = "gold_ids_long" if long else "gold_ids"
    queries, qrels, excluded = {}, {}, {}
    for where, row in _rows(source, config, task):
        qid = row.get("id")
        if qid is None:
            raise T1Error(f"{where}: missing field 'id'")
        qid = unique_id(queries, check_id(qid, where, "query id"), where)
        text = row.get("query")
        if not isinstance(text, str) or not text.strip():
            raise T1Error(f"{where}: missing or empty field 'query'")
        gold = _id_list(row, gold_key, where)
        if not gold:
            continue
        ex = set(_id_list(row, "excluded_ids", where))
        clash = ex.intersection(gold)
        if clash:
            raise T1Error(f"{where}: gold id {sorted(clash)[0]!r} is also in excluded_ids")
        queries[qid], qrels[qid], excluded[qid] = text, dict.fromkeys(gold, 1), ex
    if not queries:
        what = "long-document " if long else ""
        raise T1Error(f"BRIGHT task {task!r} in {source}: no queries with {what}gold documents")
    return BrightExamples(queries, qrels, excluded)


def load_bright_documents(source: str, task: str, long: bool = False) -> list[Document]:
    config = "long_documents" if long else "documents"
    root = Path(source)
    if root.is_dir():
        files = local_files(root, config, task)
        if not files:
            raise T1Error(f"{root / config}: no {task}.jsonl or {task}.parquet (BRIGHT documents are not bundled; "
                          f"download {BRIGHT_HUB} config {config!r})")
        return [doc for path in files for doc in load_corpus(path)]
    docs, seen = [], set()
    for where, row in _rows(source, config, task):
        doc_id, text = row.get("id"), row.get("content")
        if doc_id is None or text is None:
            raise T1Error(f"{where}: expected fields 'id' and 'content'")
        doc_id = unique_id(seen, check_id(doc_id, where, "document id"), where, "document id")
        seen.add(doc_id)
        docs.append(Document(doc_id, check_text(text, where, "content")))
    return docs


def load_bright_reasoning(source: str, task: str, model: str) -> dict[str, str]:
    """The `<model>_reason` config: per query id, an LLM's reasoning that BRIGHT uses as the query."""
    config = model if model.endswith("_reason") else f"{model}_reason"
    out = {}
    for where, row in _rows(source, config, task):
        if row.get("id") is None or not isinstance(row.get("query"), str):
            raise T1Error(f"{where}: expected fields 'id' and 'query'")
        out[str(row["id"])] = row["query"]
    return out


def load_bright_task(source: str, task: str, long: bool = False, reasoning: str | None = None) -> EvalData:
    ex = load_bright_examples(source, task, long)
    corpus = load_bright_documents(source, task, long)
    check_judged(ex.qrels, corpus, f"BRIGHT {task} gold ids", f"its {'long ' if long else ''}documents")
    given = None
    if reasoning:
        texts = load_bright_reasoning(source, task, reasoning)
        lacking = [q for q in ex.queries if q not in texts]
        if lacking:
            raise T1Error(f"BRIGHT {reasoning}_reason/{task}: no reasoning for query {lacking[0]!r}")
        given = {q: texts[q] for q in ex.queries}
    name = f"bright/{task}" + ("-long" if long else "")
    return EvalData(name, corpus, ex.queries, ex.qrels, ex.excluded, given, bright_instruction(task, long))


# ---------------------------------------------------------------------------- BEIR
def _load_hub_beir(repo: str, split: str) -> EvalData:
    try:
        from datasets import load_dataset

        corpus_rows = load_dataset(repo, "corpus", split="corpus")
        query_rows = load_dataset(repo, "queries", split="queries")
        qrel_rows = load_dataset(f"{repo}-qrels", split=split)
    except Exception as e:  # offline, unknown repo, missing split ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise T1Error(f"cannot load {repo!r} (split {split!r}) from the Hugging Face hub ({first}); "
                      "pass a local BEIR folder instead") from None
    qrels: dict[str, dict[str, int]] = {}
    for i, row in enumerate(qrel_rows):
        where = f"{repo}-qrels {split} row {i}"
        add_judgement(qrels, check_id(row["query-id"], where, "query id"), check_id(row["corpus-id"], where, "corpus id"),
                      qrels_score(row["score"], where), where)
    queries: dict[str, str] = {}
    for i, row in enumerate(query_rows):
        queries[unique_id(queries, str(row["_id"]), f"{repo} queries row {i}")] = row["text"]
    corpus = [Document(str(r["_id"]), r["text"], r.get("title") or "") for r in corpus_rows]
    check_judged(qrels, corpus, f"{repo}-qrels {split}", f"{repo} corpus")
    return EvalData(f"{repo.split('/')[-1]}/{split}", corpus, {q: queries[q] for q in qrels if q in queries}, qrels)


def load_eval_data(dataset: str, split: str = "test", long: bool = False, reasoning: str | None = None) -> EvalData:
    """`dataset` is a BEIR folder, a BEIR hub id, or BRIGHT (a local copy or `xlangai/BRIGHT`,
    with the task as `split`). `reasoning` names a BRIGHT `<model>_reason` config."""
    if is_bright_source(dataset):
        return load_bright_task(dataset, split, long, reasoning)
    if long or reasoning:
        raise T1Error("--long and BRIGHT reasoning sets apply to BRIGHT only")
    path = Path(dataset)
    if path.exists() or dataset.startswith((".", "/")):
        data = load_beir(path, split)
        return EvalData(f"{path.resolve().name}/{split}", data.corpus, data.queries, data.qrels)
    return _load_hub_beir(dataset, split)


def load_reasoning_file(path: str | Path) -> dict[str, str]:
    """Given reasoning traces: JSONL rows `{"id", "reasoning"}` (a t1 reasoning.jsonl) or
    `{"id", "query"}` (a BRIGHT `<model>_reason` file)."""
    out = {}
    for lineno, row in read_jsonl(path):
        text = row.get("reasoning", row.get("query"))
        if row.get("id") is None or not isinstance(text, str):
            raise T1Error(f"{path}:{lineno}: expected fields 'id' and 'reasoning'")
        out[unique_id(out, str(row["id"]), f"{path}:{lineno}", "id")] = text
    if not out:
        raise T1Error(f"{path}: no reasoning rows")
    return out
