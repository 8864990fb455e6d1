"""Does a batch change what the llama.cpp engine writes for a query? For each example question:
the largest difference between the first-step logits of the question decoded alone and decoded
in a batch of all 16, and whether `encode_query` (groups of 8, sorted by length) gives the trace
the question gets alone; for llama.cpp's K/V cache in fp32 or f16, flash attention off or on.

    python3 benchmarks/batch_invariance.py [--model t1-smollm2-135m] [--tokens 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import machine

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"fp32 K/V, no flash attention (the exact engine)": (True, "off"),
            "fp32 K/V, flash attention auto": (True, "auto"),
            "f16 K/V, no flash attention": (False, "off"),
            "f16 K/V, flash attention auto (llama.cpp's defaults)": (False, "auto")}


def measure(model, queries, prompts, tokens, fp32_kv: bool, flash_attention: str) -> dict:
    from t1.generation.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(model, fp32_kv=fp32_kv, flash_attention=flash_attention)
    seen, logits = [], engine._logits
    engine._logits = lambda i: (seen.append(logits(i)), seen[-1])[1]
    first_alone = []
    for p in prompts:
        seen.clear()
        engine.rollout([p], 1)
        first_alone.append(seen[0])
    seen.clear()
    engine.rollout(prompts, 1)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(first_alone, seen))
    engine._logits = logits
    model._engine = engine
    together = model.encode_query(queries, max_new_tokens=tokens).reasoning
    alone = [model.encode_query(q, max_new_tokens=tokens).reasoning for q in queries]
    engine.close()
    return {"max_first_step_logit_difference": diff,
            "traces_as_alone": sum(a == b for a, b in zip(alone, together)), "of": len(queries)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from t1 import T1Model

    model = T1Model.from_pretrained(args.model, device="cpu")
    queries = [json.loads(line)["text"] for line in (ROOT / "examples" / "queries.jsonl").read_text().splitlines()]
    cfg = model.config
    prompts = [model.prompts.query_prompt(q, cfg.query_instruction, cfg.max_query_length) for q in queries]
    result = {"benchmark": "batch_invariance", "machine": machine(), "model": args.model, "tokens": args.tokens,
              "settings": {}}
    for name, (fp32_kv, flash_attention) in SETTINGS.items():
        result["settings"][name] = measure(model, queries, prompts, args.tokens, fp32_kv, flash_attention)
        print(name, json.dumps(result["settings"][name]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
