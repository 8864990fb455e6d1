"""Probe the error contract (issue #32): a few hundred bad inputs through `t1.cli.main`, the HTTP
app and the Python API, each classified as

- ok: refused with one line (CLI: exit 2 and one `t1: error:` line; HTTP: a 4xx; Python: a
  `T1Error`, `ValueError` or `TypeError`), or accepted and right where the input is valid;
- traceback: any other exception, or an error of more than one line;
- 5xx: an HTTP answer of 500 or more;
- silent: accepted where it should have been refused, a wrong result, or an input changed;
- refused: refused where the input is valid (a corpus t1 should index).

It runs against whichever t1 is importable, so the same script measures two trees:

    PYTHONPATH=/work/wt32-before/src python3 benchmarks/error_probe.py --tag before
    PYTHONPATH=src python3 benchmarks/error_probe.py --tag after

and writes benchmarks/results/error_probe-<tag>.json (every case and its outcome) and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import t1  # noqa: E402
from t1.cli import main  # noqa: E402
from t1.errors import T1Error  # noqa: E402

TESTS = Path(t1.__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))
from tiny_model import build_tiny_model  # noqa: E402

DOCS = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(
    ["river water rock", "prime integer proof", "plant cell energy", "robot sensor code", "virus vaccine cell"])]
RESULTS: list[dict] = []


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted([p] if p.is_file() else p.rglob("*")) if p.exists() else []:
            if f.is_file():
                h.update(str(f).encode() + f.read_bytes())
    return h.hexdigest()


def record(cls: str, entry: str, name: str, outcome: str, detail: str = "") -> None:
    RESULTS.append({"class": cls, "entry": entry, "case": name, "outcome": outcome, "detail": detail[:300]})


# ---------------------------------------------------------------- the three entry points
def cli(cls, name, argv, refuse=True, check=None, keep=()):
    """Run `t1 ARGV`; `refuse`: a refusal is right; `check(stdout)`: what a right acceptance
    prints; `keep`: paths that must be unchanged afterwards."""
    before = digest(*keep)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    except BaseException as e:  # noqa: BLE001 - a traceback is what is counted
        record(cls, "cli", name, "traceback", f"{type(e).__name__}: {e}")
        return
    lines = [line for line in err.getvalue().splitlines() if line.startswith("t1: error:")]
    if keep and digest(*keep) != before:
        record(cls, "cli", name, "silent", "an input was changed")
    elif rc == 2 and len(lines) == 1:
        record(cls, "cli", name, "ok" if refuse else "refused", lines[0])
    elif rc == 2 or rc not in (0, None):
        record(cls, "cli", name, "traceback", f"exit {rc}: {err.getvalue()[-300:]}")
    elif refuse or (check is not None and not check(out.getvalue())):
        record(cls, "cli", name, "silent", out.getvalue()[-300:])
    else:
        record(cls, "cli", name, "ok", out.getvalue()[-200:])


def api(cls, name, call, refuse=True, check=None):
    try:
        result = call()
    except (T1Error, ValueError, TypeError) as e:
        record(cls, "python", name, "ok" if refuse else "refused", f"{type(e).__name__}: {e}")
        return
    except BaseException as e:  # noqa: BLE001
        record(cls, "python", name, "traceback", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-300:]}")
        return
    right = not refuse and (check is None or check(result))
    record(cls, "python", name, "ok" if right else "silent", repr(result)[:200])


def http(cls, name, client, method, url, body=None, refuse=True, check=None):
    try:
        kwargs = {} if body is None else {"content": body if isinstance(body, bytes) else body.encode(),
                                          "headers": {"content-type": "application/json"}}
        r = client.request(method, url, **kwargs)
    except BaseException as e:  # noqa: BLE001
        record(cls, "http", name, "traceback", f"{type(e).__name__}: {e}")
        return
    if r.status_code >= 500:
        record(cls, "http", name, "5xx", f"{r.status_code} {r.text[:200]}")
    elif check is not None:
        record(cls, "http", name, "ok" if check(r) else "silent", f"{r.status_code} {r.headers.get('location', '')}")
    elif 400 <= r.status_code < 500:
        record(cls, "http", name, "ok" if refuse else "refused", f"{r.status_code} {r.text[:200]}")
    else:
        record(cls, "http", name, "silent" if refuse else "ok", f"{r.status_code} {r.text[:200]}")


# ---------------------------------------------------------------- the cases
def inputs(tmp: Path, model: Path) -> None:
    cls = "1 inputs"
    base = ["index", "--model", model, "--device", "cpu", "--no-bm25"]
    for i, passage in enumerate(['"Quoted" start', '"a" and "b"', '" lone', '"x"', '"multi\tcol']):
        f = tmp / f"q{i}.tsv"
        rows = ["id\ttext", f"a\t{passage.split(chr(9))[0]}", "b\tsecond", "c\tthird ends \"", "d\tfourth"]
        f.write_text("\n".join(rows) + "\n")
        cli(cls, f"tsv passage {passage!r}", base + ["--corpus", f, "--out", tmp / f"tsv{i}"], refuse=False,
            check=lambda out: "indexed 4 documents" in out, keep=[f])
    for i, header in enumerate(["id,text,text", "id,,text", "id,text,", "id,id,text", ",id,text", "id,text,TEXT,text"]):
        f = tmp / f"h{i}.csv"
        n = len(header.split(","))
        f.write_text(header + "\n" + ",".join(["a", "x", *["y"] * (n - 2)]) + "\n")
        cli(cls, f"csv header {header!r}", base + ["--corpus", f, "--out", tmp / f"h{i}"], keep=[f])
    for value in ("[]", "{}", "0", "false", "true", "1.5", "[\"t\"]"):
        f = tmp / "title.jsonl"
        f.write_text(f'{{"_id": "a", "title": {value}, "text": "x"}}\n')
        cli(cls, f"title {value}", base + ["--corpus", f, "--out", tmp / f"title-{len(RESULTS)}"], keep=[f])
        api(cls, f"title {value}", lambda: t1.load_corpus(f))
    cran = tmp / "cranfield.jsonl"
    cran.write_text("".join(json.dumps(d) + "\n" for d in DOCS + [{"_id": "471", "title": "", "text": ""},
                                                                 {"_id": "995", "text": " "}]))
    cli(cls, "empty documents (Cranfield)", base + ["--corpus", cran, "--out", tmp / "cran"], refuse=False,
        check=lambda out: "indexed 7 documents" in out, keep=[cran])
    api(cls, "empty documents (Cranfield)", lambda: t1.load_corpus(cran), refuse=False, check=lambda d: len(d) == 7)
    for field, line in (("text", '{"_id": "a", "text": "x \\ud800"}'), ("title", '{"_id": "a", "title": "\\udfff", '
                                                                       '"text": "x"}'),
                        ("id", '{"_id": "a\\udc80", "text": "x"}')):
        f = tmp / f"sur-{field}.jsonl"
        f.write_text(line + "\n")
        cli(cls, f"surrogate in {field}", base + ["--corpus", f, "--out", tmp / f"sur-{field}"], keep=[f])
        api(cls, f"surrogate in {field}", lambda f=f: t1.load_corpus(f))
    for depth in (1_000, 100_000):
        f = tmp / f"deep{depth}.jsonl"
        f.write_text('{"_id": "a", "text": ' + "[" * depth + "]" * depth + "}\n")
        cli(cls, f"corpus nested {depth} deep", base + ["--corpus", f, "--out", tmp / "deep"], keep=[f])
        q = tmp / f"deepq{depth}.jsonl"
        q.write_text('{"_id": "q", "text": ' + "[" * depth + "]" * depth + "}\n")
        api(cls, f"queries nested {depth} deep", lambda q=q: t1.load_queries(q))


def beir_folder(folder: Path) -> Path:
    """A small BEIR dataset of its own for each case (a case that overwrites it spoils no other)."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "water"}\n')
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("q1\td0\t1\n")
    return folder


def outputs(tmp: Path, model: Path, index: Path) -> None:
    cls = "2 outputs"
    for name in ("corpus.jsonl", "queries.jsonl"):
        beir = beir_folder(tmp / f"mine-{name}")
        cli(cls, f"data mine D --out D/{name}", ["data", "mine", beir, "--out", beir / name], keep=[beir])
    records = tmp / "records.jsonl"
    records.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n")
    cli(cls, "data distill X --out X", ["data", "distill", records, "--out", records], keep=[records])
    beir = beir_folder(tmp / "pairs")
    cli(cls, "data pairs C --out C", ["data", "pairs", beir / "corpus.jsonl", "--title", "1", "--out",
                                      beir / "corpus.jsonl"], keep=[beir])
    from t1.reasoning_cache import ReasoningCache

    for name, out in (("the cache", "reasoning-cache.sqlite"), ("a folder", "")):
        cache = tmp / f"cache-{len(RESULTS)}"
        shutil.copytree(index, cache)
        ReasoningCache(cache).db.close()
        cli(cls, f"traces export --out {name}", ["traces", "export", "--cache", cache, "--out", cache / out],
            keep=[cache])
    copy = tmp / "model-copy"
    shutil.copytree(model, copy)
    cli(cls, "train output_dir = the starting model", ["train", "contrastive", "--model_name_or_path", copy,
                                                       "--train_file", records, "--output_dir", copy, "--max_steps",
                                                       "1", "--per_device_train_batch_size", "1",
                                                       "--negatives_per_query", "1"], keep=[copy])
    corpus = beir_folder(tmp / "index-out") / "corpus.jsonl"
    for name, setup in (("a manifest.json of another program", lambda d: (d / "manifest.json").write_text(
            '{"name": "project", "version": "1.0"}')),
                        ("a .tmp file t1 did not write", lambda d: (d / ".notes.tmp").write_text("mine")),
                        ("the corpus inside --out", lambda d: shutil.copy(corpus, d / "c.jsonl"))):
        out = tmp / f"foreign-{len(RESULTS)}"
        out.mkdir()
        setup(out)
        given = out / "c.jsonl" if (out / "c.jsonl").exists() else corpus
        cli(cls, f"index --out over {name}", ["index", "--model", model, "--device", "cpu", "--no-bm25", "--corpus",
                                              given, "--out", out], keep=[out])
    big, small = tmp / "big.jsonl", tmp / "small.jsonl"
    big.write_text("".join(json.dumps({"_id": f"b{i}", "text": f"passage {i} " * 20}) + "\n" for i in range(3000)))
    small.write_text("".join(json.dumps({"_id": f"s{i}", "text": f"other {i}"}) + "\n" for i in range(10)))
    out = tmp / "two-writers"
    argv = [sys.executable, "-m", "t1", "index", "--model", str(model), "--device", "cpu", "--no-bm25",
            "--shard-size", "100", "--out", str(out), "--corpus"]
    procs = [subprocess.Popen(argv + [str(c)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in (big, small)]  # started together: both find the folder empty
    codes = [(p.wait(600), p.communicate()[1].strip()[-200:]) for p in procs]
    verified = subprocess.run([sys.executable, "-m", "t1", "index", "--verify", str(out)], capture_output=True)
    right = sorted(rc for rc, _ in codes) == [0, 2] and verified.returncode == 0
    record(cls, "cli", "two t1 index processes into one folder at once", "ok" if right else "silent",
           f"exit codes {[rc for rc, _ in codes]}, verify {verified.returncode}: {codes}")


def identity(tmp: Path, model_path: Path, index: Path) -> None:
    import torch

    from t1 import T1Model
    from t1.index import Index

    cls = "3 identity"
    model = T1Model.from_pretrained(str(model_path), device="cpu")
    tensors = [(n, p) for n, p in model.backbone.named_parameters() if p.numel() >= 8192]
    for name, p in tensors[:12]:
        stride = max(1, p.numel() // 4096)  # the old fingerprint's sample: every stride-th element
        for at in (1, stride * (p.numel() // stride // 2) + 1):  # elements that sample skipped
            with torch.no_grad():
                p.view(-1)[at] += 1e-3
            api(cls, f"element {at} of {name} edited", lambda: Index.open(index, model=model))
            with torch.no_grad():
                p.view(-1)[at] -= 1e-3


SETTINGS = [
    ("fusion_weight", "abc"), ("fusion_weight", -0.5), ("fusion_weight", 2), ("fusion_weight", [0.5]),
    ("temperature", -1), ("temperature", 0), ("temperature", 1e-300), ("temperature", "hot"),
    ("top_p", 0), ("top_p", 1.5), ("top_p", "x"), ("top_k", -3), ("top_k", 1.5), ("top_k", "5"),
    ("do_sample", "false"), ("do_sample", "true"), ("do_sample", 1), ("normalize", "no"),
    ("query_instruction", ["a", "b"]), ("query_instruction", 3), ("document_instruction", {"a": 1}),
    ("prompts", {"a": 1}), ("prompts", ["x"]), ("max_new_tokens", "10"), ("max_new_tokens", -1),
    ("max_query_length", 1.5), ("max_document_length", True),
    ("query_template", "{instruction} {}"), ("query_template", "{lang}: {query}"), ("query_template", "{query} }"),
    ("query_template", "{ {query}"), ("query_template", "{query} {query}"), ("query_template", "{query.x}"),
    ("document_template", "{text} {text}"), ("document_template", "{instruction}"), ("document_template", "{0}{text}"),
    ("document_template", "}{text}"), ("chat_template", "{% if %}"), ("chat_template", "{{ messages[0] "),
    ("chat_template", "{% for m in messages %}"), ("chat_template", "{% endfor %}"),
    ("tasks", {"t": {"query": 1}}),
]


def values(tmp: Path, model: Path, index: Path) -> None:
    from t1 import T1Model

    cls = "4 values"
    corpus = tmp / "values.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for key, value in SETTINGS:
        f = tmp / "settings.json"
        f.write_text(json.dumps({key: value}))
        cli(cls, f"settings {key}={value!r}", ["index", "--model", model, "--device", "cpu", "--corpus", corpus,
                                               "--out", tmp / f"values-{len(RESULTS)}", "--settings", f], keep=[corpus])
        api(cls, f"from_pretrained {key}={value!r}",
            lambda key=key, value=value: T1Model.from_pretrained(str(model), device="cpu", **{key: value}))
    f = tmp / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"top_p": 0.9}).encode())
    api(cls, "settings file with a BOM", lambda: __import__("t1.settings").settings.load_settings(f), refuse=False)
    f = tmp / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    cli(cls, "settings nested 100,000 deep", ["index", "--corpus", corpus, "--out", tmp / "v", "--settings", f])
    search = ["search", "--index", index, "--model", model, "--device", "cpu", "--reasoning", "none"]
    for flag in ("-k", "--ef-search", "--nprobe", "--refine", "--max-new-tokens", "--traces"):
        for value in (str(2**31), str(2**63), "-1", "0", "1e3"):
            cli(cls, f"search {flag} {value}", search + [flag, value, "q"])
    for flag in ("--temperature", "--top-p", "--fusion-weight", "--auto-margin"):
        for value in ("nan", "inf", "-inf", "1e-300", "-1"):
            refuse = not (flag != "--temperature" and value == "1e-300")  # a tiny top_p, weight or margin is valid
            cli(cls, f"search {flag} {value}", search + ["--traces", "2", flag, value, "q"] if flag in (
                "--temperature", "--top-p") else search + [flag, value, "q"], refuse=refuse)
    for i, arg in enumerate(["why \udcff", "\ud800"]):
        cli(cls, f"argv surrogate {i} (query)", search + [arg])
        cli(cls, f"argv surrogate {i} (flag value)", search + ["--query-instruction", arg, "q"])
    q = tmp / "qsur.jsonl"
    q.write_text('{"_id": "q1", "text": "x \\ud800"}\n')
    cli(cls, "queries file surrogate", search + ["--queries", q])
    beir = tmp / "grades"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "water"}\n')
    for grade in (str(2**63), "1e300", str(-2**63), "1e20", "nan", "inf"):
        (beir / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td0\t{grade}\n")
        cli(cls, f"qrels grade {grade}", ["eval", "--dataset", beir, "--retriever", "bm25", "--out",
                                                   tmp / f"g-{len(RESULTS)}"])
    bomb = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n" for p, a in zip(["", *"abcde"],
                                                                                             "abcdef"))
    for name, text in (("duplicate key", "learning_rate: 1.0e-4\nlearning_rate: 1.0\n"),
                       ("duplicate key, nested", "max_steps: 1\nmax_steps: 2\n"),
                       ("alias bomb", bomb), ("nested 20,000 deep", "[" * 20_000)):
        f = tmp / "config.yaml"
        f.write_text(text)
        cli(cls, f"training config: {name}", ["train", "contrastive", "--config", f])
    for name, damage in (("truncated model.safetensors", lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:1000])), ("empty model.safetensors", lambda d: (
                d / "model.safetensors").write_bytes(b"")), ("malformed t1_config.json", lambda d: (
                    d / "t1_config.json").write_text('{"max_new_tokens": ')), ("t1_config.json of wrong types",
                                                                               lambda d: (d / "t1_config.json")
                                                                               .write_text('{"do_sample": "no"}'))):
        broken = tmp / f"broken-{len(RESULTS)}"
        shutil.copytree(model, broken)
        damage(broken)
        cli(cls, name, ["index", "--model", broken, "--device", "cpu", "--corpus", corpus, "--out",
                        tmp / f"b-{len(RESULTS)}"])
        api(cls, name, lambda broken=broken: T1Model.from_pretrained(str(broken), device="cpu"))
    tiny = T1Model.from_pretrained(str(model), device="cpu")
    for text in ("\ud800", "x \udfff y"):
        api(cls, f"encode_document {text!a}", lambda text=text: tiny.encode_document([text]))
        api(cls, f"encode_query {text!a}", lambda text=text: tiny.encode_query([text], reasoning="none"))
    from t1 import QuerySettings

    for bad in (dict(num_traces=2, temperature=1e-300), dict(auto_margin=float("nan")), dict(top_p=float("nan")),
                dict(fusion_weight=float("nan")), dict(temperature=float("inf"))):
        api(cls, f"QuerySettings {bad}", lambda bad=bad: QuerySettings(**bad))


def service(tmp: Path, model: Path, index: Path) -> None:
    from fastapi.testclient import TestClient

    from t1 import T1Model
    from t1.index import Index
    from t1.serve.app import ServeSettings, create_app
    from t1.serve.engine import Engine

    cls = "5 service"
    tiny = T1Model.from_pretrained(str(model), device="cpu")
    engine = Engine(tiny, Index.open(index, model=tiny), batch_size=8)
    app = create_app(engine, ServeSettings(max_new_tokens=3, api_key="KEY"))
    key = {"X-API-Key": "KEY"}
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False, headers=key) as client:
        for field, body in (("query", '{"query": "x \\ud800"}'), ("query list", '{"query": ["a", "\\udfff"]}'),
                            ("reasoning_text", '{"query": "q", "reasoning": "given", "reasoning_text": "\\ud800"}'),
                            ("instruction", '{"query": "q", "reasoning": "none", "instruction": "\\ud800"}'),
                            ("exclude", '{"query": "q", "reasoning": "none", "exclude": ["\\ud800"]}')):
            http(cls, f"/search surrogate in {field}", client, "POST", "/search", body)
        http(cls, "/search/stream surrogate", client, "POST", "/search/stream", '{"query": "\\ud800"}')
        for field, body in (("documents", '{"documents": ["\\ud800"]}'), ("queries", '{"queries": "\\udfff"}')):
            http(cls, f"/encode surrogate in {field}", client, "POST", "/encode", body)
        numbers = {"k": ("NaN", "Infinity", "9223372036854775808", "-1", "0", '"5"', "true", "1e3"),
                   "traces": ("NaN", "9223372036854775808", "-1", "0", '"2"', "true", "2.5", "100"),
                   "temperature": ("NaN", "Infinity", "-Infinity", "1e-300", "0", "-1", '"hot"', "true"),
                   "top_p": ("NaN", "Infinity", "-1", "0", "1.5", '"x"', "true", "1e-300"),
                   "margin": ("NaN", "Infinity", "-Infinity", "-1", '"x"', "true", "-1e-300", "[1]"),
                   "fusion_weight": ("NaN", "Infinity", "-1", "1.5", '"x"', "true", "[0.5]", "-Infinity"),
                   "max_new_tokens": ("NaN", "9223372036854775808", "-1", "1e300", '"3"', "true", "2.5", "100000")}
        for field, bad in numbers.items():
            extra = {"traces": '"reasoning": "generate"', "temperature": '"traces": 2', "top_p": '"traces": 2',
                     "margin": '"reasoning": "auto"', "fusion_weight": '"hybrid": true'}.get(field, '"reasoning": "none"')
            for value in bad:
                refuse = not (field == "top_p" and value == "1e-300")
                http(cls, f"/search {field}={value}", client, "POST", "/search",
                     f'{{"query": "water", {extra}, "{field}": {value}}}', refuse=refuse)
        for route, wrap in (("/search", '{{"query": {}}}'), ("/encode", '{{"documents": {}}}')):
            deep = "[" * 100_000 + "]" * 100_000
            http(cls, f"{route} body nested 100,000 deep", client, "POST", route, wrap.format(deep))
        for path in ("//evil.example/", "/\\evil.example/", "//evil.example/x?y=1", "///evil.example/"):
            http(cls, f"redirect GET {path}?key=KEY", client, "GET", f"http://testserver{path}"
                 f"{'&' if '?' in path else '?'}key=KEY",
                 check=lambda r: r.status_code == 303 and not r.headers["location"].startswith(("//", "/\\")))
        handler = logging.Handler()
        lines = []
        handler.emit = lambda rec: lines.append(rec.getMessage())
        logging.getLogger("t1.serve").addHandler(handler)
        logging.getLogger("t1.serve").setLevel(logging.INFO)
        client.get("/" + "a" * 60_000)
        logging.getLogger("t1.serve").removeHandler(handler)
        longest = max((len(line) for line in lines), default=0)
        record(cls, "http", "60,000-character path in the log", "ok" if longest < 1000 else "silent",
               f"longest log line {longest}")
    slow_connections(cls, model, index)


def slow_connections(cls: str, model: Path, index: Path) -> None:
    """A real `t1 serve`: a client that never finishes its headers, and one that never finishes
    its body, must be cut off (held: silent)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "t1", "serve", "--index", str(index), "--model", str(model),
                             "--device", "cpu", "--port", str(port), "--max-new-tokens", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(600):
            if proc.poll() is not None or "listening" in (proc.stdout.readline() or ""):
                break
        for name, data in (("request headers never finished", b"GET /health HTTP/1.1\r\nHost: x\r\n"),
                           ("request body never finished", b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                                            b"application/json\r\nContent-Length: 100\r\n\r\n{")):
            conn = socket.create_connection(("127.0.0.1", port), timeout=45)
            conn.sendall(data)
            try:
                answer = conn.recv(4096)
                held = False
            except socket.timeout:
                held, answer = True, b""
            conn.close()
            record(cls, "http", name, "silent" if held else "ok", "held for 45 s" if held else answer[:60].decode())
    finally:
        proc.terminate()
        proc.wait(30)


def read_only(tmp: Path, model: Path, index: Path) -> None:
    cls = "6 read-only"
    folder = tmp / "ro-idx"
    shutil.copytree(index, folder)
    search = ["search", "--index", folder, "--model", model, "--device", "cpu", "--max-new-tokens", "2"]
    files = [folder, *folder.rglob("*")]
    if subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True).returncode:
        record(cls, "cli", "read-only index", "skipped", "chattr +i is not available")
        return
    try:
        for query in ("why do leaves turn red", "how do rivers carve rock"):
            cli(cls, f"search a read-only index: {query}", search + [query], refuse=False, keep=[folder])
        cli(cls, "search a read-only index, two queries", search + ["a", "b"], refuse=False, keep=[folder])
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True)


def run(out: Path, tag: str) -> dict:
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["T1_CACHE"] = str(tmp / "t1-cache")
        model = build_tiny_model(tmp / "model")
        corpus = tmp / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
        index = tmp / "index"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["index", "--model", str(model), "--device", "cpu", "--corpus", str(corpus), "--out",
                         str(index)]) == 0
        logging.disable(logging.WARNING)  # warnings are not what is counted; errors are
        for part in (inputs, outputs, identity, values, service, read_only):
            args = (tmp, model) if part is inputs else (tmp, model, index)
            part(*args)
            print(f"{part.__name__}: {Counter(r['outcome'] for r in RESULTS)}", file=sys.stderr, flush=True)
    summary = {"t1": str(Path(t1.__file__).parent), "cases": len(RESULTS), "seconds": round(time.time() - start),
               "outcomes": dict(Counter(r["outcome"] for r in RESULTS)),
               "by_class": {c: dict(Counter(r["outcome"] for r in RESULTS if r["class"] == c))
                            for c in dict.fromkeys(r["class"] for r in RESULTS)},
               "by_entry": {e: dict(Counter(r["outcome"] for r in RESULTS if r["entry"] == e))
                            for e in dict.fromkeys(r["entry"] for r in RESULTS)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "cases": RESULTS}, indent=1, ensure_ascii=True) + "\n")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="after")
    parser.add_argument("--out", default=None, help="default benchmarks/results/error_probe-<tag>.json")
    args = parser.parse_args()
    out = Path(args.out or Path(__file__).parent / "results" / f"error_probe-{args.tag}.json")
    print(json.dumps(run(out, args.tag), indent=1))
