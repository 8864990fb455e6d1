import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from t1 import T1Error, T1Model
from t1.batching import pad, plan_batches
from t1.query_encoding import QueryEncoder, RunOptions
from t1.reasoning import generate_then_embed
from t1.settings import Decoding, QuerySettings


def test_emb_token_added_with_mean_init(tiny_model_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    old = base.get_input_embeddings().weight
    new = model.backbone.get_input_embeddings().weight
    assert new.shape[0] == old.shape[0] + 1
    assert model.tokenizer.convert_ids_to_tokens(model.emb_token_id) == "<emb_token>"
    torch.testing.assert_close(new[model.emb_token_id], old.mean(dim=0))
    # <emb_token> is one token, never split
    assert model.tokenizer("a <emb_token>", add_special_tokens=False)["input_ids"][-1] == model.emb_token_id


def test_document_embeddings_normalised_and_order_independent(tiny_model):
    texts = ["cell protein gene " * k for k in (1, 7, 3, 12, 2)]
    emb = tiny_model.encode_document(texts, batch_size=2, max_tokens_per_batch=40)
    assert emb.shape == (5, tiny_model.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for i, t in enumerate(texts):  # padding and batching do not change an embedding
        np.testing.assert_allclose(tiny_model.encode_document(t), emb[i], atol=1e-5)
    assert not np.allclose(emb[0], emb[1])


def test_truncation_keeps_instruction_and_emb_token(tiny_model):
    ids = tiny_model.prompts.document("rock " * 500, "Represent the passage", max_length=24)
    assert len(ids) == 24 and ids[-1] == tiny_model.emb_token_id
    prefix = tiny_model.prompts.document("", "Represent the passage", max_length=24)[:-1]
    assert ids[: len(prefix)] == prefix
    prompt = tiny_model.prompts.query_prompt("water " * 300, "Find passages", max_length=40)
    assert len(prompt) <= 40
    assert tiny_model.tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


def test_instruction_changes_embedding(tiny_model):
    a = tiny_model.encode_document("solar energy", instruction="")
    b = tiny_model.encode_document("solar energy", instruction="Represent the passage")
    assert not np.allclose(a, b)


class ForceStop(LogitsProcessor):
    """Force a stop token at a row-specific step (and no stop anywhere else), so traces in a
    batch have chosen, different lengths."""

    def __init__(self, stops: dict[int, tuple[int, int]], prompt_len: int, stop_ids: list[int]):
        self.stops, self.prompt_len, self.stop_ids = stops, prompt_len, stop_ids

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        scores[:, self.stop_ids] = -float("inf")
        for row, (at, token) in self.stops.items():
            if step == at:
                scores[row] = -float("inf")
                scores[row, token] = 0.0
        return scores


def test_kv_cache_embedding_matches_reencoding(tiny_model):
    m = tiny_model
    prompts = [m.prompts.query_prompt(q, "Find passages", 64) for q in
               ["why do cells divide", "prime integer theorem proof graph tree energy", "virus", "solar carbon plant"]]
    width = max(len(p) for p in prompts)
    # row 0 stops with EOS at step 3, row 1 emits <emb_token> at step 5, rows 2-3 run to the limit
    stops = {0: (3, m.tokenizer.eos_token_id), 1: (5, m.emb_token_id)}
    sampled = Decoding(True, temperature=2.0, top_p=1.0)
    rollout = generate_then_embed(m, prompts, max_new_tokens=8, decoding=sampled,
                                  logits_processor=LogitsProcessorList([ForceStop(stops, width, [m.tokenizer.eos_token_id, m.emb_token_id])]))
    assert [len(r) for r in rollout.reasoning_ids] == [3, 5, 8, 8]
    assert rollout.emitted_emb_token == [False, True, False, False]
    # encode_query reports the same: only the row that emitted <emb_token> ended its own trace
    queries = ["why do cells divide", "prime integer theorem proof graph tree energy", "virus", "solar carbon plant"]
    forced = LogitsProcessorList([ForceStop(stops, width, [m.tokenizer.eos_token_id, m.emb_token_id])])
    encoder = QueryEncoder(m, QuerySettings(max_new_tokens=8), RunOptions(batch_size=4))
    encoded = encoder.rollouts(prompts, sampled, normalize=True, logits_processor=forced)
    assert encoded[2] == [False, True, False, False]
    assert m.encode_query(queries[0], reasoning="none").ended is False  # one query: one flag, not a list
    seqs = [p + r + [m.emb_token_id] for p, r in zip(prompts, rollout.reasoning_ids)]
    ids, mask = pad(seqs, m.tokenizer.pad_token_id, "right")
    with torch.no_grad():
        reencoded = m.embed(ids, mask)
    cos = torch.nn.functional.cosine_similarity(rollout.embeddings, reencoded, dim=-1)
    assert cos.min() >= 0.999, cos


def test_encode_query_modes(tiny_model):
    queries = ["why do cells divide", "what is a prime"]
    gen = tiny_model.encode_query(queries, max_new_tokens=6)
    assert gen.embeddings.shape == (2, tiny_model.dim) and len(gen.reasoning) == 2
    none = tiny_model.encode_query(queries, reasoning="none")
    assert none.reasoning == ["", ""]
    assert not np.allclose(gen.embeddings, none.embeddings)
    given = tiny_model.encode_query(queries, reasoning=["cells divide to grow", "a prime has two divisors"])
    assert not np.allclose(given.embeddings, none.embeddings)
    # reasoning="none" equals a caller-given empty trace
    empty = tiny_model.encode_query(queries, reasoning=["", ""])
    np.testing.assert_allclose(empty.embeddings, none.embeddings, atol=1e-5)


def test_encode_query_rejects_bad_input(tiny_model):
    with pytest.raises(T1Error, match="empty"):
        tiny_model.encode_query(["ok", "  "])
    with pytest.raises(T1Error, match="reasoning"):
        tiny_model.encode_query(["ok"], reasoning="think")
    with pytest.raises(T1Error, match="2 reasoning texts for 1"):
        tiny_model.encode_query(["ok"], reasoning=["a", "b"])


def test_save_load_roundtrip_full(tiny_model, tmp_path):
    tiny_model.config.document_instruction = "Represent the passage"
    try:
        tiny_model.save_pretrained(tmp_path / "m")
        loaded = T1Model.from_pretrained(str(tmp_path / "m"), device="cpu")
    finally:
        tiny_model.config.document_instruction = ""
    assert loaded.config.document_instruction == "Represent the passage"
    assert loaded.emb_token_id == tiny_model.emb_token_id
    np.testing.assert_allclose(loaded.encode_document(["solar energy"], instruction=""),
                               tiny_model.encode_document(["solar energy"], instruction=""), atol=1e-6)
    assert loaded.fingerprint() == tiny_model.fingerprint()  # same weights, same document embedding
    with torch.no_grad():
        loaded.backbone.get_input_embeddings().weight[5] += 0.1
    assert loaded.fingerprint() != tiny_model.fingerprint()


def test_save_load_roundtrip_lora(tiny_model_path, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=[model.emb_token_id])
    model.backbone = get_peft_model(model.backbone, config)
    with torch.no_grad():  # make the adapter and the token row non-trivial
        for name, p in model.backbone.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    before = model.encode_document(["solar energy", "rock river"])
    model.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    loaded = T1Model.from_pretrained(str(tmp_path / "lora"), device="cpu", merge_adapter=False)
    assert hasattr(loaded.backbone, "peft_config")
    np.testing.assert_allclose(loaded.encode_document(["solar energy", "rock river"]), before, atol=1e-5)
    assert loaded.fingerprint() == model.fingerprint()


def test_lora_adapter_is_merged_at_inference_with_the_same_embeddings_and_traces(tiny_model_path, tmp_path):
    """Inference loads merge the adapter (and its <emb_token> row) into the weights: the same
    document and query embeddings and the same greedy traces as the adapter run unmerged."""
    from peft import LoraConfig, get_peft_model

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    config = LoraConfig(r=4, target_modules="all-linear", trainable_token_indices=[model.emb_token_id])
    model.backbone = get_peft_model(model.backbone, config)
    torch.manual_seed(1)
    with torch.no_grad():  # a non-trivial adapter; the token row's input side shapes every embedding
        for name, p in model.backbone.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (0.05 if "lora_" in name else 0.01))
    model.save_pretrained(tmp_path / "lora")
    unmerged = T1Model.from_pretrained(str(tmp_path / "lora"), device="cpu", merge_adapter=False)
    merged = T1Model.from_pretrained(str(tmp_path / "lora"), device="cpu")
    assert hasattr(unmerged.backbone, "peft_config") and not hasattr(merged.backbone, "peft_config")
    docs = ["solar energy panels", "rock river canyon", "the moon pulls the tides"]
    cos = (unmerged.encode_document(docs) * merged.encode_document(docs)).sum(axis=1)
    assert cos.min() >= 0.9999
    queries = ["why is the sky blue", "how do rivers form"]
    a = unmerged.encode_query(queries, max_new_tokens=12)
    b = merged.encode_query(queries, max_new_tokens=12)
    assert a.reasoning == b.reasoning and any(a.reasoning)
    assert (a.embeddings * b.embeddings).sum(axis=1).min() >= 0.9999


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(T1Error, match="no such model folder"):
        T1Model.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(T1Error, match="runs/stage1: no such model folder"):
        T1Model.from_pretrained("runs/stage1")
    with pytest.raises(T1Error, match="cannot load model"):
        T1Model.from_pretrained("no-such-org/no-such-model-xyz")


def test_plan_batches_respects_budget_and_covers_all():
    lengths = [5, 50, 7, 30, 30, 2, 49]
    batches = plan_batches(lengths, batch_size=3, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
