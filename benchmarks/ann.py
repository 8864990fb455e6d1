"""Approximate search (faiss HNSW, IVF-PQ + exact re-scoring) against exact search: recall@k and
queries/s, through `t1.index.Index` as `t1 search` runs it.

Synthetic data (default): N vectors of dimension 576, clustered so that nearest neighbours mean
something: each of `--clusters` clusters has a centre and its own `--intrinsic-dim`-dimensional
subspace; a vector is centre + a point of that subspace + a little isotropic noise, normalised.
Queries are drawn the same way (other seeds). The vectors are written as a float16 index folder
in blocks, never held whole.

    python benchmarks/ann.py --n 100000                       # synthetic, 100k x 576
    python benchmarks/ann.py --n 1000000                      # synthetic, 1M x 576
    python benchmarks/ann.py --index runs/scifact-index --queries-file ../shared/data/scifact/queries.jsonl

With `--index`, the real document embeddings of an index folder are used (copied into the work
folder, so the structures are not added to it) and the queries are encoded by its model
(`--reasoning none` by default, one forward pass each).

Queries/s is for one batch of `--queries` queries (exact search is a blocked matrix product, so
batching is its best case), plus a one-query-at-a-time figure over `--single` queries.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report

from t1.index import Index
from t1.index.ann import build, recall_at_k


def mixture(dim: int, clusters: int, intrinsic: int, spread: float = 0.6, seed: int = 0):
    """Cluster centres (unit vectors) and each cluster's subspace basis (a point of the subspace
    has norm about `spread`)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, intrinsic, dim)).astype(np.float32) * (spread / np.sqrt(intrinsic * dim))
    return centres, bases


def draw(centres, bases, n: int, noise: float, rng) -> np.ndarray:
    """n unit vectors: centre + a point of the cluster's subspace + isotropic noise."""
    label = rng.integers(0, len(centres), n)
    z = rng.standard_normal((n, bases.shape[1])).astype(np.float32)
    x = centres[label] + np.einsum("mi,mid->md", z, bases[label])
    x += rng.standard_normal(x.shape).astype(np.float32) * (noise / np.sqrt(centres.shape[1]))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(args, work: Path):
    clusters = args.clusters or max(10, args.n // 1000)
    centres, bases = mixture(args.dim, clusters, args.intrinsic_dim)
    block = 32768
    blocks = (draw(centres, bases, min(block, args.n - start), args.noise, np.random.default_rng([1, i]))
              for i, start in enumerate(range(0, args.n, block)))
    start = time.perf_counter()
    index = Index.from_embeddings(work / f"synthetic-{args.n}", blocks, [f"d{i}" for i in range(args.n)],
                                  shard_size=args.shard_size)
    queries = draw(centres, bases, args.queries, args.noise, np.random.default_rng(2))
    return index, queries, {"data": "synthetic clustered", "clusters": clusters, "intrinsic_dim": args.intrinsic_dim,
                            "noise": args.noise, "write_s": round(time.perf_counter() - start, 1)}


def real(args, work: Path):
    from t1 import T1Model
    from t1.data import load_queries

    source = Index.open(args.index)
    folder = work / "real"
    shutil.copytree(source.folder, folder, ignore=shutil.ignore_patterns("bm25", "ann-*", "*.sqlite*"))
    index = Index.open(folder)
    index.manifest.pop("ann", None)
    queries = list(load_queries(args.queries_file).values())[: args.queries]
    model = T1Model.from_pretrained(args.model or source.manifest["model"]["name"], device=args.device)
    emb = model.encode_query(queries, reasoning=args.reasoning, max_new_tokens=args.max_new_tokens,
                             show_progress_bar=False).embeddings
    return index, np.asarray(emb, dtype=np.float32), {"data": f"real: {args.index}", "queries_file": args.queries_file,
                                                      "reasoning": args.reasoning}


def timed_search(index, queries, k, single, **settings):
    index.search_positions(queries[:8], k, **settings)  # warm-up: load the structure, touch the pages
    start = time.perf_counter()
    scores, positions = index.search_positions(queries, k, **settings)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    for q in queries[:single]:
        index.search_positions(q[None], k, **settings)
    single_s = time.perf_counter() - start
    return positions, len(queries) / batch_s, (single / single_s) if single else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="synthetic vectors")
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--clusters", type=int, default=None, help="default: n / 1000")
    ap.add_argument("--intrinsic-dim", type=int, default=24)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--shard-size", type=int, default=65536)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=20, help="queries also searched one at a time")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["hnsw", "ivf-pq"])
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--refine", type=int, nargs="+", default=[100, 256])
    ap.add_argument("--index", default=None, help="real embeddings: an index folder built by `t1 index`")
    ap.add_argument("--queries-file", default=None, help="with --index: the queries to encode")
    ap.add_argument("--model", default=None, help="with --index: query encoder (default: the index's model)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--reasoning", default="none", choices=["none", "generate"])
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--work", default=None, help="folder for the index copies and structures (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--name", default=None, help="report name (default ann-<n> or ann-real)")
    args = ap.parse_args()
    if args.index and not args.queries_file:
        ap.error("--index needs --queries-file")

    work = Path(args.work or tempfile.mkdtemp(prefix="t1-ann-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        index, queries, about = real(args, work) if args.index else synthetic(args, work)
        k = args.k
        truth, exact_qps, exact_single = timed_search(index, queries, k, args.single, ann="exact")
        result = {"vectors": len(index), "dim": index.manifest["dim"], "queries": len(queries), "k": k, **about,
                  "exact": {"queries_per_s": round(exact_qps, 1),
                            "single_queries_per_s": exact_single and round(exact_single, 1)},
                  "structures": {}}
        print(f"exact: {exact_qps:.1f} q/s batched, {exact_single or 0:.1f} q/s one at a time", flush=True)
        for kind in args.kinds:
            start = time.perf_counter()
            info = build(index, kind, m=args.m, ef_construction=args.ef_construction, nlist=args.nlist,
                         show_progress_bar=False)
            entry = {"build_s": round(time.perf_counter() - start, 1), "params": info["params"],
                     "file_mb": round((index.folder / info["file"]).stat().st_size / 2**20, 1), "sweep": []}
            sweep = ([{"ef_search": e} for e in args.ef_search] if kind == "hnsw" else
                     [{"nprobe": p, "refine": r} for p in args.nprobe for r in args.refine])
            for setting in sweep:
                found, qps, single = timed_search(index, queries, k, args.single, ann=kind, **setting)
                row = {**setting, "recall": round(recall_at_k(found, truth), 4), "queries_per_s": round(qps, 1),
                       "speedup": round(qps / exact_qps, 1), "single_queries_per_s": single and round(single, 1)}
                entry["sweep"].append(row)
                print(f"{kind} {setting}: recall@{k} {row['recall']:.4f}, {qps:.1f} q/s ({row['speedup']}x exact)",
                      flush=True)
            good = [r for r in entry["sweep"] if r["recall"] >= 0.95]
            entry["fastest_at_recall_0.95"] = max(good, key=lambda r: r["queries_per_s"]) if good else None
            result["structures"][kind] = entry
        report(args.name or (f"ann-{len(index)}" if not args.index else "ann-real"), result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
