"""`ModelArguments`: what every stage starts from (TRL's `ModelConfig` names): the starting
model, its dtype, the LoRA adapter, and the T1 settings saved with the trained model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from ..backbones import DEFAULT_BACKBONE


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
