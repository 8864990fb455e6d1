"""The embedding APIs of `t1 serve` (`/v1/embeddings`, `/api/embed`) through the clients RAG
stacks use (the `openai` client, LangChain's `OpenAIEmbeddings`, plain HTTP for Ollama) against
a real server process on loopback with the tiny model: the vectors are the library's, and
mistakes get each API's error status and shape."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from t1.cli import main  # noqa: E402
from t1.index import Index  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "s3cret-key"
NAME = "t1-tiny"
TOKENS = 6  # reasoning length: the tiny model never ends a trace by itself (greedy: deterministic)
DOCS = ["cell protein gene plant", "river water rock climate", "prime integer theorem proof"]
QUERIES = ["water rock", "prime proof", "plant cell energy"]


@pytest.fixture(scope="module")
def index_dir(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings-api")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(folder / "idx"),
                 "--device", "cpu", "--no-bm25"]) == 0
    return folder / "idx"


class Server:
    """`python -m t1 serve` on a free loopback port, with an API key; stopped with SIGTERM."""

    def __init__(self, index_dir, *extra):
        env = {**os.environ, "T1_API_KEY": KEY, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "t1", "serve", "--index", str(index_dir), "--port", "0", "--device", "cpu",
               "--max-new-tokens", str(TOKENS), "--served-model-name", NAME, *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, self.proc.stderr.read()
        self.url = line.split("listening on ")[1].split()[0]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        return self.proc.stderr.read()


@pytest.fixture(scope="module")
def server(index_dir):
    server = Server(index_dir)
    yield server
    err = server.stop()
    assert "Traceback" not in err and '"POST /v1/embeddings" 200' in err and '"POST /api/embed" 200' in err


@pytest.fixture(scope="module")
def reference(tiny_model, index_dir):
    """What the library gives: documents as the index embeds them, queries reasoning first."""
    manifest = Index.open(index_dir).manifest
    docs = tiny_model.encode_document(DOCS, instruction=manifest["instruction"], max_length=manifest["max_length"])
    queries = tiny_model.encode_query(QUERIES, reasoning="generate", max_new_tokens=TOKENS)
    tokens = [len(tiny_model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in DOCS]
    return {"documents": docs, "queries": queries, "document_tokens": sum(tokens)}


def assert_same(got, want):
    got, want = np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


# ---------------------------------------------------------------- the openai client
def test_openai_client_embeds_documents_float_and_base64(client, reference):
    as_float = client.embeddings.create(model=NAME, input=DOCS, encoding_format="float")
    assert as_float.object == "list" and as_float.model == NAME
    assert [d.index for d in as_float.data] == [0, 1, 2] and all(d.object == "embedding" for d in as_float.data)
    assert_same([d.embedding for d in as_float.data], reference["documents"])
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == reference["document_tokens"]
    assert all(not (d.model_extra or {}).get("t1") for d in as_float.data)  # documents do not reason

    as_base64 = client.embeddings.create(model=NAME, input=DOCS)  # the client asks for base64 and decodes it
    assert_same([d.embedding for d in as_base64.data], reference["documents"])
    one = client.embeddings.create(model=NAME, input=DOCS[1], dimensions=64, user="someone")
    assert len(one.data) == 1 and one.usage.prompt_tokens > 0
    assert_same([one.data[0].embedding], reference["documents"][1:2])


def test_openai_client_embeds_queries_with_the_alias_or_input_type(client, reference):
    want = reference["queries"]
    by_alias = client.embeddings.create(model=NAME + "-query", input=QUERIES, encoding_format="float")
    assert by_alias.model == NAME + "-query"
    assert_same([d.embedding for d in by_alias.data], want.embeddings)
    assert [d.model_extra["t1"]["reasoning"] for d in by_alias.data] == want.reasoning
    assert all(want.reasoning)
    for input_type in ("query", "search_query"):
        typed = client.embeddings.create(model=NAME, input=QUERIES, extra_body={"input_type": input_type})
        assert_same([d.embedding for d in typed.data], want.embeddings)
    passage = client.embeddings.create(model=NAME, input=DOCS, extra_body={"input_type": "passage"})
    assert_same([d.embedding for d in passage.data], reference["documents"])


def test_raw_base64_is_little_endian_float32(server, reference):
    r = httpx.post(server.url + "/v1/embeddings", json={"model": NAME, "input": DOCS[0], "encoding_format": "base64"},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    vector = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert_same([vector], reference["documents"][:1])


def test_models_are_listed_in_openais_shape(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME, NAME + "-query"] and all(m.object == "model" for m in models.data)
    assert client.models.retrieve(NAME + "-query").id == NAME + "-query"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    paths = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": KEY}).json()["paths"]
    assert {"/v1/embeddings", "/v1/models", "/api/embed", "/api/tags", "/encode"} <= set(paths)
    assert "requestBody" in paths["/api/embed"]["post"]


# ---------------------------------------------------------------- LangChain and Ollama
def test_langchain_openai_embeddings(server, reference):
    from langchain_openai import OpenAIEmbeddings

    common = dict(base_url=server.url + "/v1", api_key=KEY, check_embedding_ctx_length=False, max_retries=0)
    documents = OpenAIEmbeddings(model=NAME, **common)
    queries = OpenAIEmbeddings(model=NAME + "-query", **common)
    assert_same(documents.embed_documents(DOCS), reference["documents"])
    assert_same([queries.embed_query(q) for q in QUERIES[:1]], reference["queries"].embeddings[:1])


def test_ollama_embed_over_plain_http(server, reference, tiny_model):
    headers = {"Authorization": f"Bearer {KEY}"}
    docs = httpx.post(server.url + "/api/embed", json={"model": NAME, "input": DOCS, "truncate": True,
                                                       "options": {"num_ctx": 512}, "keep_alive": "5m"},
                      headers=headers)
    assert docs.status_code == 200, docs.text
    body = docs.json()
    assert body["model"] == NAME and body["prompt_eval_count"] == reference["document_tokens"]
    assert body["total_duration"] > 0 and body["load_duration"] == 0
    assert_same(body["embeddings"], reference["documents"])
    # `curl -d` sends a form's Content-Type: Ollama reads the body as JSON all the same
    form = json.dumps({"model": NAME + "-query:latest", "input": QUERIES})
    queries = httpx.post(server.url + "/api/embed", content=form,
                         headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}, timeout=60).json()
    assert_same(queries["embeddings"], reference["queries"].embeddings)
    assert queries["t1"]["reasoning"] == reference["queries"].reasoning
    tags = httpx.get(server.url + "/api/tags", headers=headers).json()
    assert [m["name"] for m in tags["models"]] == [NAME + ":latest", NAME + "-query:latest"]
    assert tags["models"][0]["digest"] == tiny_model.fingerprint()


# ---------------------------------------------------------------- errors
def openai_error(response, status, param=None, code=None, kind="invalid_request_error"):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind and error["param"] == param and error["code"] == code
    assert isinstance(error["message"], str) and "\n" not in error["message"]
    return error["message"]


@pytest.mark.parametrize("body, status, param, code, message", [
    ({"model": NAME, "input": []}, 400, "input", None, "input: give at least one"),
    ({"model": NAME, "input": [1, 2, 3]}, 400, "input", None, "token ids are not accepted"),
    ({"model": NAME, "input": [[1, 2], [3]]}, 400, "input", None, "token ids are not accepted"),
    ({"model": NAME, "input": ["ok", "  "]}, 400, "input", None, "input[1] is empty"),
    ({"model": NAME, "input": 5}, 400, "input", None, "input: expected a string or a list of strings"),
    ({"model": "text-embedding-3-small", "input": "x"}, 404, "model", "model_not_found", "does not exist here"),
    ({"input": "x"}, 400, "model", None, "missing field 'model'"),
    ({"model": NAME, "input": "x", "dimensions": 32}, 400, "dimensions", None, "embeds in 64 dimensions"),
    ({"model": NAME, "input": "x", "encoding_format": "int8"}, 400, "encoding_format", None, "encoding_format"),
    ({"model": NAME, "input": "x", "input_type": "clustering"}, 400, "input_type", None, "input_type"),
    ({"model": NAME + "-query", "input": "x", "input_type": "document"}, 400, "input_type", None, "contradicts"),
    ({"model": NAME, "input": "x", "top_k": 3}, 400, "top_k", None, "unknown field 'top_k'"),
    ({"model": NAME, "input": ["a"] * 65}, 400, "input", None, "more than the limit of 64"),
])
def test_bad_requests_get_openais_error_shape(server, body, status, param, code, message):
    response = httpx.post(server.url + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert message in openai_error(response, status, param, code)


def test_errors_raise_the_openai_clients_exceptions(server, client):
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.embeddings.create(model=NAME, input="x")
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    missing = httpx.post(server.url + "/v1/embeddings", json={"model": NAME, "input": "x"})
    assert "missing API key" in openai_error(missing, 401, code="invalid_api_key", kind="authentication_error")
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=NAME, input=[])
    assert e.value.param == "input"
    with pytest.raises(openai.BadRequestError, match="token ids"):
        client.embeddings.create(model=NAME, input=[[1, 2, 3]])
    # t1's own routes keep their shape beside them
    assert httpx.post(server.url + "/encode", json={"documents": []}, headers={"X-API-Key": KEY}).json() == \
        {"detail": "documents: give at least one"}


def test_ollama_errors_are_ollamas_shape(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    for body, status, message in [({"model": "llama3", "input": "x"}, 404, "does not exist here"),
                                  ({"model": NAME, "input": []}, 400, "input: give at least one"),
                                  ({"model": NAME, "input": "x", "truncate": False}, 400, "truncate: false"),
                                  ({"model": NAME, "input": "x", "dimensions": 8}, 400, "embeds in 64 dimensions"),
                                  ({"model": NAME, "input": 7}, 400, "input: expected a string or a list of strings"),
                                  ({"input": "x"}, 400, "missing field 'model'"),
                                  ('{"model": "', 400, "malformed JSON")]:
        r = httpx.post(server.url + "/api/embed", headers=headers,
                       **({"content": body} if isinstance(body, str) else {"json": body}))
        assert r.status_code == status and set(r.json()) == {"error"} and message in r.json()["error"], r.text
    r = httpx.post(server.url + "/api/embed", json={"model": NAME, "input": "x"},
                   headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.json() == {"error": "wrong API key"}


# ---------------------------------------------------------------- batching
def test_concurrent_requests_of_both_apis_share_one_batch(index_dir, reference):
    """Four query requests (OpenAI, Ollama, /encode) in flight together run as one batch and get
    what each gets alone."""
    server = Server(index_dir, "--max-batch", "4", "--max-wait-ms", "10000", "--fixed-wait")
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        calls = [("/v1/embeddings", {"model": NAME + "-query", "input": QUERIES[0]}),
                 ("/v1/embeddings", {"model": NAME, "input": QUERIES[1], "input_type": "query"}),
                 ("/api/embed", {"model": NAME + "-query", "input": QUERIES[2]}),
                 ("/encode", {"queries": QUERIES[0], "reasoning": "generate"})]
        out = [None] * len(calls)

        def call(i):
            out[i] = httpx.post(server.url + calls[i][0], json=calls[i][1], headers=headers, timeout=60)

        before = httpx.get(server.url + "/info", headers=headers).json()["batching"]["batches_run"]
        start = time.perf_counter()
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert time.perf_counter() - start < 8  # the batch was full before the 10 s wait ran out
        assert all(r is not None and r.status_code == 200 for r in out), [r and r.text for r in out]
        assert httpx.get(server.url + "/info", headers=headers).json()["batching"]["batches_run"] == before + 1
        want = reference["queries"]
        got = [out[0].json()["data"][0]["embedding"], out[1].json()["data"][0]["embedding"],
               out[2].json()["embeddings"][0], out[3].json()["embeddings"][0]]
        assert_same(got, want.embeddings[[0, 1, 2, 0]])
        assert out[0].json()["data"][0]["t1"]["reasoning"] == want.reasoning[0] == out[3].json()["reasoning"][0]
    finally:
        err = server.stop()
    assert "Traceback" not in err
