"""Fusion rules on hand-computed rankings, and the hybrid retriever end to end."""

import json

import pytest

from t1.cli import main
from t1.fusion import fuse

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
    corpus = [{"_id": "d1", "title": "Cells", "text": "cell protein gene brain"},
              {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
              {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"}]
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "river rock"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "prime proof"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
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


def test_index_with_bm25_and_hybrid_search(tmp_path, tiny_model_path, capsys):
    from t1 import T1Model
    from t1.data import Document
    from t1.index import Index

    docs = [Document("d1", "cell protein gene brain", "Cells"), Document("d2", "river water rock climate", "Rivers"),
            Document("d3", "prime integer theorem proof", "Primes")]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs))
    out = tmp_path / "idx"
    args = ["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    assert main(["search", "--index", str(out), "--hybrid", "--reasoning", "none", "river"]) == 2
    assert "t1 index --bm25" in capsys.readouterr().err  # no BM25 yet: a clear error, before any reasoning
    shard = out / "emb-00000.npy"
    encoded_at = shard.stat().st_mtime_ns
    assert main(args + ["--bm25"]) == 0  # added to the existing index ...
    assert shard.stat().st_mtime_ns == encoded_at  # ... without re-encoding
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--hybrid", "--fusion-weight", "0.2", "--reasoning", "none",
                 "--json", "-k", "3", "river rock"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert hits[0]["id"] == "d2" and hits[0]["title"] == "Rivers" and len(hits) == 3
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    index = Index.open(out, model=model)
    q = model.encode_query(["river rock"], reasoning="none").embeddings
    fused = index.search_hybrid(q, ["river rock"], k=3, exclude=[{"d2"}], weight=0.2)
    assert [h.id for h in fused[0]] and "d2" not in [h.id for h in fused[0]]  # exclusions hold under fusion
    bm25_only = index.search_hybrid(q, ["river rock"], k=3, weight=0.0, fusion="weighted")
    assert bm25_only[0][0].id == "d2" and bm25_only[0][0].score == 1.0
