"""Retrieval metrics through pytrec_eval (trec_eval's own code), per query and averaged.

Keys are lower-case with the cut-off after `@`: `ndcg@10`, `recall@100`, `map@100`,
`precision@10`, and `mrr` (reciprocal rank of the first relevant document, full ranking).
The cut-offs cover both BEIR's (1, 3, 5, 10, 100, 1000) and BRIGHT's (1, 5, 10, 25, 50, 100).

A judged query that is missing from the results scores 0 on every metric (trec_eval `-c`), so a
retriever cannot raise its average by returning nothing for hard queries. Queries without
judgements are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytrec_eval

CUTOFFS = (1, 3, 5, 10, 25, 50, 100, 1000)
_MEASURES = {"ndcg_cut": "ndcg", "recall": "recall", "map_cut": "map", "P": "precision"}
HEADLINE = ("ndcg@10", "recall@100", "map@100", "mrr")
# What BRIGHT reports: nDCG@10 with short documents; Recall@1 with long documents (BRIGHT issue
# #22; mteb's long tasks report it too), and nDCG@10 there as well.
BRIGHT_SHORT_METRICS = ("ndcg@10",)
BRIGHT_LONG_METRICS = ("recall@1", "ndcg@10")


@dataclass
class Evaluation:
    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]

    @property
    def num_queries(self) -> int:
        return len(self.per_query)


def bright_metrics(long: bool) -> tuple[str, ...]:
    """The metrics BRIGHT reports for its short or long documents, headline first."""
    return BRIGHT_LONG_METRICS if long else BRIGHT_SHORT_METRICS


def metric_names(cutoffs=CUTOFFS) -> list[str]:
    return [f"{name}@{k}" for name in _MEASURES.values() for k in cutoffs] + ["mrr"]


def evaluate(
    qrels: dict[str, dict[str, int]],
    results: dict[str, dict[str, float]],
    cutoffs=CUTOFFS,
) -> Evaluation:
    """Score `results` ({qid: {docid: score}}) against `qrels` ({qid: {docid: relevance}})."""
    cut = ",".join(str(k) for k in cutoffs)
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {f"{m}.{cut}" for m in _MEASURES} | {"recip_rank"}
    )
    run = {qid: {d: float(s) for d, s in docs.items()} for qid, docs in results.items() if qid in qrels and docs}
    raw = evaluator.evaluate(run)
    names = metric_names(cutoffs)
    per_query = {}
    for qid in qrels:
        scores = raw.get(qid)
        if scores is None:
            per_query[qid] = dict.fromkeys(names, 0.0)
            continue
        row = {f"{name}@{k}": scores[f"{m}_{k}"] for m, name in _MEASURES.items() for k in cutoffs}
        row["mrr"] = scores["recip_rank"]
        per_query[qid] = row
    n = max(len(per_query), 1)
    mean = {name: sum(row[name] for row in per_query.values()) / n for name in names}
    return Evaluation(mean, per_query)


def metric_key(name: str) -> str:
    """This module's key for a metric given by it (`ndcg@10`, `mrr`) or by its pytrec_eval name
    (`ndcg_cut_10`, `recall_100`, `map_cut_100`, `P_10`, `recip_rank`)."""
    if name in ("mrr", "recip_rank"):
        return "mrr"
    for measure, key in _MEASURES.items():
        cutoff = name.removeprefix(f"{measure}_")
        if cutoff != name and cutoff.isdigit():
            return f"{key}@{cutoff}"
    key, _, cutoff = name.partition("@")
    if key in _MEASURES.values() and cutoff.isdigit():
        return name
    raise ValueError(f"unknown metric {name!r}: use e.g. ndcg@10 or ndcg_cut_10, recall@100, map@100, mrr")


def format_headline(mean: dict[str, float], names=HEADLINE) -> str:
    """`nDCG@10 67.9 · Recall@100 92.5 · ...` (×100, one decimal)."""
    return " · ".join(f"{pretty_name(n)} {100 * mean[n]:.1f}" for n in names if n in mean)


def pretty_name(name: str) -> str:
    base, _, k = name.partition("@")
    label = {"ndcg": "nDCG", "recall": "Recall", "map": "MAP", "precision": "P", "mrr": "MRR"}.get(base, base)
    return f"{label}@{k}" if k else label


def paired_bootstrap(a: dict[str, float], b: dict[str, float], samples: int = 10000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean per-query difference a − b over the queries both score, with its 95% percentile
    interval from resampling those queries with replacement (the paired bootstrap of IR
    significance testing). An interval that excludes 0 is a difference the queries support."""
    import numpy as np

    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two runs share no query")
    diff = np.array([a[q] - b[q] for q in common])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)
