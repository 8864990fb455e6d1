"""The reasoning cache: hits only for the same model, prompt and decoding settings; survives a
killed process; exports traces that replay in mode `given`."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
from tiny_model import GenerationCounter

from t1 import T1Model
from t1.cli import main
from t1.evaluation.datasets import load_reasoning_file
from t1.query_encoding import QueryEncoder
from t1.reasoning_cache import ReasoningCache

QUERIES = ["why do cells divide", "what is a prime", "river rock climate", "solar carbon plant"]


def test_key_changes_with_every_part():
    base = ReasoningCache.key("fp", [1, 2, 3], {"max_new_tokens": 8, "do_sample": False})
    assert base == ReasoningCache.key("fp", [1, 2, 3], {"do_sample": False, "max_new_tokens": 8})
    others = [ReasoningCache.key("fp2", [1, 2, 3], {"max_new_tokens": 8, "do_sample": False}),
              ReasoningCache.key("fp", [1, 2, 4], {"max_new_tokens": 8, "do_sample": False}),
              ReasoningCache.key("fp", [1, 2, 3], {"max_new_tokens": 9, "do_sample": False}),
              ReasoningCache.key("fp", [1, 2, 3], {"max_new_tokens": 8, "do_sample": True}),
              ReasoningCache.key("fp", [1, 2, 3], {"max_new_tokens": 8, "do_sample": False}, sample=1)]
    assert len({base, *others}) == 6


def test_cached_traces_are_reused_only_for_the_same_settings(tiny_model, tmp_path, monkeypatch):
    cache = ReasoningCache(tmp_path)
    counter = GenerationCounter(tiny_model, monkeypatch)
    first = tiny_model.encode_query(QUERIES, max_new_tokens=5, cache=cache, query_ids=["a", "b", "c", "d"])
    assert counter.rows == 4 and len(cache) == 4
    again = tiny_model.encode_query(QUERIES, max_new_tokens=5, cache=cache)
    assert counter.rows == 4  # nothing generated
    assert again.reasoning == first.reasoning and again.ended == first.ended
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    tiny_model.encode_query(QUERIES[:2] + ["a new query"], max_new_tokens=5, cache=cache)
    assert counter.rows == 5  # only the new query
    tiny_model.encode_query(QUERIES[:1], max_new_tokens=6, cache=cache)  # another decoding setting
    tiny_model.encode_query(QUERIES[:1], max_new_tokens=5, instruction="Find code", cache=cache)  # another instruction
    assert counter.rows == 7


def test_cache_never_serves_another_model(tiny_model_path, tmp_path, monkeypatch):
    cache = ReasoningCache(tmp_path)
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    model.encode_query(QUERIES[:2], max_new_tokens=4, cache=cache)
    with torch.no_grad():
        model.backbone.get_input_embeddings().weight[7] += 0.5  # another model (other fingerprint)
    calls = generated_rows(monkeypatch)
    model.encode_query(QUERIES[:2], max_new_tokens=4, cache=cache)
    assert calls == [2] and len(cache) == 4


def test_cache_keeps_finished_batches_when_the_process_is_killed(tiny_model_path, tmp_path, monkeypatch):
    script = textwrap.dedent(f"""
        import os, signal
        from t1 import T1Model
        from t1.reasoning_cache import ReasoningCache
        cache = ReasoningCache({str(tmp_path)!r})
        put, calls = cache.put, []
        def put_then_die(rows):
            put(rows)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        cache.put = put_then_die
        model = T1Model.from_pretrained({str(tiny_model_path)!r}, device="cpu")
        model.encode_query({QUERIES!r}, max_new_tokens=4, batch_size=1, cache=cache)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    cache = ReasoningCache(tmp_path)
    assert len(cache) == 2  # the two finished batches, whole
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    calls = generated_rows(monkeypatch)
    model.encode_query(QUERIES, max_new_tokens=4, batch_size=1, cache=cache)
    assert calls == [2] and len(cache) == 4


def test_export_replays_in_mode_given(tiny_model, tmp_path, capsys):
    cache = ReasoningCache(tmp_path / "cache")
    generated = tiny_model.encode_query(QUERIES, max_new_tokens=5, cache=cache, query_ids=["a", "b", "c", "d"])
    out = tmp_path / "traces.jsonl"
    assert main(["traces", "export", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r["query"] for r in rows} == dict(zip("abcd", QUERIES))
    given = load_reasoning_file(out)
    replayed = tiny_model.encode_query(QUERIES, reasoning=[given[q] for q in "abcd"])
    assert (replayed.embeddings * generated.embeddings).sum(axis=1).min() >= 0.999
    assert main(["traces", "export", "--cache", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no reasoning cache" in capsys.readouterr().err


def test_several_traces_per_query_fuse_and_cache_per_sample(tiny_model, tmp_path, monkeypatch):
    cache = ReasoningCache(tmp_path)
    counter = GenerationCounter(tiny_model, monkeypatch)
    torch.manual_seed(0)
    out = tiny_model.encode_query(QUERIES[:2], max_new_tokens=4, num_traces=3, temperature=1.5, cache=cache)
    assert out.trace_embeddings.shape == (2, 3, tiny_model.dim) and [len(t) for t in out.traces] == [3, 3]
    mean = out.trace_embeddings.mean(axis=1)
    np.testing.assert_allclose(out.embeddings, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    assert out.reasoning == [t[0] for t in out.traces]
    assert not np.allclose(out.trace_embeddings[0, 0], out.trace_embeddings[0, 1])  # sampled, not greedy copies
    assert counter.rows == 6 and len(cache) == 6  # one entry per sample
    again = tiny_model.encode_query(QUERIES[:2], max_new_tokens=4, num_traces=3, temperature=1.5, cache=cache)
    assert counter.rows == 6 and again.traces == out.traces
    one = tiny_model.encode_query(QUERIES[0], max_new_tokens=4, num_traces=2, temperature=1.5)
    assert one.trace_embeddings.shape == (2, tiny_model.dim) and len(one.traces) == 2


def test_search_with_several_traces(tiny_model_path, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(["cell protein gene", "river water rock", "prime integer proof"])))
    out = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out)]) == 0
    capsys.readouterr()
    for fusion in ("mean", "rrf"):
        assert main(["search", "--index", str(out), "--traces", "3", "--trace-fusion", fusion, "--max-new-tokens",
                     "3", "--json", "-k", "2", "river"]) == 0
        hits = json.loads(capsys.readouterr().out)[0]["hits"]
        assert len(hits) == 2 and len({h["id"] for h in hits}) == 2
    assert main(["search", "--index", str(out), "--traces", "0", "river"]) == 2
    assert "--traces must be at least 1" in capsys.readouterr().err


def test_adaptive_reasoning_reasons_only_when_the_plain_embedding_is_unsure(tiny_model, tmp_path, monkeypatch):
    from t1.data import Document
    from t1.index import Index

    docs = [Document(f"d{i}", t) for i, t in enumerate(["cell protein gene", "river water rock", "prime integer proof",
                                                           "solar carbon plant", "market price robot"])]
    index = Index.build(tiny_model, docs, tmp_path / "idx")
    counter = GenerationCounter(tiny_model, monkeypatch)
    plain = index.search(tiny_model.encode_query(QUERIES, reasoning="none").embeddings, k=2)
    gaps = [h[0].score - h[1].score for h in plain]
    margin = sorted(gaps)[1] + 1e-6  # the two least confident queries reason
    hits, reasoning = index.search_queries(tiny_model, QUERIES, k=3, reasoning="auto", margin=margin,
                                           max_new_tokens=3)
    unsure = {i for i, g in enumerate(gaps) if g < margin}
    assert len(unsure) == 2 and counter.rows == 2
    assert {i for i, r in enumerate(reasoning) if r} <= unsure
    for i in set(range(4)) - unsure:  # confident queries keep their plain ranking
        assert [h.id for h in hits[i]] == [h.id for h in index.search(
            tiny_model.encode_query(QUERIES[i], reasoning="none").embeddings, k=3)[0]]
    never, _ = index.search_queries(tiny_model, QUERIES, k=3, reasoning="auto", margin=-1.0)
    assert counter.rows == 2  # a negative margin never reasons
    always, _ = index.search_queries(tiny_model, QUERIES, k=3, reasoning="auto", margin=10.0, max_new_tokens=3)
    assert counter.rows == 6 and len(always) == 4 and len(never) == 4


def generated_rows(monkeypatch) -> list[int]:
    """The rows of each call that really generates traces (the cache's misses), in order."""
    calls, original = [], QueryEncoder.rollouts
    monkeypatch.setattr(QueryEncoder, "rollouts",
                        lambda self, prompts, *a, **k: calls.append(len(prompts)) or original(self, prompts, *a, **k))
    return calls
