"""One query pipeline (issue #20): `t1 search`, `t1 eval`'s retriever, `t1 serve` and the Python
API give the same hits and traces for the same settings, and share reasoning-cache entries."""

import json
import os
from pathlib import Path

import pytest
from tiny_model import GenerationCounter

from t1.cli import main
from t1.data import Document
from t1.evaluation.retrievers import make_retriever
from t1.index import Index
from t1.query import search
from t1.reasoning_cache import ReasoningCache
from t1.settings import DEFAULT_TOP_P, QuerySettings

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS, K = 4, 3
CORPUS = [
    {"_id": "d1", "title": "Leaves", "text": "cell protein gene plant"},
    {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
    {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"},
    {"_id": "d4", "title": "Sun", "text": "solar energy carbon plant"},
    {"_id": "d5", "title": "Vaccines", "text": "virus vaccine animal cell"},
    {"_id": "d6", "title": "Robots", "text": "robot sensor code array"},
]
QUERIES = ["water rock", "prime proof", "plant cell energy"]
QIDS = [f"q{i}" for i in range(1, len(QUERIES) + 1)]  # what `t1 search` calls them


@pytest.fixture(scope="module")
def index_dir(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(folder / "idx"),
                 "--device", "cpu"]) == 0  # with BM25
    return folder / "idx"


def _cache() -> Path:
    return Path(os.environ["T1_CACHE"])  # where `t1 eval` keeps its traces; the others are pointed there


def _rounded(pairs):
    return [(i, round(float(s), 4)) for i, s in pairs]


def via_cli(capsys, model_path, index_dir, settings: QuerySettings):
    argv = ["search", "--index", str(index_dir), "--model", str(model_path), "--device", "cpu", "--json", "-k", str(K),
            "--reasoning", settings.reasoning, "--max-new-tokens", str(TOKENS), "--traces", str(settings.num_traces),
            "--reasoning-cache", str(_cache()), *QUERIES]
    argv += ["--hybrid", "--fusion", settings.fusion] if settings.hybrid else ["--dense-only"]
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    return [r["reasoning"] for r in out], [_rounded((h["id"], h["score"]) for h in r["hits"]) for r in out]


def via_api(model, index, settings):
    results = search(model, index, QUERIES, settings, k=K, cache=ReasoningCache(_cache()), query_ids=QIDS)
    return results.reasoning, [_rounded((h.id, h.score) for h in hits) for hits in results.hits]


def via_eval(model, model_path, settings):
    corpus = [Document(d["_id"], d["text"], d["title"]) for d in CORPUS]
    spec = f"hybrid:t1:{model_path}" if settings.hybrid else f"t1:{model_path}"
    retriever = make_retriever(spec, corpus, model=model, query=settings, show_progress=False)
    run = retriever.retrieve(dict(zip(QIDS, QUERIES)), k=K)
    reasoning = [retriever.reasoning.get(q, "") for q in QIDS]
    return reasoning, [_rounded(sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))) for q in QIDS]


def via_serve(model, index, settings):
    from fastapi.testclient import TestClient

    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    engine = Engine(model, index, reasoning_cache=_cache())
    body = {"query": QUERIES, "k": K, "reasoning": settings.reasoning, "max_new_tokens": TOKENS,
            "traces": settings.num_traces, "hybrid": bool(settings.hybrid)}
    if settings.hybrid:
        body["fusion"] = settings.fusion
    with TestClient(create_app(engine, ServeSettings(max_new_tokens=TOKENS))) as client:
        response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    out = response.json()["results"]
    return [r["reasoning"] for r in out], [_rounded((h["id"], h["score"]) for h in r["hits"]) for r in out]


@pytest.mark.parametrize("settings", [
    QuerySettings(reasoning="none", hybrid=False),
    QuerySettings(reasoning="generate", max_new_tokens=TOKENS, hybrid=False),
    QuerySettings(reasoning="generate", max_new_tokens=TOKENS, hybrid=True, fusion="weighted"),
], ids=["none", "generate", "generate-hybrid"])
def test_every_entry_point_gives_the_same_hits_and_traces(settings, tiny_model, tiny_model_path, index_dir, capsys):
    pytest.importorskip("fastapi")
    index = Index.open(index_dir, model=tiny_model)
    cli = via_cli(capsys, tiny_model_path, index_dir, settings)
    assert via_api(tiny_model, index, settings) == cli
    assert via_eval(tiny_model, tiny_model_path, settings) == cli
    assert via_serve(tiny_model, index, settings) == cli
    hits, reasoning = index.search_queries(tiny_model, QUERIES, k=K, reasoning=settings.reasoning,
                                           max_new_tokens=TOKENS, hybrid=settings.hybrid, fusion=settings.fusion)
    assert (reasoning, [_rounded((h.id, h.score) for h in row) for row in hits]) == cli
    assert all(cli[0]) == (settings.reasoning == "generate")


def test_sampled_traces_written_by_one_entry_point_are_cache_hits_in_every_other(
        tiny_model, tiny_model_path, index_dir, capsys, monkeypatch):
    pytest.importorskip("fastapi")
    index = Index.open(index_dir, model=tiny_model)
    settings = QuerySettings(reasoning="generate", max_new_tokens=TOKENS, num_traces=2, hybrid=False)
    assert settings.top_p == DEFAULT_TOP_P
    counter = GenerationCounter(tiny_model, monkeypatch)
    cli = via_cli(capsys, tiny_model_path, index_dir, settings)  # samples 2 traces per query, stores them
    assert counter.rows == 2 * len(QUERIES) and len(ReasoningCache(_cache())) == 2 * len(QUERIES)
    assert via_api(tiny_model, index, settings) == cli
    assert via_eval(tiny_model, tiny_model_path, settings) == cli
    encoded = tiny_model.encode_query(QUERIES, max_new_tokens=TOKENS, num_traces=2, cache=ReasoningCache(_cache()))
    assert encoded.reasoning == cli[0]  # encode_query's top_p default is the CLI's
    assert counter.rows == 2 * len(QUERIES)  # nothing generated after the CLI
    assert via_serve(tiny_model, index, settings) == cli
    assert counter.rows == 2 * len(QUERIES) + 1  # the server's warm-up query alone


def test_settings_refuse_what_cannot_work():
    from t1.errors import T1Error

    for bad in (dict(reasoning="think"), dict(num_traces=0), dict(trace_fusion="max"), dict(top_p=0.0),
                dict(fusion="sum"), dict(fusion_weight=1.5), dict(hybrid=False, fusion="rrf")):
        with pytest.raises(T1Error):
            QuerySettings(**bad)
    assert QuerySettings(hybrid="rrf") == QuerySettings(hybrid=True, fusion="rrf")
    assert QuerySettings(reasoning="none", num_traces=4).traces == 1


def test_hooks_stream_each_trace_and_an_abandoned_row_is_never_cached(tiny_model, tmp_path):
    """What `t1 serve` hooks into the model's own cached generation: each row's pieces add up to
    its trace, a row whose client left stops early, and its cut trace is not stored."""
    from t1.generation.streaming import RowHooks

    cache, steps, pieces, gone = ReasoningCache(tmp_path), 40, ([], []), []

    def listener(row):
        def on_text(text):
            pieces[row].append(text)
            if row == 0 and len(pieces[0]) == 2:
                gone.append(True)  # the first client leaves after two pieces
        return on_text

    hooks = RowHooks([listener(0), listener(1)], [lambda: bool(gone), lambda: False])
    out = tiny_model.encode_query(QUERIES[:2], max_new_tokens=steps, cache=cache, hooks=hooks)
    full = tiny_model.encode_query(QUERIES[1:2], max_new_tokens=steps)
    assert out.reasoning[1] == full.reasoning[0] == "".join(pieces[1])
    assert len(pieces[0]) == 2 and len(tiny_model.tokenizer(out.reasoning[0])["input_ids"]) < steps / 2
    assert len(cache) == 1  # the finished row only
    again = RowHooks([listener(0), listener(1)], [lambda: False, lambda: False])
    pieces[1].clear()
    tiny_model.encode_query(QUERIES[1:2], max_new_tokens=steps, cache=cache, hooks=again.subset([1]))
    assert pieces[1] == [full.reasoning[0]]  # a cached trace arrives whole
