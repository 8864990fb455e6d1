"""Benchmark 3: exact search throughput, numpy vs faiss, over random unit vectors.

    python benchmarks/search_backends.py --n 100000 --dim 576 --queries 256 --k 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import report

from t1.index.search import exact_search


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=65536)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    chunks = lambda: ((s, emb[s : s + args.chunk]) for s in range(0, args.n, args.chunk))  # noqa: E731
    result, positions = {}, {}
    for backend in ("numpy", "faiss"):
        exact_search(q[:4], chunks(), args.k, backend=backend)  # warm-up
        start = time.perf_counter()
        _, positions[backend] = exact_search(q, chunks(), args.k, backend=backend)
        result[f"{backend}_queries_per_s"] = round(args.queries / (time.perf_counter() - start), 1)
    result["same_ranking"] = bool(np.array_equal(positions["numpy"], positions["faiss"]))
    report("search_backends", {"vectors": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, **result})


if __name__ == "__main__":
    main()
