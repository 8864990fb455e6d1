"""Stage-3 reward functions against values computed by hand."""

import math

import numpy as np
import pytest

from t1.training.rewards import (
    RewardConfig,
    cosine_margin,
    format_score,
    group_advantages,
    length_fraction,
    ndcg_at_k,
    positive_ranks,
    reciprocal_rank,
    trace_reward,
)

# Pool of four documents; positives are 1 and 3. Ranking by score: 0, 2, 1, 3.
SCORES = [0.9, 0.5, 0.7, 0.1]
POSITIVE = [False, True, False, True]


def test_positive_ranks():
    assert positive_ranks(SCORES, POSITIVE).tolist() == [3, 4]


def test_ndcg_at_k():
    dcg = 1 / math.log2(3 + 1) + 1 / math.log2(4 + 1)  # 0.5 + 0.4307
    ideal = 1 / math.log2(2) + 1 / math.log2(3)  # 1 + 0.6309
    assert ndcg_at_k(SCORES, POSITIVE, k=10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(SCORES, POSITIVE, k=10) == pytest.approx(0.570641, abs=1e-6)
    # At k=3 only the positive at rank 3 counts; the ideal list still has both positives.
    assert ndcg_at_k(SCORES, POSITIVE, k=3) == pytest.approx(0.5 / ideal)
    assert ndcg_at_k([0.1, 0.9], [False, True]) == pytest.approx(1.0)
    assert ndcg_at_k(SCORES, [False] * 4) == 0.0


def test_reciprocal_rank_and_margin():
    assert reciprocal_rank(SCORES, POSITIVE) == pytest.approx(1 / 3)
    assert cosine_margin(SCORES, POSITIVE) == pytest.approx(0.5 - 0.9)
    assert cosine_margin([0.8, 0.3], [True, False]) == pytest.approx(0.5)
    assert cosine_margin([0.8, 0.3], [True, True]) == 0.0  # no negative to compare with
    assert reciprocal_rank(SCORES, [False] * 4) == 0.0


def test_ties_count_against_the_positives():
    """A collapsed embedding (all scores equal) must not earn a good rank from the pool order."""
    scores, positive = [0.5, 0.5, 0.5], [True, False, False]
    assert positive_ranks(scores, positive).tolist() == [3]
    assert reciprocal_rank(scores, positive) == pytest.approx(1 / 3)
    assert ndcg_at_k(scores, positive) == pytest.approx(1 / math.log2(4))


def test_length_and_format():
    assert length_fraction(32, 128) == 0.25
    assert length_fraction(300, 128) == 1.0
    assert length_fraction(0, 128) == 0.0
    assert format_score(True) == 1.0 and format_score(False) == 0.0


def test_trace_reward_combines_the_weighted_terms():
    config = RewardConfig(reward_rank_metric="ndcg", reward_k=10, reward_rank_weight=1.0, reward_margin_weight=0.5,
                          reward_length_weight=0.05, reward_format_weight=0.2)
    r = trace_reward(SCORES, POSITIVE, length=32, emitted_emb_token=True, max_length=128, config=config)
    assert r.rank == pytest.approx(0.570641, abs=1e-6)
    assert r.margin == pytest.approx(-0.4)
    assert r.length == 0.25 and r.format == 1.0 and r.best_rank == 3
    assert r.total == pytest.approx(0.570641 - 0.5 * 0.4 - 0.05 * 0.25 + 0.2, abs=1e-6)

    rr = RewardConfig(reward_rank_metric="rr", reward_rank_weight=2.0, reward_margin_weight=0.0,
                      reward_length_weight=0.0, reward_format_weight=0.0)
    r = trace_reward(SCORES, POSITIVE, length=10, emitted_emb_token=False, max_length=128, config=rr)
    assert r.total == pytest.approx(2 / 3)


def test_reward_config_validation():
    with pytest.raises(ValueError, match="rank_metric"):
        RewardConfig(reward_rank_metric="map")
    with pytest.raises(ValueError, match="reward_k must be >= 1"):
        RewardConfig(reward_k=0)


def test_group_advantages_by_hand():
    adv = group_advantages([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], group_size=3)
    # Group 1: mean 2, unbiased std 1. Group 2: all equal, so no signal.
    assert adv == pytest.approx([-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4), 0.0, 0.0, 0.0])
    assert group_advantages([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3, scale="none") == pytest.approx([-1, 0, 1, 0, 0, 0])
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0, 3.0], group_size=2)


def test_group_advantages_are_zero_mean_per_group():
    rewards = np.random.default_rng(0).normal(size=(5, 8)) * [[0.1], [1.0], [3.0], [10.0], [0.5]]
    for scale in ("group", "batch", "none"):
        adv = group_advantages(rewards.reshape(-1), group_size=8, scale=scale).reshape(5, 8)
        assert np.abs(adv.mean(axis=1)).max() < 1e-9
    adv = group_advantages(rewards.reshape(-1), group_size=8).reshape(5, 8)
    std = rewards.std(axis=1, ddof=1)
    assert adv.std(axis=1, ddof=1) == pytest.approx(std / (std + 1e-4))  # unit spread, up to eps
