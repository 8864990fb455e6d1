"""Static KV cache + `torch.compile`: the reference computation with a compiled decoding step.

Hugging Face `generate` compiles the model's forward when the cache is static; on CPU it has to
be told to (`_compile_all_devices`). The cache length is rounded up to a multiple of
`CACHE_BUCKET`, so queries of different lengths share one compiled graph instead of compiling
one each; the extra slots are masked out, which costs a little attention work per step.
"""

from __future__ import annotations

from ..reasoning import cache_argument
from .hf import HFEngine

CACHE_BUCKET = 256


class CompiledEngine(HFEngine):
    name = "compile"
    exact = True

    def generate_kwargs(self, prompts, max_new_tokens, rows) -> dict:
        from transformers import CompileConfig, StaticCache

        backbone = self.backbone or self.model.backbone
        # prompt + trace + <emb_token>: the embedding step writes one slot past the generation.
        needed = max(len(p) for p in prompts) + max_new_tokens + 1
        length = -(-needed // CACHE_BUCKET) * CACHE_BUCKET
        cache = StaticCache(config=backbone.config, max_cache_len=length)
        on_gpu = backbone.device.type == "cuda"
        config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if on_gpu else "default")
        config._compile_all_devices = True
        return {cache_argument(backbone.get_decoder()): cache, "compile_config": config}
