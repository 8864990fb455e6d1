"""The 22 kinds of bad input of issue #20 that crashed, lied, left damage or bloated: each is now
one line naming the problem (CLI: exit 2; HTTP: a 4xx; Python: a `T1Error`, `TypeError` or
`ValueError` naming the argument), and nothing already written is lost."""

import json
from pathlib import Path

import pytest
from test_user_mistakes import fails, no_model, write_beir  # noqa: F401 (fixture)

from t1.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples" / "corpus.jsonl"


# ---------------------------------------------------------------- inputs that lied
@pytest.mark.parametrize("name, content, message", [
    # JSON objects and lists were indexed as their Python repr
    ("c.jsonl", b'{"_id": {"a": 1}, "text": "x"}\n', "c.jsonl:1: document id must be a string, got an object"),
    ("c.jsonl", b'{"_id": "a", "text": ["x", "y"]}\n', "c.jsonl:1: field 'text' must be a string, got a list"),
    ("c.jsonl", b'{"_id": "a", "title": {"t": 1}, "text": "x"}\n', "c.jsonl:1: field 'title' must be a string"),
    # ids with spaces made invalid TREC files; empty ids and empty documents passed silently
    ("c.jsonl", b'{"_id": "a b", "text": "x"}\n', "c.jsonl:1: document id 'a b' contains whitespace"),
    ("c.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "", "text": "y"}\n', "c.jsonl:2: empty document id"),
    ("c.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "  "}\n', "c.jsonl:2: document 'b' is empty"),
    # an unterminated CSV quote swallowed the rest of the file; short and long rows passed
    ("c.csv", b'id,text\na,"never closed\nb,x\nc,y\n', "c.csv:2: malformed CSV (unexpected end of data; a quote is "
                                                        "never closed)"),
    ("c.csv", b"id,text\na,x\nb,y,z\n", "c.csv:3: malformed CSV (3 fields, the header has 2)"),
    ("c.tsv", b"id\ttext\na\tx\nb\n", "c.tsv:3: malformed TSV (1 fields, the header has 2)"),
])
def test_corpus_values_that_were_indexed_wrongly(tmp_path, capsys, no_model, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    fails(capsys, ["index", "--corpus", path, "--out", tmp_path / "idx"], message)
    assert not (tmp_path / "idx").exists()


def test_integer_ids_are_read_as_their_digits(tmp_path):
    from t1.data import load_corpus

    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": 7, "text": "x"}\n')
    assert load_corpus(path)[0].id == "7"


@pytest.mark.parametrize("name", ["q.txt", "q.jsonl", "q.csv"])
def test_a_byte_order_mark_is_handled_alike_in_every_format(tmp_path, name):
    from t1.data import load_queries

    body = {"q.txt": "first query\nsecond\n", "q.jsonl": '{"_id": "q1", "text": "first query"}\n',
            "q.csv": "id,text\nq1,first query\n"}[name]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert load_queries(path)["q1"] == "first query"  # no "\ufeff" in the query, the id or the header


def test_query_ids_and_texts_are_checked(tmp_path, capsys, no_model):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q 1", "text": "x"}\n')
    fails(capsys, ["search", "--index", tmp_path, "--queries", queries], "q.jsonl:1: query id 'q 1' contains whitespace")
    queries.write_text('{"_id": "q1", "text": {"a": 1}}\n')
    fails(capsys, ["search", "--index", tmp_path, "--queries", queries], "q.jsonl:1: field 'text' must be a string")


@pytest.mark.parametrize("score, message", [
    ("0.7", "test.tsv:2: score '0.7' is not an integer (relevance grades are 0, 1, 2"),
    ("x", "test.tsv:2: score 'x' is not a number"),
])
def test_qrels_scores_that_are_not_integers(tmp_path, capsys, no_model, score, message):
    folder = write_beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t{score}\n")
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"], message)


def test_qrels_without_header_fraction_on_the_first_line(tmp_path, capsys, no_model):
    folder = write_beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t0.5\n")  # was taken for a header, silently
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"],
          "test.tsv:1: score '0.5' is not an integer")


def test_whole_number_scores_are_integers(tmp_path):
    from t1.data import load_qrels

    path = tmp_path / "qrels.tsv"
    path.write_text("q1\td1\t2.0\nq1\td2\t0\n")
    assert load_qrels(path) == {"q1": {"d1": 2, "d2": 0}}
