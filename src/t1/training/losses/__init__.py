"""Training losses as modules, as in sentence-transformers: each takes the (wrapped) model and
a collated batch and returns the loss; the Trainer only calls them.

- `InfoNCELoss`: stage 1, queries in mode `none` against in-batch and hard-negative documents;
- `ReasoningSFTLoss`: stage 2, λ·InfoNCE + (1−λ)·NLL of the reasoning trace and its `<emb_token>`;
- `CachedLoss`: gradient caching around either, so a large batch costs the memory of one chunk.
"""

from .cached import CachedLoss
from .functional import info_nce, next_token_nll
from .info_nce import InfoNCELoss, ReasoningSFTLoss

__all__ = ["CachedLoss", "InfoNCELoss", "ReasoningSFTLoss", "info_nce", "next_token_nll"]
