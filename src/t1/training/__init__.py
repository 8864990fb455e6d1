"""Training stages 1 (contrastive) and 2 (reasoning SFT + contrastive) and their data tools.

`t1 data mine` builds JSONL training records with BM25 (and optionally dense) hard negatives,
`t1 data reason` adds reasoning traces (teacher file or best-of-N self-generation), and
`t1 train contrastive` / `t1 train sft` run transformers' Trainer on them, so the same command
works on one CPU or under `torchrun` / `accelerate launch` on many GPUs.
"""

from .config import LoraSettings, TrainConfig, load_config
from .records import Record, read_records, write_records

__all__ = ["LoraSettings", "Record", "TrainConfig", "load_config", "read_records", "write_records"]
