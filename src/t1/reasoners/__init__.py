"""Who writes a query's reasoning: T1 itself (the default), or a writer that knows more.

    make_reasoner("http://127.0.0.1:11434/v1", model="qwen3:8b")   # an OpenAI-compatible endpoint
    make_reasoner("models/qwen2.5-1.5b-instruct-q4_k_m.gguf")       # a GGUF file, run by llama.cpp
    make_reasoner("hf:Qwen/Qwen2.5-1.5B-Instruct")                  # a Hugging Face causal LM
    model.use_reasoner(...)                                          # T1 then embeds that writer's traces

The same settings travel as a dict (`T1Config.reasoner`, a settings file's "reasoner", the CLI's
`--reasoner*` flags): {"source": ..., "model", "prompt", "thinking", "max_tokens",
"concurrency", "timeout", "retries", "api_key_env"}.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import T1Error
from .base import THINKING, Reasoner, ReasonerError, Trace, split_thinking
from .prompts import DEFAULT_PROMPT, PROMPTS, WriterPrompt, load_prompt

SELF = ("t1", "self", "")  # the T1 model writes its own traces
COMMON = ("prompt", "thinking", "max_tokens")
OPTIONS = {"openai": ("model", "concurrency", "timeout", "retries", "api_key_env"),
           "gguf": ("n_ctx", "n_threads"), "hf": ("device", "batch_size")}

__all__ = ["DEFAULT_PROMPT", "PROMPTS", "THINKING", "Reasoner", "ReasonerError", "Trace", "WriterPrompt",
           "check_spec", "load_prompt", "make_reasoner", "reasoner_kind", "split_thinking"]


def reasoner_kind(source: str | None) -> str | None:
    """"openai", "gguf" or "hf" for a source, None for T1 itself; a one-line error otherwise."""
    if source is None or source in SELF:
        return None
    if not isinstance(source, str):
        raise T1Error(f"reasoner must be a URL, a .gguf file or hf:NAME, got {source!r}")
    if source.startswith(("http://", "https://")):
        return "openai"
    if source.startswith("hf:") and len(source) > 3:
        return "hf"
    if source.lower().endswith(".gguf"):
        return "gguf"
    raise T1Error(f"reasoner {source!r}: use an OpenAI-compatible URL (http://host:port/v1), a .gguf file, "
                  "hf:NAME_OR_FOLDER, or t1 (the model itself)")


def check_spec(spec: str | dict) -> tuple[str | None, dict]:
    """(kind, options) of a reasoner's source or dict form, checked without making it."""
    options = {}
    if isinstance(spec, dict):
        options = {k: v for k, v in spec.items() if k != "source"}
        spec = spec.get("source")
    kind = reasoner_kind(spec)
    if kind is None:
        if options:
            raise T1Error(f"reasoner options ({', '.join(sorted(options))}) need a reasoner (--reasoner URL, a .gguf "
                          "file or hf:NAME)")
        return None, {}
    allowed = set(COMMON) | set(OPTIONS[kind])
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise T1Error(f"reasoner option {unknown[0]!r} does not apply to a {kind} reasoner "
                      f"(it takes: {', '.join(sorted(allowed))})")
    options = {k: v for k, v in options.items() if v is not None}
    load_prompt(options.get("prompt"))  # a prompt that cannot work is refused now, not at the first query
    if options.get("thinking", "answer") not in THINKING:
        raise T1Error(f"reasoner thinking must be one of {', '.join(THINKING)}, got {options['thinking']!r}")
    if kind == "gguf" and not Path(spec).expanduser().is_file():
        raise T1Error(f"reasoner {spec}: no such GGUF file")
    return kind, options


def make_reasoner(source: str | dict | Reasoner | None, **options) -> Reasoner | None:
    """The reasoner of `source` (see the module docstring); None for T1 itself. `options` are the
    settings of the dict form; those another kind of writer takes are refused by name."""
    if isinstance(source, Reasoner):
        if options:
            raise TypeError("options apply when making a reasoner from its source; this one is made already")
        return source
    if isinstance(source, dict):
        options = {**{k: v for k, v in source.items() if k != "source"}, **options}
        source = source.get("source")
    kind, options = check_spec({**options, "source": source})
    if kind is None:
        return None
    if kind == "openai":
        from .openai import OpenAIReasoner

        return OpenAIReasoner(source, **options)
    if kind == "gguf":
        from .local import LlamaCppReasoner

        return LlamaCppReasoner(source, **options)
    from .local import HFReasoner

    return HFReasoner(source[3:], **options)
