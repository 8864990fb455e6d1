"""Two curriculum runs side by side on their evaluation split, from the run files they wrote.

For each final-stage mode both runs evaluated (`eval/<stage>-<mode>/run.trec`): nDCG@10 alone
and fused with the run's BM25 list (`eval/bm25/run.trec`) at the fusion weight each run chose on
its held-out claims (`fusion.json`), how many generated traces the model ended itself (the
evaluation's own summary in `run.json`), and the paired bootstrap 95% CI of B - A. Nothing is
re-encoded.

    python3 benchmarks/compare_runs.py RUN_A RUN_B [--stage stage2] [--dataset ../shared/data/scifact]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import SCIFACT, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path, help="two curriculum output folders: A, then B")
    parser.add_argument("--stage", default="stage2")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.runs import INFO_FILE, RUN_FILE, read_json, read_trec_run
    from t1.index.fusion import fuse

    data = load_eval_data(args.dataset, args.split)
    per_query, summary = {}, {}
    for run in args.runs:
        bm25 = read_trec_run(run / "eval" / "bm25" / RUN_FILE)
        weight = read_json(run / "fusion.json")["fusion_weight"]
        summary[str(run)] = {"fusion_weight": weight}
        for mode in ("none", "generate"):
            folder = run / "eval" / f"{args.stage}-{mode}"
            if not (folder / RUN_FILE).exists():
                continue
            dense = read_trec_run(folder / RUN_FILE)
            fused = {q: dict(fuse([dense.get(q, {}), bm25.get(q, {})], "weighted", [weight, 1 - weight], 100))
                     for q in data.queries}
            for name, results in ((mode, dense), (f"{mode} + BM25", fused)):
                ev = evaluate(data.qrels, results)
                per_query[run, name] = {q: m["ndcg@10"] for q, m in ev.per_query.items()}
                summary[str(run)][name] = round(100 * ev.mean["ndcg@10"], 1)
            traces = read_json(folder / INFO_FILE).get("traces")
            if traces:
                summary[str(run)]["traces_ended"] = traces["self_ended"]
    a, b = args.runs
    shared = [name for (run, name) in per_query if run == a and (b, name) in per_query]
    summary["b_minus_a_95ci"] = {name: [round(100 * x, 1) for x in paired_bootstrap(per_query[b, name], per_query[a, name])]
                                 for name in shared}
    report("compare_runs", {"a": str(a), "b": str(b), "stage": args.stage, "split": args.split, **summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
