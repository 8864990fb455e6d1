"""Fusing ranked lists from several retrievers (T1 and BM25, for a hybrid search).

Three rules, all on per-query {doc_id: score} maps:

- reciprocal rank fusion (Cormack et al., 2009): score(d) = Σ_r w_r / (k + rank_r(d)); it needs
  no score calibration;
- a weighted sum of min-max normalised scores: score(d) = Σ_r w_r · (s_r(d) − min_r)/(max_r − min_r),
  a document missing from a list counting as that list's minimum (0). The default: with a T1
  weight chosen on judged queries (`t1.evaluation.fusion_weight`, saved as the model's `fusion_weight`) it beat
  BM25 alone on SciFact, where reciprocal rank fusion, treating the weaker dense list as an
  equal, did not;
- adaptive: the same weighted sum, with the weights tilted per query towards the list whose top
  hit stands out. Each list's confidence is the standard score of its top hit among its own top
  `ADAPTIVE_DEPTH` scores, c = (s_1 − mean)/std (0 for a flat list), and the weights become
  w_r · c_r^a / Σ w · c^a, `a` being `ADAPTIVE_SHARPNESS`: a = 0 is the fixed weighted sum, a
  list of equal (or no) scores gets weight 0, and a list whose top hit does not stand out (a
  weak retriever's, or noise) gets little; a query with a one-document list keeps the fixed
  weights. Both statistics are invariant to a list's shift and
  scale, so cosines and BM25 scores compare; both parameters were chosen on training claims
  (`benchmarks/adaptive_fusion.py`, README).

Excluded documents are dropped from every list *before* fusion, so they can neither appear nor
lend their rank to another document. Ties break by document id, so fusion is deterministic.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import T1Error

Ranking = dict[str, float]
METHODS = ("weighted", "rrf", "adaptive")  # the default first
DEFAULT_METHOD, DEFAULT_WEIGHT = "weighted", 0.5
# The adaptive rule's parameters: chosen on SciFact's held-out *train* claims (README,
# benchmarks/adaptive_fusion.py fit), never on evaluation data.
ADAPTIVE_SHARPNESS, ADAPTIVE_DEPTH = 6.0, 50


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


def confidence(scores: Ranking, depth: int | None = None) -> float:
    """How far a list's top hit stands out: its standard score (s_1 − mean)/std among the list's
    top `depth` scores (default `ADAPTIVE_DEPTH`). Only the scores the list has count: a list of
    fewer than two scores, or of equal scores (up to rounding), has no confidence (0)."""
    top = sorted(scores.values(), reverse=True)[:depth or ADAPTIVE_DEPTH]
    if len(top) < 2 or not top[0] - top[-1] > 1e-9 * max(1.0, abs(top[0])):
        return 0.0
    mean = math.fsum(top) / len(top)
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in top) / len(top))
    return (top[0] - mean) / std


def adaptive_weights(rankings: Sequence[Ranking], weights: Sequence[float] | None = None,
                     sharpness: float | None = None, depth: int | None = None) -> list[float]:
    """One query's weights of the adaptive fusion: each list's weight times its `confidence` to
    the power `sharpness` (default `ADAPTIVE_SHARPNESS`), summing to 1; the weights as given
    (normalised) where no list has any confidence, or where a list holds a single document
    (BM25's one match: too short a list to judge, so neither followed nor dropped)."""
    weights = _weights(rankings, weights)
    a = ADAPTIVE_SHARPNESS if sharpness is None else sharpness
    if a < 0:
        raise ValueError(f"sharpness must be at least 0, got {a}")
    tilted = [w * (confidence(r, depth) ** a if a else float(bool(r))) for r, w in zip(rankings, weights)]
    total = math.fsum(tilted)
    if not total > 0 or any(len(r) == 1 for r in rankings):  # one score: too short to judge
        total = math.fsum(weights) or 1.0
        return [w / total for w in weights]
    return [t / total for t in tilted]


def fuse(rankings: Sequence[Ranking], method: str = "rrf", weights: Sequence[float] | None = None,
         k: int = 10, exclude: set[str] | None = None, rrf_k: int = 60) -> list[tuple[str, float]]:
    """The top `k` (doc_id, fused score) of one query, best first, `exclude` removed first."""
    if method not in METHODS:
        raise ValueError(f"fusion method must be one of {METHODS}, got {method!r}")
    if exclude:
        rankings = [{d: s for d, s in r.items() if d not in exclude} for r in rankings]
    if method == "rrf":
        fused = reciprocal_rank_fusion(rankings, weights, rrf_k)
    else:
        fused = weighted_sum(rankings, adaptive_weights(rankings, weights) if method == "adaptive" else weights)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _weights(rankings: Sequence[Ranking], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(rankings)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError(f"need one non-negative weight per ranking ({len(rankings)}), got {list(weights)}")
    return list(weights)


def resolve(method: str | None = None, weight: float | None = None,
            saved_weight: float | None = None, saved_method: str | None = None) -> tuple[str, float]:
    """(method, dense weight) of a hybrid search: what was asked for, else the model's
    `saved_method` (its `fusion`), else a weighted sum; with the model's `saved_weight` (its
    `fusion_weight`) for a weighted sum (fixed or adaptive: there it is the prior the lists'
    confidences tilt), else 0.5."""
    method = method or saved_method or DEFAULT_METHOD
    if method not in METHODS:
        raise T1Error(f"fusion method must be one of {', '.join(METHODS)}, got {method!r}")
    if weight is None:
        weight = saved_weight if method in ("weighted", "adaptive") and saved_weight is not None else DEFAULT_WEIGHT
    if not 0.0 <= weight <= 1.0:
        raise T1Error(f"fusion_weight must be between 0 and 1, got {weight}")
    return method, weight
