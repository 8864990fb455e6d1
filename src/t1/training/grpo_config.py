"""Stage-3 configuration: TRL's `GRPOConfig` plus the records' settings (`RecordArguments`),
the reward's (`rewards.RewardConfig`, the `reward_*` fields) and the document pool's.

Generation is GRPOConfig's own: `num_generations` (G traces per query), `max_completion_length`
(the trace budget), `temperature`, `top_p`, `top_k`. The InfoNCE temperature is therefore
`contrastive_temperature`, the same name as in stages 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from .config_parser import redefault
from .contrastive_config import RecordArguments
from .rewards import RewardConfig


@dataclass
class T1GRPOConfig(RecordArguments, RewardConfig, GRPOConfig):
    max_queries: int | None = field(default=None, metadata={"help": "Use the first N records only."})
    doc_refresh_steps: int = field(default=10, metadata={
        "help": "Pool document embeddings are recomputed every K optimizer steps."})
    embed_batch_size: int = field(default=16, metadata={"help": "Sequences per embedding forward pass."})
    contrastive_weight: float = field(default=0.0, metadata={
        "help": "Weight of InfoNCE (query + sampled trace) added to the policy loss; 0: off."})
    # Defaults that differ from GRPOConfig's: small, single-device runs.
    num_generations: int | None = redefault(GRPOConfig, "num_generations", 8)
    max_completion_length: int | None = redefault(GRPOConfig, "max_completion_length", 128)
    per_device_train_batch_size: int = redefault(GRPOConfig, "per_device_train_batch_size", 16)
    learning_rate: float = redefault(GRPOConfig, "learning_rate", 1e-6)
    beta: float = redefault(GRPOConfig, "beta", 0.0)
    max_steps: int = redefault(GRPOConfig, "max_steps", 100)
    save_steps: float = redefault(GRPOConfig, "save_steps", 25)
    save_total_limit: int | None = redefault(GRPOConfig, "save_total_limit", 2)
    logging_steps: float = redefault(GRPOConfig, "logging_steps", 1)
    bf16: bool | None = redefault(GRPOConfig, "bf16", None, help="bfloat16 mixed precision; unset: on a GPU only "
                                  "(TRL's default turns it on for a CPU too).")
    report_to: None | str | list[str] = redefault(GRPOConfig, "report_to", "none")
    disable_tqdm: bool = redefault(GRPOConfig, "disable_tqdm", True)

    def __post_init__(self):
        self.check_records()
        if (self.num_generations or 0) < 2:
            raise ValueError("num_generations must be >= 2 (advantages are relative to the group)")
        if (self.max_completion_length or 0) < 1:
            raise ValueError("max_completion_length must be >= 1")
        if self.doc_refresh_steps < 1 or self.embed_batch_size < 1:
            raise ValueError("doc_refresh_steps and embed_batch_size must be >= 1")
        if self.max_queries is not None and self.max_queries < 1:
            raise ValueError("max_queries must be >= 1")
        if self.contrastive_weight < 0:
            raise ValueError("contrastive_weight must be >= 0")
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available()
        self.remove_unused_columns = False  # the reward needs each row's query_index
        self.finish_post_init(T1GRPOConfig)
