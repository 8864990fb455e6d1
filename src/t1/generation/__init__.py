"""One generation interface for T1's query side, and the engines behind it.

An engine turns prompts (token id lists) into a `Rollout`: each row's reasoning trace, up to the
first stop token of `reasoning.stop_token_ids`, whether the model ended it with `<emb_token>`
itself, and the final-layer hidden state at `<emb_token>` appended after the trace. Every engine
keeps that definition of the query embedding; they differ only in how fast they decode.

- `hf`: Hugging Face `generate` with a dynamic KV cache, the reference (`reasoning.generate_then_embed`).
- `compile`: the same generation over a static KV cache with a `torch.compile`d decoding step.
  Exact; its compilation costs seconds to minutes per new batch shape, so it pays on long runs.
- `int8`: weight-only int8 (torchao) on a quantised copy of the weights. Not exact: the traces
  and embeddings differ slightly from the reference; reasoning caches keep them apart.
- `llama.cpp`: llama.cpp (llama-cpp-python's C API) on a fp32 GGUF export of the model, CPU; the
  rows of a batch decode together, one llama.cpp sequence each, sharing their prompts' prefix.
- `llama.cpp-f16`: the same with the weights stored as fp16 (half the bytes a token reads). Near
  the reference (fp16 keeps 11 bits of mantissa) but not exact, so its traces are cached apart.
- `llama.cpp-q8`: the same on llama.cpp's q8_0 quantisation of that export. Not exact, like `int8`.

`encode_query`, `t1 serve`, `t1 data reason` and evaluation all generate through
`model.engine`; `T1Model.from_pretrained(engine=...)` or `model.use_engine(name)` choose it.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from ..errors import T1Error
from ..reasoning import Rollout
from ..settings import GREEDY, Decoding
from .llamacpp import LLAMA_CPP_WEIGHTS  # llama-cpp-python itself is imported only by the engine

ENGINES = ("hf", "compile", "int8", *LLAMA_CPP_WEIGHTS)
ENGINE_HELP = ("generation engine for reasoning: hf (Hugging Face generate, the reference), compile (static KV "
               "cache + torch.compile, exact), int8 (torchao weight-only int8, approximate; needs the t1[int8] "
               "extra), llama.cpp (llama-cpp-python on a GGUF export, CPU; needs the t1[llama-cpp] extra), llama.cpp-f16 "
               "(the same, fp16 weights, near-exact), llama.cpp-q8 (q8_0 weights, approximate). Default: llama.cpp on a "
               "CPU where it is installed and the backbone ships as GGUF, else hf")


class Engine(Protocol):
    """What every engine offers. `exact`: greedy traces and embeddings match the reference."""

    name: str
    exact: bool

    def rollout(self, prompts: list[list[int]], max_new_tokens: int, num_samples: int = 1,
                decoding: Decoding = GREEDY, *, streamer=None, stop_rows: Callable[[], Sequence[bool]] | None = None,
                **extra) -> Rollout:
        """Generate then embed, `num_samples` traces per prompt decoded as `decoding` says. `streamer` gets each step's tokens (`put(tensor)`, then `end()`;
        the prompts come first, as Hugging Face streamers expect); `stop_rows()` is asked after
        each step which rows to stop early. `extra` goes to Hugging Face `generate` (e.g.
        `logits_processor`)."""
        ...


def default_engine(model) -> str:
    """The fastest exact engine for a loaded `T1Model`: `llama.cpp` on a CPU where
    llama-cpp-python is installed, the adapter (if any) is merged, and the backbone ships as GGUF
    (so the model exports to one: about 5 s for the shipped model, once), since
    benchmarks/generation_engines.py measured it faster than `hf` there, one query and 16 at
    once; else `hf`. `compile` is exact too but pays
    its compilation first, once per batch shape, for no end-to-end gain on this CPU."""
    import importlib.util

    from ..backbones import GGUF_ALIASES

    if (model.device.type == "cpu" and model.config.backbone in GGUF_ALIASES
            and not model.has_adapter  # an unmerged adapter (training) exports no GGUF
            and importlib.util.find_spec("llama_cpp") is not None):
        return "llama.cpp"
    return "hf"


def make_engine(model, name: str | None = None) -> Engine:
    """The engine `name` (None: the device's default) for a loaded `T1Model`."""
    name = name or default_engine(model)
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(model)
    if name == "compile":
        from .compiled import CompiledEngine

        return CompiledEngine(model)
    if name == "int8":
        from .int8 import Int8Engine

        return Int8Engine(model)
    if name in LLAMA_CPP_WEIGHTS:
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(model, name)
    raise T1Error(f"unknown engine {name!r} (choose one of {', '.join(ENGINES)})")


def trace_settings(engine: Engine, max_new_tokens: int, decoding: Decoding) -> dict:
    """The decoding settings a reasoning-cache key records. An approximate engine is part of
    them, so its traces never stand in for the reference's; exact engines share entries."""
    settings = {"max_new_tokens": max_new_tokens, **decoding.kwargs()}
    return settings if engine.exact else {**settings, "engine": engine.name}
