"""Benchmark: 8,192-token documents in bounded memory (token-budget batching).

Embeds documents of `--length` random tokens with a random-weight model, batched by
`t1.batching.plan_batches`: once with the token budget `--max-tokens` (t1's default,
`MAX_BATCH_TOKENS`: two 8,192-token documents per forward pass), once with a plain batch of
`--batch-size` documents and no budget. Each setting runs in a fresh process, so its peak
memory is its own: peak resident memory on CPU, peak allocated GPU memory on a GPU. Reports
documents/s and the peak. Shapes: `tiny` (a 2-layer Llama with 8,192+ positions, for a CPU) and
`qwen3-4b` (Qwen3-4B's shape: hidden 2560, 36 layers, 32 heads / 8 KV heads; bf16, for a GPU).
The tokenizer is the tests' tiny byte-level BPE (no network); only token ids reach the model.

    python benchmarks/long_documents.py --shape tiny --docs 8 --length 8192            # CPU, ~1 minute
    python benchmarks/long_documents.py --shape qwen3-4b --docs 64 --length 8192       # GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the offline tiny tokenizer

from common import report  # noqa: E402

SHAPES = {
    "tiny": dict(kind="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=4, max_position_embeddings=16384),
    "qwen3-4b": dict(kind="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960),
}


def build(shape: str, device: str):
    from tiny_model import build_tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from t1.model import T1Model, default_dtype
    from t1.settings import T1Config

    tokenizer = build_tiny_tokenizer()
    spec = dict(SHAPES[shape])
    config_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if spec.pop("kind") == "qwen3" else (LlamaConfig, LlamaForCausalLM)
    config = config_cls(vocab_size=len(tokenizer) + 1, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                        **spec)
    torch.manual_seed(0)
    dtype = default_dtype(torch.device(device))
    with torch.device(device):
        backbone = model_cls(config).to(dtype)
    return T1Model(backbone, tokenizer, T1Config()).eval()


def child(args) -> dict:
    """One setting, measured in this process."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build(args.shape, device)
    generator = torch.Generator().manual_seed(1)
    vocab = len(model.tokenizer) - 1
    docs = [torch.randint(0, vocab, (args.length - 1,), generator=generator).tolist() + [model.emb_token_id]
            for _ in range(args.docs)]
    budget = None if args.max_tokens == 0 else args.max_tokens
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.inference_mode():
        emb = model.embed_sequences(docs, args.batch_size, budget)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
           "max_tokens": budget, "batch_size": args.batch_size, "seconds": round(seconds, 2),
           "docs_per_s": round(args.docs / seconds, 3), "finite": bool(torch.isfinite(emb).all())}
    if device.startswith("cuda"):
        out["peak_gpu_gib_above_weights"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 2)
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        out["rss_gib_before_encoding"] = round(rss_before / 2**20, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=8, help="documents per batch (the budget may allow fewer)")
    ap.add_argument("--max-tokens", type=int, default=None, help="token budget (default t1's); 0: none")
    ap.add_argument("--device", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    from t1.batching import MAX_BATCH_TOKENS

    runs = {}
    for name, budget in (("token_budget", args.max_tokens or MAX_BATCH_TOKENS), ("no_budget", 0)):
        cmd = [sys.executable, __file__, "--child", "--shape", args.shape, "--docs", str(args.docs), "--length",
               str(args.length), "--batch-size", str(args.batch_size), "--max-tokens", str(budget)]
        if args.device:
            cmd += ["--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True)
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
            "failed": (done.stderr.strip().splitlines() or ["?"])[-1]}
    report(f"long_documents-{args.shape}", {"documents": args.docs, "tokens_per_document": args.length,
                                            "shape": SHAPES[args.shape], **runs})


if __name__ == "__main__":
    main()
