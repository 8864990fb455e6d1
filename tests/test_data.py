import pytest
from conftest import shared_data

from t1 import T1Error, load_beir, load_corpus, load_qrels, load_queries


def test_corpus_formats(tmp_path):
    beir = tmp_path / "corpus.jsonl"
    beir.write_text('{"_id": "a", "title": "T", "text": "x"}\n\n{"_id": "b", "text": "y"}\n')
    docs = load_corpus(beir)
    assert [(d.id, d.title, d.text) for d in docs] == [("a", "T", "x"), ("b", "", "y")]
    assert docs[0].full_text == "T\nx"
    csv = tmp_path / "c.csv"
    csv.write_text('id,text\n1,"hello, world"\n2,bye\n')
    assert [d.text for d in load_corpus(csv)] == ["hello, world", "bye"]
    bright = tmp_path / "docs.jsonl"
    bright.write_text('{"id": "p1", "content": "pony text"}\n')
    assert load_corpus(bright)[0].text == "pony text"


@pytest.mark.parametrize("content, message", [
    ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', r"corpus.jsonl:2: malformed JSON"),
    ('{"_id": "a", "text": "x"}\n{"title": "no id", "text": "y"}\n', r"corpus.jsonl:2: missing field 'id'"),
    ('{"_id": "a"}\n', r"corpus.jsonl:1: missing field 'text'"),
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', r"corpus.jsonl:2: duplicate document id 'a'"),
    ('["a list"]\n', r"corpus.jsonl:1: expected a JSON object"),
    ("\n", r"no documents"),
])
def test_corpus_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(T1Error, match=message):
        load_corpus(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(T1Error, match="no such file"):
        load_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "c.xml").write_text("<x/>")
    with pytest.raises(T1Error, match="unsupported format"):
        load_corpus(tmp_path / "c.xml")


def test_queries_and_qrels(tmp_path):
    q = tmp_path / "q.txt"
    q.write_text("first query\n\nsecond query\n")
    assert load_queries(q) == {"q1": "first query", "q2": "second query"}
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"_id": "1", "text": "  "}\n')
    with pytest.raises(T1Error, match="q.jsonl:1: empty query"):
        load_queries(bad)
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n1\tb\t2\n2\ta\t1\n")
    assert load_qrels(qrels) == {"1": {"a": 1, "b": 2}, "2": {"a": 1}}
    qrels.write_text("query-id\tcorpus-id\tscore\n1\ta\tx\n")
    with pytest.raises(T1Error, match="test.tsv:2: score 'x'"):
        load_qrels(qrels)


def test_real_scifact():
    folder = shared_data("scifact")
    dev = load_beir(folder, "dev")
    assert len(dev.corpus) == 5183 and len(dev.queries) == 100
    ids = {d.id for d in dev.corpus}
    assert all(doc in ids for rel in dev.qrels.values() for doc in rel)
