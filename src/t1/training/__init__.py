"""Training: the three stages of T1 and their data tools.

`t1 data mine` builds JSONL training records with BM25 (and optionally dense) hard negatives,
`t1 data reason` adds reasoning traces (teacher file, or best-of-N self-generation), and
`t1 train contrastive|sft|grpo|curriculum` runs transformers' Trainer (stages 1-2,
`contrastive_trainer`) or TRL's GRPOTrainer (stage 3, `grpo_trainer`), so the same command works
on one CPU or under `torchrun -m t1` / `accelerate launch -m t1` on many GPUs. Each trainer has
its config dataclass (`contrastive_config`, `grpo_config`), the starting model has
`model_config`, and one parser (`config_parser`) reads them all from YAML and flags.
"""

from .config_parser import parse_config
from .contrastive_config import T1TrainingArguments
from .grpo_config import T1GRPOConfig
from .model_config import ModelArguments
from .records import Record, read_records, write_records

__all__ = ["ModelArguments", "Record", "T1GRPOConfig", "T1TrainingArguments", "parse_config", "read_records",
           "write_records"]
