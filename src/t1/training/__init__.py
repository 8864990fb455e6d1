"""Training: the three stages of T1 and their data tools.

`t1 data mine` builds JSONL training records with BM25 (and optionally dense) hard negatives,
`t1 data reason` adds reasoning traces (teacher file, or best-of-N self-generation), and
`t1 train contrastive|sft|grpo|curriculum` runs transformers' Trainer (stages 1-2) or TRL's
GRPOTrainer (stage 3), so the same command works on one CPU or under `torchrun` /
`accelerate launch` on many GPUs. Configurations are dataclasses (`arguments`, `grpo_config`).
"""

from .arguments import ModelArguments, T1TrainingArguments, parse_config
from .grpo_config import T1GRPOConfig
from .records import Record, read_records, write_records

__all__ = ["ModelArguments", "Record", "T1GRPOConfig", "T1TrainingArguments", "parse_config", "read_records",
           "write_records"]
