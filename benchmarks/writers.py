"""Which writer's reasoning helps T1? Quality of every writer that runs here, on the ablation
proxy's sets: SciFact claims (dev and the curriculum's held-out train claims, over every judged
abstract plus BM25 distractors) and 200 queries from four other domains (WordNet, FOLDOC, the
Python docs, the man pages; none of their passages trained on).

Writers: none (T1 without reasoning), T1 itself (its own greedy trace, the default), and each
`--url` endpoint (an OpenAI-compatible server, e.g. llama-cpp-python's serving the SmolLM2-135M
backbone) with each `--prompts` prompt. Each writer's trace is scored three ways: T1 alone
(dense, the trace embedded after the query), the default hybrid (T1 + BM25, the model's
fusion weight), and BM25 over query + trace (how BRIGHT's reasoning queries are scored). Paired
bootstrap 95% intervals against no reasoning.

    python3 -m t1 export --model smollm2-135m-instruct --gguf --out /work/runs/smollm2.gguf
    python3 -m llama_cpp.server --model /work/runs/smollm2.gguf --port 8181 --model_alias smollm2 &
    python3 benchmarks/ablation_proxy.py prepare        # the sets, once
    T1_DOCUMENT_ENGINE=hf T1_BENCH_OUT=benchmarks/results python3 benchmarks/writers.py \
        --url http://127.0.0.1:8181/v1 --prompts t1,bright

Documents are embedded at the model's length (256 tokens) by the hf engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ablation_proxy import _eval_sets
from common import report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/ablation"), help="the proxy's folder")
    parser.add_argument("--url", action="append", default=[], help="an OpenAI-compatible writer (repeatable)")
    parser.add_argument("--prompts", default="t1,bright,hyde")
    parser.add_argument("--no-self", action="store_true", help="leave out T1's own traces")
    parser.add_argument("--sets", default=None, help="only these sets (comma-separated: scifact, wordnet, foldoc, "
                                                     "python-docs, manpages; default all)")
    parser.add_argument("--cache", type=Path, default=Path("/work/runs/writers-cache"),
                        help="T1_CACHE of this benchmark: traces are kept, so a rerun asks no writer again")
    args = parser.parse_args()
    os.environ["T1_CACHE"] = str(args.cache)

    from t1.evaluation.metrics import evaluate, paired_bootstrap
    from t1.evaluation.retrievers import BM25Retriever, make_retriever
    from t1.index.fusion import fuse
    from t1.model import load_model
    from t1.reasoners import make_reasoner
    from t1.settings import QuerySettings

    model = load_model(args.model, "cpu")
    weight = model.config.fusion_weight
    writers = {"none": None} | ({} if args.no_self else {"T1 itself": "self"})
    for url in args.url:
        probe = make_reasoner(url)
        for prompt in args.prompts.split(","):
            writers[f"{probe.model} ({prompt} prompt)"] = {"source": url, "prompt": prompt}
    scores: dict[str, dict[str, dict[str, float]]] = {}  # "writer / scoring" -> set -> {qid: ndcg}
    stats: dict[str, dict] = {}
    for name, instruction, queries, qrels, corpus in _eval_sets(args.out):
        if args.sets and name not in args.sets.split(","):
            continue
        bm25 = BM25Retriever(corpus, show_progress=False)
        plain_bm25 = bm25.retrieve(queries, k=100)
        for writer, spec in writers.items():
            model.use_reasoner(spec if isinstance(spec, dict) else None)
            mode = "none" if spec is None else "generate"
            retriever = make_retriever(f"t1:{args.model}", corpus, model=model, batch_size=16, show_progress=False,
                                       query=QuerySettings(reasoning=mode, instruction=instruction))
            start = time.perf_counter()
            dense = retriever.retrieve(queries, k=100)
            seconds = time.perf_counter() - start
            traces = retriever.reasoning
            expanded = plain_bm25 if spec is None else bm25.retrieve(
                {q: f"{t} {traces.get(q, '')}" for q, t in queries.items()}, k=100)
            runs = {"T1 alone": dense, "default hybrid": {
                        q: dict(fuse([dense[q], plain_bm25[q]], "weighted", [weight, 1 - weight], 100)) for q in queries},
                    "BM25 on query + trace": expanded}
            for scoring, run in runs.items():
                per_query = evaluate(qrels, run).per_query
                scores.setdefault(f"{writer} / {scoring}", {})[name] = {q: m["ndcg@10"] for q, m in per_query.items()}
            ended = [s["ended"] for s in retriever.trace_stats.values()] if spec is not None else []
            entry = stats.setdefault(writer, {"seconds": 0.0, "queries": 0})
            entry["seconds"] += seconds
            entry["queries"] += len(queries)
            if ended:
                entry.setdefault("ended", []).extend(ended)
            print(f"{name} / {writer}: {seconds:.1f} s", file=sys.stderr)

    def pooled(key: str, sets) -> dict[str, float]:
        return {f"{s}:{q}": v for s in sets for q, v in scores[key][s].items()}

    measured = list(next(iter(scores.values())))
    groups = {"SciFact claims": ["scifact"], "other domains": [s for s in measured if s != "scifact"]}
    groups = {g: sets for g, sets in groups.items() if set(sets) <= set(measured) and sets}
    table = {}
    for key in scores:
        writer, scoring = key.split(" / ")
        base = f"none / {scoring}" if scoring != "BM25 on query + trace" else "none / BM25 on query + trace"
        row = {}
        for group, sets in groups.items():
            mine, ref = pooled(key, sets), pooled(base, sets)
            delta = [round(100 * x, 1) for x in paired_bootstrap(mine, ref)]
            row[group] = {"ndcg@10": round(100 * sum(mine.values()) / len(mine), 1), "delta_vs_none": delta}
        row["per set"] = {s: round(100 * sum(v.values()) / len(v), 1) for s, v in scores[key].items()}
        table[key] = row
    for writer, entry in stats.items():
        entry["seconds_per_query"] = round(entry.pop("seconds") / entry["queries"], 3)
        if "ended" in entry:
            entry["ended"] = round(sum(entry["ended"]) / len(entry["ended"]), 3)
    result = {"model": args.model, "fusion_weight": weight, "writers": {w: s for w, s in writers.items()},
              "table": table, "stats": stats}
    text = json.dumps(result, indent=2)
    if os.environ.get("T1_BENCH_OUT"):
        Path(os.environ["T1_BENCH_OUT"], "writers-cpu.json").write_text(text)
    report("writers", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
