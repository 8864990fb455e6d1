"""Benchmark 1: document encoding, t1 vs sentence-transformers on the same backbone.

Both embed the same SciFact abstracts as ``text + <emb_token>`` with last-token pooling, the
same max length and batch size. Reports documents/s, the ratio, the cosine agreement of the two
embeddings, and t1's achieved GFLOP/s against the measured fp32 (or bf16 on GPU) matmul peak.

    python benchmarks/encode_documents.py --n 512 --max-length 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from common import SCIFACT, matmul_peak_gflops, report, timed

from t1 import T1Model, load_corpus


def model_flops(model: T1Model, lengths: list[int]) -> float:
    """Forward FLOPs: 2 × non-embedding parameters per token plus causal attention."""
    cfg = model.backbone.config
    params = sum(p.numel() for n, p in model.backbone.named_parameters() if "embed" not in n and "lm_head" not in n)
    attn = sum(2 * cfg.num_hidden_layers * cfg.hidden_size * n * n for n in lengths)  # QK^T and AV, causal half ×2
    return 2 * params * sum(lengths) + attn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer, models

    docs = load_corpus(SCIFACT / "corpus.jsonl")[: args.n]
    t1 = T1Model.from_pretrained(args.model, device=args.device)
    device = t1.device
    seqs = [t1.prompts.document(d.full_text, "", args.max_length) for d in docs]
    # The exact same token sequences for sentence-transformers, as text ending in <emb_token>.
    texts = [t1.tokenizer.decode(s) for s in seqs]

    with tempfile.TemporaryDirectory() as tmp:
        t1.backbone.save_pretrained(tmp)
        t1.tokenizer.save_pretrained(tmp)
        # Plain text modality: sentence-transformers 6 would otherwise wrap texts in the chat template.
        body = models.Transformer(tmp, max_seq_length=args.max_length + 8,
                                  model_kwargs={"dtype": next(t1.backbone.parameters()).dtype},
                                  modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                                  module_output_name="token_embeddings")
        body.tokenizer.padding_side = "right"
        st = SentenceTransformer(modules=[body, models.Pooling(body.get_word_embedding_dimension(), "lasttoken"),
                                          models.Normalize()], device=str(device))
    # warm-up both
    t1.encode_document([d.full_text for d in docs[:8]], instruction="", max_length=args.max_length)
    st.encode(texts[:8], batch_size=args.batch_size)

    kw = dict(instruction="", max_length=args.max_length, batch_size=args.batch_size, show_progress_bar=False)
    e_t1, s_t1 = timed(lambda: t1.encode_document([d.full_text for d in docs], **kw), device)
    e_st, s_st = timed(lambda: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True), device)
    cos = np.sum(e_t1 * e_st, axis=1)
    flops = model_flops(t1, [len(s) for s in seqs])
    dtype = next(t1.backbone.parameters()).dtype
    peak = matmul_peak_gflops(device=str(device), dtype=dtype)
    report("encode_documents", {
        "documents": len(docs), "max_length": args.max_length, "batch_size": args.batch_size,
        "tokens": sum(len(s) for s in seqs), "dtype": str(dtype), "threads": torch.get_num_threads(),
        "t1_docs_per_s": round(len(docs) / s_t1, 2), "st_docs_per_s": round(len(docs) / s_st, 2),
        "speedup_t1_over_st": round(s_st / s_t1, 3),
        "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
        "t1_gflops": round(flops / s_t1 / 1e9, 1), "matmul_peak_gflops": round(peak, 1),
        "t1_fraction_of_peak": round(flops / s_t1 / 1e9 / peak, 3),
    })


if __name__ == "__main__":
    main()
