"""Load on `t1 serve` over loopback: requests/s and latency percentiles with batching on and off.

    python3 benchmarks/serve_load.py [--model t1-smollm2-135m] [--index DIR] [--clients 1,4,16,32]
        [--requests 64] [--modes none,generate] [--max-new-tokens 64] [--engine NAME] [--out DIR] [--tag NAME]

Starts the real server (`python -m t1 serve`, with an API key) once with batching on and once
with `--no-batching`, and for every mode and number of concurrent clients sends a bounded
number of requests (`--requests`, at least one per client) from that many concurrent clients
(asyncio + httpx, keep-alive connections), over the example queries. Without `--index` the
example corpus is indexed with the model first (in a temporary folder).

Then a fault run on the batching server: the same load at the largest client count with
`--bad-fraction` (10%) bad requests mixed in (malformed JSON, wrong types, unknown fields,
empty and over-long queries, k out of range, unknown excluded ids, wrong or missing key).
Every good request must get 200 with the same hits as the sequential reference run, every bad
one a 4xx, and no request a 5xx. Last, if chromium, chromedriver and selenium are installed,
the search page is opened in headless chromium and a screenshot of a search is kept.

Writes `<name>.json` (also printed; see `common.report`), `<name>.png` (throughput and p95
latency against clients) and `<name>-page.png` (the screenshot) to --out (default
$T1_BENCH_OUT, else benchmarks/results). The client runs on the same machine as the server,
so on a small CPU it takes part of the machine: compare configurations, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import report

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-" + os.urandom(6).hex()
MAX_K = 50
MAX_QUERY_CHARS = 2000


# ---------------------------------------------------------------- the server process
def add_server_args(parser) -> None:
    """The options `Server` reads (besides --max-new-tokens, whose default each script sets)."""
    parser.add_argument("--model", default="t1-smollm2-135m")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="server per-request timeout (s)")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the server")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="server torch threads")
    parser.add_argument("--engine", default=None, help="the server's generation engine (default: its own)")


class Server:
    def __init__(self, args, index: Path, batching: bool, extra: list[str] = ()):
        cmd = [sys.executable, "-m", "t1", "serve", "--index", str(index), "--model", args.model, "--port", "0",
               "--max-k", str(MAX_K), "--max-query-chars", str(MAX_QUERY_CHARS), "--timeout", str(args.timeout)]
        if batching:
            cmd += ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
        else:
            cmd += ["--no-batching"]
        if args.max_new_tokens is not None:
            cmd += ["--max-new-tokens", str(args.max_new_tokens)]
        if args.device:
            cmd += ["--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.engine:
            cmd += ["--engine", args.engine]
        cmd += list(extra)
        self.log = tempfile.NamedTemporaryFile("w+", prefix="t1-serve-", suffix=".log", delete=False)
        env = {**os.environ, "T1_API_KEY": KEY, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = _readline(self.proc.stdout, timeout=args.start_timeout)
        if "listening on " not in line:
            self.stop()
            raise SystemExit(f"the server did not start:\n{Path(self.log.name).read_text()[-3000:]}")
        self.url = line.split("listening on ")[1].split()[0]
        self.exit_code = None

    def stop(self) -> int:
        """SIGTERM (drain, then exit); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def log_lines(self) -> list[str]:
        return Path(self.log.name).read_text().splitlines()


def _readline(stream, timeout: float) -> str:
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0] if out else ""


# ---------------------------------------------------------------- requests
def good_request(query: str, mode: str, k: int) -> dict:
    return {"kind": "good", "body": json.dumps({"query": query, "reasoning": mode, "k": k}),
            "headers": {"X-API-Key": KEY}, "query": query, "mode": mode, "k": k}


BAD = [  # (name, body, headers): every one must get a 4xx
    ("malformed-json", '{"query": "why', None),
    ("wrong-type", json.dumps({"query": ["ok", 7]}), None),
    ("k-as-string", json.dumps({"query": "tides", "k": "10"}), None),
    ("unknown-field", json.dumps({"query": "tides", "top_k": 5}), None),
    ("empty-query", json.dumps({"query": ""}), None),
    ("blank-query", json.dumps({"query": " \n\t "}), None),
    ("too-long-query", json.dumps({"query": "why " * (MAX_QUERY_CHARS // 4 + 1)}), None),
    ("k-zero", json.dumps({"query": "tides", "k": 0}), None),
    ("k-above-cap", json.dumps({"query": "tides", "k": MAX_K + 1}), None),
    ("unknown-excluded-id", json.dumps({"query": "tides", "exclude": ["no-such-document"]}), None),
    ("wrong-key", json.dumps({"query": "tides"}), {"X-API-Key": "wrong"}),
    ("no-key", json.dumps({"query": "tides"}), {}),
]


def bad_request(i: int) -> dict:
    name, body, headers = BAD[i % len(BAD)]
    return {"kind": "bad", "name": name, "body": body, "headers": {"X-API-Key": KEY} if headers is None else headers}


async def run_load(url: str, requests: list[dict], clients: int, timeout: float) -> list[dict]:
    """Send `requests` from `clients` concurrent clients; each outcome gets status, seconds, body."""
    import httpx

    queue = list(enumerate(requests))
    queue.reverse()
    out: list[dict | None] = [None] * len(requests)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker():
            while queue:
                i, req = queue.pop()
                start = time.perf_counter()
                try:
                    r = await client.post("/search", content=req["body"],
                                          headers={"Content-Type": "application/json", **req["headers"]})
                    status, body = r.status_code, r.json() if r.content else None
                except Exception as e:  # noqa: BLE001 - a transport failure counts against the server
                    status, body = 0, {"detail": f"{type(e).__name__}: {e}"}
                out[i] = {**req, "status": status, "seconds": time.perf_counter() - start, "response": body}

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    for o in out:
        o["wall"] = wall
    return out


def summarize(outcomes: list[dict]) -> dict:
    seconds = [o["seconds"] for o in outcomes]
    wall = outcomes[0]["wall"]
    ok = [o for o in outcomes if o["status"] == 200]
    batches = [o["response"]["timings"]["batch_queries"] for o in ok]
    return {"requests": len(outcomes), "ok": len(ok), "wall_s": round(wall, 3),
            "requests_per_s": round(len(outcomes) / wall, 3),
            "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 1),
            "p99_ms": round(float(np.percentile(seconds, 99)) * 1000, 1),
            "mean_batch_queries": round(statistics.fmean(batches), 2) if batches else None}


def hit_ids(response: dict) -> list[str]:
    return [h["id"] for h in response["results"][0]["hits"]]


# ---------------------------------------------------------------- the page
def screenshot(url: str, query: str, path: Path) -> str | None:
    """A screenshot of the search page after a search; None, or why it was skipped."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not os.path.exists("/usr/bin/chromedriver"):
        return "no chromium/chromedriver installed"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return "selenium is not installed"
    profile = tempfile.mkdtemp(prefix="t1-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,1300", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{url}/?key={KEY}")
        wait = WebDriverWait(driver, 600)
        wait.until(lambda d: "documents" in d.find_element(By.ID, "info").text)
        driver.find_element(By.ID, "q").send_keys(query)
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("5")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return None


# ---------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(parser)
    parser.add_argument("--index", default=None, help="index folder (default: index examples/corpus.jsonl)")
    parser.add_argument("--queries", default=str(ROOT / "examples" / "queries.jsonl"))
    parser.add_argument("--clients", default="1,4,16,32", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=64, help="requests per (mode, clients) run")
    parser.add_argument("--modes", default="none,generate")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="reasoning length (default: the model's)")
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--no-screenshot", action="store_true")
    parser.add_argument("--out", default=None, help="default: $T1_BENCH_OUT, else benchmarks/results")
    parser.add_argument("--tag", default="", help="suffix of the output names (e.g. cpu, h100)")
    args = parser.parse_args()
    clients = sorted({int(c) for c in args.clients.split(",")})
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if min(clients) < 1 or args.requests < 1 or not 0 <= args.bad_fraction < 1:
        parser.error("--clients and --requests must be positive, --bad-fraction in [0, 1)")
    out_dir = Path(args.out or os.environ.get("T1_BENCH_OUT") or ROOT / "benchmarks" / "results")
    name = "serve_load" + (f"-{args.tag}" if args.tag else "")

    from t1.data import load_queries

    queries = list(load_queries(args.queries).values())
    work = tempfile.mkdtemp(prefix="t1-serve-load-")
    index = Path(args.index) if args.index else Path(work) / "index"
    if not args.index:
        print(f"indexing examples/corpus.jsonl with {args.model} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "t1", "index", "--model", args.model, "--corpus",
                        str(ROOT / "examples" / "corpus.jsonl"), "--out", str(index)]
                       + (["--device", args.device] if args.device else []), check=True)

    result = {"model": args.model, "index": str(index) if args.index else "examples/corpus.jsonl",
              "queries": len(queries), "k": args.k, "max_new_tokens": args.max_new_tokens,
              "requests_per_run": args.requests, "clients": clients,
              "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
              "client": "asyncio + httpx on the same machine", "runs": []}
    try:
        reference: dict[tuple[str, str], list[str]] = {}
        for batching in (True, False):
            server = Server(args, index, batching)
            print(f"server {'with' if batching else 'without'} batching at {server.url}", file=sys.stderr)
            try:
                for mode in modes:  # warm-up, and (batching on) the sequential reference hits
                    for q in queries if batching else queries[:1]:
                        got = asyncio.run(run_load(server.url, [good_request(q, mode, args.k)], 1, args.timeout))[0]
                        if got["status"] != 200:
                            raise SystemExit(f"reference request failed: {got['status']} {got['response']}")
                        if batching:
                            reference[(mode, q)] = hit_ids(got["response"])
                for mode in modes:
                    for c in clients:
                        n = max(args.requests, c)
                        reqs = [good_request(queries[i % len(queries)], mode, args.k) for i in range(n)]
                        outcomes = asyncio.run(run_load(server.url, reqs, c, args.timeout))
                        row = {"batching": batching, "mode": mode, "clients": c, **summarize(outcomes)}
                        row["same_hits_as_sequential"] = sum(
                            o["status"] == 200 and hit_ids(o["response"]) == reference[(mode, o["query"])]
                            for o in outcomes)
                        result["runs"].append(row)
                        print(json.dumps(row), file=sys.stderr)
                if batching:
                    result["fault_run"] = fault_run(args, server.url, queries, modes, max(clients), reference)
                    print(json.dumps(result["fault_run"]["summary"]), file=sys.stderr)
                    if not args.no_screenshot:
                        shot = out_dir / f"{name}-page.png"
                        out_dir.mkdir(parents=True, exist_ok=True)
                        skipped = screenshot(server.url, queries[0], shot)
                        where = shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot
                        result["screenshot"] = skipped or str(where)
            finally:
                code = server.stop()
                lines = server.log_lines()
                key = "batching" if batching else "no_batching"
                result.setdefault("server", {})[key] = {
                    "exit_code_after_sigterm": code, "log_lines": len(lines),
                    "server_errors_logged": sum(" 500 " in line or "Traceback" in line for line in lines)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    plot(result, out_dir / f"{name}.png")
    result["plot"] = str(out_dir / f"{name}.png")
    os.environ["T1_BENCH_OUT"] = str(out_dir)
    report(name, result)
    return 0 if result.get("fault_run", {}).get("summary", {}).get("passed", True) else 1


def fault_run(args, url: str, queries: list[str], modes: list[str], clients: int, reference) -> dict:
    # Enough requests that every kind of bad request occurs; the bad ones at random places.
    n = max(args.requests, clients, math.ceil(len(BAD) / args.bad_fraction) if args.bad_fraction else 0)
    n_bad = round(n * args.bad_fraction)
    bad_at = set(random.Random(0).sample(range(n), n_bad))
    reqs = []
    for i in range(n):
        if i in bad_at:
            reqs.append(bad_request(len(reqs) - sum(r["kind"] == "good" for r in reqs)))
        else:
            reqs.append(good_request(queries[i % len(queries)], modes[i % len(modes)], args.k))
    outcomes = asyncio.run(run_load(url, reqs, clients, args.timeout))
    good = [o for o in outcomes if o["kind"] == "good"]
    bads = [o for o in outcomes if o["kind"] == "bad"]
    good_ok = [o for o in good if o["status"] == 200 and hit_ids(o["response"]) == reference[(o["mode"], o["query"])]
               and len(hit_ids(o["response"])) == o["k"]]
    bad_4xx = [o for o in bads if 400 <= o["status"] < 500 and isinstance((o["response"] or {}).get("detail"), str)]
    server_errors = [o for o in outcomes if o["status"] >= 500 or o["status"] == 0]
    summary = {"clients": clients, "requests": n, "good": len(good), "bad": len(bads),
               "good_answered_correctly": len(good_ok), "bad_answered_4xx": len(bad_4xx),
               "5xx_or_failed": len(server_errors),
               "passed": len(good_ok) == len(good) and len(bad_4xx) == len(bads) and not server_errors}
    by_kind = {}
    for o in bads:
        by_kind.setdefault(o["name"], sorted({o["status"]}))
        by_kind[o["name"]] = sorted(set(by_kind[o["name"]]) | {o["status"]})
    return {"summary": summary, "bad_statuses": by_kind, **summarize(outcomes),
            "examples": {o["name"]: (o["response"] or {}).get("detail") for o in bads}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for batching in (True, False):
        for mode in sorted({r["mode"] for r in result["runs"]}):
            rows = sorted((r for r in result["runs"] if r["batching"] == batching and r["mode"] == mode),
                          key=lambda r: r["clients"])
            if not rows:
                continue
            label = f"{mode}, batching {'on' if batching else 'off'}"
            style = "-o" if batching else "--s"
            ax1.plot([r["clients"] for r in rows], [r["requests_per_s"] for r in rows], style, label=label)
            ax2.plot([r["clients"] for r in rows], [r["p95_ms"] for r in rows], style, label=label)
    for ax, title in ((ax1, "throughput (requests/s)"), (ax2, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.suptitle(f"t1 serve on loopback: {Path(result['model']).name}, max_new_tokens={result['max_new_tokens']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
