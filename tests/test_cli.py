import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FUSION_WEIGHT

from t1.cli import main

CORPUS = [
    {"_id": "d1", "title": "Leaves", "text": "cell protein gene plant"},
    {"_id": "d2", "title": "Rivers", "text": "river water rock climate"},
    {"_id": "d3", "title": "Primes", "text": "prime integer theorem proof"},
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    return path


def test_index_then_search_json(tiny_model_path, corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"]) == 0
    assert "float16 + BM25)" in capsys.readouterr().out  # BM25 by default
    assert (out / "bm25").is_dir() and "bm25" in json.loads((out / "manifest.json").read_text())
    assert main(["search", "--index", str(out), "--device", "cpu", "--json", "-k", "2", "--max-new-tokens", "4",
                 "water rock", "prime proof"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in results] == ["water rock", "prime proof"]
    assert {r["ranking"] for r in results} == {"dense"}  # no saved fusion weight: T1 alone
    assert all(len(r["hits"]) == 2 and {h["id"] for h in r["hits"]} <= {"d1", "d2", "d3"} for r in results)
    assert all(isinstance(r["reasoning"], str) for r in results)


def test_search_engine_choice_keeps_the_results(tiny_model_path, corpus, tmp_path, capsys):
    """--engine compile (exact) returns what the reference engine does; every generating command
    takes --engine."""
    from t1.cli import build_parser

    out = tmp_path / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out)]) == 0
    runs = []
    for engine in ("hf", "compile"):
        capsys.readouterr()
        assert main(["search", "--index", str(out), "--engine", engine, "--json", "--max-new-tokens", "4",
                     "--no-reasoning-cache", "water rock"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    hf, compiled = runs[0][0], runs[1][0]
    assert compiled["reasoning"] == hf["reasoning"]
    assert [h["id"] for h in compiled["hits"]] == [h["id"] for h in hf["hits"]]
    np.testing.assert_allclose([h["score"] for h in compiled["hits"]], [h["score"] for h in hf["hits"]], atol=1e-5)
    parser = build_parser()
    for argv in (["search", "--index", "x", "q"], ["eval", "--dataset", "d", "--out", "o"],
                 ["bright", "--retriever", "bm25", "--out", "o"], ["serve", "--index", "x"], ["data", "reason", "in", "--out", "o",
                                                                         "--model", "m"]):
        assert parser.parse_args([*argv, "--engine", "int8"]).engine == "int8", argv


def test_search_text_output_and_queries_file(tiny_model_path, corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"])
    queries = tmp_path / "q.txt"
    queries.write_text("plant cell\nriver\n")
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--device", "cpu", "--queries", str(queries), "--reasoning", "none", "-k", "3"]) == 0
    text = capsys.readouterr().out
    titles = {d["_id"]: d["title"] for d in CORPUS}
    blocks = [b.splitlines() for b in text.strip().split("\n\n")]
    assert [b[0] for b in blocks] == ["query q1: plant cell", "query q2: river"]
    assert main(["search", "--index", str(out), "--device", "cpu", "--queries", str(queries), "--reasoning", "none",
                 "-k", "3", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    texts = {d["_id"]: d["text"] for d in CORPUS}
    for block, result in zip(blocks, expected):  # rank, score, id and title, then the snippet: as --json says
        assert block[1:] == [line for rank, h in enumerate(result["hits"], 1)
                             for line in (f"{rank:>3}. {h['score']:.4f}  {h['id']}  {titles[h['id']]}",
                                          f"     {texts[h['id']]}")]
        assert sorted(h["id"] for h in result["hits"]) == ["d1", "d2", "d3"]


def test_default_search_is_the_models_weighted_hybrid(weighted_model_path, corpus, tmp_path, capsys):
    from t1 import T1Model
    from t1.index import Index

    out = tmp_path / "idx"
    assert main(["index", "--model", str(weighted_model_path), "--corpus", str(corpus), "--out", str(out),
                 "--device", "cpu"]) == 0
    queries = ["water rock", "prime proof"]

    def search(*flags):
        assert main(["search", "--index", str(out), "--device", "cpu", "--json", "-k", "3", "--reasoning", "none",
                     *flags, *queries]) == 0
        captured = capsys.readouterr()
        assert "note" not in captured.err
        results = json.loads(captured.out)
        assert len({r["ranking"] for r in results}) == 1
        return results[0]["ranking"], [[(h["id"], h["score"]) for h in r["hits"]] for r in results]

    capsys.readouterr()
    weighted = f"hybrid-weighted({FUSION_WEIGHT})"
    default = search()
    assert default == search("--hybrid", "--fusion", "weighted", "--fusion-weight", str(FUSION_WEIGHT))
    assert default[0] == weighted and search("--hybrid") == default and search("--fusion", "weighted") == default
    model = T1Model.from_pretrained(str(weighted_model_path), device="cpu")
    index = Index.open(out, model=model)
    q = model.encode_query(queries, reasoning="none").embeddings

    def pairs(hits):
        return [[(h.id, pytest.approx(h.score)) for h in row] for row in hits]

    assert default[1] == pairs(index.search_hybrid(q, queries, k=3, fusion="weighted", weight=FUSION_WEIGHT))
    assert search("--dense-only") == ("dense", pairs(index.search(q, k=3)))  # the plain T1 ranking
    assert search("--fusion", "rrf") == ("hybrid-rrf(0.5)", pairs(index.search_hybrid(q, queries, k=3, fusion="rrf")))
    assert search("--fusion-weight", "0.8")[1] == pairs(index.search_hybrid(q, queries, k=3, fusion="weighted",
                                                                            weight=0.8))
    assert main(["search", "--index", str(out), "--dense-only", "--fusion", "rrf", "q"]) == 2
    assert "dense-only search takes no fusion method or weight" in capsys.readouterr().err
    assert main(["search", "--index", str(out), "--dense-only", "--hybrid", "q"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err

    traces = np.stack([q, q[::-1]], axis=1)  # two traces per query: their fused list is the dense side
    fused = index.search_hybrid(traces, queries, k=3, fusion="weighted", weight=1.0)
    assert [[h.id for h in r] for r in fused] == [[h.id for h in r] for r in index.search_traces(traces, k=3)]

    # the same rule in Python, with adaptive reasoning too
    hits, _ = index.search_queries(model, queries, k=3, reasoning="none")
    assert pairs(hits) == default[1]
    dense, _ = index.search_queries(model, queries, k=3, reasoning="none", hybrid=False)
    assert pairs(dense) == search("--dense-only")[1]
    hits, reasoning = index.search_queries(model, queries, k=3, reasoning="auto", margin=10.0, max_new_tokens=3)
    deep = model.encode_query(queries, reasoning="generate", max_new_tokens=3)
    assert reasoning == deep.reasoning  # every query reasoned (margin 10), and its embedding was fused
    assert pairs(hits) == pairs(index.search_hybrid(deep.embeddings, queries, k=3, weight=FUSION_WEIGHT,
                                                    fusion="weighted"))


@pytest.mark.parametrize("argv, message", [
    (["index", "--model", "{model}", "--corpus", "{tmp}/missing.jsonl", "--out", "{tmp}/x"], "missing.jsonl: no such file"),
    (["index", "--model", "{model}", "--corpus", "{bad}", "--out", "{tmp}/x"], "bad.jsonl:2: malformed JSON"),
    (["index", "--model", "{tmp}/nope", "--corpus", "{corpus}", "--out", "{tmp}/x"], "no such model folder"),
    (["search", "--index", "{tmp}", "q"], "not a t1 index"),
])
def test_user_errors_are_one_line(tiny_model_path, corpus, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{oops\n')
    fill = {"model": str(tiny_model_path), "tmp": str(tmp_path), "bad": str(bad), "corpus": str(corpus)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t1: error:") and message in err and "\n" not in err


def test_empty_query_and_index_of_other_model(tiny_model_path, corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out), "--device", "cpu"])
    assert main(["search", "--index", str(out), "--device", "cpu", "  "]) == 2
    assert "empty" in capsys.readouterr().err
    from t1 import T1Model

    other = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    with torch.no_grad():
        other.backbone.get_input_embeddings().weight[3] += 0.1
    other.save_pretrained(tmp_path / "other")
    assert main(["search", "--index", str(out), "--model", str(tmp_path / "other"), "--device", "cpu", "q"]) == 2
    assert "different model" in capsys.readouterr().err


def test_unwritable_output_keeps_nothing_broken(tiny_model_path, corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(blocker / "idx"), "--device", "cpu"]) == 2
    assert "cannot be an output folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_console_script_exit_code_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "t1.cli", "search", "--index", str(tmp_path), "q"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a t1 index" in proc.stderr


def test_export_round_trip_and_refusal(tiny_model_path, tmp_path, capsys):
    from t1 import T1Model

    out = tmp_path / "exported"
    assert main(["export", "--model", str(tiny_model_path), "--out", str(out)]) == 0
    assert "T1Model.from_pretrained" in capsys.readouterr().out
    original = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    loaded = T1Model.from_pretrained(str(out), device="cpu")
    texts = ["plant cell protein", "river rock"]
    torch.testing.assert_close(torch.from_numpy(loaded.encode_document(texts)),
                               torch.from_numpy(original.encode_document(texts)), atol=1e-6, rtol=0)
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    before = sorted(p.name for p in out.iterdir())
    assert main(["export", "--model", str(tiny_model_path), "--out", str(out)]) == 2  # never over a folder
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == before
    # a GGUF needs a backbone shipped as GGUF: a clear error for the tiny model
    assert main(["export", "--gguf", "--model", str(tiny_model_path), "--out", str(tmp_path / "t.gguf")]) == 2
    assert "shipped as GGUF" in capsys.readouterr().err and not (tmp_path / "t.gguf").exists()


def test_cache_lists_entries_and_clears_only_gguf(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("T1_CACHE", str(tmp_path))
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "abc.gguf").write_bytes(b"x" * 3_000_000)
    (tmp_path / "gguf" / "abc.q8_0.gguf").write_bytes(b"x" * 1_000_000)
    (tmp_path / "smollm2-135m-instruct").mkdir()
    (tmp_path / "smollm2-135m-instruct" / "config.json").write_text("{}")
    assert main(["cache"]) == 0
    listing = capsys.readouterr().out
    assert "gguf/" in listing and "4 MB  2 files" in listing and "abc.q8_0.gguf" in listing
    assert "smollm2-135m-instruct/" in listing
    assert main(["cache", "--clear-gguf"]) == 0
    assert "4 MB" in capsys.readouterr().out
    assert not (tmp_path / "gguf").exists() and (tmp_path / "smollm2-135m-instruct" / "config.json").exists()


def test_cache_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("T1_CACHE", str(cache))
    assert main(["cache"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setenv("T1_CACHE", str(tmp_path / "none"))
    assert main(["cache", "--clear-gguf"]) == 0
    assert "no GGUF files" in capsys.readouterr().out
