"""Training configuration as dataclasses, parsed like TRL's scripts: `--config x.yaml`, then
per-field flags on top (`--learning_rate 1e-4 --lora_r 8`); `--help` lists every field.

- `ModelArguments` (every stage): the starting model, its dtype, the LoRA adapter (TRL's
  `ModelConfig` names) and the T1 settings saved with the trained model.
- `T1TrainingArguments` (stages 1 and 2): `transformers.TrainingArguments` plus the contrastive
  and reasoning settings, so everything the Trainer does on many GPUs (bf16, deepspeed, FSDP,
  gradient accumulation, checkpoints) is one key away.
- `T1GRPOConfig` (stage 3, in `grpo_config.py`): TRL's `GRPOConfig` plus the reward's settings.

A YAML file is read as flags (`key: value` → `--key value`), so its values go through the same
type checks as the command line and a wrong type fails at parse time, naming the file and key.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..backbones import DEFAULT_BACKBONE
from ..errors import T1Error

DTYPES = ("auto", "float32", "bfloat16", "float16")
# Training numbers that make no sense at zero or below, checked before any work (transformers
# would train one step at max_steps 0, everything at -5, and nothing at a batch size of 0).
POSITIVE = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "learning_rate",
            "logging_steps", "save_steps")


def redefault(base: type, name: str, default, help: str | None = None):
    """Field `name` of the dataclass `base` re-declared with another default: the field keeps
    its `--help` text (or takes `help`), which re-declaring it plainly would drop."""
    parent = base.__dataclass_fields__[name]
    return field(default=default, metadata={**parent.metadata, **({"help": help} if help else {})})


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default=DEFAULT_BACKBONE, metadata={
        "help": "Starting model: a base causal LM (hub id, folder or alias) or a saved T1 folder (an earlier stage)."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Weights dtype; auto: bfloat16 on GPU, float32 on CPU."})
    use_peft: bool = field(default=True, metadata={
        "help": "Train a LoRA adapter (and the <emb_token> row); false trains the full weights. A saved LoRA "
                "model keeps training its own adapter."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "Modules LoRA adapts (all-linear: every linear layer but the LM head)."})
    lora_modules_to_save: list[str] | None = field(default=None, metadata={
        "help": "Modules trained in full next to LoRA. By default only the <emb_token> row of the embedding "
                "trains; naming the embedding here trains the whole matrix."})
    query_instruction: str | None = field(default=None, metadata={
        "help": "Query instruction saved with the model (default: the starting model's)."})
    document_instruction: str | None = field(default=None, metadata={
        "help": "Document instruction saved with the model (default: the starting model's)."})
    model_settings: dict | str | None = field(default=None, metadata={
        "help": "Other T1 settings saved with the model for search time, as a mapping (JSON on the command "
                "line), e.g. {\"max_new_tokens\": 64}."})

    def __post_init__(self):
        if isinstance(self.model_settings, str):
            try:
                self.model_settings = json.loads(self.model_settings)
            except json.JSONDecodeError as e:
                raise ValueError(f"model_settings: not a JSON mapping ({e})") from None
        self.model_settings = dict(self.model_settings or {})
        if min(self.lora_r, self.lora_alpha) < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_r and lora_alpha must be >= 1, lora_dropout in [0, 1)")

    @property
    def target_modules(self) -> list[str] | str:
        """peft's spelling: the string "all-linear" rather than a one-item list."""
        return self.lora_target_modules[0] if self.lora_target_modules == ["all-linear"] else self.lora_target_modules


@dataclass
class RecordArguments:
    """What every stage reads from its training records, and the InfoNCE settings they share."""

    train_file: str = field(default="", metadata={
        "help": "Training records (JSONL: query, pos, neg, instruction?, document_instruction?, reasoning?)."})
    max_query_length: int = field(default=256, metadata={"help": "Query prompt length in tokens."})
    max_document_length: int = field(default=256, metadata={"help": "Document length in tokens."})
    negatives_per_query: int = field(default=7, metadata={
        "help": "Hard negatives per query (every other document of the global batch is a negative too)."})
    contrastive_temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature."})
    dataloader_pin_memory: bool | None = field(default=None, metadata={
        "help": "Pin data-loader memory (default: on a GPU only)."})

    def check_records(self) -> None:
        if not self.train_file:
            raise ValueError("train_file is not set")
        if not self.output_dir:
            raise ValueError("output_dir is not set")
        if self.negatives_per_query < 0:
            raise ValueError("negatives_per_query must be >= 0")
        if self.contrastive_temperature <= 0:
            raise ValueError("contrastive_temperature must be > 0")
        for key in ("max_query_length", "max_document_length"):
            if getattr(self, key) < 2:
                raise ValueError(f"{key} must be >= 2")
        self.check_positive()
        if self.dataloader_pin_memory is None:
            import torch

            self.dataloader_pin_memory = torch.cuda.is_available()

    def check_positive(self) -> None:
        for key in POSITIVE:
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be at least 1, or -1 to train num_train_epochs epochs; got "
                             f"{self.max_steps}")

    def finish_post_init(self, parent) -> None:
        """`parent.__post_init__`, without transformers' warning that `gradient_checkpointing`
        is deprecated (it fires for its own default value, whatever the user wrote)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
            super(parent, self).__post_init__()


@dataclass
class T1TrainingArguments(RecordArguments, TrainingArguments):
    """Stages 1 (contrastive) and 2 (reasoning SFT + contrastive)."""

    max_reasoning_length: int = field(default=256, metadata={"help": "Stage 2: trace length in tokens."})
    contrastive_weight: float = field(default=0.8, metadata={
        "help": "Stage 2: λ in λ·InfoNCE + (1−λ)·NLL(reasoning + <emb_token>)."})
    distill_weight: float = field(default=0.0, metadata={
        "help": "Weight of the distillation term: KL(teacher || student) over each query's candidates, from the "
                "records' teacher scores (`t1 data distill`), times T^2 as in sentence-transformers' "
                "DistillKLDivLoss (so at T = 0.05, a weight near 400 matches the InfoNCE term's scale). 0: off."})
    distill_temperature: float = field(default=0.05, metadata={
        "help": "Temperature of the distillation term's two softmaxes (match the spread of the teacher's scores)."})
    grad_cache_chunk_size: int | None = field(default=None, metadata={
        "help": "Gradient caching: queries (with their documents) per forward pass; the loss still sees the "
                "whole batch. Default: one pass for the per-device batch."})
    emb_token_learning_rate: float | None = field(default=None, metadata={
        "help": "LoRA only: learning rate of the <emb_token> row (default: the run's). Learning to emit the "
                "token moves its tied row far from its initialisation, which a LoRA-sized rate does slowly."})
    # Defaults that differ from TrainingArguments'.
    per_device_train_batch_size: int = redefault(TrainingArguments, "per_device_train_batch_size", 8)
    logging_steps: float = redefault(TrainingArguments, "logging_steps", 10)
    save_total_limit: int | None = redefault(TrainingArguments, "save_total_limit", 2)
    report_to: None | str | list[str] = redefault(TrainingArguments, "report_to", "tensorboard")

    def __post_init__(self):
        self.check_records()
        if not 0.0 <= self.contrastive_weight <= 1.0:
            raise ValueError("contrastive_weight must be between 0 and 1")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must be >= 0 and distill_temperature > 0")
        if self.grad_cache_chunk_size is not None and self.grad_cache_chunk_size < 1:
            raise ValueError("grad_cache_chunk_size must be >= 1")
        if self.emb_token_learning_rate is not None and self.emb_token_learning_rate <= 0:
            raise ValueError("emb_token_learning_rate must be > 0")
        if self.max_reasoning_length < 1:
            raise ValueError("max_reasoning_length must be >= 1")
        # The collator's columns are not model arguments, and every process must see batches of
        # one size so that embeddings can be gathered across processes.
        self.remove_unused_columns = False
        self.dataloader_drop_last = True
        self.finish_post_init(T1TrainingArguments)


# ---------------------------------------------------------------------------- parsing
class _Parser(HfArgumentParser):
    """argparse errors become `T1Error`s: one line, exit status 2, no usage dump."""

    where = "command line"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)  # --learning_rat is a mistake, not learning_rate

    def error(self, message):
        raise T1Error(f"{self.where}: {message}")


MAX_NODES = 100_000  # values a config may hold once its aliases are expanded (704 bytes named 1.4 GB)


def _expanded_size(node, sizes: dict) -> int:
    """How many values `node` stands for with every alias expanded, counted on the composed
    graph (where an alias is the node it names, shared), so counting costs what the file does."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts as nothing more
        children = node.value if isinstance(node.value, list) else []
        flat = [n for child in children for n in (child if isinstance(child, tuple) else (child,))]
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(_expanded_size(n, sizes) for n in flat))
    return sizes[id(node)]


class _DuplicateKey(Exception):
    """A key given twice in one YAML mapping (the message starts with its line)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently; YAML 1.2 requires keys to be unique)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(f"{key_node.start_mark.line + 1}: key {key!r} appears twice (YAML keeps only "
                                    "the last; give it once)")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file or malformed YAML is a `T1Error`."""
    path = Path(path)
    if not path.is_file():
        raise T1Error(f"{path}: no such config file")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8-sig"))
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_NODES:  # measured before anything expands
                raise T1Error(f"{path}: its YAML aliases (*name) expand to more than {MAX_NODES:,} values; a config "
                              "is a mapping of settings")
            data = (loader.construct_document(node) if node is not None else None) or {}
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: malformed YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise T1Error(f"{path}: malformed YAML (nested too deeply)") from None
    except _DuplicateKey as e:
        raise T1Error(f"{path}:{e}") from None
    if not isinstance(data, dict):
        raise T1Error(f"{path}: expected a mapping of settings")
    return data


def settings_to_flags(settings: dict, parser: HfArgumentParser, where: str) -> list[str]:
    """`{key: value}` as command-line flags, so YAML values meet the same parser as flags."""
    actions = {a.dest: a for a in parser._actions}
    flags = []
    for key, value in settings.items():
        action = actions.get(key)
        if value is None:
            if action is not None and action.default is not None:
                raise T1Error(f"{where}: {key} cannot be null")
            continue
        if isinstance(value, list) and action is not None and action.nargs not in ("+", "*"):
            raise T1Error(f"{where}: {key} takes one value, got a list")
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, list):
            if not value:
                raise T1Error(f"{where}: {key} is an empty list (give at least one value, or leave it out)")
            flags += [f"--{key}", *map(str, value)]
        else:
            flags.append(f"--{key}={value}")  # `=`: a value may start with a dash
    return flags


def parse_config(types: tuple, argv: list[str], prog: str, settings: dict | None = None) -> tuple:
    """Instances of the dataclasses `types` from `--config FILE` and flags in `argv`, flags
    winning; `settings` (a mapping, e.g. a curriculum's chained paths) goes on top of both.
    Unknown keys, wrong types and invalid values are `T1Error`s naming where they came from."""
    argv = list(argv)
    parser = _Parser(types, prog=prog)
    config_flags, where = [], "command line"
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise T1Error("--config needs a YAML file")
        where = argv[i + 1]
        config_flags = settings_to_flags(read_yaml(where), parser, where)
        del argv[i: i + 2]
    parser.where = where
    _, unknown = parser.parse_known_args(config_flags)  # type errors name the file
    _unknown(unknown, where)
    parser.where = f"{prog} (command line or settings)" if settings else "command line"
    flags = config_flags + argv + settings_to_flags(settings or {}, parser, f"{prog} settings")
    _unknown(parser.parse_known_args(flags)[1], "command line")  # before any value is checked
    try:
        configs = tuple(parser.parse_args_into_dataclasses(flags))
    except (ValueError, TypeError) as e:
        raise T1Error(f"{where}: {e}") from None
    _check_outputs(configs, where)
    return configs


def _check_outputs(configs: tuple, where: str) -> None:
    """Refuse an output_dir that is, holds or lies inside the starting model or the records:
    saving there would overwrite the weights the run started from."""
    from ..atomic import check_not_input

    found = {k: getattr(c, k) for c in configs for k in ("model_name_or_path", "train_file", "output_dir")
             if getattr(c, k, None)}
    if "output_dir" in found:
        try:
            check_not_input(found["output_dir"], [found.get("model_name_or_path"), found.get("train_file")])
        except T1Error as e:
            raise T1Error(f"{where}: output_dir {e}") from None


def _unknown(strings: list[str], where: str) -> None:
    keys = [s.lstrip("-") for s in strings if s.startswith("--")]
    if strings:
        raise T1Error(f"{where}: unknown setting(s) {', '.join(keys) or ' '.join(strings)} (see --help)")


def to_dict(*configs: Any) -> dict:
    """One JSON-ready mapping of several config objects (for saving next to a run)."""
    out = {}
    for config in configs:
        out.update(config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config))
    return out
