"""A Qdrant store (qdrant-client's embedded local mode; the same calls reach a server): the round
trip against an index folder, exclusions, k beyond the collection, resuming, model checks, the
CLI and `t1 serve --store`."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from interrupt import Killed, encode_counting  # noqa: E402

from t1 import Document, T1Error, T1Model  # noqa: E402
from t1.cli import main  # noqa: E402
from t1.index import Index  # noqa: E402
from t1.stores.qdrant import QdrantIndex, parse_spec, point_id  # noqa: E402

DOCS = [Document(f"d{i}", text, f"title {i}") for i, text in enumerate(
    ["cell protein gene", "river water rock", "prime integer theorem", "solar energy carbon",
     "robot sensor code", "virus vaccine cell", "graph tree proof"])]
QUERIES = ["water rock", "prime proof", "plant cell energy"]


def test_specs_and_point_ids():
    assert parse_spec("qdrant://db.example:6333/docs") == (
        {"url": "http://db.example:6333", "api_key": None}, "docs", False)
    assert parse_spec("qdrants://db.example/docs")[0]["url"] == "https://db.example:6333"
    assert parse_spec("runs/qdrant#papers") == ({"path": "runs/qdrant"}, "papers", True)
    assert parse_spec("runs/qdrant")[1] == "t1"
    for bad in ("qdrant://host:6333/", "http://host/x", "qdrant://host:port/x"):
        with pytest.raises(T1Error):
            parse_spec(bad)
    assert point_id("d1") == point_id("d1") != point_id("d2")
    assert len(point_id("d1")) == 36


def test_round_trip_matches_the_index_folder(tiny_model, tmp_path):
    spec = f"{tmp_path / 'qdrant'}#docs"
    store = QdrantIndex.build(tiny_model, DOCS, spec, shard_size=3, show_progress_bar=False)
    folder = Index.build(tiny_model, DOCS, tmp_path / "idx", shard_size=3)
    try:
        assert len(store) == 7 and store.manifest["complete"] and store.manifest["shards"] == 3
        # files and BM25: a folder's own
        assert store.manifest == {k: v for k, v in folder.manifest.items() if k not in ("files", "bm25")}
        q = tiny_model.encode_query(QUERIES, reasoning="none").embeddings
        got, want = store.search(q, k=5), folder.search(q, k=5)
        for g, w in zip(got, want):
            assert [h.id for h in g] == [h.id for h in w]
            assert [h.score for h in g] == pytest.approx([h.score for h in w], abs=2e-3)
        assert got[0][0].title.startswith("title ") and got[0][0].snippet

        # exclusions before the cut, and k larger than the collection
        exclude = [{want[0][0].id, want[0][1].id, "no-such-id"}, set(), {want[2][0].id}]
        got = store.search(q, k=50, exclude=exclude)
        assert [len(h) for h in got] == [5, 7, 6]
        assert all(not ({h.id for h in hits} & ex) for hits, ex in zip(got, exclude))
        assert [[h.id for h in hits] for hits in got] == [[h.id for h in hits] for hits in
                                                          folder.search(q, k=50, exclude=exclude)]
        with pytest.raises(T1Error, match="k must be at least 1, got 0"):  # as an index folder says
            store.search(q[:1], k=0)

        # the search helpers shared with index folders: several traces, adaptive reasoning
        traces = np.stack([q, q[::-1]], axis=1)
        assert [[h.id for h in r] for r in store.search_traces(traces, k=3)] == \
               [[h.id for h in r] for r in folder.search_traces(traces, k=3)]
        hits, reasoning = store.search_queries(tiny_model, QUERIES, k=3, reasoning="none", exclude=exclude)
        assert [[h.id for h in r] for r in hits] == [[h.id for h in r] for r in folder.search_queries(
            tiny_model, QUERIES, k=3, reasoning="none", exclude=exclude)[0]]
        with pytest.raises(T1Error, match="hybrid search needs BM25: .* only an index folder"):
            store.search_queries(tiny_model, QUERIES, hybrid="rrf", reasoning="none")
        weighted = SimpleNamespace(config=SimpleNamespace(fusion_weight=0.3))  # a model with a saved weight
        assert str(folder.ranking(weighted)) == "hybrid-weighted(0.3)"
        assert str(store.ranking(weighted)) == "dense" and "only an index folder" in store.ranking(weighted).note

        # ids are looked up in the store, never all loaded
        assert "d3" in store.ids and "d99" not in store.ids
        assert {"d1", "d99", "x"} - store.ids == {"d99", "x"}
        with pytest.raises(T1Error, match="nprobe"):
            store.search(q, k=3, nprobe=4)
        with pytest.raises(T1Error, match="dimension"):
            store.search(np.zeros((1, 3)), k=3)
    finally:
        store.close()




def test_resume_and_refusals(tiny_model, tiny_model_path, tmp_path, monkeypatch):
    spec = str(tmp_path / "qdrant")
    encode_counting(monkeypatch, die_at=2)
    with pytest.raises(Killed):
        QdrantIndex.build(tiny_model, DOCS, spec, shard_size=3)
    with pytest.raises(T1Error, match="incomplete"):
        QdrantIndex.open(spec)
    monkeypatch.undo()
    calls = encode_counting(monkeypatch)
    QdrantIndex.build(tiny_model, DOCS, spec, shard_size=3).close()
    assert calls == [3, 1]  # only the two missing shards were encoded
    calls.clear()
    QdrantIndex.build(tiny_model, DOCS, spec, shard_size=3).close()  # complete: nothing to do
    assert calls == []

    import torch

    other = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    with torch.no_grad():
        other.backbone.get_input_embeddings().weight[5] += 0.1
    with pytest.raises(T1Error, match="different model"):
        QdrantIndex.open(spec, model=other)
    with pytest.raises(T1Error, match="different model"):
        QdrantIndex.build(other, DOCS, spec, shard_size=3)
    with pytest.raises(T1Error, match="different corpus_hash"):
        QdrantIndex.build(tiny_model, DOCS[:-1] + [Document("d6", "changed")], spec, shard_size=3)
    with pytest.raises(T1Error, match="no t1 collection 'other'"):
        QdrantIndex.open(spec + "#other")
    store = QdrantIndex.open(spec, model=tiny_model)
    assert len(store) == 7 and store.client.count(store.collection, exact=True).count == 7
    store.close()


def test_cli_and_serve_with_a_store(tiny_model, tiny_model_path, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS))
    spec = f"{tmp_path / 'qdrant'}#papers"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--store", spec,
                 "--device", "cpu"]) == 0
    assert "indexed 7 documents into" in capsys.readouterr().out
    assert main(["search", "--store", spec, "--device", "cpu", "--json", "--reasoning", "none", "-k", "20",
                 "water rock"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 7 and result["hits"][0]["title"].startswith("title")
    assert main(["search", "--store", spec, "--device", "cpu", "--hybrid", "q"]) == 2
    assert "hybrid search needs BM25" in capsys.readouterr().err
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--store", spec,
                 "--ann", "hnsw"]) == 2
    assert "--ann applies to an index folder" in capsys.readouterr().err
    assert main(["serve", "--store", f"{tmp_path / 'qdrant'}#nothing", "--port", "0"]) == 2
    assert "no t1 collection 'nothing'" in capsys.readouterr().err

    from fastapi.testclient import TestClient

    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    store = QdrantIndex.open(spec, model=tiny_model)
    try:
        q = tiny_model.encode_query(["water rock"], reasoning="none").embeddings
        want = [h.id for h in store.search(q, k=50, exclude=[{"d1"}])[0]]
        with TestClient(create_app(Engine(tiny_model, store), ServeSettings(max_new_tokens=4))) as client:
            info = client.get("/info").json()
            assert info["index"]["documents"] == 7 and info["index"]["folder"] == spec
            r = client.post("/search", json={"query": "water rock", "k": 50, "reasoning": "none", "exclude": ["d1"]})
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["results"][0]["hits"]] == want and len(want) == 6
            r = client.post("/search", json={"query": "water rock", "reasoning": "none", "exclude": ["nope"]})
            assert r.status_code == 422 and "unknown document id 'nope'" in r.text
            r = client.post("/search", json={"query": "water rock", "hybrid": True})
            assert r.status_code == 422
    finally:
        store.close()


def test_update_and_delete_by_id_match_a_fresh_store(tiny_model, tmp_path):
    """`QdrantIndex.update` / `delete` (#36): new ids added, changed texts re-encoded, unchanged
    ones skipped; the hits equal those of a store built from the resulting corpus."""
    spec = f"{tmp_path / 'qdrant'}#docs"
    store = QdrantIndex.build(tiny_model, DOCS[:5], spec, show_progress_bar=False)
    try:
        changed = Document("d1", "river water rock and a flood", "title 1")
        report = store.update(tiny_model, [*DOCS[5:], changed, DOCS[2]])
        assert (report.added, report.replaced, report.unchanged) == (["d5", "d6"], ["d1"], ["d2"])
        report = store.delete(["d3", "nope"])
        assert report.deleted == ["d3"] and report.not_found == ["nope"] and len(store) == 6
        assert store.manifest["generation"] == 2
        result = [d for d in [*DOCS[:5], *DOCS[5:]] if d.id != "d3"]
        result = [changed if d.id == "d1" else d for d in result]
        fresh = QdrantIndex.build(tiny_model, result, f"{tmp_path / 'fresh'}#docs", show_progress_bar=False)
        q = tiny_model.encode_query(QUERIES, reasoning="none").embeddings
        try:
            for got, want in zip(store.search(q, k=6), fresh.search(q, k=6)):
                assert {h.id for h in got} == {h.id for h in want}
                np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-3)
        finally:
            fresh.close()
    finally:
        store.close()


def test_cli_update_and_delete_a_store(tiny_model_path, tmp_path, capsys):
    corpus, more = tmp_path / "c.jsonl", tmp_path / "more.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS[:4]))
    more.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS[3:]))
    spec = f"{tmp_path / 'qdrant'}#docs"
    common = ["--model", str(tiny_model_path), "--device", "cpu"]
    assert main(["index", *common, "--corpus", str(corpus), "--store", spec]) == 0
    capsys.readouterr()
    assert main(["index", *common, "--corpus", str(more), "--store", spec, "--update"]) == 0
    assert "3 added, 0 replaced, 1 unchanged" in capsys.readouterr().out
    assert main(["index", "--delete-id", "d0", "--delete-id", "zz", "--store", spec]) == 0
    assert "1 deleted, 1 not found (not found: zz); generation 2, 6 documents" in capsys.readouterr().out
