"""The reference engine: Hugging Face `generate`, then one cached step at `<emb_token>`."""

from __future__ import annotations

from ..reasoning import Rollout, generate_then_embed
from ..settings import GREEDY, Decoding


class HFEngine:
    name = "hf"
    exact = True

    def __init__(self, model, backbone=None):
        self.model = model
        self.backbone = backbone  # None: the model's own weights

    def generate_kwargs(self, prompts: list[list[int]], max_new_tokens: int, rows: int) -> dict:
        """What this engine adds to `generate` (subclasses: a cache, a compile config)."""
        return {}

    def rollout(self, prompts, max_new_tokens, num_samples=1, decoding: Decoding = GREEDY, *, streamer=None,
                stop_rows=None, **extra) -> Rollout:
        if streamer is not None:
            extra["streamer"] = streamer
        if stop_rows is not None:
            extra["stopping_criteria"] = _stop_criteria(stop_rows)
        extra.update(self.generate_kwargs(prompts, max_new_tokens, len(prompts) * num_samples))
        return generate_then_embed(self.model, prompts, max_new_tokens, num_samples, decoding, backbone=self.backbone,
                                   **extra)


def _stop_criteria(stop_rows):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopRows(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor(list(stop_rows()), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopRows()])
