"""Generate-then-embed: the query side of T1.

The model writes a reasoning trace after the chat prompt; the trace stops at EOS, at
`<emb_token>` if the model emits it itself, or at `max_new_tokens`. The embedding is the hidden
state of `<emb_token>` appended after the trace. Rather than re-encoding prompt + trace, the
embedding step reuses the generation's KV cache: one more decoder call over two tokens, the last
generated token (not yet in the cache) and `<emb_token>`, with everything after the trace's stop
masked out. This costs one decoding step instead of a second full forward pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .batching import pad
from .settings import GREEDY, Decoding


@dataclass
class Rollout:
    """Result of generate-then-embed for a batch (rows are prompts × samples, prompt-major)."""

    embeddings: torch.Tensor  # [rows, dim], pooled at <emb_token>, not normalised
    reasoning_ids: list[list[int]]  # trace tokens, stop token excluded
    emitted_emb_token: list[bool]  # the model ended its trace with <emb_token> by itself


def stop_token_ids(model) -> list[int]:
    """Tokens that end a trace, the one list used by query-time generation, trace splitting and
    the GRPO policy: `<emb_token>` first, then every EOS id of the generation config and the
    tokenizer (chat models often have several, e.g. end-of-turn and end-of-text)."""
    eos = getattr(getattr(model.backbone, "generation_config", None), "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if model.tokenizer.eos_token_id is not None:
        eos.append(model.tokenizer.eos_token_id)
    return list(dict.fromkeys([model.emb_token_id, *eos]))


def split_trace(completion, stop_ids, emb_token_id: int) -> tuple[list[int], bool]:
    """(trace tokens up to its first stop token, whether that stop was `<emb_token>`)."""
    completion = list(completion)
    for i, token in enumerate(completion):
        if token in stop_ids:
            return completion[:i], token == emb_token_id
    return completion, False




@torch.no_grad()
def generate_then_embed(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    num_samples: int = 1,
    decoding: Decoding = GREEDY,
    backbone=None,
    **generate_kwargs,
) -> Rollout:
    """Run generation for `prompts` (token id lists) and embed each trace via the KV cache.
    `backbone` replaces the model's weights (an engine's quantised copy; None: the model's own).
    Extra keyword arguments go to `generate` (e.g. `logits_processor`, `cache`, `streamer`)."""
    if max_new_tokens < 1:
        raise ValueError("generate_then_embed needs max_new_tokens >= 1")
    device = model.device
    tok = model.tokenizer
    input_ids, mask = pad(prompts, tok.pad_token_id, side="left")
    input_ids, mask = input_ids.to(device), mask.to(device)
    stop_ids = stop_token_ids(model)
    backbone = model.backbone if backbone is None else backbone
    out = backbone.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        eos_token_id=stop_ids,
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
        use_cache=True,
        **decoding.kwargs(),
        **generate_kwargs,
    )
    mask = mask.repeat_interleave(num_samples, dim=0)
    generated = out.sequences[:, input_ids.shape[1]:]
    rows, steps = generated.shape

    # Length of each trace: up to (excluding) the first stop token.
    is_stop = torch.isin(generated, torch.tensor(stop_ids, device=device))
    has_stop = is_stop.any(dim=1)
    trace_len = torch.where(has_stop, is_stop.int().argmax(dim=1), torch.full_like(has_stop, steps, dtype=torch.long))
    emitted = [bool(h) and int(generated[r, int(trace_len[r])]) == model.emb_token_id for r, h in enumerate(has_stop.tolist())]

    # The cache holds the prompt and all generated tokens but the last. Attend to prompt + trace.
    in_trace = torch.arange(steps, device=device)[None, :] < trace_len[:, None]
    last_in_trace = in_trace[:, -1:]  # only when the trace ran to max_new_tokens
    step_mask = torch.cat([mask, in_trace[:, :-1].long(), last_in_trace.long(), torch.ones_like(last_in_trace, dtype=torch.long)], dim=1)
    prompt_len = mask.sum(dim=1)
    positions = torch.stack([prompt_len + steps - 1, prompt_len + trace_len], dim=1)
    step_ids = torch.stack([generated[:, -1], torch.full_like(generated[:, -1], model.emb_token_id)], dim=1)
    decoder = model.decoder if backbone is model.backbone else backbone.get_decoder()
    hidden = decoder(
        input_ids=step_ids,
        attention_mask=step_mask,
        position_ids=positions,
        use_cache=True,
        **_cache_kwarg(decoder, out),
    ).last_hidden_state[:, -1]
    traces = [generated[r, : int(trace_len[r])].tolist() for r in range(rows)]
    return Rollout(hidden.float(), traces, emitted)


def cache_argument(decoder) -> str:
    """The name the model's forward (and `generate`) takes a KV cache under: transformers renamed
    `past_key_values` to `cache` during 5.x; accept both."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _cache_kwarg(decoder, generate_output) -> dict:
    cache = getattr(generate_output, "cache", None) or getattr(generate_output, "past_key_values", None)
    return {cache_argument(decoder): cache}
