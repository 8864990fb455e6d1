"""Query latency of `t1 search` with a trained model: one query at a time over the example
index, model loading and indexing excluded, in modes none and generate.

    python3 benchmarks/search_latency.py [--model t1-smollm2-135m] [--repeats 1] [--max-new-tokens N]

Reports per mode the median, 95th percentile and mean seconds per query, and for generate the
trace lengths and how many traces the model ended itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the example queries")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's")
    args = parser.parse_args()

    import torch

    from t1 import T1Model, load_corpus
    from t1.data import load_queries
    from t1.index import Index

    model = T1Model.from_pretrained(args.model, device="cpu")
    queries = list(load_queries(ROOT / "examples" / "queries.jsonl").values())
    result = {"model": args.model, "queries": len(queries), "threads": torch.get_num_threads(), "modes": {}}
    with tempfile.TemporaryDirectory() as folder:
        index = Index.build(model, load_corpus(ROOT / "examples" / "corpus.jsonl"), folder)
        index.search_queries(model, queries[:1], k=10, reasoning="none")  # warm-up
        for mode in ("none", "generate"):
            seconds, lengths, ended = [], [], []
            for _ in range(args.repeats):
                for q in queries:
                    start = time.perf_counter()
                    encoded = model.encode_query(q, reasoning=mode, max_new_tokens=args.max_new_tokens)
                    index.search(encoded.embeddings[None], k=10)
                    seconds.append(time.perf_counter() - start)
                    lengths.append(len(model.tokenizer(encoded.reasoning, add_special_tokens=False)["input_ids"]))
                    ended.append(bool(encoded.ended))
            row = {"median_s": round(statistics.median(seconds), 3), "p95_s": round(float(np.percentile(seconds, 95)), 3),
                   "mean_s": round(statistics.fmean(seconds), 3)}
            if mode == "generate":
                row.update(median_trace_tokens=statistics.median(lengths), self_ended=round(sum(ended) / len(ended), 3))
            result["modes"][mode] = row
            print(f"{mode}: {row}", file=sys.stderr)
    report("search_latency", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
