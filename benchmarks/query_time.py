"""Query-time features of the shipped model on SciFact dev (full corpus), each against BM25 and
T1 alone: hybrid fusion with BM25, test-time scaling (N sampled traces), adaptive reasoning,
and whether the embedding uses its reasoning (own trace vs none vs another query's trace).

    python3 benchmarks/query_time.py [--model t1-smollm2-135m] [--traces 1 2 4 8] [--out runs/query-time]

Document embeddings come from the evaluation cache ($T1_CACHE), so only queries are encoded.
Generation is timed with the reasoning cache off. Writes the summary JSON (T1_BENCH_OUT) and a
PNG of nDCG@10 against traces per query.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from common import SCIFACT, report

CLAIM_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def ndcg(data, results) -> tuple[float, dict]:
    from t1.evaluation.metrics import evaluate

    ev = evaluate(data.qrels, results)
    return round(100 * ev.mean["ndcg@10"], 1), {q: m["ndcg@10"] for q, m in ev.per_query.items()}


def ci(a: dict, b: dict) -> list[float]:
    from t1.evaluation.metrics import paired_bootstrap

    return [round(100 * x, 1) for x in paired_bootstrap(a, b)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--dataset", default=str(SCIFACT))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--traces", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.04])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="runs/query-time")
    args = parser.parse_args()

    from t1.evaluation.datasets import load_eval_data
    from t1.evaluation.retrievers import BM25Retriever, T1Retriever
    from t1.index.fusion import fuse
    from t1.model import load_model
    from t1.settings import QuerySettings

    data = load_eval_data(args.dataset, args.split)
    model = load_model(args.model, "cpu")
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    t1 = T1Retriever(model, data.corpus, QuerySettings(reasoning="none", instruction=CLAIM_INSTRUCTION), batch_size=args.batch_size,
                     reasoning_cache=False)
    t1.retrieve({qids[0]: texts[0]}, k=10)  # opens (or builds) the cached corpus index
    index = t1.index
    result: dict = {"model": args.model, "queries": len(qids), "documents": len(data.corpus)}

    def run(embeddings, k=100):
        return {q: {h.id: h.score for h in hits} for q, hits in zip(qids, index.search(embeddings, k=k))}

    # ---- the single retrievers, timed
    bm25 = BM25Retriever(data.corpus)
    sparse = bm25.retrieve(data.queries, k=100)
    start = time.perf_counter()
    none = model.encode_query(texts, instruction=CLAIM_INSTRUCTION, reasoning="none", batch_size=args.batch_size)
    none_s = (time.perf_counter() - start) / len(qids)
    start = time.perf_counter()
    gen = model.encode_query(texts, instruction=CLAIM_INSTRUCTION, batch_size=args.batch_size)
    gen_s = (time.perf_counter() - start) / len(qids)
    runs = {"BM25": sparse, "T1 none": run(none.embeddings), "T1 generate": run(gen.embeddings)}
    scores = {name: ndcg(data, r) for name, r in runs.items()}
    result["single"] = {name: {"ndcg@10": s[0]} for name, s in scores.items()}
    result["single"]["T1 none"]["seconds_per_query"] = round(none_s, 3)
    result["single"]["T1 generate"]["seconds_per_query"] = round(gen_s, 3)
    print(f"single: { {n: s[0] for n, s in scores.items()} }", file=sys.stderr)

    # ---- 1. hybrid with BM25
    hybrid = {}
    for dense in ("T1 none", "T1 generate"):
        for method, weights in (("rrf", (0.5,)), ("weighted", (0.3, 0.5, 0.7))):
            for w in weights:
                fused = {q: dict(fuse([runs[dense][q], sparse[q]], method, [w, 1 - w], k=100)) for q in qids}
                score, per_query = ndcg(data, fused)
                best_single = max(("BM25", dense), key=lambda n: scores[n][0])
                hybrid[f"{dense} + BM25, {method} w={w}"] = {
                    "ndcg@10": score, "vs_best_part": best_single,
                    "difference_and_95ci": ci(per_query, scores[best_single][1])}
    result["hybrid"] = hybrid
    print(f"hybrid: { {n: h['ndcg@10'] for n, h in hybrid.items()} }", file=sys.stderr)

    # ---- 2. test-time scaling: N sampled traces, timed sample by sample
    scaling, per_sample, sample_seconds = [], [], []
    for s in range(max(args.traces)):
        start = time.perf_counter()
        one = model.encode_query(texts, instruction=CLAIM_INSTRUCTION, batch_size=args.batch_size, do_sample=True,
                                 temperature=args.temperature, top_p=0.95)
        sample_seconds.append((time.perf_counter() - start) / len(qids))
        per_sample.append(one.embeddings)
    for n in args.traces:
        stack = np.stack(per_sample[:n], axis=1)
        mean = stack.mean(axis=1)
        mean_score = ndcg(data, run(mean / np.linalg.norm(mean, axis=1, keepdims=True)))[0]
        per_trace = [run(stack[:, t]) for t in range(n)]
        rrf = {q: dict(fuse([r[q] for r in per_trace], "rrf", k=100)) for q in qids}
        scaling.append({"traces": n, "ndcg@10 mean": mean_score, "ndcg@10 rrf": ndcg(data, rrf)[0],
                        "seconds_per_query": round(none_s + sum(sample_seconds[:n]), 3)})
        print(f"scaling: {scaling[-1]}", file=sys.stderr)
    result["test_time_scaling"] = {"temperature": args.temperature, "top_p": 0.95, "rows": scaling,
                                   "greedy_ndcg@10": scores["T1 generate"][0]}

    # ---- 3. adaptive reasoning: reason when the plain top result leads the second by < margin
    plain = index.search(none.embeddings, k=2)
    gaps = np.array([h[0].score - h[1].score for h in plain])
    adaptive = []
    for margin in args.margins:
        unsure = gaps < margin
        mixed = np.where(unsure[:, None], gen.embeddings, none.embeddings)
        adaptive.append({"margin": margin, "reasoned": round(float(unsure.mean()), 3),
                         "ndcg@10": ndcg(data, run(mixed))[0],
                         "seconds_per_query": round(none_s + float(unsure.mean()) * gen_s, 3)})
    result["adaptive"] = {"rows": adaptive, "never": scores["T1 none"][0], "always": scores["T1 generate"][0],
                          "gap_quantiles": {p: round(float(np.percentile(gaps, p)), 4) for p in (25, 50, 75)}}
    print(f"adaptive: {adaptive}", file=sys.stderr)

    # ---- 5. does the embedding use its reasoning?
    order = list(range(len(qids)))
    rng = random.Random(0)
    while any(i == j for i, j in enumerate(order)):  # a derangement: every query gets another's trace
        rng.shuffle(order)
    own = model.encode_query(texts, instruction=CLAIM_INSTRUCTION, reasoning=gen.reasoning, batch_size=args.batch_size)
    shuffled = model.encode_query(texts, instruction=CLAIM_INSTRUCTION, reasoning=[gen.reasoning[j] for j in order],
                                  batch_size=args.batch_size)
    own_score, shuffled_score = ndcg(data, run(own.embeddings)), ndcg(data, run(shuffled.embeddings))
    result["uses_reasoning"] = {
        "own_trace": own_score[0], "no_trace": scores["T1 none"][0], "shuffled_trace": shuffled_score[0],
        "own_minus_shuffled_and_95ci": ci(own_score[1], shuffled_score[1]),
        "mean_cosine_own_vs_shuffled": round(float((own.embeddings * shuffled.embeddings).sum(axis=1).mean()), 4),
        "mean_cosine_own_vs_none": round(float((own.embeddings * none.embeddings).sum(axis=1).mean()), 4)}
    print(f"uses reasoning: {result['uses_reasoning']}", file=sys.stderr)

    plot(scaling, scores, Path(args.out) / "test-time-scaling.png")
    result["plot"] = str(Path(args.out) / "test-time-scaling.png")
    report("query_time", result)
    return 0


def plot(rows, scores, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    n = [r["traces"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(n, [r["ndcg@10 mean"] for r in rows], "o-", label="mean of trace embeddings")
    ax.plot(n, [r["ndcg@10 rrf"] for r in rows], "s-", label="RRF of trace results")
    for name, style in (("BM25", ":"), ("T1 none", "--"), ("T1 generate", "-.")):
        ax.axhline(scores[name][0], linestyle=style, color="gray", label=f"{name} ({scores[name][0]})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlabel("sampled traces per query")
    ax.set_ylabel("nDCG@10 (SciFact dev)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
