"""The maths of the losses: InfoNCE over embeddings gathered from every process, and the
reasoning next-token loss.

Distributed recipe (as in Tevatron / open_clip): every process all-gathers the query and
document embeddings, puts its own tensor (with its autograd graph) back in its slot, and
computes the loss of the *global* batch. Its gradient then reaches only the local embeddings,
but exactly: ∂L/∂e_local. DDP averages parameter gradients over the W processes, so the loss
that is back-propagated is scaled by W while the reported value stays L. The result equals one
process training on the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` from all processes (rank order); the local slice keeps its gradient."""
    rank, size = world()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank] = t
    return torch.cat(parts)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over processes."""
    t = t.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def with_value(carrier: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is `value` and whose gradient is that of `carrier`."""
    return carrier - carrier.detach() + value.detach()


def info_nce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    group_size: int,
    temperature: float,
    positive_keys: torch.Tensor | None = None,
    document_keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive loss of local queries [Q, d] against local documents [Q·G, d] (each query's
    positive first in its group of G), with every other document of the global batch as a
    negative. A document whose key is one of the query's positive keys (the same passage
    appearing for another query) is not counted as a negative.

    Returns (loss, top-1 accuracy): the loss's value is the mean over the global batch, its
    gradient scaled by the world size to undo DDP's averaging.
    """
    q = F.normalize(gather(queries), dim=-1)
    d = F.normalize(gather(documents), dim=-1)
    scores = q @ d.T / temperature
    targets = torch.arange(q.shape[0], device=q.device) * group_size
    if positive_keys is not None and document_keys is not None:
        pos_keys, doc_keys = gather(positive_keys), gather(document_keys)
        same = (doc_keys[None, None, :] == pos_keys[:, :, None]).any(dim=1)
        same[torch.arange(q.shape[0], device=q.device), targets] = False
        scores = scores.masked_fill(same, float("-inf"))
    loss = F.cross_entropy(scores, targets)
    accuracy = (scores.argmax(dim=1) == targets).float().mean()
    return with_value(loss * world()[1], loss), accuracy.detach()


def next_token_nll(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Summed next-token NLL of the labelled positions (labels aligned with the inputs, -100
    elsewhere). Only labelled positions go through the LM head, so the [tokens, vocab] logits
    stay small."""
    targets = labels[:, 1:]
    selected = targets != -100
    logits = lm_head(hidden[:, :-1][selected]).float()
    return F.cross_entropy(logits, targets[selected], reduction="sum")


def count_targets(labels: torch.Tensor) -> torch.Tensor:
    return (labels[:, 1:] != -100).sum()


def target_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Labelled (next-token) positions in the global batch (at least 1)."""
    return all_sum(count_targets(labels)).clamp(min=1)


def distill_kl(queries: torch.Tensor, documents: torch.Tensor, teacher_scores: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """sentence-transformers' `DistillKLDivLoss` over each query's own candidates: KL(teacher ‖
    student) between softmax(teacher scores / T) and log_softmax(student cosines / T), batch
    mean, times T² (Hinton et al.'s scaling; at T = 0.05 the term's gradient is T² = 1/400 of
    an InfoNCE term's, so weigh it up accordingly). Local queries [Q, d] against their own
    groups of documents [Q·G, d]; rows whose teacher scores hold a NaN (no teacher score for a
    sampled document) are left out. Per-process mean: DDP's gradient averaging does the rest."""
    n = queries.shape[0]
    q = F.normalize(queries, dim=-1)
    d = F.normalize(documents, dim=-1).view(n, documents.shape[0] // n, -1)
    student = torch.einsum("qh,qgh->qg", q, d)
    rows = ~torch.isnan(teacher_scores).any(dim=1)
    if not rows.any():
        return student.sum() * 0.0
    log_p = F.log_softmax(student[rows] / temperature, dim=1)
    target = F.softmax(teacher_scores[rows].to(student.dtype) / temperature, dim=1)
    return F.kl_div(log_p, target, reduction="batchmean") * temperature**2
