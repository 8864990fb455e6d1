"""The cost of the OpenAI-compatible layer: `/v1/embeddings` against `/encode` on one `t1 serve`.

    python3 benchmarks/embeddings_api.py [--model t1-smollm2-135m] [--requests 32] [--clients 1,8]
        [--max-new-tokens 32] [--engine NAME] [--out DIR] [--tag NAME]

Starts the real server (`python -m t1 serve` on a loopback port, with an API key, batching on)
over the example corpus, and for documents (the example documents) and reasoning queries (the
example queries, `--max-new-tokens` of reasoning) sends the same one-text requests through
`/encode` and through `/v1/embeddings` (`encoding_format` float, and base64, what the `openai`
client asks for by default), from 1 client and from several at once. The routes take turns in
rounds (A B B A, `--requests` per route in all), so a neighbour's load on a shared machine falls
on each alike. Reports requests/s and p50/p95 latency per route, the p50 difference to
`/encode` (the layer's overhead), and the largest difference between the vectors the two
routes returned for the same text.

Writes `<name>.json` to --out (default $T1_BENCH_OUT, else benchmarks/results); see
`common.report`. The client runs on the same machine as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report
from serve_load import KEY, Server, add_server_args

ROOT = Path(__file__).resolve().parents[1]
NAME = "t1-bench"  # --served-model-name
ROUTES = ("encode", "v1-float", "v1-base64")


def body(route: str, side: str, text: str) -> tuple[str, dict]:
    """(path, JSON body) that embeds `text` as a document or a query through `route`."""
    if route == "encode":
        return "/encode", ({"documents": text} if side == "documents" else {"queries": text, "reasoning": "generate"})
    model = NAME if side == "documents" else NAME + "-query"
    return "/v1/embeddings", {"model": model, "input": text, "encoding_format": route.split("-")[1]}


def vector(route: str, response: dict) -> np.ndarray:
    if route == "encode":
        return np.asarray(response["embeddings"][0], dtype=np.float32)
    item = response["data"][0]["embedding"]
    return np.frombuffer(base64.b64decode(item), dtype="<f4") if route == "v1-base64" else np.asarray(item, np.float32)


async def load(url: str, requests: list[tuple[str, dict]], clients: int) -> tuple[list[float], list[dict], float]:
    """Send `requests` from `clients` concurrent keep-alive clients: (seconds each, responses, wall)."""
    import httpx

    queue = list(enumerate(requests))[::-1]
    seconds, responses = [0.0] * len(requests), [None] * len(requests)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        async def worker():
            while queue:
                i, (path, payload) = queue.pop()
                start = time.perf_counter()
                r = await client.post(path, json=payload)
                seconds[i] = time.perf_counter() - start
                if r.status_code != 200:
                    raise SystemExit(f"{path} answered {r.status_code}: {r.text[:300]}")
                responses[i] = r.json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return seconds, responses, time.perf_counter() - start


def run_case(url: str, side: str, texts: list[str], clients: int, n: int) -> dict:
    """Every route in rounds A B ... B A over the same texts; per route its figures."""
    half = max(clients, n // 2)
    order = list(ROUTES) + list(reversed(ROUTES))
    seconds = {r: [] for r in ROUTES}
    wall = {r: 0.0 for r in ROUTES}
    vectors = {r: {} for r in ROUTES}
    for round_, route in enumerate(order):
        picked = [texts[(round_ // len(ROUTES) * half + i) % len(texts)] for i in range(half)]
        took, responses, w = asyncio.run(load(url, [body(route, side, t) for t in picked], clients))
        seconds[route] += took
        wall[route] += w
        for t, resp in zip(picked, responses):
            vectors[route].setdefault(t, vector(route, resp))
    rows = {}
    for route in ROUTES:
        s = np.asarray(seconds[route]) * 1000
        rows[route] = {"requests": len(s), "requests_per_s": round(len(s) / wall[route], 2),
                       "p50_ms": round(float(np.percentile(s, 50)), 1), "p95_ms": round(float(np.percentile(s, 95)), 1)}
    for route in ROUTES[1:]:
        rows[route]["p50_overhead_ms"] = round(rows[route]["p50_ms"] - rows["encode"]["p50_ms"], 1)
        shared = set(vectors[route]) & set(vectors["encode"])
        rows[route]["max_abs_diff_vs_encode"] = float(max(np.abs(vectors[route][t] - vectors["encode"][t]).max()
                                                          for t in shared))
    return {"side": side, "clients": clients, "routes": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(parser)
    parser.add_argument("--requests", type=int, default=32, help="requests per route and case")
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated")
    parser.add_argument("--sides", default="documents,queries")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="reasoning length of the queries")
    parser.add_argument("--out", default=None, help="default: $T1_BENCH_OUT, else benchmarks/results")
    parser.add_argument("--tag", default="", help="suffix of the output name (e.g. cpu)")
    args = parser.parse_args()
    clients = sorted({int(c) for c in args.clients.split(",")})
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if min(clients) < 1 or args.requests < 2 or not set(sides) <= {"documents", "queries"}:
        parser.error("--clients must be positive, --requests at least 2, --sides documents and/or queries")
    out_dir = Path(args.out or os.environ.get("T1_BENCH_OUT") or ROOT / "benchmarks" / "results")
    name = "embeddings_api" + (f"-{args.tag}" if args.tag else "")

    from t1.data import load_corpus, load_queries

    texts = {"documents": [d.full_text for d in load_corpus(ROOT / "examples" / "corpus.jsonl")],
             "queries": list(load_queries(ROOT / "examples" / "queries.jsonl").values())}
    work = tempfile.mkdtemp(prefix="t1-embeddings-api-")
    index = Path(work) / "index"
    subprocess.run([sys.executable, "-m", "t1", "index", "--model", args.model, "--corpus",
                    str(ROOT / "examples" / "corpus.jsonl"), "--out", str(index), "--no-bm25"]
                   + (["--device", args.device] if args.device else []), check=True)
    result = {"model": args.model, "engine": args.engine or "the server's default", "requests_per_route": args.requests,
              "max_new_tokens": args.max_new_tokens, "clients": clients,
              "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
              "client": "asyncio + httpx on the same machine, one text per request", "cases": []}
    server = None
    try:
        server = Server(args, index, batching=True, extra=["--served-model-name", NAME])
        for side in sides:  # warm-up: every route once
            asyncio.run(load(server.url, [body(r, side, texts[side][0]) for r in ROUTES], 1))
        for side in sides:
            for c in clients:
                case = run_case(server.url, side, texts[side], c, args.requests)
                result["cases"].append(case)
                print(json.dumps(case), file=sys.stderr)
    finally:
        if server is not None:
            result["server_exit_code_after_sigterm"] = server.stop()
            result["server_errors_logged"] = sum(" 500 " in line or "Traceback" in line for line in server.log_lines())
        shutil.rmtree(work, ignore_errors=True)
    os.environ["T1_BENCH_OUT"] = str(out_dir)
    report(name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
