"""Fusing ranked lists from several retrievers (T1 and BM25, for a hybrid search).

Two standard rules, both on per-query {doc_id: score} maps:

- reciprocal rank fusion (Cormack et al., 2009): score(d) = Σ_r w_r / (k + rank_r(d)); it needs
  no score calibration;
- a weighted sum of min-max normalised scores: score(d) = Σ_r w_r · (s_r(d) − min_r)/(max_r − min_r),
  a document missing from a list counting as that list's minimum (0). The default: with a T1
  weight chosen on judged queries (`choose_weight`, saved as the model's `fusion_weight`) it beat
  BM25 alone on SciFact, where reciprocal rank fusion, treating the weaker dense list as an
  equal, did not.

Excluded documents are dropped from every list *before* fusion, so they can neither appear nor
lend their rank to another document. Ties break by document id, so fusion is deterministic.
"""

from __future__ import annotations

from typing import Sequence

from .errors import T1Error

Ranking = dict[str, float]
METHODS = ("weighted", "rrf")  # the default first
DEFAULT_METHOD, DEFAULT_WEIGHT = "weighted", 0.5
WEIGHT_GRID = tuple(i / 10 for i in range(11))  # 0.0, 0.1, ..., 1.0


def _ranked(scores: Ranking) -> list[str]:
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def reciprocal_rank_fusion(rankings: Sequence[Ranking], weights: Sequence[float] | None = None,
                           k: int = 60) -> Ranking:
    weights = _weights(rankings, weights)
    fused: Ranking = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(_ranked(ranking), 1):
            fused[doc] = fused.get(doc, 0.0) + w / (k + rank)
    return fused


def weighted_sum(rankings: Sequence[Ranking], weights: Sequence[float] | None = None) -> Ranking:
    weights = _weights(rankings, weights)
    fused: Ranking = {}
    for ranking, w in zip(rankings, weights):
        if not ranking:
            continue
        low, high = min(ranking.values()), max(ranking.values())
        span = high - low
        for doc, s in ranking.items():
            fused[doc] = fused.get(doc, 0.0) + w * ((s - low) / span if span > 0 else 1.0)
    return fused


def fuse(rankings: Sequence[Ranking], method: str = "rrf", weights: Sequence[float] | None = None,
         k: int = 10, exclude: set[str] | None = None, rrf_k: int = 60) -> list[tuple[str, float]]:
    """The top `k` (doc_id, fused score) of one query, best first, `exclude` removed first."""
    if method not in METHODS:
        raise ValueError(f"fusion method must be one of {METHODS}, got {method!r}")
    if exclude:
        rankings = [{d: s for d, s in r.items() if d not in exclude} for r in rankings]
    fused = reciprocal_rank_fusion(rankings, weights, rrf_k) if method == "rrf" else weighted_sum(rankings, weights)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _weights(rankings: Sequence[Ranking], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(rankings)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError(f"need one non-negative weight per ranking ({len(rankings)}), got {list(weights)}")
    return list(weights)


def resolve(method: str | None = None, weight: float | None = None,
            saved_weight: float | None = None) -> tuple[str, float]:
    """(method, dense weight) of a hybrid search: what was asked for, else a weighted sum, with
    the model's `saved_weight` (its `fusion_weight`) for a weighted sum, else 0.5."""
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise T1Error(f"fusion method must be one of {', '.join(METHODS)}, got {method!r}")
    if weight is None:
        weight = saved_weight if method == "weighted" and saved_weight is not None else DEFAULT_WEIGHT
    if not 0.0 <= weight <= 1.0:
        raise T1Error(f"fusion_weight must be between 0 and 1, got {weight}")
    return method, weight


def choose_weight(dense_runs: dict[str, Ranking], bm25_runs: dict[str, Ranking], qrels: dict[str, dict[str, int]],
                  weights: Sequence[float] = WEIGHT_GRID,
                  metric: str = "ndcg_cut_10") -> tuple[float, dict[float, float]]:
    """The dense weight of the weighted-sum fusion that scores best on `qrels`, and each weight's
    mean `metric` (pytrec_eval's name, `ndcg_cut_10`, or t1's, `ndcg@10`). Runs are
    {qid: {doc_id: score}}, each list fused whole; ties go to the smaller dense weight."""
    from .evaluation.metrics import evaluate, metric_key

    key = metric_key(metric)
    cutoff = key.partition("@")[2]
    if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"need weights between 0 and 1, got {list(weights)}")
    scores = {}
    for w in weights:
        fused = {}
        for q in set(dense_runs) | set(bm25_runs):
            lists = [dense_runs.get(q, {}), bm25_runs.get(q, {})]
            fused[q] = dict(fuse(lists, "weighted", [w, 1.0 - w], k=sum(map(len, lists))))
        scores[w] = evaluate(qrels, fused, cutoffs=(int(cutoff),) if cutoff else (10,)).mean[key]
    return min(weights, key=lambda w: (-scores[w], w)), scores
