"""Training configuration: a YAML file plus `key=value` overrides from the command line.

Top-level keys are the fields of `TrainConfig`; the `training:` section goes verbatim to
`transformers.TrainingArguments` (batch size, learning rate, bf16, deepspeed, save_steps, ...),
so everything the Trainer can do on many GPUs is one YAML key away. An override names a
TrainConfig field (`temperature=0.02`), a nested one (`lora.r=32`, `training.seed=1`) or, as a
shortcut, any TrainingArguments field (`learning_rate=1e-4`). `lora: null` means full fine-tuning.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backbones import DEFAULT_BACKBONE
from ..errors import T1Error

# Always set: our collator's columns are not model arguments, and every process must see batches
# of the same size so embeddings can be gathered across processes.
FORCED_TRAINING_ARGS = {"remove_unused_columns": False, "dataloader_drop_last": True}
DEFAULT_TRAINING_ARGS = {"report_to": ["tensorboard"], "logging_steps": 10, "save_steps": 500,
                         "save_total_limit": 2, "per_device_train_batch_size": 8}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    # By default only the <emb_token> rows of the embedding (and LM head) train, through peft's
    # trainable_token_indices. Naming embed_tokens here trains the whole matrix instead.
    modules_to_save: list[str] | None = None


@dataclass
class TrainConfig:
    model: str = DEFAULT_BACKBONE  # base causal LM, or a saved T1 folder (e.g. the stage-1 output)
    train_file: str = ""
    output_dir: str = ""
    dtype: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # Saved with the model (None keeps what the starting model has).
    query_instruction: str | None = None
    document_instruction: str | None = None
    # Other T1Config fields saved with the model for use after training (e.g. max_new_tokens,
    # max_document_length at search time); the training-time lengths below are separate.
    model_settings: dict[str, Any] = field(default_factory=dict)
    # Training-time lengths in tokens.
    max_query_length: int = 256
    max_document_length: int = 256
    max_reasoning_length: int = 256
    # Loss.
    negatives_per_query: int = 7
    temperature: float = 0.05
    contrastive_weight: float = 0.8  # λ in stage 2: λ·InfoNCE + (1−λ)·NLL(reasoning + <emb_token>)
    # Gradient caching: queries (with their documents) per forward pass; the loss still sees the
    # whole batch as negatives. None: one forward pass for the whole per-device batch.
    grad_cache_chunk_size: int | None = None
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    # LoRA only: learning rate of the trainable <emb_token> row (None: the run's). Learning to
    # *emit* the token means moving its (tied) row far from its mean initialisation, which the
    # small learning rate suited to LoRA weights does not do in a few hundred steps.
    emb_token_learning_rate: float | None = None
    resume: bool | str = False  # true: the last checkpoint in output_dir; or a checkpoint folder
    training: dict[str, Any] = field(default_factory=dict)

    def training_arguments(self):
        from transformers import TrainingArguments

        kwargs = {**DEFAULT_TRAINING_ARGS, **self.training, **FORCED_TRAINING_ARGS, "output_dir": self.output_dir}
        try:
            return TrainingArguments(**kwargs)
        except (TypeError, ValueError) as e:
            raise T1Error(f"invalid training settings: {e}") from None

    def validate(self) -> None:
        if not self.train_file:
            raise T1Error("config: train_file is not set")
        if not self.output_dir:
            raise T1Error("config: output_dir is not set")
        if self.negatives_per_query < 0:
            raise T1Error("config: negatives_per_query must be >= 0")
        if self.temperature <= 0:
            raise T1Error("config: temperature must be > 0")
        if not 0.0 <= self.contrastive_weight <= 1.0:
            raise T1Error("config: contrastive_weight must be between 0 and 1")
        if self.grad_cache_chunk_size is not None and self.grad_cache_chunk_size < 1:
            raise T1Error("config: grad_cache_chunk_size must be >= 1")
        if self.emb_token_learning_rate is not None and self.emb_token_learning_rate <= 0:
            raise T1Error("config: emb_token_learning_rate must be > 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise T1Error(f"config: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")


def _coerce(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` as a string; read number-looking strings as numbers."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and not re.search(r"[.eE]", value) else number
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v) for v in value]
    return value


def _training_fields() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments)}


def _parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key=value`, `--key=value` or `--key value` items into (key, value) pairs."""
    pairs, i = [], 0
    while i < len(items):
        item = items[i].removeprefix("--")
        if "=" in item:
            key, raw = item.split("=", 1)
        elif items[i].startswith("--") and i + 1 < len(items):
            key, raw = item, items[i + 1]
            i += 1
        else:
            raise T1Error(f"override {items[i]!r} is not of the form key=value")
        pairs.append((key.replace("-", "_"), _coerce(yaml.safe_load(raw) if raw.strip() else "")))
        i += 1
    return pairs


def set_setting(data: dict, key: str, value: Any, known: set[str], shortcuts: set[str], kind: str) -> None:
    """Put a `key=value` override into nested settings: a top-level key of `known`, a dotted
    path (`lora.r`), or, as a shortcut, a field of the `training:` section (`learning_rate`)."""
    parts = key.split(".")
    if parts[0] not in known:
        if len(parts) == 1 and key in shortcuts:
            parts = ["training", key]
        else:
            raise T1Error(f"unknown setting {key!r} (not a {kind})")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise T1Error(f"setting {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _apply(data: dict, key: str, value: Any) -> None:
    set_setting(data, key, value, {f.name for f in dataclasses.fields(TrainConfig)}, _training_fields(),
                "training config key nor a TrainingArguments field")


def read_settings(path: str | Path | None) -> dict:
    """The mapping in a YAML config file ({} for no file), numbers in strings coerced; a
    missing file or malformed YAML is a `T1Error`."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise T1Error(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise T1Error(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise T1Error(f"{path}: expected a mapping of settings")
    return _coerce(data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (optional) and apply overrides; unknown keys are errors."""
    data = read_settings(path)
    for key, value in _parse_overrides(overrides or []):
        _apply(data, key, value)
    return config_from_dict(data, where=str(path or "config"))


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise T1Error(f"{where}: unknown setting(s) {', '.join(unknown)}")
    data = dict(data)
    lora = data.pop("lora", LoraSettings())
    if isinstance(lora, dict):
        lora_known = {f.name for f in dataclasses.fields(LoraSettings)}
        bad = sorted(set(lora) - lora_known)
        if bad:
            raise T1Error(f"{where}: unknown lora setting(s) {', '.join(bad)}")
        lora = LoraSettings(**lora)
    elif lora is not None and not isinstance(lora, LoraSettings):
        raise T1Error(f"{where}: lora must be a section of settings or null (full fine-tuning)")
    if not isinstance(data.get("training", {}), dict):
        raise T1Error(f"{where}: training must be a section of TrainingArguments settings")
    config = TrainConfig(**data, lora=lora)
    config.validate()
    return config
