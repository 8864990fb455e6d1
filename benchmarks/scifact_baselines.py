"""BM25 and all-MiniLM-L6-v2 on SciFact (BEIR layout): nDCG@10, Recall@100 and wall time.

    python3 benchmarks/scifact_baselines.py [--dataset ../shared/data/scifact] [--split dev]
        [--out runs/scifact] [--retrievers bm25 st:all-minilm-l6-v2] [--reuse-cache]
        [--device cuda] [--t1-modes none generate] [--max-new-tokens N]

A `t1:MODEL` retriever (e.g. t1:smollm2-135m-instruct) runs once per --t1-modes entry.

Each retriever's run folder (TREC run, results.json, metrics.json, ...) is written under
--out; `t1 report` renders them side by side. Wall time covers model loading, corpus
processing (BM25 indexing or dense encoding) and search; by default the embedding cache is a
fresh temporary folder so dense encoding is really measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", default=str(ROOT / "runs" / "scifact"))
    parser.add_argument("--retrievers", nargs="+", default=["bm25", "st:all-minilm-l6-v2"])
    parser.add_argument("--reuse-cache", action="store_true", help="use $T1_CACHE (cached embeddings skip encoding)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--t1-modes", nargs="+", default=["none", "generate"], choices=["none", "generate"])
    parser.add_argument("--max-new-tokens", type=int, default=None, help="T1 reasoning length (default: the model's)")
    args = parser.parse_args()

    if not args.reuse_cache:
        os.environ["T1_CACHE"] = tempfile.mkdtemp(prefix="t1-bench-cache-")
    try:
        return run(args)
    finally:
        if not args.reuse_cache:
            shutil.rmtree(os.environ["T1_CACHE"], ignore_errors=True)


def run(args) -> int:
    import torch

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.retrievers import make_retriever
    from t1.evaluation.runs import run_evaluation
    from t1.settings import QuerySettings

    data = load_eval_data(args.dataset, args.split)
    jobs = [(spec, mode) for spec in args.retrievers
            for mode in (args.t1_modes if spec.startswith("t1:") else [None])]
    rows = []
    for spec, mode in jobs:
        label = f"{spec} ({mode})" if mode else spec
        start = time.perf_counter()
        retriever = make_retriever(spec, data.corpus, query=QuerySettings(reasoning=mode or "generate", max_new_tokens=args.max_new_tokens),
                                   device=args.device, show_progress=sys.stderr.isatty())
        folder = Path(args.out) / (spec.replace(":", "-").replace("/", "_") + (f"-{mode}" if mode else ""))
        evaluation = run_evaluation(data, retriever, folder, k=1000)
        wall = time.perf_counter() - start
        t = retriever.timings
        rows.append((label, evaluation.mean["ndcg@10"], evaluation.mean["recall@100"], t.get("index", 0.0),
                     t.get("search", 0.0), wall))
        print(f"{label}: done in {wall:.1f} s -> {folder}", file=sys.stderr)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{data.name}: {len(data.queries)} queries, {len(data.corpus)} documents; "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
          f"load average {load:.1f}; {platform.python_version()}, torch {torch.__version__}\n")
    print("| retriever | nDCG@10 | Recall@100 | index s | search s | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for spec, ndcg, recall, index_s, search_s, wall in rows:
        print(f"| {spec} | {100 * ndcg:.1f} | {100 * recall:.1f} | {index_s:.1f} | {search_s:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
