"""The adaptive fusion (`t1.index.fusion` method "adaptive"): per query, each list's weight is tilted
by how far its top hit stands out, so an uninformative list (equal or random scores) is
followed little and the informative one is followed."""

import json
import math
import random

import pytest
from conftest import FUSION_WEIGHT

from t1.cli import main
from t1.index.fusion import (
    ADAPTIVE_DEPTH,
    ADAPTIVE_SHARPNESS,
    METHODS,
    adaptive_weights,
    confidence,
    fuse,
    resolve,
    weighted_sum,
)
from t1.settings import QuerySettings

CORPUS = [{"_id": "d1", "title": "Cells", "text": "cell protein gene brain"},
          {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
          {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"},
          {"_id": "d4", "title": "Stones", "text": "rock stone mineral granite"}]


def test_confidence_by_hand():
    # one top hit above m - 1 equal scores stands sqrt(m - 1) standard deviations out
    assert confidence({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, depth=4) == pytest.approx(math.sqrt(3))
    # only the top `depth` scores count: 10 and 9 are one standard deviation apart
    ladder = {f"d{i}": float(i) for i in range(11)}
    assert confidence(ladder, depth=2) == pytest.approx(1.0)
    assert confidence(ladder, depth=11) == pytest.approx(5 / math.sqrt(10))
    # a shift and a scale change nothing: cosines and BM25 scores compare
    scores = {"a": 0.71, "b": 0.52, "c": 0.50, "d": 0.47, "e": 0.31}
    assert confidence({d: 12.0 * s - 3.0 for d, s in scores.items()}) == pytest.approx(confidence(scores))
    # only the scores a list has count: BM25's few matches are judged among themselves
    assert confidence({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, depth=10) == pytest.approx(math.sqrt(3))
    # nothing to stand out of: no list, one score, equal scores (also up to rounding)
    assert confidence({}) == confidence({"a": 3.0}) == confidence({"a": 2.0, "b": 2.0, "c": 2.0}) == 0.0
    assert confidence({"a": 0.1 + 0.2, "b": 0.3, "c": 0.3}) == 0.0


def test_the_weights_follow_the_confident_list():
    sure, flat = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}
    assert adaptive_weights([sure, flat], [0.4, 0.6], depth=4) == [1.0, 0.0]
    assert adaptive_weights([flat, sure], [0.4, 0.6], depth=4) == [0.0, 1.0]
    # sharpness 0 is the fixed weighted sum (normalised), as is "no list has any confidence"
    middling = {"a": 1.0, "b": 0.5, "c": 0.0}
    assert adaptive_weights([sure, middling], [0.4, 0.6], sharpness=0) == pytest.approx([0.4, 0.6])
    assert adaptive_weights([flat, {}], [0.4, 0.6], depth=4) == pytest.approx([0.4, 0.6])
    # by hand, top 3: confidences sqrt(2) and sqrt(3/2), tilted by their squares (sharpness 2)
    c1, c2 = math.sqrt(2), math.sqrt(1.5)
    want = [0.4 * c1**2 / (0.4 * c1**2 + 0.6 * c2**2), 0.6 * c2**2 / (0.4 * c1**2 + 0.6 * c2**2)]
    assert adaptive_weights([sure, middling], [0.4, 0.6], sharpness=2, depth=3) == pytest.approx(want)
    # a one-document list (BM25's single match) is too short to judge: the weights as given
    assert adaptive_weights([sure, {"a": 7.0}], [0.4, 0.6]) == pytest.approx([0.4, 0.6])
    with pytest.raises(ValueError, match="sharpness"):
        adaptive_weights([sure], sharpness=-1)
    assert "adaptive" in METHODS and ADAPTIVE_SHARPNESS > 0 and ADAPTIVE_DEPTH >= 2


def test_a_constant_side_is_ignored():
    informative = {"b": 9.0, "c": 4.0, "a": 2.5, "d": 1.0}
    constant = {"a": 0.7, "d": 0.7, **{f"x{i:03d}": 0.7 for i in range(2 * ADAPTIVE_DEPTH)}}
    for lists in ([constant, informative], [informative, constant]):
        adaptive = [d for d, _ in fuse(lists, "adaptive", weights=[0.4, 0.6], k=10)]
        assert adaptive[:5] == ["b", "c", "a", "d", "x000"]  # the informative order; the rest at weight 0
    # the fixed weighted sum lifts every document of the constant list by its weight above b
    assert [d for d, _ in fuse([constant, informative], "weighted", weights=[0.6, 0.4], k=3)] == ["a", "d", "x000"]


def _synthetic_queries(n: int = 200, docs: int = 100, seed: int = 0):
    """n queries: an informative list (the relevant document `rel` scores high, the rest a bell
    around 0.5, like a retriever's cosines) and an uninformative one (uniform random scores over
    an overlapping set of documents)."""
    rng = random.Random(seed)
    for q in range(n):
        ids = [f"q{q}d{i:03d}" for i in range(docs)]
        informative = {d: rng.gauss(0.5, 0.05) for d in ids}
        rel = ids[rng.randrange(docs)]
        informative[rel] = 0.5 + rng.uniform(0.2, 0.3)
        noise = {d: rng.random() for d in rng.sample(ids, docs // 2) + [f"q{q}x{i}" for i in range(docs // 2)]}
        yield rel, informative, noise


@pytest.mark.parametrize("noisy_side", [0, 1])
def test_a_random_side_is_followed_little(noisy_side):
    """Either side replaced by uniform random scores: the adaptive rule ranks the relevant
    document where the informative list does, the fixed weighted sum does not."""
    reciprocal = {"adaptive": [], "weighted": [], "informative alone": []}
    for rel, informative, noise in _synthetic_queries():
        lists = [noise, informative] if noisy_side == 0 else [informative, noise]
        for method in ("adaptive", "weighted"):
            ranked = [d for d, _ in fuse(lists, method, weights=[0.4, 0.6], k=200)]
            reciprocal[method].append(1 / (ranked.index(rel) + 1))
        reciprocal["informative alone"].append(1 / ([d for d, _ in fuse([informative], k=200)].index(rel) + 1))
    mrr = {m: sum(v) / len(v) for m, v in reciprocal.items()}
    assert mrr["informative alone"] == 1.0
    assert mrr["adaptive"] >= 0.95  # follows the informative side
    assert mrr["weighted"] < 0.8  # a fixed weight does not, whichever side it favours


def test_ties_are_deterministic_and_input_order_does_not_matter():
    dense, sparse = {"y": 1.0, "x": 1.0, "z": 0.0}, {"x": 2.0, "y": 2.0, "z": 1.0}
    first = fuse([dense, sparse], "adaptive", weights=[0.4, 0.6])
    assert [d for d, _ in first] == ["x", "y", "z"]  # x and y tie: by document id
    reordered = fuse([dict(reversed(dense.items())), dict(reversed(sparse.items()))], "adaptive", weights=[0.4, 0.6])
    assert reordered == first


def test_exclusions_are_removed_before_the_confidence_is_measured():
    # the dense list's only standout is x: with x excluded, the list is flat and gets no weight
    dense = {"x": 10.0, "a": 1.0, "b": 1.0, "c": 1.0, **{f"f{i:02d}": 1.0 for i in range(ADAPTIVE_DEPTH)}}
    sparse = {"a": 1.0, "b": 5.0, "c": 2.0}
    assert [d for d, _ in fuse([dense, sparse], "adaptive", weights=[0.9, 0.1], k=3, exclude={"x"})] == ["b", "c", "a"]
    kept = fuse([dense, sparse], "adaptive", weights=[0.9, 0.1])
    assert kept[0][0] == "x"  # unexcluded, x leads: the dense list is the confident one


def test_adaptive_is_a_fusion_method_everywhere():
    assert resolve("adaptive") == ("adaptive", 0.5)
    assert resolve("adaptive", saved_weight=0.3) == ("adaptive", 0.3)  # the saved weight is its prior
    assert resolve("adaptive", 0.7, saved_weight=0.3) == ("adaptive", 0.7)
    assert QuerySettings(hybrid="adaptive") == QuerySettings(hybrid=True, fusion="adaptive")


def _index(tmp_path, model_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    out = tmp_path / "idx"
    assert main(["index", "--model", str(model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_search_queries_and_cli_fuse_adaptively(tmp_path, weighted_model_path, capsys):
    from t1 import T1Model
    from t1.index import Index

    out = _index(tmp_path, weighted_model_path)
    model = T1Model.from_pretrained(str(weighted_model_path), device="cpu")
    index = Index.open(out, model=model)
    queries = ["river rock", "prime proof"]
    hits, _ = index.search_queries(model, queries, k=4, reasoning="none", hybrid="adaptive")
    # the same lists fused by hand: T1's and BM25's, each with the saved weight as prior
    embeddings = model.encode_query(queries, reasoning="none").embeddings
    dense = index.search(embeddings, k=100)
    sparse = index.bm25.search(queries, 100, None)
    for q in range(len(queries)):
        lists = [{h.id: h.score for h in dense[q]}, {index.ids[i]: s for i, s in sparse[q]}]
        weights = adaptive_weights(lists, [FUSION_WEIGHT, 1 - FUSION_WEIGHT])
        want = sorted(weighted_sum(lists, weights).items(), key=lambda kv: (-kv[1], kv[0]))[:4]
        assert [(h.id, h.score) for h in hits[q]] == [(d, pytest.approx(s)) for d, s in want]
    assert hits[1][0].id == "d3"  # BM25's one match: the fixed weights, 0.7 of them on BM25
    excluded, _ = index.search_queries(model, queries, k=4, reasoning="none", hybrid="adaptive",
                                       exclude=[{"d2"}, set()])
    assert "d2" not in [h.id for h in excluded[0]]

    capsys.readouterr()
    assert main(["search", "--index", str(out), "--reasoning", "none", "--json", "-k", "3", "--fusion", "adaptive",
                 "river rock"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["ranking"] == f"hybrid-adaptive({FUSION_WEIGHT})"
    assert [(h["id"], h["score"]) for h in result["hits"]] == [(h.id, pytest.approx(h.score)) for h in hits[0][:3]]


def test_eval_takes_fusion_adaptive(tmp_path, weighted_model_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "river rock"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "prime proof"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    out = tmp_path / "run"
    assert main(["eval", "--dataset", str(folder), "--retriever", f"hybrid:t1:{weighted_model_path}", "--reasoning",
                 "none", "--fusion", "adaptive", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert (settings["fusion"], settings["dense_weight"]) == ("adaptive", FUSION_WEIGHT)
    results = json.loads((out / "results.json").read_text())
    assert max(results["q2"], key=results["q2"].get) == "d3"


def test_a_model_can_save_adaptive_as_its_default(tmp_path, tiny_model_path):
    from t1 import T1Error, T1Model
    from t1.evaluation.retrievers import hybrid_fusion
    from t1.index import Index
    from t1.model import T1Config

    folder = tmp_path / "adaptive-model"
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", fusion_weight=0.4, fusion="adaptive")
    model.save_pretrained(folder)
    assert T1Config.saved(str(folder)).fusion == "adaptive"
    assert hybrid_fusion(f"hybrid:t1:{folder}") == ("adaptive", 0.4)
    assert hybrid_fusion(f"hybrid:t1:{folder}", fusion="weighted") == ("weighted", 0.4)  # asked for wins
    index = Index.open(_index(tmp_path, folder), model=model)
    assert str(index.ranking(model)) == "hybrid-adaptive(0.4)"
    assert str(index.ranking(model, fusion="rrf")) == "hybrid-rrf(0.5)"
    with pytest.raises(T1Error, match="fusion must be one of"):
        T1Config(fusion="max")
