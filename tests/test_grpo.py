"""Stage 3 (GRPO) on the tiny model: prompts, rewards, document pool, two steps and a resume."""

import io
import json
import random

import numpy as np
import pytest
import torch
from tiny_model import WORDS
from transformers import TrainerCallback

from t1 import T1Error, T1Model
from t1.training.grpo import (
    DocumentPool,
    RetrievalReward,
    build_policy,
    conversation,
    fit_query,
    grpo_config_from_dict,
    load_grpo_config,
    train_grpo,
)
from t1.training.records import Record
from t1.training.rewards import group_advantages, trace_reward

G = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


@pytest.fixture(scope="module")
def records_file(tmp_path_factory):
    rng = random.Random(0)
    rows = [{"query": _text(rng, 6), "pos": [_text(rng, 12)], "neg": [_text(rng, 12), _text(rng, 12)]}
            for _ in range(6)]
    path = tmp_path_factory.mktemp("records") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stage(model_path, records_file, output_dir, **overrides):
    data = {
        "model": str(model_path), "train_file": str(records_file), "output_dir": str(output_dir),
        "negatives_per_query": 2, "doc_refresh_steps": 1, "contrastive_weight": 0.5,
        "lora": {"r": 4, "alpha": 8},
        "generation": {"num_generations": G, "max_new_tokens": 10},
        "training": {"max_steps": 2, "save_steps": 1, "learning_rate": 1e-3, "beta": 0.01,
                     "per_device_train_batch_size": 2 * G, "seed": 0},
    }
    data.update(overrides)
    return grpo_config_from_dict(data)


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.backbone.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------- pieces
def test_trl_prompt_equals_the_inference_prompt(tiny_model):
    """TRL renders the conversation itself; its ids must be the prompt T1 embeds at inference."""
    long_query = " ".join(WORDS * 3)
    for query, max_length in (("cell protein gene", 256), (long_query, 60)):
        text = fit_query(tiny_model, query, "Find it", max_length)
        rendered = tiny_model.tokenizer.apply_chat_template(
            [conversation(text, "Find it")], add_generation_prompt=True, tokenize=True, return_dict=True)
        expected = tiny_model.prompts.query_prompt(query, "Find it", max_length)
        assert rendered["input_ids"][0] == expected
        assert len(expected) <= max_length


def test_reward_scores_the_inference_embedding(tiny_model, tmp_path):
    """The reward of a trace is trace_reward over the same cosine scores retrieval would use."""
    records = [Record("cell protein", ["gene brain water."], ["rock climate."]),
               Record("solar energy", ["carbon plant."], ["market price.", "rock climate."])]
    stage = _stage("unused", "unused", tmp_path)
    reward = RetrievalReward(tiny_model, records, stage)
    tok, emb = tiny_model.tokenizer, tiny_model.emb_token_id
    trace = tok("because the gene", add_special_tokens=False)["input_ids"]
    completions = [trace + [emb], trace + [tok.eos_token_id], trace, [emb]]
    out = reward(prompts=None, completions=None, completion_ids=completions, query_index=[0, 0, 1, 1])

    assert reward.split_trace(trace + [emb]) == (trace, True)
    assert reward.split_trace(trace + [tok.eos_token_id]) == (trace, False)
    assert reward.split_trace(trace) == (trace, False)
    docs, positive = reward.candidate_pool([0, 0, 1, 1])
    assert [t for _, t in docs] == ["gene brain water.", "rock climate.", "carbon plant.", "market price."]
    assert positive.tolist() == [[True, False, False, False]] * 2 + [[False, False, True, False]] * 2

    # What retrieval would compute: query + reasoning embedded in one pass, documents likewise.
    q = tiny_model.encode_query(["cell protein", "solar energy", "solar energy"],
                                reasoning=["because the gene", "because the gene", ""],
                                max_length=stage.max_query_length).embeddings
    d = tiny_model.encode_document([t for _, t in docs], max_length=stage.max_document_length)
    n = len(trace)
    expected_rows = [(q[0], n, True), (q[0], n, False), (q[1], n, False), (q[2], 0, True)]
    for row, (query_vec, length, emitted) in enumerate(expected_rows):
        expected = trace_reward(d @ query_vec, positive[row], length, emitted,
                                stage.generation.max_new_tokens, stage.reward)
        assert out[row] == pytest.approx(expected.total, abs=1e-4)
    assert reward.last[0].format == 1.0 and reward.last[1].format == 0.0


def test_document_pool_refreshes_every_k_steps(tiny_model):
    pool = DocumentPool(tiny_model, refresh_steps=2, max_length=64)
    docs = [("", "gene brain water."), ("", "rock climate.")]
    first = pool.embed(docs, step=0)
    pool.embed(docs, step=1)
    assert pool.encoded == 2 and pool.refreshes == 0  # cached within the K-step window
    again = pool.embed(docs + [("", "solar energy.")], step=2)
    assert pool.encoded == 5 and pool.refreshes == 1  # re-encoded with the current weights
    assert torch.allclose(first, again[:2], atol=1e-5)  # same weights, same embeddings
    assert torch.allclose(again.norm(dim=1), torch.ones(3), atol=1e-5)


def test_config_overrides(tmp_path):
    path = tmp_path / "stage3.yaml"
    path.write_text("model: m\ntrain_file: t.jsonl\noutput_dir: out\nreward:\n  rank_metric: rr\n"
                    "training:\n  learning_rate: 1e-6\n")
    config = load_grpo_config(path, ["max_steps=3", "reward.k=5", "generation.num_generations=4", "lora=null"])
    assert config.training == {"learning_rate": 1e-6, "max_steps": 3}
    assert (config.reward.rank_metric, config.reward.k, config.generation.num_generations) == ("rr", 5, 4)
    assert config.lora is None
    with pytest.raises(T1Error, match="unknown setting"):
        load_grpo_config(path, ["rewrd.k=5"])
    with pytest.raises(T1Error, match="num_generations"):
        load_grpo_config(path, ["generation.num_generations=1"])


# ---------------------------------------------------------------------------- training
class _StopAfter(TrainerCallback):
    """Interrupts training after `step` optimizer steps, as a crash or Ctrl-C would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


class _Snapshot(TrainerCallback):
    """The trainable weights when training begins (after a checkpoint is loaded)."""

    def __init__(self, model):
        self.model, self.params = model, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.params = _trainable(self.model)


def test_two_grpo_steps_then_resume(tiny_model_path, records_file, tmp_path):
    out = tmp_path / "stage3"
    stage = _stage(tiny_model_path, records_file, out)

    # Run 1: interrupted after one step (checkpoint-1 written).
    model = build_policy(stage, device="cpu")
    before = _trainable(model)
    assert before, "the policy has trainable parameters"
    stream = io.StringIO()
    final, trainer = train_grpo(stage, callbacks=[_StopAfter(1)], model=model, stream=stream)
    assert trainer.state.global_step == 1 and not final.exists()
    assert (out / "checkpoint-1" / "t1_config.json").exists()

    rewards = np.array([r.total for r in trainer.t1_reward.last])
    assert len(rewards) == 2 * G and np.isfinite(rewards).all()
    adv = trainer.last_advantages.numpy().reshape(-1, G)
    assert np.abs(adv.mean(axis=1)).max() < 1e-5  # zero-mean within each query's group
    assert adv.reshape(-1) == pytest.approx(group_advantages(rewards, G), abs=1e-4)

    after = _trainable(model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any("lora_" in n for n in changed), "the LoRA weights moved"
    assert "step 1/2 | reward" in stream.getvalue()

    # Run 2: the same command resumes from checkpoint-1 and finishes.
    model2 = build_policy(stage, device="cpu")
    snapshot = _Snapshot(model2)
    stream = io.StringIO()
    final, trainer = train_grpo(stage, callbacks=[snapshot], model=model2, stream=stream)
    assert "resuming stage 3 from" in stream.getvalue() and "checkpoint-1" in stream.getvalue()
    assert all(torch.equal(snapshot.params[n], after[n]) for n in after), "resumed with the step-1 weights"
    assert trainer.state.global_step == 2

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "reward" in r]
    assert steps == [1, 2]
    for key in ("reward", "reward_std", "t1/positive_rank", "t1/reasoning_length", "kl", "loss", "contrastive_loss"):
        assert key in rows[0], key
    assert any((out / "tensorboard").iterdir())
    assert (out / "reward_curve.png").stat().st_size > 0

    trained = T1Model.from_pretrained(str(final), device="cpu")
    vec = trained.encode_document("gene brain water.")
    assert vec.shape == (trained.dim,) and np.isfinite(vec).all()

    # vLLM loads starting weights from disk: a LoRA start is merged into output_dir/start first.
    vllm_stage = _stage(final, records_file, tmp_path / "vllm", training={"use_vllm": True})
    policy = build_policy(vllm_stage, device="cpu")
    start = tmp_path / "vllm" / "start"
    assert not (start / "adapter_config.json").exists() and policy.config.backbone == str(start)
    merged = T1Model.from_pretrained(str(start), device="cpu")
    np.testing.assert_allclose(merged.encode_document("gene brain water."), vec, atol=1e-5)


def test_full_weights_with_kl_reference(tiny_model_path, records_file, tmp_path):
    """Full fine-tuning from a raw backbone: the KL reference must include the added <emb_token>."""
    stage = _stage(tiny_model_path, records_file, tmp_path / "full", lora=None, contrastive_weight=0.0,
                   training={"max_steps": 1, "save_steps": 1, "learning_rate": 1e-3, "beta": 0.05,
                             "per_device_train_batch_size": G})
    model = build_policy(stage, device="cpu")
    before = _trainable(model)
    final, trainer = train_grpo(stage, model=model, stream=io.StringIO())
    reference = tmp_path / "full" / "reference"
    assert trainer.ref_model is not None and (reference / "config.json").exists()
    assert trainer.ref_model.get_input_embeddings().weight.shape[0] == len(model.tokenizer)
    after = _trainable(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert T1Model.from_pretrained(str(final), device="cpu").dim == model.dim


# ---------------------------------------------------------------------------- curriculum
def _beir_folder(root, rng):
    corpus = [{"_id": f"d{i}", "title": "", "text": _text(rng, 10)} for i in range(24)]
    queries = [{"_id": f"q{i}", "text": corpus[i]["text"].split(".")[0][:30]} for i in range(12)]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    header = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(header + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    (root / "qrels" / "dev.tsv").write_text(header + "".join(f"q{i}\td{i}\t1\n" for i in range(8, 12)))
    return root


def test_curriculum_runs_three_stages_into_one_table(tiny_model_path, tmp_path):
    import yaml

    from t1.training.curriculum import load_curriculum_config, run_curriculum

    data = _beir_folder(tmp_path / "beir", random.Random(1))
    train = {"per_device_train_batch_size": 4, "max_steps": 1, "learning_rate": 1e-3, "logging_steps": 1,
             "save_strategy": "no", "report_to": [], "disable_tqdm": True}
    common = {"model": str(tiny_model_path), "query_instruction": "Find passages", "max_query_length": 48,
              "max_document_length": 48, "negatives_per_query": 2, "lora": None}
    configs = {
        "stage1": {**common, "training": train},
        "stage2": {**common, "max_reasoning_length": 8, "training": train},
        "stage3": {**common, "generation": {"num_generations": 2, "max_new_tokens": 6},
                   "training": {"max_steps": 1, "save_steps": 1, "learning_rate": 1e-3,
                                "per_device_train_batch_size": 4}},
    }
    for name, cfg in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    curriculum = {
        "output_dir": str(tmp_path / "run"), "dataset": str(data), "negatives": 2, "depth": 6,
        **{name: {"config": str(tmp_path / f"{name}.yaml")} for name in configs},
        "traces": {"samples": 2, "max_new_tokens": 6, "max_rank": 10, "batch_size": 4},
        "eval": {"k": 10, "max_new_tokens": 6, "modes": {"base": [], "stage1": ["none"], "stage2": ["generate"],
                                                         "stage3": ["none", "generate"]}},
    }
    (tmp_path / "curriculum.yaml").write_text(yaml.safe_dump(curriculum))
    config = load_curriculum_config(tmp_path / "curriculum.yaml", ["eval.max_documents=12", "stage3.seed=3"])
    assert config.stage3.overrides == {"seed": 3} and config.eval.max_documents == 12

    log = []
    table = run_curriculum(config, log=log.append)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[:2] for line in lines] == [
        ["| BM25", "-"], ["| 1 · contrastive", "none"], ["| 2 · reasoning SFT", "generate"],
        ["| 3 · GRPO", "none"], ["| 3 · GRPO", "generate"]]
    run = tmp_path / "run"
    assert (run / "curriculum.md").read_text() == table
    for folder in ("stage1", "stage2", "stage3/final"):
        assert (run / folder / "t1_config.json").exists(), folder
    assert json.loads((run / "curriculum.json").read_text())["rows"][-1]["stage"] == "stage3"

    # Re-running keeps every finished stage and evaluation: nothing is trained again.
    log.clear()
    assert run_curriculum(config, log=log.append).splitlines()[4:] == table.splitlines()[4:]
    assert not any(line.startswith("stage") for line in log)


def test_commands_register_grpo_and_curriculum():
    import argparse

    from t1.training.grpo_commands import _split_config, register_grpo

    parser = argparse.ArgumentParser()
    register_grpo(parser.add_subparsers(dest="stage"))
    args = parser.parse_args(["grpo", "max_steps=2", "--config", "c.yaml", "reward.k=5", "--plot", "r.png"])
    assert args.func.__name__ == "_grpo"
    assert _split_config(args, "--plot") == ("c.yaml", ["max_steps=2", "reward.k=5"]) and args.plot == "r.png"
    args = parser.parse_args(["curriculum", "--config", "cur.yaml", "stage3.max_steps=1"])
    assert args.func.__name__ == "_curriculum" and _split_config(args) == ("cur.yaml", ["stage3.max_steps=1"])
