"""Gradient caching (Gao et al., 2021) around `InfoNCELoss` or `ReasoningSFTLoss`, the way
sentence-transformers' cached losses do it: no change to the Trainer's step.

Forward: embeddings of the whole batch, chunk by chunk without a graph; the loss and its
gradient with respect to those embeddings. The returned loss carries a backward hook: when the
Trainer back-propagates it, each chunk is encoded again with a graph (same dropout masks) and
back-propagates its share, so the negatives of a large batch cost the memory of one chunk.
Only the last chunk's backward all-reduces gradients across processes.
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch

from .functional import target_tokens, world
from .info_nce import InfoNCELoss, model_inputs


class _RngState:
    """CPU/CUDA random state captured before a chunk's first forward pass and replayed for its
    second, so that dropout masks match between the two passes."""

    def __init__(self, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            yield


def _chunk(inputs: dict, start: int, stop: int, group: int) -> dict:
    """Queries [start, stop) with their documents."""
    out = {}
    for key, value in inputs.items():
        if key.startswith("query_") or key == "positive_keys":
            out[key] = value[start:stop]
        elif key.startswith("doc_"):
            out[key] = value[start * group: stop * group]
    return out


class CachedLoss(torch.nn.Module):
    def __init__(self, loss: InfoNCELoss, chunk_size: int):
        super().__init__()
        self.loss = loss
        self.chunk_size = chunk_size

    @property
    def metrics(self) -> dict[str, list[float]]:
        return self.loss.metrics

    def forward(self, model, inputs: dict) -> torch.Tensor:
        n_queries = inputs["query_input_ids"].shape[0]
        if not torch.is_grad_enabled() or self.chunk_size >= n_queries:
            return self.loss(model, inputs)
        group = inputs["doc_input_ids"].shape[0] // n_queries
        starts = range(0, n_queries, self.chunk_size)
        chunks = [_chunk(inputs, s, min(s + self.chunk_size, n_queries), group) for s in starts]
        labels = self.loss.uses_labels
        states, embedded = [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(_RngState(inputs["query_input_ids"].device))
                embedded.append(model(**model_inputs(chunk, labels)))
        q = torch.cat([e["query"] for e in embedded]).requires_grad_()
        d = torch.cat([e["docs"] for e in embedded]).requires_grad_()
        weight = self.loss.contrastive_weight
        with torch.enable_grad():
            contrastive = self.loss.contrastive(q, d, inputs)
            grad_q, grad_d = torch.autograd.grad(weight * contrastive, [q, d])
        value = weight * contrastive.detach()
        tokens = target_tokens(inputs["query_labels"]) if labels else None
        if labels:
            value = value + (1 - weight) * self.loss.nll(sum(e["nll"] for e in embedded), tokens).detach()
        loss = value.detach().requires_grad_()
        loss.register_hook(partial(self._backward, model, chunks, states, grad_q, grad_d, group, tokens))
        return loss

    def _backward(self, model, chunks, states, grad_q, grad_d, group, tokens, grad_output) -> None:
        """Each chunk again, with a graph: back-propagate its embeddings' cached gradients (and
        its share of the next-token loss, over the batch's `tokens` targets), scaled by the
        gradient reaching the loss."""
        labels, weight = self.loss.uses_labels, self.loss.contrastive_weight
        nll_scale = (1 - weight) * world()[1] / tokens if labels else None
        row = 0
        with torch.enable_grad():
            for i, (chunk, state) in enumerate(zip(chunks, states)):
                last = i == len(chunks) - 1
                sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                with sync, state.replay():
                    out = model(**model_inputs(chunk, labels))
                    rows = slice(row, row + out["query"].shape[0])
                    docs = slice(rows.start * group, rows.stop * group)
                    surrogate = (out["query"] * grad_q[rows]).sum() + (out["docs"] * grad_d[docs]).sum()
                    if labels:
                        surrogate = surrogate + nll_scale * out["nll"]
                    (surrogate * grad_output).backward()
                row = rows.stop

