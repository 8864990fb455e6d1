"""The default search outside SciFact: the shipped model and the retrievers it replaces on text
the model never trained on, from four other domains (WordNet, FOLDOC, the Python docs, the man
pages), each fused with BM25 at the weight chosen on SciFact's held-out *train* claims, as a
user would ship it (no tuning on these sets).

    python3 benchmarks/ablation_proxy.py prepare        # writes OUT/ood.json once (fresh pairs)
    python3 benchmarks/default_search_other_domains.py [--model t1-smollm2-135m] [--out /work/runs/ablation]
        [--minilm-weight 0.4]

The sets are the ablation proxy's: 50 fresh pairs per source (`t1 data pairs --seed 1`; none of
their passages is in any training record), each query against its source's positives and BM25
negatives, with the source's instruction. Per query nDCG@10 is pooled over the four sources;
paired bootstrap 95% CIs. Printed, and written as JSON with T1_BENCH_OUT set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ablation_proxy import _ood_sets
from common import report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/ablation"), help="the proxy's folder")
    parser.add_argument("--minilm-weight", type=float, default=0.4,
                        help="all-MiniLM-L6-v2's fusion weight, chosen on SciFact's held-out train claims "
                             "(benchmarks/shipped_model.py)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's")
    args = parser.parse_args()

    from t1.data import Document
    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.retrievers import make_retriever
    from t1.index.fusion import fuse
    from t1.model import load_model
    from t1.settings import QuerySettings

    model = load_model(args.model, "cpu")
    t1_weight = model.config.fusion_weight
    singles = {"BM25": ("bm25", None), "all-MiniLM-L6-v2": ("st:all-minilm-l6-v2", None),
               "T1 none": (f"t1:{args.model}", "none"), "T1 generate": (f"t1:{args.model}", "generate")}
    fused = {"T1 none + BM25": ("T1 none", t1_weight), "T1 generate + BM25 (the default search)": ("T1 generate", t1_weight),
             "all-MiniLM-L6-v2 + BM25": ("all-MiniLM-L6-v2", args.minilm_weight)}
    per_query: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    ended, traced = 0, 0
    for source, instruction, queries, qrels, texts in _ood_sets(args.out):
        corpus = [Document(i, t) for i, t in texts.items()]
        runs = {}
        for name, (spec, mode) in singles.items():
            retriever = make_retriever(spec, corpus, model=model, batch_size=16,
                                       query=QuerySettings(reasoning=mode or "none", instruction=instruction,
                                                           max_new_tokens=args.max_new_tokens), reasoning_cache=False,
                                       show_progress=False)
            start = time.perf_counter()
            runs[name] = retriever.retrieve(queries, k=100)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            if getattr(retriever, "trace_stats", None):
                ended += sum(s["ended"] for s in retriever.trace_stats.values())
                traced += len(retriever.trace_stats)
        for name, (dense, weight) in fused.items():
            runs[name] = {q: dict(fuse([runs[dense][q], runs["BM25"][q]], "weighted", [weight, 1 - weight], 100))
                          for q in queries}
        for name, results in runs.items():
            scores = evaluate(qrels, results).per_query
            per_query.setdefault(name, {}).update({f"{source}:{q}": m["ndcg@10"] for q, m in scores.items()})
        print(f"{source}: done", file=sys.stderr)

    def mean(name: str) -> float:
        return round(100 * sum(per_query[name].values()) / len(per_query[name]), 1)

    def ci(a: str, b: str) -> list[float]:
        return [round(100 * x, 1) for x in paired_bootstrap(per_query[a], per_query[b])]

    default = "T1 generate + BM25 (the default search)"
    rows = [{"system": name, "ndcg@10": mean(name), **({"seconds": round(seconds[name])} if name in seconds else {})}
            for name in per_query]
    for row in rows:
        print(f"| {row['system']} | {row['ndcg@10']:.1f} |")
    comparisons = [(default, "BM25"), (default, "all-MiniLM-L6-v2"), (default, "all-MiniLM-L6-v2 + BM25"),
                   ("T1 generate", "T1 none"), ("T1 none + BM25", "BM25")]
    report("default_search_other_domains", {
        "model": args.model, "fingerprint": model.fingerprint(), "queries": len(per_query["BM25"]),
        "t1_fusion_weight": t1_weight, "minilm_fusion_weight": args.minilm_weight, "rows": rows,
        "traces_ended_by_model": round(ended / max(traced, 1), 3),
        "ndcg10_difference_and_95ci": {f"{a} - {b}": ci(a, b) for a, b in comparisons}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
