"""Choosing T1's weight in the weighted-sum fusion with BM25 on judged queries: the measured
`fusion_weight` a trained model saves (`t1 train`'s curriculum, `benchmarks/shipped_model.py`).
Evaluation, not search: it scores every weight of a grid with the metrics."""

from __future__ import annotations

from typing import Sequence

from ..index.fusion import Ranking, fuse
from .metrics import evaluate, metric_key

WEIGHT_GRID = tuple(i / 10 for i in range(11))  # 0.0, 0.1, ..., 1.0


def choose_weight(dense_runs: dict[str, Ranking], bm25_runs: dict[str, Ranking], qrels: dict[str, dict[str, int]],
                  weights: Sequence[float] = WEIGHT_GRID,
                  metric: str = "ndcg_cut_10") -> tuple[float, dict[float, float]]:
    """The dense weight of the weighted-sum fusion that scores best on `qrels`, and each weight's
    mean `metric` (pytrec_eval's name, `ndcg_cut_10`, or t1's, `ndcg@10`). Runs are
    {qid: {doc_id: score}}, each list fused whole; ties go to the smaller dense weight."""
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
