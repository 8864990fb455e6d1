"""Stages 1 and 2 on the tiny model: the loss falls, the right parameters change, saved
models load back identical, gradient caching and resuming change nothing."""

import json
import random

import pytest
import torch
from tiny_model import WORDS

from t1 import T1Model
from t1.training.contrastive_config import T1TrainingArguments
from t1.training.contrastive_trainer import T1ForTraining, make_trainer
from t1.training.model_config import ModelArguments
from t1.training.records import Record, write_records

pytestmark = pytest.mark.usefixtures("one_thread")


def make_records(path, n=8, seed=0):
    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    records = []
    for _ in range(n):
        query = text(5)
        records.append(Record(query, [f"{query} {text(6)}"], [text(10) for _ in range(3)], reasoning=text(6)))
    write_records(path, records)
    return path


LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8}
FULL = {"use_peft": False}


def make_config(tmp_path, model, name="out", model_args=FULL, **kwargs) -> tuple:
    """(ModelArguments, T1TrainingArguments) for a short CPU run on the tiny records."""
    train_file = tmp_path / "train.jsonl"
    if not train_file.exists():
        make_records(train_file)
    training = {"per_device_train_batch_size": 4, "max_steps": 6, "learning_rate": 1e-3, "logging_steps": 1,
                "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "use_cpu": True,
                "negatives_per_query": 2, "max_query_length": 48, "max_document_length": 48,
                "max_reasoning_length": 16, **kwargs}
    return (ModelArguments(model_name_or_path=str(model), query_instruction="Find passages", **model_args),
            T1TrainingArguments(train_file=str(train_file), output_dir=str(tmp_path / name), **training))


def run(config, reasoning=False):
    trainer = make_trainer(*config, reasoning)
    trainer.train()
    trainer.save_model(config[1].output_dir)
    t1 = trainer.model.t1.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return t1, losses, trainer


TEXTS = ["cell protein gene brain", "solar energy carbon plant", "prime integer theorem proof"]


def assert_same_embeddings(trained: T1Model, folder):
    loaded = T1Model.from_pretrained(str(folder), device="cpu")
    assert loaded.config.query_instruction == trained.config.query_instruction
    torch.testing.assert_close(loaded.encode_document(TEXTS), trained.encode_document(TEXTS), atol=1e-5, rtol=1e-5)
    for reasoning in ("none", ["because energy", "data model", "learn"]):
        torch.testing.assert_close(loaded.encode_query(TEXTS, reasoning=reasoning).embeddings,
                                   trained.encode_query(TEXTS, reasoning=reasoning).embeddings, atol=1e-5, rtol=1e-5)


def test_stage1_full_finetuning(tmp_path, tiny_model_path):
    config = make_config(tmp_path, tiny_model_path, max_steps=8)
    t1, losses, _ = run(config)
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    fresh = T1Model.from_pretrained(str(tiny_model_path), device="cpu").backbone.state_dict()
    trained = t1.backbone.state_dict()
    assert all(not torch.equal(fresh[k], trained[k]) for k in fresh if "layers" in k and k.endswith("weight"))
    emb = t1.emb_token_id
    assert not torch.equal(fresh["model.embed_tokens.weight"][emb], trained["model.embed_tokens.weight"][emb])
    assert_same_embeddings(t1, config[1].output_dir)


def test_lora_stage_on_a_full_weights_stage(tmp_path, tiny_model_path):
    """A fresh adapter trained on a saved full-weights model reloads onto that model."""
    stage1 = make_config(tmp_path, tiny_model_path, name="stage1", max_steps=2)
    run(stage1)
    stage2 = make_config(tmp_path, stage1[1].output_dir, name="stage2", model_args=LORA,
                         max_steps=2)
    t1, _, _ = run(stage2)
    assert_same_embeddings(t1, stage2[1].output_dir)


@pytest.fixture(scope="module")
def stage1_lora(tmp_path_factory, tiny_model_path):
    tmp_path = tmp_path_factory.mktemp("stage1")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        config = make_config(tmp_path, tiny_model_path, name="stage1", model_args=LORA)
        t1, losses, _ = run(config)
    return t1, config


def test_stage1_lora_trains_adapter_and_emb_token_row_only(stage1_lora, tiny_model_path):
    t1, config = stage1_lora
    fresh = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    base = t1.backbone.get_base_model()
    for name, param in fresh.backbone.named_parameters():
        if "layers" in name:  # frozen base weights: unchanged
            wrapped = name.replace(".weight", ".base_layer.weight")
            torch.testing.assert_close(base.get_parameter(wrapped if "proj" in name else name), param, atol=0, rtol=0)
    lora_b = [p for n, p in t1.backbone.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero
    ids = torch.arange(len(t1.tokenizer))
    rows = t1.backbone.get_input_embeddings()(ids).detach()
    before = fresh.backbone.get_input_embeddings()(ids)
    changed = (rows != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [t1.emb_token_id]
    assert_same_embeddings(t1, config[1].output_dir)


def test_stage2_continues_the_stage1_adapter(stage1_lora, tmp_path):
    stage1, stage1_config = stage1_lora
    config = make_config(tmp_path, stage1_config[1].output_dir, name="stage2", model_args=LORA,
                         max_steps=8)
    t1, losses, trainer = run(config, reasoning=True)
    lm = [h["lm_loss"] for h in trainer.state.log_history if "lm_loss" in h]
    assert sum(lm[-2:]) < sum(lm[:2]) and sum(losses[-2:]) < sum(losses[:2]), (lm, losses)
    before = dict(stage1.backbone.named_parameters())
    trained = [(n, p) for n, p in t1.backbone.named_parameters() if "lora_" in n or "trainable_tokens" in n]
    assert any("trainable_tokens" in n for n, _ in trained)
    assert all(p.requires_grad and not torch.equal(p, before[n]) for n, p in trained)
    assert json.loads((tmp_path / "stage2" / "adapter_config.json").read_text())["r"] == 4  # kept
    assert_same_embeddings(t1, config[1].output_dir)

    # The training forward embeds a query exactly as inference does with the given trace.
    batch = trainer.data_collator([trainer.train_dataset[0]])
    record = trainer.train_dataset.records[0]
    with torch.no_grad():
        out = T1ForTraining(t1)(batch["query_input_ids"], batch["query_attention_mask"])
    expected = t1.encode_query(record.query, reasoning=[record.reasoning], normalize=False).embeddings
    torch.testing.assert_close(out["query"][0].numpy(), expected, atol=1e-5, rtol=1e-5)


def test_gradient_caching_equals_one_pass(tmp_path, tiny_model_path):
    sgd = {"max_steps": 1, "optim": "sgd", "learning_rate": 0.5, "max_grad_norm": 0.0, "weight_decay": 0.0}
    plain, _, _ = run(make_config(tmp_path, tiny_model_path, name="plain", **sgd), reasoning=True)
    cached, _, _ = run(make_config(tmp_path, tiny_model_path, name="cached", grad_cache_chunk_size=1, **sgd),
                       reasoning=True)
    fresh = T1Model.from_pretrained(str(tiny_model_path), device="cpu").backbone.state_dict()
    a, b = plain.backbone.state_dict(), cached.backbone.state_dict()
    assert max((a[k] - fresh[k]).abs().max() for k in a) > 1e-3  # the step did something
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-6, rtol=1e-4)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, tiny_model_path):
    from t1.cli import main

    config = make_config(tmp_path, tiny_model_path, save_strategy="steps", save_steps=2, max_steps=4)
    uninterrupted, losses, _ = run(config)
    expected = {k: v.clone() for k, v in uninterrupted.backbone.state_dict().items()}
    # "Interrupt" after step 2: drop the later checkpoint and the final model, then resume via the CLI.
    import shutil

    shutil.rmtree(tmp_path / "out" / "checkpoint-4")
    (tmp_path / "out" / "model.safetensors").unlink()
    yaml_file = tmp_path / "config.yaml"
    model_args, args = config
    yaml_file.write_text(json.dumps({"model_name_or_path": model_args.model_name_or_path, "use_peft": False,
                                     "query_instruction": "Find passages", "train_file": args.train_file,
                                     "output_dir": args.output_dir, "negatives_per_query": 2,
                                     "max_query_length": 48, "max_document_length": 48, "use_cpu": True,
                                     "learning_rate": 1e-3, "per_device_train_batch_size": 4,
                                     "logging_steps": 1, "report_to": "none", "save_steps": 2}))
    assert main(["train", "contrastive", "--config", str(yaml_file), "--max_steps", "4"]) == 0
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["loss"] for h in state["log_history"] if "loss" in h] == pytest.approx(losses, rel=1e-5)
    resumed = T1Model.from_pretrained(str(tmp_path / "out"), device="cpu").backbone.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=1e-5)


def test_model_settings_are_saved_with_the_model(tmp_path, tiny_model_path):
    from t1 import T1Error
    from t1.training.modeling import build_model

    settings = {"max_new_tokens": 24, "max_document_length": 96}
    model_args, _ = make_config(tmp_path, tiny_model_path, model_args={**FULL, "model_settings": settings})
    t1 = build_model(model_args, device="cpu")
    assert (t1.config.max_new_tokens, t1.config.max_document_length) == (24, 96)
    # The query length is not set: a plain backbone (read with 8,192 tokens for BRIGHT) trains
    # into a model that saves T1Config's own 512.
    assert T1Model.from_pretrained(str(tiny_model_path), device="cpu").config.max_query_length > 512
    assert t1.config.max_query_length == 512
    t1.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "t1_config.json").read_text())["max_new_tokens"] == 24
    for bad in ({"emb_token": "<x>"}, {"no_such_setting": 1}):
        with pytest.raises(T1Error, match="model_settings"):
            build_model(make_config(tmp_path, tiny_model_path, model_args={**FULL, "model_settings": bad})[0],
                        device="cpu")


def test_emb_token_learning_rate_gives_the_token_row_its_own_group(tmp_path, tiny_model_path):
    config = make_config(tmp_path, tiny_model_path, name="fast", model_args=LORA,
                         emb_token_learning_rate=0.05, max_steps=3)
    trainer = make_trainer(*config, reasoning=True)
    trainer.train()
    groups = trainer.optimizer.param_groups
    token_groups = [g for g in groups if g.get("initial_lr") == 0.05]
    assert len(token_groups) == 1 and all(p.numel() == token_groups[0]["params"][0].numel()
                                          for p in token_groups[0]["params"])
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all("trainable_tokens_delta" in names[id(p)] for p in token_groups[0]["params"])
    assert all("trainable_tokens_delta" not in names[id(p)] for g in groups if g is not token_groups[0]
               for p in g["params"])
    moved_fast = token_groups[0]["params"][0].detach().abs().max().item()
    slow = make_config(tmp_path, tiny_model_path, name="slow", model_args=LORA,
                       max_steps=3, learning_rate=1e-4)
    slow_trainer = make_trainer(*slow, reasoning=True)
    slow_trainer.train()
    moved_slow = max(p.detach().abs().max().item() for n, p in slow_trainer.model.named_parameters()
                     if "trainable_tokens_delta" in n)
    assert moved_fast > 10 * moved_slow
