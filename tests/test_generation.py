"""Generation engines (t1.generation) against the Hugging Face reference on the tiny model: the
same greedy traces, the same stop behaviour, the same embedding at <emb_token>; and the callers
(encode_query, t1 serve, t1 data reason) generating through `model.engine`."""

import pytest
import torch
from test_model import ForceStop
from transformers import LogitsProcessorList

from t1 import T1Error, T1Model
from t1.generation import ENGINES, make_engine
from t1.reasoning import stop_token_ids
from t1.settings import GREEDY

pytestmark = pytest.mark.usefixtures("one_thread")

QUERIES = ["why do cells divide", "prime integer theorem proof graph tree energy", "virus", "solar carbon plant"]
TOKENS = 8


def engine_or_skip(model, name):
    if name == "int8":
        pytest.importorskip("torchao")
    return make_engine(model, name)


def force_stops(model, prompts) -> LogitsProcessorList:
    """Row 0 stops with EOS at step 3, row 1 emits <emb_token> at step 5, the others run to the
    budget; no stop token anywhere else."""
    stops = {0: (3, model.tokenizer.eos_token_id), 1: (5, model.emb_token_id)}
    return LogitsProcessorList([ForceStop(stops, max(map(len, prompts)), stop_token_ids(model))])


@pytest.fixture(scope="module")
def prompts(tiny_model):
    return [tiny_model.prompts.query_prompt(q, "Find passages", 64) for q in QUERIES]


@pytest.fixture(scope="module")
def reference(tiny_model, prompts):
    forced = force_stops(tiny_model, prompts)
    return make_engine(tiny_model, "hf").rollout(prompts, TOKENS, logits_processor=forced)


def cosines(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


# llama.cpp needs a GGUF export, which needs a backbone shipped as GGUF: tested on the shipped
# model (test_shipped_model.py).
@pytest.mark.parametrize("name", [e for e in ENGINES if e != "hf" and not e.startswith("llama.cpp")])
def test_engine_matches_the_reference(tiny_model, prompts, reference, name):
    engine = engine_or_skip(tiny_model, name)
    forced = force_stops(tiny_model, prompts)
    rollout = engine.rollout(prompts, TOKENS, logits_processor=forced)
    # the same stop behaviour: EOS, a self-emitted <emb_token>, the budget
    assert [len(r) for r in rollout.reasoning_ids] == [3, 5, TOKENS, TOKENS]
    assert rollout.emitted_emb_token == reference.emitted_emb_token == [False, True, False, False]
    cos = cosines(rollout.embeddings, reference.embeddings)
    if engine.exact:
        assert rollout.reasoning_ids == reference.reasoning_ids
        assert cos.min() >= 0.999, cos
    else:  # int8 weights: near the reference, never equal to it by construction
        assert cos.min() >= 0.9, cos


def test_encode_query_generates_through_the_engine(tiny_model, engine_calls):
    assert tiny_model.engine.name == "hf"  # the default for a backbone that does not ship as GGUF
    out = tiny_model.encode_query(QUERIES[:2], max_new_tokens=4)
    assert len(engine_calls) == 1 and len(engine_calls[0]) == 2  # one batch of two prompts
    assert len(out.reasoning) == 2


def test_unknown_engine_is_a_clear_error(tiny_model_path, tiny_model):
    with pytest.raises(T1Error, match="unknown engine 'vllm'"):
        T1Model.from_pretrained(str(tiny_model_path), device="cpu", engine="vllm")
    pytest.importorskip("llama_cpp")
    with pytest.raises(T1Error, match="shipped as GGUF"):
        make_engine(tiny_model, "llama.cpp")


def test_approximate_engines_keep_their_own_cache_entries(tiny_model):
    from t1.generation import trace_settings

    sampling = GREEDY
    assert trace_settings(make_engine(tiny_model, "hf"), 8, sampling) == {
        "max_new_tokens": 8, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    assert trace_settings(make_engine(tiny_model, "compile"), 8, sampling) == trace_settings(
        make_engine(tiny_model, "hf"), 8, sampling)
    int8 = engine_or_skip(tiny_model, "int8")
    assert trace_settings(int8, 8, sampling)["engine"] == "int8"
