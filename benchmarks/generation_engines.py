"""Generation engines (t1.generation) side by side on one machine: latency, tokens/s against the
memory-bandwidth limit, batched throughput, and parity with the Hugging Face reference.

    python3 benchmarks/generation_engines.py [--model t1-smollm2-135m] [--engines hf,compile,int8,llama.cpp,llama.cpp-f16,llama.cpp-q8]
        [--max-new-tokens 64] [--batch 16] [--threads N] [--out benchmarks/results/generation_engines-cpu.json]
    python3 benchmarks/generation_engines.py --smoke     # the tiny test model, 2 queries, 8 tokens

Per engine:
- `query_s`: one query end to end (`encode_query`, greedy, the model's own stops), median over
  the queries, after a warm-up (its time, compilation included, is `warmup_s`);
- `single_tokens_per_s`: one query forced to `max_new_tokens` (stop tokens suppressed), prompt
  included, end to end;
- `decode_tokens_per_s`: the decoding steps alone (as llama-bench's `tg`): the extra tokens over
  the extra time of a `max_new_tokens` rollout against a 1-token one, best of 3 pairs; and that
  as a fraction of the bandwidth limit: one decoding step reads every weight once, so it cannot
  run faster than bandwidth / bytes of weights read per token (the prompt's prefill is
  compute-bound, so it is left out of this fraction);
- `batch_tokens_per_s`: `--batch` queries at once, forced to `max_new_tokens`;
- parity with `hf` over the queries (greedy, own stops): identical traces, minimum cosine.
The bandwidth is measured here: GB/s read from a large fp32 matrix, the best of three ways of
reading it, 5 trials each (`bandwidth_gbs`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "generation_engines-cpu.json"


def bandwidth_gbs(mib: int = 2048, repeats: int = 3, trials: int = 5) -> float:
    """GB/s the memory streams into the cores, read from a matrix far larger than any cache: the
    best of `trials` of three ways of reading it (torch's matrix-vector product, torch's sum,
    numpy's matrix-vector product), since no one of them reaches the limit on every CPU (on an
    AMD EPYC VM torch's product streamed 14 GB/s and its sum 33). The memory of a shared VM
    streams at a rate that varies with its neighbours: on that one, calls of this ranged 22-51
    GB/s, so the fraction of it that an engine reaches varies too."""
    rows = mib * 2**20 // 4 // 4096
    a, x = torch.randn(rows, 4096), torch.randn(4096)
    an, xn = a.numpy(), x.numpy()
    best = 0.0
    for read in (lambda: a @ x, lambda: a.sum(), lambda: an @ xn):
        read()
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(repeats):
                read()
            best = max(best, a.numel() * 4 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def bytes_per_token(backbone, quantized: str | None) -> int:
    """Bytes of weights one decoding step reads: every linear layer (the LM head included; a tied
    input embedding is read through it) and the norms; one embedding row is negligible. An int8
    weight is one byte per entry plus one fp32 scale per output row; a q8_0 one (llama.cpp) is 34
    bytes per block of 32 entries (an fp16 scale each)."""
    total = 0
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            out_features, in_features = module.out_features, module.in_features
            if quantized == "int8":
                total += out_features * in_features + 4 * out_features
            elif quantized == "f16":
                total += out_features * in_features * 2
            elif quantized == "q8_0":
                total += out_features * in_features * 34 // 32
            else:
                total += module.weight.nbytes
        elif "norm" in type(module).__name__.lower() and getattr(module, "weight", None) is not None:
            total += module.weight.nbytes
    return total


class NoStop:
    """A logits processor that forbids the stop tokens: every trace runs to the budget."""

    def __init__(self, stop_ids):
        self.stop_ids = list(stop_ids)

    def __call__(self, input_ids, scores):
        scores[..., self.stop_ids] = -float("inf")  # a batch (torch) or one row (numpy, llama.cpp)
        return scores


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(model, name, queries, prompts, tokens, batch, limit_gbs) -> tuple[dict, object]:
    from transformers import LogitsProcessorList

    from t1.generation import LLAMA_CPP_WEIGHTS
    from t1.reasoning import stop_token_ids

    model.use_engine(name)
    engine, forced = model.engine, LogitsProcessorList([NoStop(stop_token_ids(model))])
    _, warm = timed(lambda: (model.encode_query(queries[0], max_new_tokens=tokens),
                             engine.rollout(prompts[:1], tokens, logits_processor=forced),
                             engine.rollout(prompts[:batch], tokens, logits_processor=forced)))
    latencies, results = [], []
    for q in queries:
        out, s = timed(lambda q=q: model.encode_query(q, max_new_tokens=tokens))
        latencies.append(s)
        results.append(out)
    _, single = timed(lambda: engine.rollout(prompts[:1], tokens, logits_processor=forced))
    decode = min(timed(lambda: engine.rollout(prompts[:1], tokens, logits_processor=forced))[1]
                 - timed(lambda: engine.rollout(prompts[:1], 1, logits_processor=forced))[1] for _ in range(3))
    _, batched = timed(lambda: engine.rollout(prompts[:batch], tokens, logits_processor=forced))
    weights = bytes_per_token(getattr(engine, "backbone", None) or model.backbone, quantized={"int8": "int8", **LLAMA_CPP_WEIGHTS}.get(name))
    tokens_per_s, decode_rate = tokens / single, (tokens - 1) / decode
    row = {"exact": engine.exact, "warmup_s": round(warm, 2), "query_s": round(statistics.median(latencies), 3),
           "mean_trace_tokens": round(float(np.mean([len(model.tokenizer(r.reasoning)["input_ids"])
                                                     for r in results])), 1),
           "single_tokens_per_s": round(tokens_per_s, 1), "decode_tokens_per_s": round(decode_rate, 1),
           "weight_mb_per_token": round(weights / 1e6, 1),
           "bandwidth_limit_tokens_per_s": round(limit_gbs * 1e9 / weights, 1),
           "fraction_of_bandwidth_limit": round(decode_rate * weights / (limit_gbs * 1e9), 3),
           "batch_tokens_per_s": round(batch * tokens / batched, 1)}
    return row, results


def parity(reference, results) -> dict:
    cos = [float(np.dot(a.embeddings, b.embeddings)) for a, b in zip(reference, results)]
    same = sum(a.reasoning == b.reasoning for a, b in zip(reference, results))
    return {"identical_traces": round(same / len(reference), 3), "min_cosine": round(min(cos), 6)}


def load(args):
    from t1 import T1Model

    if not args.smoke:
        return T1Model.from_pretrained(args.model, device="cpu")
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_model import build_tiny_model

    return T1Model.from_pretrained(str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")), device="cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--engines", default="hf,compile,int8,llama.cpp", help="comma-separated; hf is always measured first")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=16, help="queries for latency and parity")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, 2 queries, 8 tokens, batch 2; "
                                                             "written only with --out")
    parser.add_argument("--out", default=None, help=f"JSON to write (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    if args.smoke:
        args.max_new_tokens, args.batch, args.queries = 8, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    engines = ["hf", *[e for e in args.engines.split(",") if e and e != "hf"]]

    model = load(args)
    texts = [json.loads(line)["text"] for line in (ROOT / "examples" / "queries.jsonl").read_text().splitlines()]
    queries = [texts[i % len(texts)] for i in range(max(args.queries, args.batch))]
    cfg = model.config
    prompts = [model.prompts.query_prompt(q, cfg.query_instruction, cfg.max_query_length) for q in queries]
    gbs = bandwidth_gbs()
    result = {"benchmark": "generation_engines", "machine": machine(), "threads": torch.get_num_threads(),
              "model": "tiny test model" if args.smoke else args.model, "max_new_tokens": args.max_new_tokens,
              "batch": args.batch, "queries": args.queries, "bandwidth_gbs": round(gbs, 2), "engines": {}}
    reference = None
    for name in engines:
        try:
            row, results = measure(model, name, queries[: args.queries], prompts, args.max_new_tokens, args.batch,
                                   gbs)
        except Exception as e:  # an engine whose package is missing here: reported, not fatal
            result["engines"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: {result['engines'][name]['error']}", file=sys.stderr)
            continue
        reference = reference or results
        row["parity_vs_hf"] = parity(reference, results)
        result["engines"][name] = row
        print(name, json.dumps(row), file=sys.stderr)
    print(json.dumps(result, indent=2))
    out = args.out or (None if args.smoke else DEFAULT_OUT)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
