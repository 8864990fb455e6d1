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
