"""Reasoners (t1.reasoners): a writer other than T1 writes the trace, T1 embeds it. Driven here by
a scripted OpenAI-compatible endpoint on loopback (tests/writer_server.py) through every fault,
with the tiny model embedding; the real llama.cpp server is in test_reasoner_llamacpp.py."""

import json
import logging
import socket

import numpy as np
import pytest
from writer_server import WriterServer

from t1 import T1Error
from t1.cli import main
from t1.reasoners import ReasonerError, make_reasoner, split_thinking
from t1.reasoning_cache import ReasoningCache

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = 24


@pytest.fixture
def writer():
    server = WriterServer()
    yield server
    server.close()


@pytest.fixture
def reasoned(tiny_model):
    """The tiny model with a reasoner set by the test; back to writing its own traces afterwards."""
    yield tiny_model
    tiny_model.use_reasoner(None)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_written_trace_is_embedded_exactly_as_the_same_trace_given(reasoned, writer):
    reasoned.use_reasoner(writer.url, retries=0)
    queries = ["why do leaves fall", "prime proof"]
    out = reasoned.encode_query(queries, max_new_tokens=TOKENS)
    assert out.reasoning == ["trace for: why do leaves fall", "trace for: prime proof"]
    assert out.ended == [True, True]  # finish_reason "stop": the writer ended them
    given = reasoned.encode_query(queries, reasoning=out.reasoning, max_new_tokens=TOKENS)
    np.testing.assert_allclose(out.embeddings, given.embeddings, atol=1e-6)  # one ulp: numpy vs torch normalisation
    # requests run concurrently: pick the first query's, whichever arrived first
    body = next(r["body"] for r in writer.requests if r["body"]["messages"][-1]["content"].endswith("why do leaves fall"))
    assert body["model"] == "writer-1"  # the first model the endpoint lists
    assert body["temperature"] == 0.0 and body["max_tokens"] == TOKENS and "seed" not in body
    assert body["messages"][0]["role"] == "system" and "Query: why do leaves fall" in body["messages"][1]["content"]


def test_the_same_trace_by_file_by_request_field_and_by_reasoner_ranks_the_same(tiny_model_path, writer, tmp_path,
                                                                                capsys):
    index = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", "examples/corpus.jsonl", "--out", str(index),
                 "--device", "cpu"]) == 0
    common = ["--dataset", "examples", "--split", "test", "--retriever", f"t1:{tiny_model_path}", "--device", "cpu",
              "--max-new-tokens", str(TOKENS), "-k", "10", "--no-progress"]
    assert main(["eval", *common, "--reasoner", writer.url, "--out", str(tmp_path / "written")]) == 0
    traces = {json.loads(line)["id"]: json.loads(line)["reasoning"]
              for line in (tmp_path / "written" / "reasoning.jsonl").read_text().splitlines()}
    assert all(t.startswith("trace for: ") for t in traces.values()) and len(traces) == 16
    run_info = json.loads((tmp_path / "written" / "run.json").read_text())
    assert '"model": "writer-1"' in json.dumps(run_info) and writer.url in json.dumps(run_info)  # who wrote them
    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"id": q, "reasoning": t}) + "\n" for q, t in traces.items()))
    assert main(["eval", *common, "--reasoning", str(given), "--out", str(tmp_path / "given")]) == 0
    run = lambda name: (tmp_path / name / "run.trec").read_text()  # noqa: E731
    assert run("written").replace("written", "") == run("given").replace("given", "")

    from fastapi.testclient import TestClient

    from t1 import T1Model
    from t1.index import Index
    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    first = next(iter(traces))
    query = next(json.loads(line)["text"] for line in open("examples/queries.jsonl") if json.loads(line)["_id"] == first)
    engine = Engine(model, Index.open(index, model=model))
    with TestClient(create_app(engine, ServeSettings(max_new_tokens=TOKENS))) as client:
        by_field = client.post("/search", json={"query": query, "k": 10, "reasoning": "given", "hybrid": False,
                                                "reasoning_text": traces[first]}).json()["results"][0]["hits"]
    served = [line.split()[2] for line in run("given").splitlines() if line.split()[0] == first]
    assert [h["id"] for h in by_field] == served


def test_a_refused_connection_is_one_line_naming_the_endpoint(tiny_model_path, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    code = main(["eval", "--dataset", "examples", "--split", "test", "--retriever", f"t1:{tiny_model_path}",
                 "--device", "cpu", "--max-new-tokens", "4", "--reasoner", url, "--reasoner-model", "m",
                 "--reasoner-retries", "1", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"t1: error: reasoner {url}/chat/completions: cannot connect "
                                            "(Connection refused) after 2 tries")


def test_500_then_200_and_429_with_retry_after_are_retried(reasoned, writer):
    reasoned.use_reasoner(writer.url, retries=2)
    out = reasoned.encode_query(["[fail-once] now", "[limit-once] now"], max_new_tokens=TOKENS)
    assert out.reasoning == ["trace for: [fail-once] now", "trace for: [limit-once] now"]
    assert sorted(writer.asked()).count(writer.asked()[0]) == 2 and len(writer.requests) == 4


def test_retries_are_bounded_and_the_error_names_the_status(reasoned, writer):
    reasoned.use_reasoner(writer.url, retries=0)
    with pytest.raises(ReasonerError, match=r"/chat/completions: HTTP 500: the model crashed after 1 try$"):
        reasoned.encode_query(["[fail-once] again"], max_new_tokens=TOKENS)


def test_a_stalled_endpoint_times_out_with_one_line(reasoned, writer):
    reasoned.use_reasoner(writer.url, retries=1, timeout=0.3)
    with pytest.raises(ReasonerError, match=r"no answer within 0.3 s after 2 tries$"):
        reasoned.encode_query(["[stall] here"], max_new_tokens=TOKENS)


@pytest.mark.parametrize("query, problem", [("[garbage]", "malformed answer (not JSON): <html>not json</html>"),
                                            ("[no-choices]", "malformed answer (no choices[0].message.content)"),
                                            ("[empty]", "empty answer (finish_reason 'stop')")])
def test_a_malformed_or_empty_answer_is_an_error_never_an_empty_trace(reasoned, writer, query, problem):
    reasoned.use_reasoner(writer.url, retries=0)
    with pytest.raises(ReasonerError) as error:
        reasoned.encode_query([query], max_new_tokens=TOKENS)
    assert str(error.value).startswith(f"reasoner {writer.url}/chat/completions: {problem}")


def test_what_arrived_before_a_failure_is_cached_and_a_rerun_asks_only_for_the_rest(reasoned, writer, tmp_path):
    cache = ReasoningCache(tmp_path)
    reasoned.use_reasoner(writer.url, retries=0, concurrency=1)
    queries = ["first one", "second one", "[garbage] third", "fourth one"]
    with pytest.raises(ReasonerError, match="not JSON"):
        reasoned.encode_query(queries, max_new_tokens=TOKENS, cache=cache, query_ids=["a", "b", "c", "d"])
    assert [m.rsplit("Query: ")[-1] for m in writer.asked()] == queries[:3]  # nothing asked after the failure
    writer.broken = False
    writer.requests.clear()
    out = reasoned.encode_query(queries, max_new_tokens=TOKENS, cache=cache, query_ids=["a", "b", "c", "d"])
    assert [m.rsplit("Query: ")[-1] for m in writer.asked()] == ["[garbage] third", "fourth one"]
    assert out.reasoning[0] == "trace for: first one" and out.reasoning[2] == "trace for: [garbage] third"
    writer.requests.clear()
    reasoned.encode_query(queries, max_new_tokens=TOKENS, cache=cache)
    assert writer.requests == []  # all cached
    other = WriterServer(model="writer-2")  # another writer never hits them
    try:
        reasoned.use_reasoner(other.url, retries=0)
        reasoned.encode_query(queries[:1], max_new_tokens=TOKENS, cache=cache)
        assert len(other.requests) == 1
    finally:
        other.close()
    reasoned.use_reasoner(writer.url, retries=0, prompt="bright")  # nor does another prompt
    reasoned.encode_query(queries[:1], max_new_tokens=TOKENS, cache=cache)
    assert len(writer.requests) == 1 and writer.asked()[0].startswith("first one\n\nInstructions:")


def test_requests_run_concurrently_up_to_the_setting(reasoned, writer):
    reasoned.use_reasoner(writer.url, concurrency=3)
    out = reasoned.encode_query([f"[slow] {i}" for i in range(9)], max_new_tokens=TOKENS)
    assert out.reasoning == [f"trace for: [slow] {i}" for i in range(9)]  # in query order, whatever the arrival
    assert writer.most_in_flight == 3


@pytest.mark.parametrize("thinking, inline, field", [("answer", "inline answer", "field answer"),
                                                     ("thinking", "inline thoughts", "field thoughts"),
                                                     ("both", "inline thoughts\n\ninline answer",
                                                      "field thoughts\n\nfield answer")])
def test_a_reasoning_models_thinking_is_used_as_chosen(reasoned, writer, thinking, inline, field):
    reasoned.use_reasoner(writer.url, thinking=thinking)
    out = reasoned.encode_query(["[think-inline]", "[think-field]"], max_new_tokens=TOKENS)
    assert out.reasoning == [inline, field]


def test_split_thinking_handles_an_opening_tag_written_by_the_template_and_a_cut_block():
    assert split_thinking("thoughts</think>\nanswer") == ("answer", "thoughts")
    assert split_thinking("<think>cut short by the limit") == ("", "cut short by the limit")
    assert split_thinking("plain") == ("plain", "")


def test_a_trace_longer_than_the_budget_is_cut_and_counted(reasoned, writer, caplog):
    reasoned.use_reasoner(writer.url, max_tokens=500)
    with caplog.at_level(logging.WARNING, logger="t1.model"):
        out = reasoned.encode_query(["[long] one", "short one"], max_new_tokens=TOKENS)
    assert writer.requests[0]["body"]["max_tokens"] == 500
    assert out.ended[0] is False and out.ended[1] is True  # finish_reason "length": cut by the writer's limit
    assert f"1 of 2 reasoning traces cut to max_new_tokens={TOKENS}" in caplog.text
    whole = reasoned.encode_query(["[long] one"], reasoning=[out.reasoning[0]], max_new_tokens=TOKENS)
    np.testing.assert_allclose(out.embeddings[:1], whole.embeddings, atol=1e-6)


def test_the_api_key_comes_from_the_environment_and_is_never_printed(reasoned, writer, monkeypatch, tiny_model_path,
                                                                     tmp_path, capsys):
    reasoned.use_reasoner(writer.url, retries=0)
    with pytest.raises(ReasonerError, match="HTTP 401: Incorrect API key provided") as error:
        reasoned.encode_query(["[key-needed]"], max_new_tokens=TOKENS)
    monkeypatch.setenv("MY_WRITER_KEY", "sekrit-key")
    reasoned.use_reasoner(writer.url, api_key_env="MY_WRITER_KEY")
    assert reasoned.encode_query(["[key-needed]"], max_new_tokens=TOKENS).reasoning == ["trace for: [key-needed]"]
    assert writer.requests[-1]["headers"]["Authorization"] == "Bearer sekrit-key"
    assert "sekrit" not in repr(reasoned.reasoner) and "sekrit" not in json.dumps(reasoned.reasoner.identity())
    code = main(["eval", "--dataset", "examples", "--split", "test", "--retriever", f"t1:{tiny_model_path}",
                 "--device", "cpu", "--max-new-tokens", "4", "--reasoner", writer.url, "--reasoner-key-env", "NONE_SET",
                 "--no-progress", "--out", str(tmp_path / "run"), "--query-instruction", "[key-needed]"])
    assert code == 0  # the instruction is not the query: no key needed
    assert "sekrit" not in capsys.readouterr().err + str(error.value)


def test_several_traces_are_sampled_with_a_seed_each_and_fused(reasoned, writer):
    reasoned.use_reasoner(writer.url)
    out = reasoned.encode_query(["leaves"], num_traces=3, temperature=0.7, top_p=0.9, max_new_tokens=TOKENS)
    bodies = [r["body"] for r in writer.requests]
    assert sorted(b["seed"] for b in bodies) == [0, 1, 2] and {b["temperature"] for b in bodies} == {0.7}
    assert out.traces == [["trace for: leaves"] * 3] and out.trace_embeddings.shape[:2] == (1, 3)


def test_traces_export_names_the_writer(reasoned, writer, tmp_path, capsys):
    cache = ReasoningCache(tmp_path / "cache")
    reasoned.use_reasoner(writer.url, prompt="hyde")
    reasoned.encode_query(["why is the sky blue"], max_new_tokens=TOKENS, cache=cache, query_ids=["q7"])
    assert main(["traces", "export", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "t.jsonl")]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert record["id"] == "q7" and record["reasoning"] == ("trace for: Write a short passage that answers the question.\n"
                                                              "Question: why is the sky blue\nPassage:")
    assert record["writer"]["kind"] == "openai" and record["writer"]["model"] == "writer-1"
    assert record["writer"]["source"] == writer.url and record["writer"]["prompt"]["user"].startswith("Write a short")


def test_reasoner_settings_are_checked_before_any_work(tiny_model_path, tmp_path, writer, capsys):
    from t1 import T1Model

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"reasoner": {"source": writer.url, "prompt": "bright", "concurrency": 2}}))
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", reasoner={"source": writer.url, "prompt": "bright"})
    assert model.reasoner.prompt.name == "bright"
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("system: Be brief.\nuser: 'Translate {query} to {lang}'\n")
    cases = [
        (["--reasoner", "ftp://x"], "reasoner 'ftp://x': use an OpenAI-compatible URL"),
        (["--reasoner", writer.url, "--reasoner-prompt", "nope"], "reasoner prompt 'nope': not one of t1, bright, hyde"),
        (["--reasoner", writer.url, "--reasoner-prompt", str(prompt)], "unknown field {lang} in user"),
        (["--reasoner", "missing.gguf"], "reasoner missing.gguf: no such GGUF file"),
        (["--reasoner-model", "qwen3"], "reasoner options (model) need a reasoner"),
        (["--reasoner", "hf:x", "--reasoner-concurrency", "2"], "'concurrency' does not apply to a hf reasoner"),
        (["--reasoner", writer.url, "--reasoner-thinking", "all"], "argument --reasoner-thinking: invalid choice"),
    ]
    for flags, message in cases:
        code = main(["search", "--index", str(tmp_path / "none"), "--model", str(tiny_model_path), "hi", *flags])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (flags, err)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"reasoner": {"source": writer.url, "temperature": 2}}))
    with pytest.raises(T1Error, match="'temperature' does not apply to a openai reasoner"):
        from t1.settings import load_settings

        load_settings(bad)


def test_a_made_reasoner_is_reused_and_t1_itself_is_none(writer):
    reasoner = make_reasoner(writer.url, model="m")
    assert make_reasoner(reasoner) is reasoner and make_reasoner("t1") is None and make_reasoner(None) is None
    assert reasoner.name == f"openai {writer.url} m"


def test_a_hugging_face_writer_batches_samples_and_caches(tiny_model, tiny_model_path, tmp_path):
    from t1.reasoners.local import HFReasoner

    cache = ReasoningCache(tmp_path)
    reasoner = HFReasoner(str(tiny_model_path), device="cpu", batch_size=2, prompt="hyde")
    with pytest.raises(ReasonerError, match=r"^reasoner hf:.*: empty answer$"):  # greedy, it writes only newlines
        reasoner.write(["cell protein"], None, max_tokens=6)
    queries = ["cell protein", "river rock", "prime theorem"]
    sampled = dict(max_tokens=6, samples=2, temperature=3.0, top_p=1.0)
    traces = reasoner.write(queries, None, cache=cache, **sampled)
    assert len(traces) == 6 and all(t.text for t in traces) and reasoner.stats.asked == 6
    assert len({t.text for t in traces}) > 1
    again = HFReasoner(str(tiny_model_path), device="cpu", batch_size=2, prompt="hyde").write(queries, None, **sampled)
    assert again == traces  # seeded: the same samples without the cache
    assert reasoner.write(queries, None, cache=cache, **sampled) == traces and reasoner.stats.asked == 0
    tiny_model.use_reasoner(reasoner)
    try:
        out = tiny_model.encode_query(queries[:1], num_traces=2, temperature=3.0, top_p=1.0, max_new_tokens=6,
                                      cache=cache)
    finally:
        tiny_model.use_reasoner(None)
    assert out.traces == [[traces[0].text, traces[1].text]] and reasoner.stats.asked == 0


def test_serve_asks_the_writer_outside_the_batch_so_no_request_waits_behind_another(tiny_model_path, writer,
                                                                                     tmp_path):
    import threading
    import time

    from fastapi.testclient import TestClient

    from t1 import T1Model
    from t1.index import Index
    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    index = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", "examples/corpus.jsonl", "--out", str(index),
                 "--device", "cpu"]) == 0
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", reasoner={"source": writer.url, "retries": 0})
    engine = Engine(model, Index.open(index, model=model), reasoning_cache=tmp_path / "cache")
    done = {}
    with TestClient(create_app(engine, ServeSettings(max_new_tokens=TOKENS, max_wait_ms=1))) as client:
        def ask(name, query):
            response = client.post("/search", json={"query": query, "k": 3, "hybrid": False})
            done[name] = (time.perf_counter(), response.json())

        slow = threading.Thread(target=ask, args=("slow", "[slower] leaves"))
        slow.start()
        time.sleep(0.3)
        ask("fast", "rivers")
        slow.join()
        assert done["fast"][0] < done["slow"][0]  # answered while the other's trace was still being written
        result = done["slow"][1]
        assert result["mode"] == "generate" and result["results"][0]["reasoning"] == "trace for: [slower] leaves"
        hits = Index.open(index, model=model).search_queries(model, ["[slower] leaves"], k=3, hybrid=False,
                                                             reasoning=["trace for: [slower] leaves"],
                                                             max_new_tokens=TOKENS)[0][0]
        assert [h["id"] for h in result["results"][0]["hits"]] == [h.id for h in hits]
        before = len(writer.requests)
        assert client.post("/search", json={"query": "rivers", "k": 3}).status_code == 200
        assert len(writer.requests) == before  # served from the reasoning cache
        failed = client.post("/search", json={"query": "[garbage] here", "k": 3})
        assert failed.status_code == 502 and failed.json()["detail"].startswith(f"reasoner {writer.url}")


def test_langchain_and_llamaindex_adapters_take_a_reasoner(tiny_model_path, writer):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from t1.integrations.langchain import T1Embeddings
    from t1.integrations.llamaindex import T1Embedding

    lc = T1Embeddings(str(tiny_model_path), device="cpu", reasoner=writer.url, max_new_tokens=TOKENS)
    vector = lc.embed_query("why do leaves fall")
    assert lc.last_reasoning == "trace for: why do leaves fall"
    given = lc.model.encode_query("why do leaves fall", reasoning=["trace for: why do leaves fall"],
                                  max_new_tokens=TOKENS).embeddings
    np.testing.assert_allclose(vector, given, atol=1e-6)
    li = T1Embedding(str(tiny_model_path), device="cpu", settings={"reasoner": {"source": writer.url,
                                                                                 "prompt": "hyde"}})
    li.get_query_embedding("why do leaves fall")
    assert writer.asked()[-1].startswith("Write a short passage")
