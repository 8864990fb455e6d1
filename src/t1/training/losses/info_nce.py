"""Stage 1's and stage 2's losses over one forward pass of the batch."""

from __future__ import annotations

from collections import defaultdict

import torch

from .functional import all_sum, distill_kl, info_nce, target_tokens, with_value, world

MODEL_INPUTS = ("query_input_ids", "query_attention_mask", "query_labels", "doc_input_ids", "doc_attention_mask")


def model_inputs(inputs: dict, labels: bool) -> dict:
    """The collated columns the model takes (`query_labels` only when the loss needs the NLL)."""
    return {k: inputs[k] for k in MODEL_INPUTS if k in inputs and (labels or k != "query_labels")}


class InfoNCELoss(torch.nn.Module):
    """Each query against its positive, its hard negatives and every other document of the
    global batch; a document that is one of the query's positives elsewhere is not a negative.

    With `distill_weight` > 0 and teacher scores in the batch (`t1 data distill`), a
    distillation term is added: `distill_weight` · KL(teacher ‖ student) over each query's own
    candidates (`functional.distill_kl`)."""

    uses_labels = False

    def __init__(self, temperature: float = 0.05, distill_weight: float = 0.0, distill_temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature
        self.contrastive_weight = 1.0
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.metrics: dict[str, list[float]] = defaultdict(list)  # read and cleared by the Trainer's log

    def contrastive(self, q: torch.Tensor, d: torch.Tensor, inputs: dict) -> torch.Tensor:
        loss, accuracy = info_nce(q, d, d.shape[0] // q.shape[0], self.temperature,
                                  inputs.get("positive_keys"), inputs.get("doc_keys"))
        self.metrics["contrastive_loss"].append(loss.item())
        self.metrics["accuracy"].append(accuracy.item())
        if self.distill_weight and "teacher_scores" in inputs:
            kd = distill_kl(q, d, inputs["teacher_scores"], self.distill_temperature)
            self.metrics["distill_loss"].append(kd.item())
            loss = loss + self.distill_weight * kd
        return loss

    def combine(self, out: dict, inputs: dict) -> torch.Tensor:
        """The loss from an encoded batch (gradients flow into out["query"/"docs"/"nll"])."""
        return self.contrastive(out["query"], out["docs"], inputs)

    def forward(self, model, inputs: dict) -> torch.Tensor:
        return self.combine(model(**model_inputs(inputs, self.uses_labels)), inputs)


class ReasoningSFTLoss(InfoNCELoss):
    """λ·InfoNCE(prompt + reasoning + <emb_token>) + (1−λ)·NLL(reasoning + <emb_token>): one
    forward pass gives both the query embedding and the trace's next-token loss."""

    uses_labels = True

    def __init__(self, temperature: float = 0.05, contrastive_weight: float = 0.8, distill_weight: float = 0.0,
                 distill_temperature: float = 0.05):
        super().__init__(temperature, distill_weight, distill_temperature)
        self.contrastive_weight = contrastive_weight

    def nll(self, summed: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Mean NLL per target token of the global batch (`tokens`: `target_tokens` of the
        labels), from this process's summed NLL; scaled like InfoNCE so that DDP's gradient
        averaging gives the global batch's gradient."""
        value = all_sum(summed) / tokens
        self.metrics["lm_loss"].append(value.item())
        return with_value(summed * world()[1] / tokens, value)

    def combine(self, out: dict, inputs: dict) -> torch.Tensor:
        weight = self.contrastive_weight
        nll = self.nll(out["nll"], target_tokens(inputs["query_labels"]))
        return weight * self.contrastive(out["query"], out["docs"], inputs) + (1 - weight) * nll
