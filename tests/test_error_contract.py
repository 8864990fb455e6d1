"""The second round of the error contract (issue #32): inputs are read as their format defines,
an output never overwrites an input, a model is identified by every weight, every bad value is
refused before work starts with a line naming it, the service bounds what clients hold, and a
read-only index is searchable. Each test goes through a real entry point (`t1.cli.main`, the
HTTP app, the Python API) and checks that what the user gave is intact afterwards."""

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_user_mistakes import fails, no_model  # noqa: F401 (fixture)

from t1.cli import main
from t1.data import load_corpus

SRC = Path(__file__).parents[1] / "src"


def snapshot(*paths: Path) -> dict:
    """sha256 of every file under `paths`: what a refused command must leave as it was."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def index_argv(model, corpus, out, *extra) -> list[str]:
    return ["index", "--model", str(model), "--device", "cpu", "--corpus", str(corpus), "--out", str(out),
            "--batch-size", "4", *map(str, extra)]


# ---------------------------------------------------------------- 1. inputs read as their format defines
def test_tsv_is_read_without_quoting(tmp_path, tiny_model_path, capsys):
    corpus = tmp_path / "c.tsv"
    corpus.write_text('id\ttext\na\t"Quoted" starts this passage\nb\tsecond\nc\tthird ends with a "quote"\n'
                      'd\ta "quote" inside\n')
    docs = load_corpus(corpus)
    assert [(d.id, d.text) for d in docs] == [("a", '"Quoted" starts this passage'), ("b", "second"),
                                             ("c", 'third ends with a "quote"'), ("d", 'a "quote" inside')]
    before = snapshot(corpus)
    assert main(index_argv(tiny_model_path, corpus, tmp_path / "idx", "--no-bm25")) == 0
    assert "indexed 4 documents" in capsys.readouterr().out  # was "indexed 2 documents"
    assert snapshot(corpus) == before


@pytest.mark.parametrize("name, content, message", [
    ("c.csv", "id,text,text\na,x,y\n", "c.csv:1: malformed CSV header (column 'text' appears twice)"),
    ("c.csv", "id,,text\na,x,y\n", "c.csv:1: malformed CSV header (column 2 has no name)"),
    ("c.tsv", "id\ttext\ttext\na\tx\ty\n", "c.tsv:1: malformed TSV header (column 'text' appears twice)"),
    ("c.jsonl", '{"_id": "a", "title": [], "text": "x"}\n', "c.jsonl:1: field 'title' must be a string, got a list"),
    ("c.jsonl", '{"_id": "a", "title": {}, "text": "x"}\n', "c.jsonl:1: field 'title' must be a string, got an object"),
    ("c.jsonl", '{"_id": "a", "title": 0, "text": "x"}\n', "c.jsonl:1: field 'title' must be a string, got int"),
    ("c.jsonl", '{"_id": "a", "title": false, "text": "x"}\n', "c.jsonl:1: field 'title' must be a string, got bool"),
])
def test_headers_and_titles_that_lost_data(tmp_path, capsys, no_model, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    fails(capsys, ["index", "--corpus", path, "--out", tmp_path / "idx"], message)
    assert not (tmp_path / "idx").exists()


def test_documents_without_text_are_indexed_with_one_warning(tmp_path, tiny_model_path, capsys, caplog):
    """BEIR Cranfield has two documents with neither title nor text (471 and 995): indexed and
    evaluated end to end, counted in one warning; `--skip-empty` leaves them out."""
    beir = tmp_path / "cranfield"
    (beir / "qrels").mkdir(parents=True)
    rows = [{"_id": str(i), "title": "", "text": f"flow over a wing number {i}"} for i in range(1, 6)]
    rows += [{"_id": "471", "title": "", "text": ""}, {"_id": "995", "text": "   "}]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "wing flow"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t3\t1\n")
    before = snapshot(beir)
    with caplog.at_level(logging.WARNING, logger="t1.data"):
        assert main(index_argv(tiny_model_path, beir / "corpus.jsonl", tmp_path / "idx")) == 0
    assert "indexed 7 documents" in capsys.readouterr().out
    warnings = [r.getMessage() for r in caplog.records if r.name == "t1.data"]
    assert len(warnings) == 1 and "2 documents have no text: 471, 995" in warnings[0]
    caplog.clear()
    assert main(index_argv(tiny_model_path, beir / "corpus.jsonl", tmp_path / "skipped", "--skip-empty")) == 0
    assert "indexed 5 documents" in capsys.readouterr().out
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", str(tiny_model_path), "--device", "cpu",
                 "--reasoning", "none", "--hybrid", "--json", "wing flow"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert hits and {h["id"] for h in hits} <= {r["_id"] for r in rows}
    out = tmp_path / "run"
    assert main(["eval", "--dataset", str(beir), "--retriever", f"hybrid:t1:{tiny_model_path}", "--reasoning",
                 "none", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())
    assert snapshot(beir) == before


# ---------------------------------------------------------------- 2. outputs never overwrite inputs
def test_outputs_that_would_overwrite_inputs(tmp_path, capsys, no_model, tiny_model_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (beir / "qrels" / "train.tsv").write_text("q1\td1\t1\n")
    cache = tmp_path / "idx"
    cache.mkdir()
    from t1.reasoning_cache import ReasoningCache

    ReasoningCache(cache).db.close()
    own = tmp_path / "own.jsonl"
    own.write_text('{"_id": "d1", "text": "x"}\n')
    before = snapshot(tmp_path)
    fails(capsys, ["data", "mine", beir, "--out", beir / "corpus.jsonl"],
          f"{beir / 'corpus.jsonl'}: is inside an input of this command ({beir}); write the output elsewhere")
    fails(capsys, ["traces", "export", "--cache", cache, "--out", cache / "reasoning-cache.sqlite"],
          f"{cache / 'reasoning-cache.sqlite'}: is an input of this command")
    fails(capsys, ["traces", "export", "--cache", cache, "--out", tmp_path], f"{tmp_path}: is a folder, not a file")
    fails(capsys, ["data", "distill", own, "--out", own], f"{own}: is an input of this command ({own})")
    fails(capsys, ["index", "--corpus", own, "--out", tmp_path],
          f"{tmp_path}: holds an input of this command ({own})")
    fails(capsys, ["train", "contrastive", "--model_name_or_path", tiny_model_path, "--train_file", own,
                   "--output_dir", tiny_model_path, "--max_steps", "1"],
          f"command line: output_dir {tiny_model_path}: is an input of this command ({tiny_model_path})")
    assert snapshot(tmp_path) == before


def test_index_folder_of_other_files_is_refused_not_cleaned(tmp_path, capsys, no_model):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "d1", "text": "x"}\n')
    out = tmp_path / "project"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "my-project", "version": "1.0"}\n')
    before = snapshot(out)
    fails(capsys, ["index", "--corpus", corpus, "--out", out],
          f"{out}/manifest.json: not a t1 index manifest (no 'format_version' and 'model')")
    (out / ".draft.tmp").write_text("mine")
    fails(capsys, ["index", "--corpus", corpus, "--out", out],
          f"{out}: holds files that are not a t1 index's (.draft.tmp); an index is written into a new or empty "
          "folder, or one t1 wrote")
    assert snapshot(out) == {**before, **snapshot(out / ".draft.tmp")}


def test_two_index_processes_into_one_folder(tmp_path, tiny_model_path):
    """The second `t1 index` into a folder a first one is writing is refused with the holder's
    pid; the index left is the first one's, whole, and verifies."""
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("".join(json.dumps({"_id": f"b{i}", "text": f"passage {i} " * 20}) + "\n" for i in range(3000)))
    small.write_text("".join(json.dumps({"_id": f"s{i}", "text": f"other {i}"}) + "\n" for i in range(10)))
    out = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(SRC)}

    def t1(corpus):
        return subprocess.Popen([sys.executable, "-m", "t1", *index_argv(tiny_model_path, corpus, out, "--shard-size",
                                                                          "100", "--no-bm25")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = t1(big)
    lock = out / ".t1-index.lock"
    while first.poll() is None and not (lock.is_file() and lock.read_text().strip()):
        pass
    assert first.poll() is None, first.communicate()
    second = t1(small)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2, err
    assert err.strip() == (f"t1: error: {out}: another t1 process (pid {first.pid}) is writing this index; wait for "
                           "it to end, or write to another folder")
    assert first.wait(timeout=600) == 0, first.communicate()
    assert main(["index", "--verify", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 3000 and manifest["complete"]
    assert lock.read_text() == ""  # released


# ---------------------------------------------------------------- 3. a model's identity is its weights
def test_one_edited_weight_anywhere_is_another_model(tmp_path, tiny_model_path, capsys):
    """The old fingerprint hashed every tensor's strided sample: an edit of an element it skipped
    (here element 1 of an MLP matrix) passed for the same model, and its index was searched."""
    import torch

    from t1 import T1Model

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"passage {i}"}) + "\n" for i in range(6)))
    index = tmp_path / "idx"
    assert main(index_argv(tiny_model_path, corpus, index, "--no-bm25")) == 0
    edited = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    name, weight = next((n, p) for n, p in edited.backbone.named_parameters() if "mlp" in n and p.numel() >= 8192)
    sampled = edited.sampled_fingerprint()
    with torch.no_grad():
        weight.view(-1)[1] += 1e-3
    assert edited.sampled_fingerprint() == sampled  # what the old fingerprint could not see
    edited.save_pretrained(tmp_path / "edited")
    capsys.readouterr()
    before = snapshot(index)
    fails(capsys, ["search", "--index", index, "--model", tmp_path / "edited", "--device", "cpu", "--reasoning",
                   "none", "q"], f"{index}: index was built with a different model ({tiny_model_path}, fingerprint")
    assert snapshot(index) == before
    # the digest is kept by the weight files' size and mtime: the second load hashes nothing
    from t1.model import FINGERPRINTS, _remembered_digests

    again = T1Model.from_pretrained(str(tmp_path / "edited"), device="cpu")
    assert again.__dict__.get("_digest") is not None and len(_remembered_digests()) >= 2
    assert again.fingerprint() == T1Model.from_pretrained(str(tmp_path / "edited"), device="cpu").fingerprint()
    assert (Path(os.environ["T1_CACHE"]) / FINGERPRINTS).is_file()


# ---------------------------------------------------------------- 4. every bad value refused before work starts
CORPUS_LINE = '{"_id": "d1", "text": "x"}\n'
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("settings, message", [
    ({"query_template": "{instruction} {} {query}"}, "query_template: unknown field {} (known: {instruction}, {query}"),
    ({"query_template": "{lang}: {query}"}, "query_template: unknown field {lang}"),
    ({"document_template": "{text} }"}, "document_template: malformed template (Single '}' encountered"),
    ({"document_template": "{text} {text}"}, "document_template holds {text} 2 times; it must hold it once"),
    ({"chat_template": "{% if %}"}, "chat_template is not a valid Jinja template (line 1: Expected an expression"),
    ({"fusion_weight": "abc"}, 'fusion_weight must be a number between 0 and 1, or null, got "abc"'),
    ({"temperature": -1}, "temperature must be a number of at least 0.01, or null, got -1"),
    ({"do_sample": "false"}, 'do_sample must be true or false, got "false"'),
    ({"query_instruction": ["a", "b"]}, 'query_instruction must be a string, got ["a", "b"]'),
    (DEEP, "malformed JSON (nested too deeply)"),
])
def test_settings_files_are_checked_against_their_schema(tmp_path, capsys, no_model, settings, message):
    corpus, path = tmp_path / "c.jsonl", tmp_path / "s.json"
    corpus.write_text(CORPUS_LINE)
    path.write_text(settings if isinstance(settings, str) else json.dumps(settings))
    fails(capsys, ["index", "--corpus", corpus, "--out", tmp_path / "idx", "--settings", path], f"{path}: {message}")
    assert not (tmp_path / "idx").exists()


def test_a_settings_file_with_a_byte_order_mark_is_read(tmp_path):
    from t1.settings import load_settings

    path = tmp_path / "s.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"top_p": 0.9, "do_sample": True}).encode())
    assert load_settings(path) == {"top_p": 0.9, "do_sample": True}


BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n" for p, a in zip(["", *"abcdefgh"], "abcdefghi"))


@pytest.mark.parametrize("name, content, argv, message", [
    ("c.jsonl", '{"_id": "d1", "text": "x \\ud800 y"}\n', ["index", "--corpus", "{f}", "--out", "{t}/o"],
     "c.jsonl:1: field 'text' holds a lone surrogate ('\\ud800' at character 3), not Unicode text"),
    ("c.jsonl", '{"_id": "d\\udc80", "text": "x"}\n', ["index", "--corpus", "{f}", "--out", "{t}/o"],
     "c.jsonl:1: document id holds a lone surrogate"),
    ("c.jsonl", DEEP + "\n", ["index", "--corpus", "{f}", "--out", "{t}/o"], "c.jsonl:1: malformed JSON (nested too deeply)"),
    ("q.jsonl", '{"_id": "q1", "text": "\\ud800"}\n', ["search", "--index", "{t}", "--queries", "{f}"],
     "q.jsonl:1: field 'text' holds a lone surrogate"),
    ("c.jsonl", CORPUS_LINE, ["search", "--index", "{t}", "why \udcff"],
     "command-line argument 4 ('why \\udcff') holds a lone surrogate ('\\udcff' at character 5), not Unicode text"),
    ("c.jsonl", CORPUS_LINE, ["search", "--index", "{t}", "--ef-search", str(2**31), "q"],
     "--ef-search must be at most 2147483647, got 2147483648"),
    ("c.jsonl", CORPUS_LINE, ["search", "--index", "{t}", "--traces", "2", "--temperature", "1e-300", "q"],
     "--temperature must be positive, at least 0.01 (lower overflows; greedy decoding is --traces 1), got 1e-300"),
    ("c.jsonl", CORPUS_LINE, ["search", "--index", "{t}", "--temperature", "inf", "q"],
     "--temperature must be finite, got inf"),
    ("c.yaml", "learning_rate: 1.0e-4\nmax_steps: 2\nlearning_rate: 1.0\n", ["train", "contrastive", "--config", "{f}"],
     "c.yaml:3: key 'learning_rate' appears twice (YAML keeps only the last; give it once)"),
    ("c.yaml", BOMB, ["train", "contrastive", "--config", "{f}"],
     "c.yaml: its YAML aliases (*name) expand to more than 100,000 values"),
])
def test_bad_values_are_one_line_before_any_model(tmp_path, capsys, no_model, name, content, argv, message):
    path = tmp_path / name
    path.write_text(content)
    fails(capsys, [a.format(f=path, t=tmp_path) for a in argv], message)
    assert path.read_text() == content


@pytest.mark.parametrize("grade", [str(2**63), "1e300"])
def test_qrels_grades_out_of_range(tmp_path, capsys, no_model, grade):
    from test_user_mistakes import write_beir

    folder = write_beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t{grade}\n")
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"],
          f"test.tsv:2: score '{grade}' is out of range (relevance grades are small integers; pytrec_eval takes at "
          "most 2147483647)")


@pytest.mark.parametrize("weights", ["model.safetensors", "t1_config.json"])
def test_a_truncated_model_folder_is_one_line(tmp_path, capsys, tiny_model_path, weights):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    if weights == "t1_config.json":
        (model / weights).write_text('{"max_new_tokens": ')
        message = f"{model}/t1_config.json: malformed JSON (Expecting value)"
    else:
        data = (model / weights).read_bytes()
        (model / weights).write_bytes(data[: len(data) // 2])
        message = f"cannot load model '{model}': Error while deserializing header"
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(CORPUS_LINE)
    fails(capsys, ["index", "--model", model, "--device", "cpu", "--corpus", corpus, "--out", tmp_path / "o"], message)


def test_bad_values_through_the_python_api(tiny_model):
    with pytest.raises(ValueError, match=r"texts\[1\] holds a lone surrogate \('\\ud800' at character 1\)"):
        tiny_model.encode_document(["fine", "\ud800"])
    from t1 import QuerySettings
    from t1.errors import T1Error

    for bad in (dict(num_traces=2, temperature=1e-300), dict(auto_margin=float("nan")), dict(fusion_weight=float("nan"))):
        with pytest.raises(T1Error):
            QuerySettings(**bad)


# ---------------------------------------------------------------- 5. the service
@pytest.fixture(scope="module")
def served_index(tiny_model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in
                              enumerate(["river water rock", "prime integer proof", "plant cell energy"])))
    assert main(index_argv(tiny_model_path, corpus, folder / "idx")) == 0
    return folder / "idx"


@pytest.fixture
def app_for(tiny_model, served_index):
    from t1.index import Index
    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    def make(**settings):
        engine = Engine(tiny_model, Index.open(served_index, model=tiny_model), batch_size=8)
        return create_app(engine, ServeSettings(max_new_tokens=4, **settings))

    return make


def test_http_fields_refused_with_one_line(app_for, served_index):
    from fastapi.testclient import TestClient

    before = snapshot(served_index)
    cases = [
        ('{"query": "why \\ud800"}', 422, "query holds a lone surrogate ('\\ud800' at character 5), not Unicode text"),
        ('{"query": "q", "reasoning": "given", "reasoning_text": "\\udfff"}', 422,
         "reasoning_text holds a lone surrogate"),
        ('{"query": "q", "reasoning": "auto", "margin": NaN}', 422, "auto margin must be a finite number, got nan"),
        ('{"query": "q", "traces": 2, "temperature": 1e-300}', 422,
         "sampling needs temperature >= 0.01 and 0 < top_p <= 1, got 1e-300, 0.95"),
        ('{"query": "q", "k": 9223372036854775808}', 422, "k must be between 1 and 100"),
        ('{"query": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "There was an error parsing the body"),
    ]
    with TestClient(app_for(), raise_server_exceptions=False) as client:
        for body, status, message in cases:
            r = client.post("/search", content=body.encode(), headers={"content-type": "application/json"})
            assert (r.status_code, r.json()["detail"]) == (status, message) or (
                r.status_code == status and message in r.json()["detail"]), (body[:60], r.status_code, r.text[:200])
        r = client.post("/encode", content=b'{"documents": ["fine", "\\ud800"]}',
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"].startswith("documents[1] holds a lone surrogate")
    assert snapshot(served_index) == before


def test_redirects_stay_on_the_host_and_log_lines_are_clipped(app_for, caplog):
    from fastapi.testclient import TestClient

    with TestClient(app_for(api_key="KEY"), follow_redirects=False) as client, \
            caplog.at_level(logging.INFO, logger="t1.serve"):
        r = client.get("http://testserver//evil.example/?key=KEY&x=1")
        assert r.status_code == 303 and r.headers["location"] == "/evil.example/?x=1"  # was //evil.example/
        r = client.get("http://testserver/\\evil.example/?key=KEY")
        assert r.headers["location"] == "/evil.example/"
        assert client.get("/" + "a" * 60000, headers={"X-API-Key": "KEY"}).status_code == 404
    line = next(r.getMessage() for r in caplog.records if "aaaa" in r.getMessage())
    assert len(line) < 400 and "(60001 characters)" in line


def test_slow_headers_and_bodies_are_cut_off(app_for):
    """uvicorn waits forever for a request's headers and the app for its body: a real server
    now closes a connection whose headers are late and answers 408 to a body that stalls."""
    import socket
    import threading
    import time

    import uvicorn

    from t1.serve.gate import timed_protocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app_for(body_timeout_s=0.5), log_level="warning", access_log=False,
                                           lifespan="on", http=timed_protocol(0.5)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 60
        while not server.started:
            assert thread.is_alive() and time.time() < deadline
            time.sleep(0.05)
        port = sock.getsockname()[1]
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        start = time.time()
        assert slow.recv(1024) == b"" and time.time() - start < 5  # closed by the server
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"query\"")
        answer = stalled.recv(4096)
        while not answer.endswith(b"}") and (part := stalled.recv(4096)):
            answer += part
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5s" in answer
        fine = socket.create_connection(("127.0.0.1", port), timeout=10)
        fine.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert fine.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


# ---------------------------------------------------------------- 6. read-only indexes work
def test_a_read_only_index_is_searched_with_its_cached_traces(tmp_path, tiny_model_path, capsys, caplog):
    """An immutable index folder (a read-only mount, an archive; `chattr +i`, which binds root
    too): its reasoning cache is read, a new query's trace is kept for the run with one warning,
    and nothing in the folder changes. Writer traces (the `written` table) are read alike."""
    from t1.reasoning_cache import ReasoningCache

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"passage about topic {i}"}) + "\n"
                              for i in range(5)))
    index = tmp_path / "idx"
    assert main(index_argv(tiny_model_path, corpus, index, "--no-bm25")) == 0
    capsys.readouterr()
    search = ["search", "--index", str(index), "--model", str(tiny_model_path), "--device", "cpu",
              "--max-new-tokens", "3", "--json"]
    assert main(search + ["first query"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    cache = ReasoningCache(index)
    cache.put_written([{"key": "w1", "writer": "{}", "query_id": "q1", "instruction": "", "query": "q",
                        "reasoning": "written elsewhere", "ended": True, "settings": {}}])
    cache.close()
    files = [index, *index.rglob("*")]
    if subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        before = snapshot(index)
        assert main(search + ["first query"]) == 0  # its trace is cached: nothing to write
        assert json.loads(capsys.readouterr().out)[0]["reasoning"] == first["reasoning"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="t1.reasoning_cache"):
            assert main(search + ["another query", "another query"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out[0]["reasoning"] == out[1]["reasoning"] and out[0]["hits"]
        warnings = [r.getMessage() for r in caplog.records if r.name == "t1.reasoning_cache"]
        assert len(warnings) == 1 and "new ones are kept for this run only (--no-reasoning-cache" in warnings[0]
        read_only = ReasoningCache(index)
        assert read_only.get_written(["w1"]) == {"w1": ("written elsewhere", True)}
        read_only.put_written([{"key": "w2", "writer": "{}", "query_id": "q2", "instruction": "", "query": "q",
                                "reasoning": "this run only", "ended": False, "settings": {}}])
        assert read_only.get_written(["w1", "w2"])["w2"] == ("this run only", False)
        read_only.close()
        assert snapshot(index) == before
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True)
