"""The shipped model on SciFact dev (full corpus): nDCG@10 in modes none and generate next to
BM25, paired bootstrap 95% CIs, and how the generated traces end.

    python3 benchmarks/shipped_model.py [--model t1-smollm2-135m] [--dataset ../shared/data/scifact]
        [--split dev] [--out runs/shipped] [--max-new-tokens N]

Run folders go under --out (`t1 report` renders them); the summary is printed and, with
T1_BENCH_OUT set, written as JSON. Document embeddings are cached under $T1_CACHE, so a second
run only re-encodes the queries.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import SCIFACT, report

CLAIM_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--out", default="runs/shipped")
    parser.add_argument("--query-instruction", default=CLAIM_INSTRUCTION)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.metrics import paired_bootstrap
    from t1.evaluation.retrievers import load_t1_model, make_retriever
    from t1.evaluation.runs import INFO_FILE, read_json, run_evaluation

    data = load_eval_data(args.dataset, args.split)
    model = load_t1_model(args.model, "cpu")
    runs, rows = {}, []
    for name, spec, mode in (("BM25", "bm25", None), ("T1 none", f"t1:{args.model}", "none"),
                             ("T1 generate", f"t1:{args.model}", "generate")):
        retriever = make_retriever(spec, data.corpus, model=model, mode=mode or "none",
                                   query_instruction=args.query_instruction, max_new_tokens=args.max_new_tokens,
                                   batch_size=args.batch_size, show_progress=sys.stderr.isatty())
        folder = Path(args.out) / name.lower().replace(" ", "-")
        start = time.perf_counter()
        evaluation = run_evaluation(data, retriever, folder, k=1000, info={"mode": mode})
        info = read_json(folder / INFO_FILE)
        runs[name] = evaluation
        rows.append({"system": name, "ndcg@10": round(100 * evaluation.mean["ndcg@10"], 1),
                     "recall@100": round(100 * evaluation.mean["recall@100"], 1),
                     "mrr": round(100 * evaluation.mean["mrr"], 1),
                     "seconds": round(time.perf_counter() - start, 1), "timings": info["wall_seconds"],
                     **({"traces": info["traces"]} if "traces" in info else {})})
        print(f"{name}: nDCG@10 {rows[-1]['ndcg@10']}", file=sys.stderr)

    def ci(a: str, b: str) -> list[float]:
        per = {n: {q: m["ndcg@10"] for q, m in runs[n].per_query.items()} for n in (a, b)}
        return [round(100 * x, 1) for x in paired_bootstrap(per[a], per[b])]

    comparisons = {"T1 none - BM25": ci("T1 none", "BM25"), "T1 generate - BM25": ci("T1 generate", "BM25"),
                   "T1 generate - T1 none": ci("T1 generate", "T1 none")}
    report("shipped_model", {"model": args.model, "dataset": data.name, "queries": len(data.queries),
                             "documents": len(data.corpus), "query_instruction": args.query_instruction,
                             "rows": rows, "ndcg10_difference_and_95ci": comparisons})
    return 0


if __name__ == "__main__":
    sys.exit(main())
