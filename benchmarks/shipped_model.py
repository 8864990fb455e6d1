"""The shipped model on SciFact dev (full corpus) next to the retrievers it replaces: BM25,
all-MiniLM-L6-v2, and each fused with BM25 the same way, the fusion weights chosen on SciFact
*train* claims held out from training (never on the dev claims reported). Paired bootstrap 95%
CIs, how the generated traces end, and the example questions (`examples/`).

    python3 benchmarks/shipped_model.py [--model t1-smollm2-135m] [--dataset ../shared/data/scifact]
        [--holdout 100] [--out runs/shipped] [--max-new-tokens N]

The held-out claims are the curriculum's (`holdout: 100` in configs/t1-smollm2-135m/curriculum.yaml):
the same seeded draw over the train claims that have a judged document. Run folders go under
--out; the summary is printed and, with T1_BENCH_OUT set, written as JSON. Document embeddings
are cached under $T1_CACHE, so a second run only re-encodes the queries.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import SCIFACT, report

CLAIM_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def holdout_data(dataset: str, n: int):
    """The train split cut to the curriculum's `n` held-out claims."""
    from t1.evaluation.datasets import load_eval_data
    from t1.training.curriculum import split_holdout

    data = load_eval_data(dataset, "train")
    present = {d.id for d in data.corpus}
    rows = [{"query_id": q, "query": data.queries[q]} for q in data.queries
            if any(d in present and s > 0 for d, s in data.qrels[q].items())]
    held = {r["query_id"] for r in split_holdout(rows, n)[1]}
    data.queries = {q: t for q, t in data.queries.items() if q in held}
    data.qrels = {q: r for q, r in data.qrels.items() if q in held}
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--holdout", type=int, default=100, help="held-out train claims to choose fusion weights on")
    parser.add_argument("--out", default="runs/shipped")
    parser.add_argument("--query-instruction", default=CLAIM_INSTRUCTION)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.fusion_weight import choose_weight
    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.retrievers import make_retriever
    from t1.index.fusion import fuse
    from t1.model import load_model
    from t1.settings import QuerySettings

    dev = load_eval_data(args.dataset, args.split)
    held = holdout_data(args.dataset, args.holdout)
    model = load_model(args.model, "cpu")
    singles = {"BM25": ("bm25", None), "all-MiniLM-L6-v2": ("st:all-minilm-l6-v2", None),
               "T1 none": (f"t1:{args.model}", "none"), "T1 generate": (f"t1:{args.model}", "generate")}
    runs, seconds, traces = {}, {}, {}
    for name, (spec, mode) in singles.items():
        retriever = make_retriever(spec, dev.corpus, model=model,
                                   query=QuerySettings(reasoning=mode or "none", instruction=args.query_instruction,
                                                       max_new_tokens=args.max_new_tokens),
                                   batch_size=args.batch_size, show_progress=sys.stderr.isatty())
        start = time.perf_counter()
        for split, data in (("holdout", held), ("dev", dev)):
            runs[name, split] = retriever.retrieve(data.queries, k=100)
            if split == "dev" and getattr(retriever, "trace_stats", None):
                stats = retriever.trace_stats.values()
                traces = {"ended_by_model": round(sum(s["ended"] for s in stats) / len(stats), 3),
                          "median_tokens": sorted(s["tokens"] for s in stats)[len(stats) // 2]}
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: done in {seconds[name]} s", file=sys.stderr)

    weights = {}
    for dense in ("all-MiniLM-L6-v2", "T1 none", "T1 generate"):
        weight, grid = choose_weight(runs[dense, "holdout"], runs["BM25", "holdout"], held.qrels)
        weights[dense] = {"weight": weight, "holdout_ndcg@10": {str(w): round(100 * s, 1) for w, s in grid.items()}}
        fused = {q: dict(fuse([runs[dense, "dev"][q], runs["BM25", "dev"][q]], "weighted", [weight, 1 - weight], 100))
                 for q in dev.queries}
        runs[f"{dense} + BM25", "dev"] = fused

    per_query, rows = {}, []
    for (name, split), results in runs.items():
        if split != "dev":
            continue
        ev = evaluate(dev.qrels, results)
        per_query[name] = {q: m["ndcg@10"] for q, m in ev.per_query.items()}
        rows.append({"system": name, **{m: round(100 * ev.mean[m], 1) for m in ("ndcg@10", "recall@100", "mrr")},
                     **({"seconds": seconds[name]} if name in seconds else {}),
                     **({"fusion_weight": weights[name[:-7]]["weight"]} if name.endswith(" + BM25") else {})})
        print(f"{name}: nDCG@10 {rows[-1]['ndcg@10']}", file=sys.stderr)

    def ci(a: str, b: str) -> list[float]:
        return [round(100 * x, 1) for x in paired_bootstrap(per_query[a], per_query[b])]

    pairs = [("T1 generate", "BM25"), ("T1 generate", "all-MiniLM-L6-v2"), ("T1 none", "BM25"),
             ("T1 none", "all-MiniLM-L6-v2"), ("T1 generate", "T1 none"), ("T1 generate + BM25", "BM25"),
             ("T1 generate + BM25", "all-MiniLM-L6-v2"), ("T1 generate + BM25", "all-MiniLM-L6-v2 + BM25"),
             ("T1 none + BM25", "all-MiniLM-L6-v2 + BM25")]
    report("shipped_model", {
        "model": args.model, "fingerprint": model.fingerprint(), "dataset": dev.name, "queries": len(dev.queries),
        "documents": len(dev.corpus), "holdout_claims": len(held.queries), "query_instruction": args.query_instruction,
        "rows": rows, "fusion_weights_chosen_on_holdout": weights, "dev_traces": traces,
        "ndcg10_difference_and_95ci": {f"{a} - {b}": ci(a, b) for a, b in pairs},
        "examples": examples(model, args.max_new_tokens)})
    return 0


def examples(model, max_new_tokens: int | None) -> dict:
    """The example questions (16 over 30 documents): how many rank their document first, per mode,
    and how many generated traces the model ended itself."""
    from t1.data import load_beir

    data = load_beir(EXAMPLES, "test")
    docs = model.encode_document([d.full_text for d in data.corpus])
    qids = list(data.queries)
    out = {}
    for mode in ("none", "generate"):
        encoded = model.encode_query([data.queries[q] for q in qids], reasoning=mode, max_new_tokens=max_new_tokens)
        best = (encoded.embeddings @ docs.T).argmax(axis=1)
        first = [q for q, b in zip(qids, best) if data.corpus[b].id in data.qrels[q]]
        out[mode] = {"ranked_first": len(first), "of": len(qids), "missed": sorted(set(qids) - set(first))}
        if mode == "generate":
            out[mode]["ended_by_model"] = sum(encoded.ended)
    return out


if __name__ == "__main__":
    sys.exit(main())
