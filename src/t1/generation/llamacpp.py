"""llama.cpp (llama-cpp-python) on a GGUF export of the model (`t1 export --gguf`, made once
and kept in the t1 cache under the model's fingerprint).

One row at a time: the trace is generated in one llama.cpp context, then the context is switched
to embeddings and `<emb_token>` is decoded on its KV cache, as the reference does; llama.cpp's
embedding output is the hidden state after the final norm, T1's definition. Rows run one after
another, so a batch streams only when it has one row (`t1 serve --max-batch 1`). Sampling is
seeded from torch's generator, so `torch.manual_seed` makes it repeatable as with the others.
"""

from __future__ import annotations

import atexit
import contextlib
import logging

import torch

from ..errors import T1Error
from ..reasoning import Rollout, stop_token_ids

logger = logging.getLogger(__name__)

LLAMA_CPP_WEIGHTS = {"llama.cpp": None, "llama.cpp-f16": "f16", "llama.cpp-q8": "q8_0"}  # engine -> GGUF conversion


class LlamaCppEngine:
    """`llama.cpp`: fp32 weights, exact (checked against the reference by the tests);
    `llama.cpp-f16`: half the bytes read per token, near the reference; `llama.cpp-q8`: llama.cpp's
    8-bit blocks, about a quarter of the bytes, approximate (`LLAMA_CPP_WEIGHTS`)."""

    def __init__(self, model, name: str = "llama.cpp"):
        quantization = LLAMA_CPP_WEIGHTS[name]
        try:
            import llama_cpp
        except ImportError:
            raise T1Error("engine llama.cpp needs llama-cpp-python: pip install 't1[llama-cpp]'") from None
        if model.device.type != "cpu":
            raise T1Error("engine llama.cpp runs on CPU here; use --device cpu")
        self.model, self.lib = model, llama_cpp
        self.name = name
        self.exact = quantization is None
        with _plain_weight_buffers(llama_cpp) if quantization else contextlib.nullcontext():
            self.llm = llama_cpp.Llama(str(_cached_gguf(model, quantization)), n_ctx=4096, n_batch=512,
                                       n_threads=torch.get_num_threads(), verbose=False)
        atexit.register(self.llm.close)  # before interpreter teardown, which its own __del__ does not survive

    def rollout(self, prompts, max_new_tokens, num_samples=1, do_sample=False, temperature=1.0, top_p=1.0,
                top_k=None, *, streamer=None, stop_rows=None, **extra) -> Rollout:
        """As `Engine.rollout`; a `logits_processor` here is a list of callables that take the ids
        and the scores as numpy arrays (the scores of one row, 1-D) and return the scores."""
        processors = extra.pop("logits_processor", None)
        if extra:
            raise T1Error(f"engine llama.cpp does not take {', '.join(sorted(extra))}")
        rows = [p for p in prompts for _ in range(num_samples)]
        if streamer is not None and len(rows) > 1:
            raise T1Error("engine llama.cpp streams one query at a time (t1 serve --max-batch 1)")
        stops = set(stop_token_ids(self.model))
        if streamer is not None:
            streamer.put(torch.tensor(rows))  # Hugging Face streamers get the prompt first
        traces, emitted, embeddings = [], [], []
        for row, prompt in enumerate(rows):
            self.llm.set_seed(int(torch.randint(2**31 - 1, ())))
            trace, stop = [], None
            tokens = self.llm.generate(prompt, temp=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0,
                                       top_k=(top_k or 0) if do_sample else 1, min_p=0.0, repeat_penalty=1.0,
                                       reset=True, logits_processor=self._processors(processors))
            for token in tokens:
                if token in stops:
                    stop = token
                    break
                trace.append(token)
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if len(trace) == max_new_tokens or (stop_rows is not None and list(stop_rows())[row]):
                    break
            # the cache holds prompt + trace but the last token sampled; feed it (unless a stop) and <emb_token>
            pending = ([] if stop is not None or not trace else [trace[-1]]) + [self.model.emb_token_id]
            embeddings.append(self._embed_next(pending))
            traces.append(trace)
            emitted.append(stop == self.model.emb_token_id)
        if streamer is not None:
            streamer.end()
        return Rollout(torch.tensor(embeddings, dtype=torch.float32), traces, emitted)

    def _processors(self, processors):
        if not processors:
            return None

        def apply(ids, scores):
            for processor in processors:
                scores = processor(ids, scores)
            return scores

        return self.lib.LogitsProcessorList([apply])

    def _embed_next(self, tokens: list[int]) -> list[float]:
        """The final hidden state of the last of `tokens`, decoded on the current KV cache."""
        if tokens[:-1]:
            self.llm.eval(tokens[:-1])
        ctx = self.llm._ctx.ctx
        self.lib.llama_set_embeddings(ctx, True)
        try:
            self.llm.eval(tokens[-1:])
            pointer = self.lib.llama_get_embeddings_ith(ctx, -1)
            return [pointer[i] for i in range(self.llm.n_embd())]
        finally:
            self.lib.llama_set_embeddings(ctx, False)


@contextlib.contextmanager
def _plain_weight_buffers(llama_cpp):
    """Load quantised weights as stored, without llama.cpp's "extra" CPU buffer types (weights
    repacked for AMX tiles or wider SIMD): on a CPU with AMX (this project's, in a VM) that path
    crashed with SIGSEGV at the first decode. llama-cpp-python's `Llama` has no argument for it, so
    its default model parameters are wrapped while it loads."""
    from llama_cpp import llama as module

    original = module.llama_cpp.llama_model_default_params

    def params():
        out = original()
        out.use_extra_bufts = False
        return out

    module.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_cpp.llama_model_default_params = original


def _cached_gguf(model, quantization: str | None = None):
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
