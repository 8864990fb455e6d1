"""Run folders: what one evaluation writes, and reading it back.

A run folder holds::

    run.trec          TREC run file: `qid Q0 docid rank score tag`, best first
    results.json      {qid: {docid: score}}
    metrics.json      mean metrics, {"ndcg@10": 0.679, "recall@100": ...}
    per_query.json    {qid: {metric: value}}
    reasoning.jsonl   T1 only: {"id", "query", "reasoning"} per query (+ "ended", "tokens" when generated)
    run.json          what was run: dataset, retriever, settings, sizes, wall times

Nothing is written until the retrieval and its scoring are done, so a failed or interrupted
re-evaluation leaves the previous run's files as they were. Then every file is written atomically,
metrics.json last: its presence marks a finished run (an old one is removed just before the new
files replace the old, so it never stands beside another run's results).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..atomic import atomic_open, check_output_folder, write_json, write_jsonl
from ..errors import T1Error
from .metrics import CUTOFFS, Evaluation, evaluate, format_headline

RUN_FILE = "run.trec"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.json"
REASONING_FILE = "reasoning.jsonl"
INFO_FILE = "run.json"


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Score descending, ties by docid descending: the order trec_eval itself evaluates in."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def write_trec_run(path: str | Path, results: dict[str, dict[str, float]], tag: str = "t1") -> None:
    tag = re.sub(r"\s+", "_", tag) or "t1"
    with atomic_open(path) as f:
        for qid, docs in results.items():
            for rank, (docid, score) in enumerate(ranked(docs), 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise T1Error(f"{path}: no such run file")
    results: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise T1Error(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {line.strip()!r}")
            try:
                results.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise T1Error(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
    return results


def read_json(path: str | Path) -> dict:
    """The JSON object in `path`; anything else (malformed JSON, a list) is a `T1Error`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise T1Error(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: malformed JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise T1Error(f"{path}: malformed JSON (expected an object, got {type(data).__name__})")
    return data


def read_metrics(path: str | Path) -> dict[str, float]:
    """A run's metrics.json: an object of numbers."""
    metrics = read_json(path)
    bad = next((k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        raise T1Error(f"{path}: {bad!r} must be a number, got {json.dumps(metrics[bad])[:40]}")
    return metrics


def retrieve_and_score(data, retriever, k: int = 1000, cutoffs=CUTOFFS) -> tuple[dict, Evaluation, float]:
    """(results, their `Evaluation`, seconds spent retrieving) of `retriever` on `data` (an
    `EvalData`): its `excluded` ids are removed before the top-k cut and its `reasoning` (given
    traces, e.g. BRIGHT's GPT-4 reasoning) is passed to the retriever."""
    start = time.perf_counter()
    results = retriever.retrieve(data.queries, k=k, exclude=data.excluded or None, reasoning=data.reasoning)
    retrieve_s = time.perf_counter() - start
    leaked = [(q, d) for q, docs in results.items() for d in docs if d in data.excluded.get(q, ())]
    if leaked:  # a retriever bug, not a user mistake
        raise AssertionError(f"excluded document {leaked[0][1]!r} returned for query {leaked[0][0]!r}")
    return results, evaluate(data.qrels, results, cutoffs), retrieve_s


def run_evaluation(data, retriever, out: str | Path, k: int = 1000, info: dict | None = None,
                   cutoffs=CUTOFFS) -> Evaluation:
    """Retrieve `data.queries` with `retriever`, score against `data.qrels` (`retrieve_and_score`),
    write the run folder `out`. `info` is added to run.json."""
    out = check_output_folder(out)
    results, evaluation, retrieve_s = retrieve_and_score(data, retriever, k, cutoffs)

    (out / METRICS_FILE).unlink(missing_ok=True)  # metrics.json marks a finished run: never an old one
    write_trec_run(out / RUN_FILE, results, tag=retriever.name)
    write_json(out / RESULTS_FILE, results)
    write_json(out / PER_QUERY_FILE, evaluation.per_query)
    reasoning = getattr(retriever, "reasoning", None)
    stats = getattr(retriever, "trace_stats", None) or {}
    if reasoning:
        write_jsonl(out / REASONING_FILE, ({"id": q, "query": data.queries[q], "reasoning": reasoning.get(q, ""),
                                            **stats.get(q, {})} for q in data.queries))
    else:
        (out / REASONING_FILE).unlink(missing_ok=True)
    write_json(out / INFO_FILE, {
        "kind": "eval",
        "dataset": data.name,
        "retriever": retriever.name,
        "k": k,
        "queries": len(data.queries),
        "documents": len(data.corpus),
        "excluded_pairs": sum(len(v) for v in data.excluded.values()),
        "wall_seconds": {**getattr(retriever, "timings", {}), "total": round(retrieve_s, 2)},
        "settings": getattr(retriever, "settings", {}),
        **({"traces": trace_summary(stats.values())} if stats else {}),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(info or {}),
    })
    write_json(out / METRICS_FILE, evaluation.mean)
    return evaluation


def trace_summary(stats) -> dict:
    """How generated traces ended: the fraction the model ended itself with <emb_token>, and
    the median and 95th-percentile trace length in tokens."""
    import numpy as np

    stats = list(stats)
    lengths = np.array([s["tokens"] for s in stats], dtype=float)
    return {"queries": len(stats), "self_ended": round(sum(s["ended"] for s in stats) / len(stats), 4),
            "median_tokens": float(np.median(lengths)), "p95_tokens": float(np.percentile(lengths, 95))}


def describe(evaluation: Evaluation, info: dict | None = None) -> str:
    line = format_headline(evaluation.mean)
    if info:
        line += f"  ({info.get('queries', evaluation.num_queries)} queries, {info.get('documents', '?')} docs"
        total = info.get("wall_seconds", {}).get("total")
        line += f", {total:.1f} s)" if total is not None else ")"
    return line
