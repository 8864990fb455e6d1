import json

import numpy as np
import pytest
import torch

from t1 import Document, T1Error, T1Model
from t1.index import Index

DOCS = [Document(f"d{i}", text, f"title {i}") for i, text in enumerate(
    ["cell protein gene", "river water rock", "prime integer theorem", "solar energy carbon",
     "robot sensor code", "virus vaccine cell", "graph tree proof"])]


def test_build_search_and_reopen(tiny_model, tmp_path):
    index = Index.build(tiny_model, DOCS, tmp_path / "idx", shard_size=3, dtype="float32")
    assert len(index) == 7 and index.manifest["shards"] == 3
    assert index.ids == [d.id for d in DOCS]
    doc_emb = tiny_model.encode_document([d.full_text for d in DOCS])
    np.testing.assert_allclose(index.embeddings(), doc_emb, atol=1e-5)
    # a document's own embedding finds it first
    hits = index.search(doc_emb[[2, 5]], k=3)
    assert [h[0].id for h in hits] == ["d2", "d5"]
    assert hits[0][0].title == "title 2" and hits[0][0].snippet == "prime integer theorem"
    # exclusion happens before the cut: still k results, none excluded
    hits = index.search(doc_emb[[2]], k=3, exclude=[{"d2", "no-such-id"}])
    assert len(hits[0]) == 3 and "d2" not in [h.id for h in hits[0]]
    reopened = Index.open(tmp_path / "idx", model=tiny_model)
    assert [h.id for h in reopened.search(doc_emb[[4]], k=2)[0]] == [h.id for h in index.search(doc_emb[[4]], k=2)[0]]


def test_float16_index_keeps_ranking(tiny_model, tmp_path):
    index = Index.build(tiny_model, DOCS, tmp_path / "idx16")
    assert np.load(tmp_path / "idx16" / "emb-00000.npy").dtype == np.float16
    q = tiny_model.encode_query(["cell protein"], reasoning="none").embeddings
    full = Index.build(tiny_model, DOCS, tmp_path / "idx32", dtype="float32")
    assert [h.id for h in index.search(q, k=5)[0]] == [h.id for h in full.search(q, k=5)[0]]


class Killed(Exception):
    """Stands in for Ctrl-C / a kill in the middle of encoding."""


def test_resume_after_interrupt(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    calls, kill_at = [], [2]
    original = T1Model.encode_document

    def flaky(self, texts, **kw):
        calls.append(len(texts))
        if len(calls) == kill_at[0]:
            raise Killed
        return original(self, texts, **kw)

    monkeypatch.setattr(T1Model, "encode_document", flaky)
    with pytest.raises(Killed):
        Index.build(tiny_model, DOCS, folder, shard_size=3)
    assert (folder / "emb-00000.npy").exists() and not (folder / "emb-00001.npy").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(T1Error, match="incomplete"):
        Index.open(folder)
    first_shard = (folder / "emb-00000.npy").stat().st_mtime_ns
    calls.clear()
    kill_at[0] = None
    index = Index.build(tiny_model, DOCS, folder, shard_size=3)
    assert calls == [3, 1]  # only the two missing shards were encoded
    assert (folder / "emb-00000.npy").stat().st_mtime_ns == first_shard
    assert len(index) == 7 and Index.open(folder).manifest["complete"]


def test_other_model_or_settings_refused(tiny_model, tiny_model_path, tmp_path):
    Index.build(tiny_model, DOCS, tmp_path / "idx")
    other = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    with torch.no_grad():
        other.backbone.get_input_embeddings().weight[7] += 0.1
    with pytest.raises(T1Error, match="different model"):
        Index.open(tmp_path / "idx", model=other)
    with pytest.raises(T1Error, match="different model"):
        Index.build(other, DOCS, tmp_path / "idx")
    with pytest.raises(T1Error, match="different instruction"):
        Index.build(tiny_model, DOCS, tmp_path / "idx", instruction="Represent")
    with pytest.raises(T1Error, match="instruction"):
        Index.open(tmp_path / "idx", instruction="something else")
    with pytest.raises(T1Error, match="different corpus_hash"):
        Index.build(tiny_model, DOCS[:-1] + [Document("d6", "changed")], tmp_path / "idx")


def test_open_errors(tmp_path):
    with pytest.raises(T1Error, match="not a t1 index"):
        Index.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(T1Error, match="malformed manifest"):
        Index.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(T1Error, match="format 99"):
        Index.open(tmp_path)
