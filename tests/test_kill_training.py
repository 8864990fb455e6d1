"""Training killed with SIGKILL, then the same command again: it resumes from the last complete
checkpoint and ends where an uninterrupted run ends.

The runs are real `python -m t1 train ...` processes. They kill themselves at a chosen point
through `interrupt.killing_env`: stage 1 in the middle of writing a checkpoint (the model saved,
the optimizer and trainer state not yet), stage 3 right after its metrics log got a step whose
checkpoint was never written. Each test first checks that the kill landed mid-run."""

import json
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from interrupt import killing_env
from safetensors.torch import load_file
from test_training_trainer import make_records

TIMEOUT = 240


def _run(config, env, *flags) -> subprocess.CompletedProcess:
    stage, path = config
    return subprocess.run([sys.executable, "-m", "t1", "train", stage, "--config", str(path), *flags], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _weights(folder) -> dict:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(f).items()}


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def _config(root, name, stage, settings) -> tuple:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**settings, "output_dir": str(root / name)}))
    return stage, path


def test_stage1_killed_while_saving_a_checkpoint_resumes_to_the_same_model(tmp_path, tiny_model_path):
    make_records(tmp_path / "train.jsonl", n=8)
    settings = {"model_name_or_path": str(tiny_model_path), "use_peft": False, "train_file": str(tmp_path / "train.jsonl"),
                "query_instruction": "Find passages", "negatives_per_query": 2, "max_query_length": 48,
                "max_document_length": 48, "per_device_train_batch_size": 4, "max_steps": 5, "learning_rate": 1e-3,
                "save_steps": 1, "save_total_limit": 1, "logging_steps": 1, "report_to": "none", "use_cpu": True,
                "seed": 7}
    reference, killed = _config(tmp_path, "reference", "contrastive", settings), _config(
        tmp_path, "killed", "contrastive", settings)
    plain = killing_env(tmp_path)
    assert _run(reference, plain).returncode == 0

    # The 3rd checkpoint: weights written, then SIGKILL before its optimizer and trainer state.
    dying = killing_env(tmp_path, kill="t1.training.contrastive_trainer:T1Trainer._save:3:after")
    assert _run(killed, dying).returncode == -signal.SIGKILL
    out = tmp_path / "killed"
    assert (out / "checkpoint-3" / "model.safetensors").exists()
    assert not (out / "checkpoint-3" / "trainer_state.json").exists()  # a partial checkpoint
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and not (out / "model.safetensors").exists()

    resumed = _run(killed, plain)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-3 is incomplete" in resumed.stderr
    _assert_same_weights(_weights(out), _weights(tmp_path / "reference"))

    def losses(folder):
        state = json.loads((folder / "checkpoint-5" / "trainer_state.json").read_text())
        return [h["loss"] for h in state["log_history"] if "loss" in h]

    assert losses(out) == pytest.approx(losses(tmp_path / "reference"), rel=1e-5)
    assert len(losses(out)) == 5


def test_stage3_killed_after_logging_a_step_resumes_with_one_row_per_step(tmp_path, tiny_model_path):
    rows = [{"query": "cell protein gene", "pos": ["protein gene cell brain."], "neg": ["market price.", "rock."]},
            {"query": "solar energy", "pos": ["solar energy carbon plant."], "neg": ["prime integer.", "river."]},
            {"query": "prime theorem", "pos": ["prime theorem proof."], "neg": ["river water.", "virus."]},
            {"query": "river rock", "pos": ["river water rock."], "neg": ["code array.", "gene cell."]}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"model_name_or_path": str(tiny_model_path), "use_peft": True, "lora_r": 4, "lora_alpha": 8,
                "train_file": str(tmp_path / "train.jsonl"), "negatives_per_query": 2, "doc_refresh_steps": 1,
                "contrastive_weight": 0.5, "num_generations": 2, "max_completion_length": 6, "max_steps": 3,
                "save_steps": 1, "learning_rate": 1e-3, "beta": 0.0, "per_device_train_batch_size": 4, "seed": 0}
    reference, killed = _config(tmp_path, "reference", "grpo", settings), _config(tmp_path, "killed", "grpo", settings)
    plain = killing_env(tmp_path)
    done = _run(reference, plain)
    assert done.returncode == 0, done.stderr[-3000:]

    # Step 2 logged to metrics.jsonl, then SIGKILL before checkpoint-2 is written.
    dying = killing_env(tmp_path, kill="t1.training.grpo_trainer:MetricsLogger.on_log:2:after")
    assert _run(killed, dying).returncode == -signal.SIGKILL
    out = tmp_path / "killed"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and not (out / "checkpoint-2").exists() and (out / "checkpoint-1").exists()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rew')  # and a line cut short, as a kill mid-write leaves it

    resumed = _run(killed, plain)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming stage 3 from" in resumed.stdout

    def logged(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if "reward" in r]

    again, expected = logged(out), logged(tmp_path / "reference")
    assert [r["step"] for r in again] == [r["step"] for r in expected] == [1, 2, 3]
    for a, b in zip(again, expected):
        assert a["step"] == b["step"] and a["reward"] == pytest.approx(b["reward"], rel=1e-5, abs=1e-6)
    _assert_same_weights(_weights(out / "final"), _weights(tmp_path / "reference" / "final"))
