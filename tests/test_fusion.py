"""Fusion rules on hand-computed rankings, and the hybrid retriever end to end."""

import json
import math

import pytest
from conftest import FUSION_WEIGHT

from t1 import T1Error
from t1.cli import main
from t1.evaluation.fusion_weight import choose_weight
from t1.index.fusion import fuse, resolve
from t1.model import T1Config

CORPUS = [{"_id": "d1", "title": "Cells", "text": "cell protein gene brain"},
          {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
          {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"}]

DENSE = {"a": 0.9, "b": 0.8, "c": 0.1}
SPARSE = {"b": 5.0, "c": 3.0, "d": 1.0}


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(fuse([DENSE, SPARSE], "rrf", k=10))
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63})
    assert [d for d, _ in fuse([DENSE, SPARSE], "rrf")] == ["b", "c", "a", "d"]
    # weights scale each list's contribution
    assert [d for d, _ in fuse([DENSE, SPARSE], "rrf", weights=[1.0, 0.0])] == ["a", "b", "c", "d"]


def test_weighted_sum_by_hand():
    fused = dict(fuse([DENSE, SPARSE], "weighted", weights=[0.5, 0.5]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.5 * 0.875 + 0.5, "c": 0.25, "d": 0.0})
    assert [d for d, _ in fuse([DENSE, SPARSE], "weighted", weights=[0.5, 0.5], k=2)] == ["b", "a"]


def test_exclusions_are_removed_before_fusion():
    fused = dict(fuse([DENSE, SPARSE], "rrf", exclude={"b"}))
    # b neither appears nor keeps its rank: a and c move up in their lists
    assert fused == pytest.approx({"a": 1 / 61, "c": 1 / 62 + 1 / 61, "d": 1 / 62})
    assert "b" not in dict(fuse([DENSE, SPARSE], "weighted", exclude={"b"}))


def test_ties_break_by_document_id():
    assert [d for d, _ in fuse([{"y": 1.0, "x": 1.0}], "rrf")] == ["x", "y"]
    assert [d for d, _ in fuse([{"y": 2.0, "x": 1.0}, {"x": 2.0, "y": 1.0}], "weighted")] == ["x", "y"]
    with pytest.raises(ValueError, match="fusion method"):
        fuse([DENSE], "max")
    with pytest.raises(ValueError, match="weight"):
        fuse([DENSE, SPARSE], weights=[1.0])


def test_hybrid_eval_fuses_t1_with_bm25(tmp_path, tiny_model_path, capsys):
    folder = _beir(tmp_path / "beir", CORPUS)
    out = tmp_path / "hybrid"
    assert main(["eval", "--dataset", str(folder), "--retriever", f"hybrid:t1:{tiny_model_path}", "--reasoning",
                 "none", "--fusion", "rrf", "--fusion-weight", "0.3", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["retriever"].startswith("hybrid:t1:") and info["settings"]["dense_weight"] == 0.3
    results = json.loads((out / "results.json").read_text())
    # BM25 matches the query terms, and with 0.7 of the weight its first hit stays first
    assert max(results["q1"], key=results["q1"].get) == "d2" and max(results["q2"], key=results["q2"].get) == "d3"
    assert set(results["q1"]) == {"d1", "d2", "d3"}  # the dense list brings documents BM25 misses


def _beir(folder, corpus):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "river rock"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "prime proof"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    return folder


def test_resolve_defaults_to_the_saved_weight():
    assert resolve() == ("weighted", 0.5)
    assert resolve(saved_weight=0.3) == ("weighted", 0.3)
    assert resolve("rrf", saved_weight=0.3) == ("rrf", 0.5)  # the saved weight is a weighted sum's
    assert resolve("weighted", 0.8, saved_weight=0.3) == ("weighted", 0.8)  # what is asked for wins
    with pytest.raises(T1Error, match="fusion_weight must be between 0 and 1"):
        resolve(weight=1.5)
    with pytest.raises(T1Error, match="fusion method"):
        resolve("max")


def test_choose_weight_by_hand():
    # q1 (relevant a): a = w, b = 1 - w/2, c = 0.6 (1 - w) after min-max; a leads from w > 2/3,
    # passes c from w > 0.375. q2 (relevant d): d = 1 - 0.2 w, e = w; d leads while w < 5/6.
    dense = {"q1": {"a": 1.0, "b": 0.5, "c": 0.0}, "q2": {"e": 1.0, "d": 0.8, "f": 0.0}}
    bm25 = {"q1": {"b": 1.0, "c": 0.6, "a": 0.0}, "q2": {"d": 1.0, "f": 0.5, "e": 0.0}}
    qrels = {"q1": {"a": 1}, "q2": {"d": 1}}
    best, scores = choose_weight(dense, bm25, qrels)
    second, third = 1 / math.log2(3), 1 / math.log2(4)  # nDCG@10 of one relevant document at rank 2, 3
    want = {0.0: (third + 1) / 2, 0.1: (third + 1) / 2, 0.2: (third + 1) / 2, 0.3: (third + 1) / 2,
            0.4: (second + 1) / 2, 0.5: (second + 1) / 2, 0.6: (second + 1) / 2, 0.7: 1.0, 0.8: 1.0,
            0.9: (1 + second) / 2, 1.0: (1 + second) / 2}
    assert list(scores) == list(want) and scores == pytest.approx(want)
    assert best == 0.7  # 0.7 and 0.8 tie: the smaller dense weight
    assert choose_weight(dense, bm25, qrels, weights=(0.9, 0.8), metric="ndcg@10")[0] == 0.8
    best, scores = choose_weight(dense, bm25, qrels, weights=(1.0, 0.0), metric="recip_rank")
    assert best == 1.0 and scores == pytest.approx({1.0: 0.75, 0.0: (1 / 3 + 1) / 2})
    with pytest.raises(ValueError, match="unknown metric"):
        choose_weight(dense, bm25, qrels, metric="ndcg")


def test_fusion_weight_is_saved_and_old_configs_load(tmp_path, weighted_model_path):
    assert T1Config.saved(str(weighted_model_path)).fusion_weight == FUSION_WEIGHT
    old = {k: v for k, v in json.loads((weighted_model_path / "t1_config.json").read_text()).items()
           if k != "fusion_weight"}
    (tmp_path / "t1_config.json").write_text(json.dumps(old))
    assert T1Config.load(tmp_path).fusion_weight is None  # written before the field existed
    assert T1Config.saved(str(tmp_path / "nothing")) is None


def test_eval_hybrid_defaults_to_the_models_weighted_sum(tmp_path, tiny_model_path, weighted_model_path):
    from t1.backbones import DEFAULT_MODEL
    from t1.cli import build_parser
    from t1.evaluation.retrievers import hybrid_fusion

    args = build_parser().parse_args(["eval", "--dataset", "d", "--out", "o"])
    assert (args.retriever, args.fusion, args.fusion_weight) == (f"hybrid:t1:{DEFAULT_MODEL}", None, None)
    assert hybrid_fusion(f"hybrid:t1:{weighted_model_path}") == ("weighted", FUSION_WEIGHT)
    assert hybrid_fusion(f"hybrid:t1:{tiny_model_path}") == ("weighted", 0.5)  # no saved weight
    assert hybrid_fusion("hybrid:st:all-minilm-l6-v2") == ("weighted", 0.5)
    folder = _beir(tmp_path / "beir", CORPUS)
    settings = {}
    for name, model, flags in [("saved", weighted_model_path, []), ("none", tiny_model_path, []),
                               ("asked", weighted_model_path, ["--fusion-weight", "0.6"])]:
        out = tmp_path / name
        assert main(["eval", "--dataset", str(folder), "--retriever", f"hybrid:t1:{model}", "--reasoning", "none",
                     "--out", str(out), "--device", "cpu", "--no-progress", *flags]) == 0
        run = json.loads((out / "run.json").read_text())["settings"]
        settings[name] = (run["fusion"], run["dense_weight"])
    assert settings == {"saved": ("weighted", FUSION_WEIGHT), "none": ("weighted", 0.5), "asked": ("weighted", 0.6)}


def test_index_without_bm25_searches_dense_with_a_note_and_gets_bm25_added(tmp_path, weighted_model_path, capsys):
    from t1 import T1Model
    from t1.index import Index

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    out = tmp_path / "idx"
    args = ["index", "--model", str(weighted_model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"]
    assert main(args + ["--no-bm25"]) == 0
    assert not (out / "bm25").exists() and "BM25" not in capsys.readouterr().out
    search = ["search", "--index", str(out), "--reasoning", "none", "--json", "-k", "3", "river rock"]
    assert main(search) == 0  # the model has a fusion weight, the index no BM25: T1 alone, and a note
    captured = capsys.readouterr()
    (result,) = json.loads(captured.out)  # the note is not in the JSON
    assert result["ranking"] == "dense"
    note = [line for line in captured.err.splitlines() if "note" in line]
    assert note == [f"t1: note: hybrid search is off: {out} has no BM25 index; add one with `t1 index --corpus "
                    f"CORPUS --out {out}` (the same arguments, without --no-bm25: nothing is re-encoded); searching "
                    "with T1 alone"]
    model = T1Model.from_pretrained(str(weighted_model_path), device="cpu")
    index = Index.open(out, model=model)
    q = model.encode_query(["river rock"], reasoning="none").embeddings
    dense = index.search(q, k=3)[0]
    assert [(h["id"], h["score"]) for h in result["hits"]] == [(h.id, pytest.approx(h.score)) for h in dense]
    with pytest.warns(UserWarning, match="hybrid search is off"):  # the same note, from Python
        hits, _ = index.search_queries(model, ["river rock"], k=3, reasoning="none")
    assert [h.id for h in hits[0]] == [h.id for h in dense]

    assert main(search[:-1] + ["--hybrid", "river"]) == 2
    assert "hybrid search needs BM25" in capsys.readouterr().err  # asked for: an error, before the model loads
    shard = out / "emb-00000.npy"
    encoded_at = shard.stat().st_mtime_ns
    assert main(args) == 0  # BM25 added to the existing index ...
    assert shard.stat().st_mtime_ns == encoded_at and (out / "bm25").is_dir()  # ... without re-encoding
    assert "+ BM25" in capsys.readouterr().out
    assert main(search) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["ranking"] == f"hybrid-weighted({FUSION_WEIGHT})" and "note" not in captured.err
    index = Index.open(out, model=model)
    fused = index.search_hybrid(q, ["river rock"], k=3, exclude=[{"d2"}], weight=0.2)
    assert [h.id for h in fused[0]] and "d2" not in [h.id for h in fused[0]]  # exclusions hold under fusion
    bm25_only = index.search_hybrid(q, ["river rock"], k=3, weight=0.0, fusion="weighted")
    assert bm25_only[0][0].id == "d2" and bm25_only[0][0].score == 1.0
