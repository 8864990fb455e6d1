"""nDCG@10 of two `t1 eval` run folders on the same queries, and the paired bootstrap 95% CI of
B - A (e.g. the same retriever with two document engines).

    python3 benchmarks/paired_runs.py RUN_A RUN_B --qrels ../shared/data/scifact/qrels/dev.tsv

The document-engine check of issue #33 (an index of SciFact through each engine, queries without
reasoning so that only the documents differ):

    for e in bf16 hf; do for r in t1 hybrid:t1; do
      t1 eval --dataset ../shared/data/scifact --split dev --retriever $r:t1-smollm2-135m --reasoning none \\
        --document-engine $e --out runs/de/$e-${r/:/-}; done; done
    python3 benchmarks/paired_runs.py runs/de/hf-t1 runs/de/bf16-t1 --qrels ../shared/data/scifact/qrels/dev.tsv
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--qrels", required=True)
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()

    from t1.data import load_qrels
    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.runs import read_trec_run

    qrels = load_qrels(args.qrels)
    scores = {}
    for name in (args.a, args.b):
        per_query = evaluate(qrels, read_trec_run(f"{name}/run.trec")).per_query
        scores[name] = {q: row[args.metric] for q, row in per_query.items()}
    diff, low, high = paired_bootstrap(scores[args.b], scores[args.a])
    mean = {name: round(100 * sum(s.values()) / len(s), 2) for name, s in scores.items()}
    print(json.dumps({"metric": args.metric, "queries": len(qrels), "mean": mean,
                      "b_minus_a_95ci": [round(100 * x, 2) for x in (diff, low, high)]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
