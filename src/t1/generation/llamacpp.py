"""llama.cpp (llama-cpp-python's C API) on a GGUF export of the model (`t1 export --gguf`, made
once and kept in the t1 cache under the model's fingerprint).

Rows decode together: one llama.cpp context holds up to `max_rows` sequences in a unified KV
cache, and each decoding step sends one token of every unfinished row in a single batch, so the
weights are read once per step for all of them. The prompts' common prefix (the chat template
and the instruction) is decoded once and shared by every row's cache. A row leaves the batch at
its first stop token or its budget; then `<emb_token>` is decoded after each trace with the
context switched to embeddings: llama.cpp's embedding output is the hidden state after the final
norm, T1's definition. Greedy decoding is an argmax; sampling uses Hugging Face's warpers and
torch's generator, so `torch.manual_seed` makes it repeatable as with the other engines.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import T1Error
from ..reasoning import Rollout, stop_token_ids
from ..settings import GREEDY, Decoding

logger = logging.getLogger(__name__)

LLAMA_CPP_WEIGHTS = {"llama.cpp": None, "llama.cpp-f16": "f16", "llama.cpp-q8": "q8_0"}  # engine -> GGUF conversion
_FLASH_ATTENTION = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
                    "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}
_backend_ready, _log_callback = False, None


class LlamaCppEngine:
    """`llama.cpp`: fp32 weights, exact (checked against the reference by the tests);
    `llama.cpp-f16`: half the bytes read per token, near the reference; `llama.cpp-q8`: llama.cpp's
    8-bit blocks, about a quarter of the bytes, approximate (`LLAMA_CPP_WEIGHTS`).

    `max_rows` sequences decode at once (more rows run in groups of that size, unless they
    stream: then the context grows to hold them all); each may hold `row_context` tokens of prompt
    and trace on average (the KV cache is shared).

    `fp32_kv` (else f16) and `flash_attention` ("auto": where llama.cpp chooses, "on", "off"); by
    default fp32 and "off" for the exact engine, llama.cpp's f16 and "auto" for the others: with
    either of llama.cpp's defaults a batch moved a row's logits by up to 0.023 against the row
    alone, enough to flip a near-tied greedy token (benchmarks/batch_invariance.py)."""

    def __init__(self, model, name: str = "llama.cpp", max_rows: int = 16, row_context: int = 1024,
                 fp32_kv: bool | None = None, flash_attention: str | None = None):
        quantization = LLAMA_CPP_WEIGHTS[name]
        try:
            import llama_cpp
        except ImportError:
            raise T1Error("engine llama.cpp needs llama-cpp-python: pip install 't1[llama-cpp]'") from None
        if model.device.type != "cpu":
            raise T1Error("engine llama.cpp runs on CPU here; use --device cpu")
        self.model, self.lib, self.name = model, llama_cpp, name
        self.exact = quantization is None
        self.fp32_kv = self.exact if fp32_kv is None else fp32_kv
        self.flash_attention = flash_attention or ("off" if self.exact else "auto")
        if self.flash_attention not in _FLASH_ATTENTION:
            raise T1Error(f"flash_attention: expected one of {', '.join(_FLASH_ATTENTION)}, got {flash_attention!r}")
        self.path = _cached_gguf(model, quantization)
        _init_backend(llama_cpp)

        params = llama_cpp.llama_model_default_params()
        # Quantised weights load as stored, without llama.cpp's "extra" CPU buffer types (weights
        # repacked for AMX tiles or wider SIMD): on a CPU with AMX (this project's, in a VM) that
        # path crashed with SIGSEGV at the first decode.
        params.use_extra_bufts = quantization is None
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise T1Error(f"llama.cpp could not load {self.path}")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)
        self.row_context, self._ctx = row_context, None
        self._open_context(max_rows)
        atexit.register(self.close)  # before interpreter teardown, which the C objects do not survive

    def _open_context(self, rows: int) -> None:
        """A context (KV cache) and a batch for `rows` sequences; replaces the current ones."""
        self._close_context()
        context = self.lib.llama_context_default_params()
        context.n_ctx = context.n_batch = rows * self.row_context
        context.n_ubatch = 512
        context.n_seq_max = rows
        context.kv_unified = True
        context.n_threads = context.n_threads_batch = torch.get_num_threads()
        context.type_k = context.type_v = self.lib.GGML_TYPE_F32 if self.fp32_kv else self.lib.GGML_TYPE_F16
        context.flash_attn_type = getattr(self.lib, _FLASH_ATTENTION[self.flash_attention])
        self._ctx = self.lib.llama_init_from_model(self._model, context)
        if not self._ctx:
            raise T1Error(f"llama.cpp could not make a context for {rows} rows of {self.path}")
        self.max_rows, self._capacity = rows, context.n_batch
        self._batch = self.lib.llama_batch_init(self._capacity, 0, 1)
        self._memory = self.lib.llama_get_memory(self._ctx)

    def _close_context(self) -> None:
        if self._ctx:
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self._ctx)
            self._ctx = None

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._close_context()
            self.lib.llama_model_free(self._model)
            self._model = None

    def rollout(self, prompts, max_new_tokens, num_samples=1, decoding: Decoding = GREEDY, *, streamer=None,
                stop_rows=None, **extra) -> Rollout:
        """As `Engine.rollout`; a `logits_processor` here is a list of callables that take the ids
        and the scores as numpy arrays (the scores of one row, 1-D) and return the scores."""
        processors = extra.pop("logits_processor", None) or []
        if max_new_tokens < 1:
            raise ValueError("engine llama.cpp needs max_new_tokens >= 1")
        if extra:
            raise T1Error(f"engine llama.cpp does not take {', '.join(sorted(extra))}")
        rows = [list(p) for p in prompts for _ in range(num_samples)]
        if streamer is not None and len(rows) > self.max_rows:  # a streamer follows one batch: all rows at once
            self._open_context(len(rows))
        sampler = _Sampler(decoding)
        if streamer is not None:  # Hugging Face streamers get the prompts first, padded on the left as `generate` pads
            width = max(map(len, rows))
            streamer.put(torch.tensor([[0] * (width - len(r)) + r for r in rows]))
        traces, emitted, embeddings = [], [], []
        for start in range(0, len(rows), self.max_rows):
            group = range(start, min(start + self.max_rows, len(rows)))
            should_stop = None if stop_rows is None else (lambda g=group: list(stop_rows())[g.start:g.stop])
            t, e, emb = self._group([rows[r] for r in group], max_new_tokens, sampler, processors, streamer, should_stop)
            traces += t
            emitted += e
            embeddings += emb
        if streamer is not None:
            streamer.end()
        return Rollout(torch.tensor(np.stack(embeddings), dtype=torch.float32), traces, emitted)

    def _group(self, prompts, max_new_tokens, sampler, processors, streamer, should_stop):
        """Generate then embed up to `max_rows` rows, one llama.cpp sequence each."""
        lib, n = self.lib, len(prompts)
        stops, emb_token = set(stop_token_ids(self.model)), self.model.emb_token_id
        lib.llama_memory_clear(self._memory, True)
        lib.llama_set_embeddings(self._ctx, False)
        if sum(map(len, prompts)) + n * (max_new_tokens + 2) > self._capacity:
            raise T1Error(f"engine llama.cpp: {n} prompts and their traces exceed its {self._capacity}-token context")

        # The common prefix once, in sequence 0, then shared; each row's own rest after it.
        shared = _common_prefix(prompts)
        if shared:
            self._decode([(0, p, prompts[0][p], False) for p in range(shared)])
            for row in range(1, n):
                lib.llama_memory_seq_cp(self._memory, 0, row, 0, shared)
        pending = [(row, p, prompt[p], p == len(prompt) - 1) for row, prompt in enumerate(prompts)
                   for p in range(shared, len(prompt))]

        traces, ended, stop = [[] for _ in range(n)], [None] * n, [False] * n
        positions = [len(p) for p in prompts]
        while True:
            outputs = self._decode(pending)  # row -> batch index of its logits
            active = [row for row in range(n) if not stop[row]]
            scores = np.stack([self._logits(outputs[row]) for row in active])
            for i, row in enumerate(active):
                for processor in processors:
                    scores[i] = processor(np.asarray(prompts[row] + traces[row], dtype=np.intc), scores[i])
            tokens = sampler(scores)
            asked = should_stop() if should_stop is not None else [False] * n
            pending, step = [], [emb_token] * n
            for row, token in zip(active, tokens):
                step[row] = token
                if token in stops:
                    stop[row], ended[row] = True, token
                    continue
                traces[row].append(token)
                if len(traces[row]) == max_new_tokens or asked[row]:
                    stop[row] = True  # the last token is still to be decoded, with <emb_token>
                else:
                    pending.append((row, positions[row], token, True))
                    positions[row] += 1
            if streamer is not None:
                streamer.put(torch.tensor(step))
            if all(stop):
                break

        # <emb_token> after every trace (after its last token, unless a stop token ended it).
        lib.llama_set_embeddings(self._ctx, True)
        try:
            final = []
            for row in range(n):
                if ended[row] is None and traces[row]:  # an output too: llama.cpp embeds every token of the batch
                    final.append((row, positions[row], traces[row][-1], True))
                    positions[row] += 1
                final.append((row, positions[row], emb_token, True))
            outputs = self._decode(final)
            embeddings = [np.ctypeslib.as_array(lib.llama_get_embeddings_ith(self._ctx, outputs[row]),
                                                shape=(self.n_embd,)).copy() for row in range(n)]
        finally:
            lib.llama_set_embeddings(self._ctx, False)
        return traces, [e == emb_token for e in ended], embeddings

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """Decode (row, position, token, output) entries in one batch; row -> its output's index."""
        batch, outputs = self._batch, {}
        batch.n_tokens = len(tokens)
        for i, (row, position, token, output) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
            batch.seq_id[i][0] = row
            batch.logits[i] = output
            if output:
                outputs[row] = i
        if tokens and self.lib.llama_decode(self._ctx, batch) != 0:
            raise T1Error("llama.cpp could not decode a batch (its KV cache is full?)")
        return outputs

    def _logits(self, index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,)).copy()


class _Sampler:
    """Greedy: argmax. Sampling: temperature, then top-k, then top-p (Hugging Face's warpers, in
    `generate`'s order), then a draw from torch's generator."""

    def __init__(self, decoding: Decoding):
        self.warpers = None
        if decoding.do_sample:
            from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

            top_k, top_p = decoding.top_k, decoding.top_p if decoding.top_p is not None else 1.0
            self.warpers = LogitsProcessorList([TemperatureLogitsWarper(decoding.temperature or 1.0)]
                                               + ([TopKLogitsWarper(top_k)] if top_k else [])
                                               + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))

    def __call__(self, scores: np.ndarray) -> list[int]:
        if self.warpers is None:
            return scores.argmax(axis=1).tolist()
        warped = self.warpers(None, torch.from_numpy(scores))
        return torch.multinomial(torch.softmax(warped, dim=-1), 1).squeeze(1).tolist()


def _common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least its last token to decode."""
    shared = min(len(p) for p in prompts) - 1
    for i in range(shared):
        if any(p[i] != prompts[0][i] for p in prompts):
            return i
    return max(shared, 0)


def _init_backend(llama_cpp) -> None:
    """llama.cpp's log goes to this module's logger: errors (ggml level 4) as errors, the rest
    (its load report, warnings such as a unified KV cache longer than the training context) at
    debug level."""
    global _backend_ready, _log_callback
    if not _backend_ready:
        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data) -> None:
            logger.log(logging.ERROR if level == 4 else logging.DEBUG, "llama.cpp: %s", text.decode(errors="replace").rstrip())

        _log_callback = forward  # kept alive: llama.cpp holds a pointer to it
        llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def _cached_gguf(model, quantization: str | None = None) -> Path:
    from ..backbones import cache_dir
    from ..gguf_export import backbone_gguf, export_gguf, quantize_gguf

    path = cache_dir() / "gguf" / f"{model.fingerprint()}.gguf"
    if not path.exists():
        backbone_gguf(model.config.backbone)  # a backbone that cannot be exported fails before the note
        logger.warning("writing a GGUF of %s for llama.cpp to %s (once)", model.name_or_path, path)
        export_gguf(model, path)
    if quantization is None:
        return path
    quantized = path.with_suffix(f".{quantization}.gguf")
    if not quantized.exists():
        logger.warning("quantising %s to %s for llama.cpp (once)", path, quantization)
        quantize_gguf(path, quantized, quantization)
    return quantized
