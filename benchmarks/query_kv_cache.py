"""Benchmark 2: query embedding after reasoning, KV-cache reuse vs re-encoding.

Generation is the same for both (greedy, the same traces); what differs is how the embedding
at <emb_token> is obtained: one extra decoding step on the generation's cache (t1), or a second
full forward pass over prompt + reasoning + <emb_token>. The cached step is timed inside
generate_then_embed (its total minus the time spent in `generate`). Reports seconds per query for the
embedding step and end to end, and their ratios.

    python benchmarks/query_kv_cache.py --n 16 --max-new-tokens 128 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import SCIFACT, report, sync

from t1 import T1Model, load_queries
from t1.batching import pad
from t1.reasoning import generate_then_embed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    model = T1Model.from_pretrained(args.model, device=args.device)
    device = model.device
    queries = list(load_queries(SCIFACT / "queries.jsonl").values())[: args.n]
    prompts = [model.prompts.query_prompt(q, model.config.query_instruction, 512) for q in queries]
    tok = model.tokenizer
    gen_s = cache_s = reenc_s = 0.0
    cos = []
    generate = model.backbone.generate
    inner = {}

    def timed_generate(*a, **kw):  # lets us split generate_then_embed into generation + cached step
        sync(device)
        start = time.perf_counter()
        out = generate(*a, **kw)
        sync(device)
        inner["s"] = time.perf_counter() - start
        return out

    model.backbone.generate = timed_generate
    generate_then_embed(model, prompts[:2], 4)  # warm-up
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        sync(device)
        t0 = time.perf_counter()
        rollout = generate_then_embed(model, batch, args.max_new_tokens)  # generation + cached step
        sync(device)
        t1_ = time.perf_counter()
        seqs = [p + r + [model.emb_token_id] for p, r in zip(batch, rollout.reasoning_ids)]
        rids, rmask = pad(seqs, tok.pad_token_id, "right")
        with torch.no_grad():
            reenc = model.embed(rids.to(device), rmask.to(device))
        sync(device)
        t2 = time.perf_counter()
        gen_s += inner["s"]
        cache_s += (t1_ - t0) - inner["s"]
        reenc_s += t2 - t1_
        cos.extend(torch.nn.functional.cosine_similarity(rollout.embeddings, reenc, dim=-1).tolist())
    n = len(prompts)
    report("query_kv_cache", {
        "queries": n, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "generation_s_per_query": round(gen_s / n, 4),
        "embed_step_kv_cache_s_per_query": round(cache_s / n, 4),
        "embed_step_ratio": round(reenc_s / cache_s, 2),
        "embed_step_reencode_s_per_query": round(reenc_s / n, 4),
        "end_to_end_kv_cache_s_per_query": round((gen_s + cache_s) / n, 4),
        "end_to_end_reencode_s_per_query": round((gen_s + reenc_s) / n, 4),
        "end_to_end_ratio": round((gen_s + reenc_s) / (gen_s + cache_s), 3),
        "cosine_min": round(float(np.min(cos)), 6),
    })


if __name__ == "__main__":
    main()
