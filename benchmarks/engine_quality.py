"""What an approximate generation engine costs in retrieval quality: SciFact dev nDCG@10 of the
shipped model in mode `generate` with each engine, against the `hf` reference on the same
claims (paired bootstrap 95% CI), and how many of its greedy traces are the reference's.

    python3 benchmarks/engine_quality.py [--model t1-smollm2-135m] [--engines int8,llama.cpp-q8]
        [--dataset ../shared/data/scifact] [--split dev]

The documents are embedded once (the index is cached under $T1_CACHE, shared with
benchmarks/shipped_model.py); only the queries are generated per engine, with the reasoning
cache off so every engine writes its own traces. Printed, and written as JSON with T1_BENCH_OUT set.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import SCIFACT, report

CLAIM_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--engines", default="int8,llama.cpp-q8", help="comma-separated; hf is always run first")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--query-instruction", default=CLAIM_INSTRUCTION)
    args = parser.parse_args()

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.retrievers import make_retriever
    from t1.model import load_model
    from t1.settings import QuerySettings

    data = load_eval_data(args.dataset, args.split)
    model = load_model(args.model, "cpu")
    engines = ["hf", *[e for e in args.engines.split(",") if e and e != "hf"]]
    per_query, traces, rows = {}, {}, []
    for name in engines:
        model.use_engine(name)
        retriever = make_retriever(f"t1:{args.model}", data.corpus, model=model, reasoning_cache=False,
                                   query=QuerySettings(reasoning="generate", instruction=args.query_instruction),
                                   show_progress=sys.stderr.isatty())
        start = time.perf_counter()
        results = retriever.retrieve(data.queries, k=100)
        seconds = time.perf_counter() - start
        ev = evaluate(data.qrels, results)
        per_query[name] = {q: m["ndcg@10"] for q, m in ev.per_query.items()}
        traces[name] = retriever.reasoning
        stats = retriever.trace_stats.values()
        row = {"engine": name, "exact": model.engine.exact, "ndcg@10": round(100 * ev.mean["ndcg@10"], 1),
               "seconds": round(seconds, 1), "ended_by_model": round(sum(s["ended"] for s in stats) / len(stats), 3)}
        if name != "hf":
            row["identical_traces"] = round(sum(traces[name][q] == traces["hf"][q] for q in traces["hf"]) / len(traces["hf"]), 3)
            row["vs_hf_95ci"] = [round(100 * x, 1) for x in paired_bootstrap(per_query[name], per_query["hf"])]
        rows.append(row)
        print(row, file=sys.stderr)
    report("engine_quality", {"model": args.model, "fingerprint": model.fingerprint(), "dataset": data.name,
                              "queries": len(data.queries), "documents": len(data.corpus), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
