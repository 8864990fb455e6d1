"""Stage-3 rewards: how well one reasoning trace's embedding retrieves its query's positives.

A trace is scored against a candidate pool (the query's positives, its hard negatives and the
other queries' documents in the batch) by cosine similarity. Its reward is a weighted sum of

- a rank term: nDCG@k of the positives in the pool, or the reciprocal rank of the best positive;
- a margin term: best positive score minus best negative score (dense shaping: it still moves
  when the rank does not);
- a length penalty: the trace's share of the token budget, so reasoning stays as short as it can;
- a format term: 1 when the model ended its trace with ``<emb_token>`` by itself.

Ties are broken against the positives: a positive scored equal to a negative ranks below it, so a
collapsed embedding (every score equal) earns the lowest rank reward, not the pool's order.

Everything here is pure NumPy, so each value can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

RankMetric = Literal["ndcg", "rr"]
RANK_METRICS = get_args(RankMetric)


@dataclass
class RewardConfig:
    """Weights and settings of the trace reward. These are the `reward_*` fields of a stage-3
    config (`T1GRPOConfig` is a `RewardConfig`), declared here only."""

    reward_rank_metric: RankMetric = field(default="ndcg", metadata={
        "help": "Rank term: nDCG@k of the positives in the pool, or reciprocal rank of the best one."})
    reward_k: int = field(default=10, metadata={"help": "k of the rank term's nDCG@k."})
    reward_rank_weight: float = field(default=1.0, metadata={"help": "Weight of the rank term."})
    reward_margin_weight: float = field(default=0.5, metadata={
        "help": "Weight of (best positive − best negative) cosine."})
    reward_length_weight: float = field(default=0.05, metadata={
        "help": "Penalty weight on the share of max_completion_length the trace used."})
    reward_format_weight: float = field(default=0.2, metadata={
        "help": "Bonus when the model ends its trace with <emb_token> itself."})

    def __post_init__(self):
        self.check_reward()
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # cooperative: T1GRPOConfig's other bases check their own fields
            parent()

    def check_reward(self) -> None:
        if self.reward_rank_metric not in RANK_METRICS:
            raise ValueError(f"reward_rank_metric must be one of {RANK_METRICS}, got {self.reward_rank_metric!r}")
        if self.reward_k < 1:
            raise ValueError("reward_k must be >= 1")


def positive_ranks(scores, positive) -> np.ndarray:
    """1-based rank of each positive in the pool (descending score, ties against positives)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.lexsort((positive, -scores))  # by score desc, then negatives before positives
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    return rank[positive]


def best_positive_rank(scores, positive) -> int:
    """Rank of the best-ranked positive (pool size + 1 when there is none): the tie rule of
    `positive_ranks`, used by the reward and by stage 2's trace rejection alike."""
    ranks = positive_ranks(scores, positive)
    return int(ranks.min()) if len(ranks) else len(np.asarray(scores)) + 1


def ndcg_at_k(scores, positive, k: int = 10) -> float:
    """Binary-relevance nDCG@k of the positives; 0 when there are none."""
    ranks = positive_ranks(scores, positive)
    if len(ranks) == 0:
        return 0.0
    dcg = float(np.sum(1.0 / np.log2(ranks[ranks <= k] + 1)))
    ideal = float(np.sum(1.0 / np.log2(np.arange(1, min(k, len(ranks)) + 1) + 1)))
    return dcg / ideal


def reciprocal_rank(scores, positive) -> float:
    """1 / rank of the best-ranked positive; 0 when there are none."""
    ranks = positive_ranks(scores, positive)
    return 1.0 / float(ranks.min()) if len(ranks) else 0.0


def cosine_margin(scores, positive) -> float:
    """Best positive score minus best negative score (0 when either side is empty)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if not positive.any() or positive.all():
        return 0.0
    return float(scores[positive].max() - scores[~positive].max())


def length_fraction(length: int, max_length: int) -> float:
    """Share of the token budget the trace used, in [0, 1] (the length penalty is -weight × this)."""
    return min(max(length, 0) / max(max_length, 1), 1.0)


def format_score(emitted_emb_token: bool) -> float:
    return 1.0 if emitted_emb_token else 0.0


@dataclass
class TraceReward:
    total: float
    rank: float  # nDCG@k or reciprocal rank
    margin: float
    length: float  # fraction of the budget used
    format: float
    best_rank: int  # rank of the best positive in the pool (for logging)


def trace_reward(scores, positive, length: int, emitted_emb_token: bool, max_length: int,
                 config: RewardConfig) -> TraceReward:
    """Reward of one trace from its similarity `scores` to the pool and the `positive` mask."""
    if config.reward_rank_metric == "ndcg":
        rank = ndcg_at_k(scores, positive, config.reward_k)
    else:
        rank = reciprocal_rank(scores, positive)
    margin = cosine_margin(scores, positive)
    frac = length_fraction(length, max_length)
    fmt = format_score(emitted_emb_token)
    total = (config.reward_rank_weight * rank + config.reward_margin_weight * margin
             - config.reward_length_weight * frac + config.reward_format_weight * fmt)
    return TraceReward(total, rank, margin, frac, fmt, best_positive_rank(scores, positive))


def group_advantages(rewards, group_size: int, scale: str = "group", eps: float = 1e-4) -> np.ndarray:
    """Group-relative advantages: each reward minus its group's mean, divided by the group's
    (unbiased) standard deviation (`scale="group"`), the batch's (`"batch"`) or nothing
    (`"none"`). Rows are grouped consecutively, `group_size` traces per query, the layout TRL's
    GRPOTrainer uses; this is the same formula, kept here to test and log it."""
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size}")
    grouped = r.reshape(-1, group_size)
    adv = grouped - grouped.mean(axis=1, keepdims=True)
    if scale == "group":
        std = grouped.std(axis=1, ddof=1, keepdims=True) if group_size > 1 else np.zeros_like(adv[:, :1])
        adv = adv / (std + eps)
    elif scale == "batch":
        adv = adv / ((r.std(ddof=1) if r.size > 1 else 0.0) + eps)
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return adv.reshape(-1)
