"""How fast a writer behind an OpenAI-compatible endpoint reasons for t1, and what t1 adds.

For the same queries and the same greedy requests: the server alone (plain HTTP requests, one at
a time: its own generation time), then t1's reasoner (`t1.reasoners`, no cache) with 1, 2, 4 and
8 requests in flight. t1's overhead is its serial time minus the server's, per query.

    python3 -m t1 export --model smollm2-135m-instruct --gguf --out /work/runs/smollm2.gguf
    python3 -m llama_cpp.server --model /work/runs/smollm2.gguf --port 8181 --model_alias smollm2 &
    T1_BENCH_OUT=benchmarks/results python3 benchmarks/reasoner_speed.py --url http://127.0.0.1:8181/v1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import SCIFACT, report

INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queries", type=int, default=16, help="SciFact dev claims asked per setting")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()

    import httpx

    from t1.evaluation.datasets import load_eval_data
    from t1.reasoners import make_reasoner

    data = load_eval_data(str(SCIFACT), "dev")
    queries = list(data.queries.values())[: args.queries]
    reasoner = make_reasoner(args.url, concurrency=1)
    requests = [{"model": reasoner.model, "messages": reasoner.prompt.messages(q, INSTRUCTION),
                 "max_tokens": args.max_tokens, "temperature": 0.0, "top_p": 1.0, "stream": False} for q in queries]
    reasoner.write(queries[:2], INSTRUCTION, max_tokens=args.max_tokens)  # warm the server up

    def direct() -> tuple[float, list[float], int]:
        per, tokens = [], 0
        with httpx.Client(timeout=600) as client:
            start = time.perf_counter()
            for body in requests:
                t = time.perf_counter()
                answer = client.post(reasoner.url, json=body).json()
                per.append(time.perf_counter() - t)
                tokens += answer.get("usage", {}).get("completion_tokens", 0)
        return time.perf_counter() - start, per, tokens

    direct_s, per_request, tokens = direct()
    rows = {}
    for n in map(int, args.concurrency.split(",")):
        writer = make_reasoner(args.url, concurrency=n, model=reasoner.model)
        start = time.perf_counter()
        traces = writer.write(queries, INSTRUCTION, max_tokens=args.max_tokens)
        seconds = time.perf_counter() - start
        rows[n] = {"seconds": round(seconds, 3), "queries_per_s": round(len(queries) / seconds, 3),
                   "ended": sum(t.ended for t in traces)}
        writer.close()
        print(f"concurrency {n}: {seconds:.2f} s", file=sys.stderr)
    overhead = (rows[min(rows)]["seconds"] - direct_s) / len(queries) if 1 in rows else None
    result = {"url": args.url, "model": reasoner.model, "queries": len(queries), "max_tokens": args.max_tokens,
              "server_alone": {"seconds": round(direct_s, 3), "queries_per_s": round(len(queries) / direct_s, 3),
                               "median_request_s": round(statistics.median(per_request), 3),
                               "completion_tokens_per_s": round(tokens / direct_s, 1)},
              "t1_reasoner_by_concurrency": rows,
              "t1_overhead_ms_per_query": None if overhead is None else round(1000 * overhead, 1)}
    if os.environ.get("T1_BENCH_OUT"):
        Path(os.environ["T1_BENCH_OUT"], f"reasoner_speed-{args.tag}.json").write_text(json.dumps(result, indent=2))
    report("reasoner_speed", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
