"""`t1 serve`: every route through FastAPI's TestClient on the tiny model, batching, streaming,
auth, bad requests, the batcher's handling of abandoned jobs, and SIGTERM draining of the real
server process."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from t1.cli import main  # noqa: E402
from t1.index import Index  # noqa: E402
from t1.serve.app import ServeSettings, create_app  # noqa: E402
from t1.serve.batcher import Batcher  # noqa: E402
from t1.serve.engine import Engine, Plan, Work  # noqa: E402
from t1.settings import QuerySettings  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = 6  # reasoning length: the tiny model never stops by itself
CORPUS = [
    {"_id": "d1", "title": "Leaves", "text": "cell protein gene plant"},
    {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
    {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"},
    {"_id": "d4", "title": "Sun", "text": "solar energy carbon plant"},
    {"_id": "d5", "title": "Vaccines", "text": "virus vaccine animal cell"},
    {"_id": "d6", "title": "Robots", "text": "robot sensor code array"},
    {"_id": "d7", "title": "Graphs", "text": "graph tree theorem data"},
]
QUERIES = ["water rock", "prime proof", "plant cell energy", "robot code", "virus", "graph data model learn"]


@pytest.fixture(scope="module")
def index_dir(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    out = folder / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out),
                 "--device", "cpu"]) == 0  # with BM25, the default
    return out


@pytest.fixture(scope="module")
def index(index_dir, tiny_model):
    return Index.open(index_dir, model=tiny_model)


@pytest.fixture(scope="module")
def engine(tiny_model, index):
    return Engine(tiny_model, index, batch_size=16)


@pytest.fixture
def serve(engine):
    """serve(**settings) -> a TestClient with the app's lifespan running (closed after the test)."""
    clients = []

    def make(**settings):
        settings.setdefault("max_new_tokens", TOKENS)
        client = TestClient(create_app(engine, ServeSettings(**settings)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def ids(hits):
    return [h["id"] for h in hits]


def reference(model, index, queries, k, exclude=None, **encode):
    out = model.encode_query(queries, **encode)
    return out, index.search(out.embeddings, k=k, exclude=exclude)


def sse_events(text):
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# ---------------------------------------------------------------- routes
def test_health_info_docs_and_page(serve, tiny_model, tiny_model_path):
    client = serve()
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["model"] == {"name": str(tiny_model_path), "fingerprint": tiny_model.fingerprint(), "dim": 64,
                             "max_new_tokens": tiny_model.config.max_new_tokens, "document_engine": "hf"}
    assert info["index"]["documents"] == len(CORPUS) and info["index"]["dim"] == 64 and info["index"]["bm25"]
    assert info["index"]["document_engine"] == "hf" and info["reasoner"] is None  # T1 writes its own traces
    assert info["hybrid"] and info["ranking"] == "dense"  # the tiny model has no saved fusion weight
    assert info["auth"] is False and info["limits"]["max_new_tokens"] == TOKENS
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/search/stream", "/encode", "/health", "/info"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="q"' in html and "search/stream" in html
    assert "http://" not in html and "https://" not in html  # no CDN: everything is in the page


@pytest.mark.parametrize("mode", ["generate", "none", "given"])
def test_search_matches_the_library(serve, tiny_model, index, mode):
    client = serve()
    queries = QUERIES[:3]
    body = {"query": queries, "k": 3, "reasoning": mode, "exclude": [["d2"], [], ["d1", "d3"]]}
    encode = {"reasoning": mode, "max_new_tokens": TOKENS}
    if mode == "given":
        body["reasoning_text"] = encode["reasoning"] = ["rivers carry rock", "a prime has two divisors", "leaves"]
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    expected, hits = reference(tiny_model, index, queries, 3, exclude=[{"d2"}, set(), {"d1", "d3"}], **encode)
    assert [r["query"] for r in data["results"]] == queries
    for result, want_hits, want_reasoning in zip(data["results"], hits, expected.reasoning):
        assert ids(result["hits"]) == [h.id for h in want_hits]
        assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in want_hits], abs=1e-4)
        assert result["reasoning"] == want_reasoning
        assert {"title", "snippet"} <= set(result["hits"][0])
    assert "d2" not in ids(data["results"][0]["hits"]) and not {"d1", "d3"} & set(ids(data["results"][2]["hits"]))
    if mode == "generate":
        assert all(r["reasoning"] for r in data["results"]) and all("ended" in r for r in data["results"])
    timings = data["timings"]
    assert timings["total_ms"] >= timings["queue_ms"] >= 0 and timings["batch_queries"] == 3
    assert data["mode"] == mode and data["k"] == 3 and data["ranking"] == "dense"


def test_single_query_auto_hybrid_and_traces(serve, tiny_model, index):
    client = serve()
    one = client.post("/search", json={"query": "water rock", "k": 2, "reasoning": "none"}).json()
    assert len(one["results"]) == 1 and len(one["results"][0]["hits"]) == 2

    auto = client.post("/search", json={"query": QUERIES[:4], "k": 3, "reasoning": "auto", "margin": 0.05}).json()
    hits, reasoning = index.search_queries(tiny_model, QUERIES[:4], k=3, reasoning="auto", margin=0.05,
                                           max_new_tokens=TOKENS)
    assert [ids(r["hits"]) for r in auto["results"]] == [[h.id for h in hs] for hs in hits]
    assert [r["reasoned"] for r in auto["results"]] == [bool(r) for r in reasoning]

    for fusion, ranking in [(None, "hybrid-weighted(0.5)"), ("rrf", "hybrid-rrf(0.5)")]:
        body = {"query": "water rock", "k": 3, "hybrid": True, "reasoning": "none", "fusion": fusion}
        hybrid = client.post("/search", json=body).json()
        hits, _ = index.search_queries(tiny_model, ["water rock"], k=3, reasoning="none", hybrid=True, fusion=fusion)
        assert ids(hybrid["results"][0]["hits"]) == [h.id for h in hits[0]] and hybrid["ranking"] == ranking

    traces = client.post("/search", json={"query": "water rock", "k": 3, "traces": 3, "trace_fusion": "rrf"}).json()
    assert len(traces["results"][0]["traces"]) == 3 and len(traces["results"][0]["hits"]) == 3
    assert traces["timings"]["batch_queries"] == 3  # three sampled traces: three rows of the batch


def test_default_search_is_the_models_weighted_hybrid(index_dir, tiny_model_path):
    from t1 import T1Model

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", fusion_weight=0.3)
    index = Index.open(index_dir, model=model)
    with TestClient(create_app(Engine(model, index), ServeSettings(max_new_tokens=TOKENS))) as client:
        assert client.get("/info").json()["ranking"] == "hybrid-weighted(0.3)"
        queries = QUERIES[:3]
        q = model.encode_query(queries, reasoning="none").embeddings
        default = client.post("/search", json={"query": queries, "k": 3, "reasoning": "none"}).json()
        fused = index.search_hybrid(q, queries, k=3, fusion="weighted", weight=0.3)
        assert default["ranking"] == "hybrid-weighted(0.3)"
        for result, want in zip(default["results"], fused):
            assert ids(result["hits"]) == [h.id for h in want]
            assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in want], abs=1e-5)
        dense = client.post("/search", json={"query": queries, "k": 3, "reasoning": "none", "hybrid": False}).json()
        assert dense["ranking"] == "dense"
        assert [ids(r["hits"]) for r in dense["results"]] == [[h.id for h in hs] for hs in index.search(q, k=3)]
        auto = client.post("/search", json={"query": queries, "k": 3, "reasoning": "auto", "margin": 10.0}).json()
        deep = model.encode_query(queries, reasoning="generate", max_new_tokens=TOKENS).embeddings
        assert auto["ranking"] == "hybrid-weighted(0.3)" and [ids(r["hits"]) for r in auto["results"]] == \
            [[h.id for h in hs] for hs in index.search_hybrid(deep, queries, k=3, fusion="weighted", weight=0.3)]


def test_batching_gives_the_same_hits_as_single_requests(serve, engine):
    # Each group closes as soon as its 4 requests are in (a fixed wait: none runs before that).
    batched = serve(max_batch=4, max_wait_ms=3000, adaptive_wait=False)
    bodies = [{"query": q, "k": k, "exclude": ex} for q, k, ex in
              zip(QUERIES[:4], [1, 3, 5, 2], [[], ["d3"], [], ["d1", "d2"]])]
    bodies += [{"query": q, "k": 3, "reasoning": "none"} for q in QUERIES[2:6]]
    out = [None] * len(bodies)

    def call(i):
        out[i] = batched.post("/search", json=bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.status_code == 200 for r in out), [r and r.text for r in out]
    # Two groups (generate, none), each run as one batch of 4 requests.
    assert [r.json()["timings"]["batch_requests"] for r in out] == [4] * 8
    single = serve(max_batch=1, max_wait_ms=0)
    for body, response in zip(bodies, out):
        alone = single.post("/search", json=body).json()
        assert alone["timings"]["batch_requests"] == 1
        got, want = response.json()["results"][0], alone["results"][0]
        assert ids(got["hits"]) == ids(want["hits"]) and len(got["hits"]) == body["k"]
        assert got["reasoning"] == want["reasoning"]
        assert [h["score"] for h in got["hits"]] == pytest.approx([h["score"] for h in want["hits"]], abs=1e-4)


def test_stream_sends_the_reasoning_then_the_hits(serve):
    client = serve()
    response = client.post("/search/stream", json={"query": "plant cell energy", "k": 4})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [e for e, _ in events]
    assert names[-1] == "result" and names.count("reasoning") >= 2 and set(names[:-1]) == {"reasoning"}
    result = events[-1][1]["results"][0]
    assert "".join(d["text"] for e, d in events if e == "reasoning") == result["reasoning"] != ""
    plain = client.post("/search", json={"query": "plant cell energy", "k": 4}).json()["results"][0]
    assert ids(result["hits"]) == ids(plain["hits"]) and result["reasoning"] == plain["reasoning"]

    events = sse_events(client.post("/search/stream", json={"query": "robot", "reasoning": "none", "k": 2}).text)
    assert [e for e, _ in events] == ["result"] and len(events[0][1]["results"][0]["hits"]) == 2
    bad = client.post("/search/stream", json={"query": ["a", "b"]})
    assert bad.status_code == 422 and "one query" in bad.json()["detail"]


def test_encode_documents_and_queries(serve, tiny_model, index):
    client = serve()
    docs = client.post("/encode", json={"documents": ["cell protein gene plant", "river"]}).json()
    assert docs["kind"] == "documents" and docs["dim"] == 64 and len(docs["embeddings"]) == 2
    want = tiny_model.encode_document(["cell protein gene plant", "river"], instruction=index.manifest["instruction"],
                                      max_length=index.manifest["max_length"])
    np.testing.assert_allclose(docs["embeddings"], want, atol=1e-5)
    stored = index.embeddings()[0]  # d1 as indexed ("Leaves" + text), float16 on disk
    again = client.post("/encode", json={"documents": "Leaves\ncell protein gene plant"}).json()["embeddings"][0]
    assert np.dot(stored, again) > 0.999
    queries = client.post("/encode", json={"queries": ["water rock", "virus"], "reasoning": "generate"}).json()
    want = tiny_model.encode_query(["water rock", "virus"], reasoning="generate", max_new_tokens=TOKENS)
    np.testing.assert_allclose(queries["embeddings"], want.embeddings, atol=1e-4)
    assert queries["reasoning"] == want.reasoning
    for body in ({}, {"documents": ["a"], "queries": ["b"]}, {"documents": ["a"], "reasoning": "generate"},
                 {"documents": []}, {"queries": ["  "]}):
        response = client.post("/encode", json=body)
        assert response.status_code == 422 and "\n" not in response.json()["detail"]


def test_api_key(serve):
    client = serve(api_key="s3cret")
    assert client.get("/health").status_code == 200
    for method, path in [("get", "/info"), ("get", "/"), ("get", "/docs"), ("get", "/openapi.json"),
                         ("post", "/search"), ("post", "/search/stream"), ("post", "/encode")]:
        response = getattr(client, method)(path)
        assert response.status_code == 401 and "API key" in response.json()["detail"], path
    body = {"query": "water rock", "k": 2, "reasoning": "none"}
    wrong = client.post("/search", json=body, headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong API key"
    assert client.post("/search", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/search", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/search?key=s3cret", json=body).status_code == 401  # URL keys only open pages
    assert client.get("/?key=nope").status_code == 401
    opened = client.get("/?key=s3cret", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    cookie = opened.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/").status_code == 200  # the cookie now carries the key
    assert client.post("/search", json=body).status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"


@pytest.mark.parametrize("body, status, message", [
    ('{"query": "water', 400, "malformed JSON"),
    ('{"query": 5}', 422, "query: expected a string or a list of strings"),
    ('{"query": "x", "k": "3"}', 422, "k: Input should be a valid integer"),
    ('{"query": "x", "k": 2.5}', 422, "k: Input should be a valid integer"),
    ('{"query": "x", "reasoning": "think"}', 422, "reasoning: Input should be"),
    ('{"query": "x", "colour": "red"}', 422, "unknown field 'colour'"),
    ('{"k": 3}', 422, "missing field 'query'"),
    ('["water"]', 422, "must be a JSON object"),
    ('{"query": ""}', 422, "query is empty"),
    ('{"query": " \\t\\n "}', 422, "query is empty"),
    ('{"query": ["ok", "  "]}', 422, "query[1] is empty"),
    ('{"query": []}', 422, "query: give at least one"),
    ('{"query": "' + "long " * 20 + '"}', 422, "more than the limit of 40"),
    ('{"query": "x", "k": 0}', 422, "k must be between 1 and 20, got 0"),
    ('{"query": "x", "k": -3}', 422, "k must be between 1 and 20, got -3"),
    ('{"query": "x", "k": 21}', 422, "k must be between 1 and 20, got 21"),
    ('{"query": "x", "exclude": ["d1", "nope"]}', 422, "exclude: unknown document id 'nope'"),
    ('{"query": ["x", "y"], "exclude": [["d1"]]}', 422, "exclude: got 1 lists of ids for 2 queries"),
    ('{"query": "x", "reasoning": "given"}', 422, "needs reasoning_text"),
    ('{"query": "x", "reasoning_text": "why"}', 422, "only used with reasoning 'given'"),
    ('{"query": "x", "traces": 2, "reasoning": "none"}', 422, "traces > 1 needs reasoning 'generate'"),
    ('{"query": "x", "traces": 99}', 422, "traces must be between 1 and 8"),
    ('{"query": "x", "max_new_tokens": 999}', 422, "max_new_tokens must be between 0 and 6"),
    ('{"query": "x", "hybrid": true, "fusion_weight": 2}', 422, "fusion_weight must be between 0 and 1"),
    ('{"query": "x", "hybrid": false, "fusion": "rrf"}', 422, "a dense-only search takes no fusion method"),
])
def test_bad_requests_get_a_one_line_4xx(serve, caplog, body, status, message):
    client = serve(max_k=20, max_query_chars=40)
    with caplog.at_level(logging.INFO, logger="t1.serve"):
        response = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail
    lines = [r.getMessage() for r in caplog.records if r.name == "t1.serve" and "/search" in r.getMessage()]
    assert len(lines) == 1 and f'"POST /search" {status}' in lines[0] and detail in lines[0]
    ok = client.post("/search", json={"query": "water rock", "k": 2, "reasoning": "none"})
    assert ok.status_code == 200 and len(ok.json()["results"][0]["hits"]) == 2  # still serving


def test_too_many_queries_and_body_limit(serve):
    client = serve(max_queries=3, max_body_bytes=2000)
    response = client.post("/search", json={"query": ["a", "b", "c", "d"], "reasoning": "none"})
    assert response.status_code == 422 and "more than the limit of 3" in response.json()["detail"]
    response = client.post("/search", json={"query": "x" * 5000})
    assert response.status_code == 413 and "more than the limit of 2000" in response.json()["detail"]
    assert client.get("/nope").status_code == 404 and client.get("/search").status_code == 405
    form = client.post("/search", content="query=water", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "Content-Type: application/json" in form.json()["detail"]


def test_timeout_answers_504_drops_the_job_and_a_full_queue_answers_503(serve):
    # The batch would start after 5 s; the queue holds one request.
    client = serve(timeout_s=0.5, max_wait_ms=5000, adaptive_wait=False, max_queue=1)
    first = {}
    waiting = threading.Thread(target=lambda: first.update(r=client.post(
        "/search", json={"query": "water rock", "reasoning": "none"})))
    start = time.perf_counter()
    waiting.start()
    batcher = client.app.state.batcher
    while batcher.queued == 0 and time.perf_counter() - start < 5:
        time.sleep(0.01)
    busy = client.post("/search", json={"query": "prime", "reasoning": "none"})
    assert busy.status_code == 503 and "server busy" in busy.json()["detail"]
    waiting.join(10)
    assert first["r"].status_code == 504 and "timed out after 0.5s" in first["r"].json()["detail"]
    assert time.perf_counter() - start < 4
    assert batcher.queued == 0 and batcher.batches == 0  # abandoned before its batch ran


def test_a_lone_request_does_not_wait_for_company(serve):
    client = serve(max_wait_ms=5000)  # adaptive: nobody else is in flight, so it runs at once
    start = time.perf_counter()
    response = client.post("/search", json={"query": "water rock", "reasoning": "none"})
    assert response.status_code == 200 and time.perf_counter() - start < 2.5
    assert response.json()["timings"]["queue_ms"] < 2500


# ---------------------------------------------------------------- batcher and engine
def test_batcher_drops_abandoned_jobs_and_isolates_failures():
    ran = []

    def run(key, jobs):
        ran.append([j.payload for j in jobs])
        if any(j.payload == "poison" for j in jobs):
            raise ValueError("poisoned")
        return [f"{key}:{j.payload}" for j in jobs]

    async def scenario():
        batcher = Batcher(run, max_batch=10, max_wait_ms=50)
        batcher.start()
        jobs = [batcher.submit("a", 1, p) for p in ("x", "gone", "y")] + [batcher.submit("b", 1, "z")]
        jobs[1].abandon()  # its client went away before the batch started
        results = await asyncio.gather(jobs[0].future, jobs[2].future, jobs[3].future)
        poison = [batcher.submit("a", 1, p) for p in ("ok", "poison")]
        outcome = await asyncio.gather(*(j.future for j in poison), return_exceptions=True)
        await batcher.stop()
        return results, outcome, jobs

    results, outcome, jobs = asyncio.run(scenario())
    assert results == ["a:x", "a:y", "b:z"]
    assert ran[:2] == [["x", "y"], ["z"]]  # grouped by key; the abandoned job never ran
    assert jobs[0].batch_jobs == 2 and jobs[3].batch_jobs == 1
    assert outcome[0] == "a:ok" and isinstance(outcome[1], ValueError)  # retried one by one


class FakeJob:
    def __init__(self, work):
        self.payload, self._abandoned = work, threading.Event()


def test_reasoning_is_generated_through_the_model_engine(engine, engine_calls):
    out = engine.run(Plan("search", QuerySettings(max_new_tokens=TOKENS, hybrid=False)), [FakeJob(Work(QUERIES[:3]))])
    assert [len(c) for c in engine_calls] == [3] and len(out[0]["results"]) == 3


def test_an_abandoned_row_stops_generating_and_others_finish(engine, tiny_model):
    pieces = {0: [], 1: []}
    jobs = []

    def listener(i):
        def on_text(text):
            pieces[i].append(text)
            if i == 0 and len(pieces[0]) == 2:
                jobs[0]._abandoned.set()  # the first client leaves after two pieces
        return on_text

    jobs.extend(FakeJob(Work([q], k=2, on_text=listener(i))) for i, q in enumerate(["water rock", "prime proof"]))
    steps = 40
    out = engine.run(Plan("search", QuerySettings(max_new_tokens=steps, hybrid=False)), jobs)
    full = tiny_model.encode_query(["prime proof"], reasoning="generate", max_new_tokens=steps)
    assert out[1]["results"][0]["reasoning"] == full.reasoning[0] == "".join(pieces[1])
    assert len(pieces[0]) == 2 and len(tiny_model.tokenizer(out[0]["results"][0]["reasoning"])["input_ids"]) < steps / 2


# ---------------------------------------------------------------- the real server process
def _snapshot(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_cli_serve_drains_on_sigterm_and_never_writes_the_index(index_dir, tmp_path):
    httpx = pytest.importorskip("httpx")
    before = _snapshot(index_dir)
    env = {**os.environ, "T1_API_KEY": "k3y", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "t1", "serve", "--index", str(index_dir), "--port", "0", "--device", "cpu",
           "--max-wait-ms", "1500", "--fixed-wait", "--max-new-tokens", "4",
           "--reasoning-cache", str(tmp_path / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and "API key required" in line, proc.stderr.read()
        url = line.split("listening on ")[1].split()[0]
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/info").status_code == 401
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up while its request waits
            httpx.post(url + "/search", json={"query": "gone"}, headers={"X-API-Key": "k3y"}, timeout=0.3)
        got = {}
        t = threading.Thread(target=lambda: got.update(r=httpx.post(
            url + "/search", json={"query": "water rock", "k": 2}, headers={"X-API-Key": "k3y"}, timeout=60)))
        t.start()
        time.sleep(0.5)  # the request now waits in its batch (1.5 s)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got["r"].status_code == 200 and len(got["r"].json()["results"][0]["hits"]) == 2
    err = proc.stderr.read()
    assert '"POST /search" 200' in err and '"GET /info" 401' in err and "stopped" in err
    assert '"POST /search" 499' in err and "client disconnected" in err
    assert "Traceback" not in err
    assert _snapshot(index_dir) == before  # read-only: nothing written, no cache inside
    assert (tmp_path / "cache" / "reasoning-cache.sqlite").exists()


@pytest.mark.parametrize("argv, message", [
    (["serve", "--index", "{tmp}"], "not a t1 index"),
    (["serve", "--index", "{idx}", "--reasoning-cache", "{idx}/cache"], "inside the index folder"),
    (["serve", "--index", "{idx}", "--port", "{busy}"], "cannot listen on 127.0.0.1:"),
    (["serve", "--index", "{idx}", "--max-batch", "0"], "--max-batch must be at least 1"),
])
def test_cli_serve_user_errors(index_dir, tmp_path, capsys, argv, message):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fill = {"tmp": str(tmp_path), "idx": str(index_dir), "busy": str(busy.getsockname()[1])}
        assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t1: error:") and message in err and "\n" not in err


def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(serve):
    import asyncio

    client = serve(max_body_bytes=2000)
    received, sent = [], []

    async def receive():  # a body without Content-Length, in 1000-byte pieces: 10 MB in all
        received.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": len(received) < 10_000}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/search", "raw_path": b"/search", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
             "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"more than the limit of 2000 bytes" in sent[1]["body"]
    assert len(received) <= 3  # refused once past the limit, not read whole first
    assert client.post("/search", json={"query": "water rock", "reasoning": "none"}).status_code == 200


def test_an_instruction_that_leaves_no_room_is_a_422_in_every_mode(serve):
    client = serve(max_query_chars=100000)
    for mode in ("none", "generate"):
        response = client.post("/search", json={"query": "water rock", "reasoning": mode,
                                                "instruction": "word " * 3000})
        assert response.status_code == 422, (mode, response.text)
        assert "leaves no room for the query" in response.json()["detail"]
