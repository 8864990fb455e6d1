"""A LoRA model at inference, adapter merged into the weights (the default) against unmerged:
documents/s when indexing, seconds per query in mode generate (one query at a time, greedy),
and whether the two give the same traces and embeddings.

    python3 benchmarks/merged_adapter.py [--model t1-smollm2-135m] [--documents 128] [--queries 8]

Documents are SciFact abstracts (max 256 tokens), queries the example questions. Writes the
summary JSON where T1_BENCH_OUT says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import SCIFACT, report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--documents", type=int, default=128)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    from t1 import T1Model
    from t1.data import load_corpus

    docs = [d.full_text for d in load_corpus(SCIFACT / "corpus.jsonl")[: args.documents]]
    queries = [json.loads(line)["text"] for line in (EXAMPLES / "queries.jsonl").read_text().splitlines()]
    queries = queries[: args.queries]
    result, outputs = {"model": args.model, "documents": len(docs), "queries": len(queries),
                       "max_new_tokens": args.max_new_tokens}, {}
    for merged in (False, True):
        model = T1Model.from_pretrained(args.model, device="cpu", merge_adapter=merged)
        model.encode_document(docs[:4])  # warm-up
        start = time.perf_counter()
        emb = model.encode_document(docs, batch_size=32)
        doc_s = time.perf_counter() - start
        latencies, traces, q_emb = [], [], []
        for q in queries:
            start = time.perf_counter()
            out = model.encode_query(q, max_new_tokens=args.max_new_tokens)
            latencies.append(time.perf_counter() - start)
            traces.append(out.reasoning)
            q_emb.append(out.embeddings)
        name = "merged" if merged else "unmerged"
        outputs[name] = (emb, traces, np.stack(q_emb))
        result[name] = {"documents_per_s": round(len(docs) / doc_s, 2),
                        "generate_median_s_per_query": round(float(np.median(latencies)), 3)}
        print(name, result[name], file=sys.stderr)
    (d0, t0, q0), (d1, t1, q1) = outputs["unmerged"], outputs["merged"]
    result["speedup"] = {k: round(result["merged"][k] / result["unmerged"][k], 2) if k.startswith("documents")
                         else round(result["unmerged"][k] / result["merged"][k], 2) for k in result["merged"]}
    result["parity"] = {"identical_traces": sum(a == b for a, b in zip(t0, t1)), "of": len(t0),
                        "min_document_cosine": round(float((d0 * d1).sum(axis=1).min()), 6),
                        "min_query_cosine": round(float((q0 * q1).sum(axis=1).min()), 6)}
    report("merged_adapter-cpu", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
