import math

import pytest

from t1.errors import T1Error
from t1.evaluation.metrics import evaluate, format_headline
from t1.evaluation.runs import RUN_FILE, ranked, read_trec_run, write_trec_run


def test_ndcg_recall_map_mrr_by_hand():
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d9": 1}}
    results = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7}, "q2": {"d2": 0.9, "d9": 0.5}}
    ev = evaluate(qrels, results)
    q1, q2 = ev.per_query["q1"], ev.per_query["q2"]
    # q1: relevant at ranks 1 and 3. DCG = 1 + 1/log2(4); ideal = 1 + 1/log2(3).
    assert q1["ndcg@10"] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert q1["ndcg@1"] == pytest.approx(1.0)
    assert q1["recall@1"] == pytest.approx(0.5)
    assert q1["recall@3"] == pytest.approx(1.0)
    assert q1["map@100"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert q1["precision@3"] == pytest.approx(2 / 3)
    assert q1["mrr"] == pytest.approx(1.0)
    # q2: the only relevant document at rank 2.
    assert q2["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert q2["ndcg@1"] == 0.0
    assert q2["mrr"] == pytest.approx(0.5)
    assert ev.mean["ndcg@10"] == pytest.approx((q1["ndcg@10"] + q2["ndcg@10"]) / 2)
    assert ev.mean["mrr"] == pytest.approx(0.75)


def test_graded_relevance_uses_the_grade_as_gain():
    ev = evaluate({"q": {"a": 1, "b": 2}}, {"q": {"a": 2.0, "b": 1.0}})
    dcg = 1 + 2 / math.log2(3)
    ideal = 2 + 1 / math.log2(3)
    assert ev.per_query["q"]["ndcg@10"] == pytest.approx(dcg / ideal)


def test_a_judged_query_without_results_counts_as_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    ev = evaluate(qrels, {"q1": {"d1": 1.0}, "q_unjudged": {"d1": 1.0}})
    assert set(ev.per_query) == {"q1", "q2"}
    assert ev.per_query["q2"]["ndcg@10"] == 0.0
    assert ev.mean["ndcg@10"] == pytest.approx(0.5)
    assert ev.mean["recall@100"] == pytest.approx(0.5)


def test_metric_keys_cover_beir_and_bright_cutoffs():
    ev = evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}})
    for key in ("ndcg@10", "recall@100", "recall@1000", "map@100", "ndcg@25", "mrr"):
        assert ev.mean[key] == 1.0
    assert ev.mean["precision@5"] == pytest.approx(0.2)
    assert format_headline(ev.mean) == "nDCG@10 100.0 · Recall@100 100.0 · MAP@100 100.0 · MRR 100.0"


def test_trec_run_round_trip_and_order(tmp_path):
    results = {"q1": {"a": 0.5, "b": 2.0, "c": 0.5}, "q2": {"x": -1.0}}
    write_trec_run(tmp_path / RUN_FILE, results, tag="st:my model")
    lines = (tmp_path / RUN_FILE).read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2.000000 st:my_model"
    # ties: docid descending, as trec_eval orders them
    assert [line.split()[2] for line in lines[:3]] == ["b", "c", "a"]
    assert [line.split()[3] for line in lines[:3]] == ["1", "2", "3"]
    assert read_trec_run(tmp_path / RUN_FILE) == results
    assert ranked(results["q1"])[0] == ("b", 2.0)


def test_malformed_run_file_names_the_line(tmp_path):
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 0.5 tag\nq1 d2 1 0.4\n")
    with pytest.raises(T1Error, match=r"bad.trec:2"):
        read_trec_run(tmp_path / "bad.trec")
