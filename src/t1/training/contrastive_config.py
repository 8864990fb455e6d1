"""Configuration of stages 1 (contrastive) and 2 (reasoning SFT + contrastive), as TRL
configures its trainers: `T1TrainingArguments` is `transformers.TrainingArguments` plus the
contrastive and reasoning settings, so everything the Trainer does on many GPUs (bf16,
deepspeed, FSDP, gradient accumulation, checkpoints) is one key away. `RecordArguments` holds
what every stage reads from its records and the InfoNCE settings they share (stage 3's
`T1GRPOConfig` has them too). Each field is declared once, with its `--help` text; parsing is
`config_parser`, the starting model `model_config.ModelArguments`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .config_parser import redefault

# Training numbers that make no sense at zero or below, checked before any work (transformers
# would train one step at max_steps 0, everything at -5, and nothing at a batch size of 0).
POSITIVE = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "learning_rate",
            "logging_steps", "save_steps")


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
