"""Fusing ranked lists from several retrievers (T1 and BM25, for a hybrid search).

Two standard rules, both on per-query {doc_id: score} maps:

- reciprocal rank fusion (Cormack et al., 2009): score(d) = Σ_r w_r / (k + rank_r(d)); it needs
  no score calibration, which is why it is the default;
- a weighted sum of min-max normalised scores: score(d) = Σ_r w_r · (s_r(d) − min_r)/(max_r − min_r),
  a document missing from a list counting as that list's minimum (0).

Excluded documents are dropped from every list *before* fusion, so they can neither appear nor
lend their rank to another document. Ties break by document id, so fusion is deterministic.
"""

from __future__ import annotations

from typing import Sequence

Ranking = dict[str, float]
METHODS = ("rrf", "weighted")


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
