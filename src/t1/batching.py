"""Length-aware batching: sort by length, fill each batch up to a token budget.

Sorting puts sequences of similar length together so little compute goes to padding; the
token budget keeps the memory of a batch bounded whatever the lengths. Callers scatter results
back with the returned indices, so output order equals input order.
"""

from __future__ import annotations

from typing import Sequence

import torch

# Padded tokens per forward pass when embedding: two 8,192-token documents, or 32 of 512. What
# bounds the activation memory of a batch, whatever the lengths (benchmarks/long_documents.py).
MAX_BATCH_TOKENS = 16384


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Group indices of `lengths` into batches of at most `batch_size` items whose padded size
    (items × longest) stays within `max_tokens` (a single over-long item gets its own batch)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = len(current) >= batch_size or (
            max_tokens is not None and current and (len(current) + 1) * longest > max_tokens
        )
        if full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists into (input_ids, attention_mask) tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
