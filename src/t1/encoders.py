"""Document engines: which copy of the weights `encode_document` (and so `t1 index`, `t1 eval`,
`t1 serve`'s `/encode` and the integrations) runs its forward passes on.

Every engine embeds a document as T1 does, the final hidden state at `<emb_token>` after
`instruction + text`, with the same tokens, cuts and length-sorted, token-budget batches; they
differ in the arithmetic:

- `hf`: the model's own weights (fp32 on a CPU, bf16 on a GPU): the reference.
- `bf16`: a bfloat16 copy of the weights. On a CPU with native bf16 matrix units (Intel AMX or
  AVX512-BF16) its matmuls run several times faster than fp32, and its embeddings stayed within
  cosine 0.999 of the reference on the shipped model (`benchmarks/encode_documents.py`), so it is
  the default there. Elsewhere torch emulates bf16 and it is slower than fp32: opt in only.

torch's dynamic int8 quantisation of the linear layers was measured too and left out: its
embeddings fell to cosine 0.76 of the reference (per-tensor activation scales cannot hold an
LLM's activation outliers).

An index records the engine it was built with; a build never resumes with another engine.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import torch

from .backbones import has_adapter
from .errors import T1Error

DOCUMENT_ENGINES = ("hf", "bf16")
ENGINE_ENV = "T1_DOCUMENT_ENGINE"  # overrides the host's default (the test suite pins hf)
DOCUMENT_ENGINE_HELP = ("how documents are embedded: hf (the model's own weights, the reference), bf16 (a bfloat16 copy: "
                        "fastest on CPUs with AMX / AVX512-BF16, within cosine 0.999 of hf). Default: bf16 where the CPU "
                        "has native bf16, else hf")


class DocumentEngine:
    """A name, and the decoder (the weights) the forward passes use."""

    def __init__(self, name: str, decoder=None):
        self.name, self._decoder = name, decoder

    @property
    def decoder(self):
        """The engine's own decoder; None for the model's (`T1Model.embed` then uses its own)."""
        return self._decoder

    def __repr__(self) -> str:
        return f"DocumentEngine({self.name!r})"


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return (" amx_bf16" in flags or " avx512_bf16" in flags) and torch.backends.mkldnn.is_available()


def default_document_engine(model) -> str:
    """`$T1_DOCUMENT_ENGINE` if set; else `bf16` for a fp32 model on a CPU with native bf16, where
    it measured faster than fp32 at the same cosine-0.999 quality; else `hf`."""
    chosen = os.environ.get(ENGINE_ENV)
    if chosen:
        return chosen
    dtype = next(model.backbone.parameters()).dtype
    return "bf16" if model.device.type == "cpu" and dtype == torch.float32 and native_bf16() else "hf"


def make_document_engine(model, name: str | None = None) -> DocumentEngine:
    """The document engine `name` (None: `default_document_engine`) for a loaded `T1Model`."""
    name = name or default_document_engine(model)
    if name not in DOCUMENT_ENGINES:
        raise T1Error(f"unknown document engine {name!r} (choose one of {', '.join(DOCUMENT_ENGINES)})")
    if name == "hf" or (name == "bf16" and next(model.backbone.parameters()).dtype == torch.bfloat16):
        return DocumentEngine(name)  # bf16 weights already (a GPU's default): nothing to copy
    return DocumentEngine(name, _plain(model.backbone).to(torch.bfloat16).get_decoder().eval())


def _plain(backbone):
    """A copy of the backbone with any unmerged adapter folded in (the weights as they embed)."""
    if has_adapter(backbone):
        return copy.deepcopy(backbone).merge_and_unload()
    return copy.deepcopy(backbone)
