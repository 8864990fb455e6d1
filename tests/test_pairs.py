"""Self-supervised pairs, whole-sentence traces and the paired bootstrap."""

import pytest

from t1 import T1Error
from t1.data import Document
from t1.evaluation.metrics import paired_bootstrap
from t1.training.pairs import SENTENCE_INSTRUCTION, TITLE_INSTRUCTION, make_pairs, split_sentences
from t1.training.reasoning_data import whole_sentences

TOPICS = ["solar panels convert sunlight", "rivers carve rock valleys", "vaccines train immune memory",
          "prime numbers have two divisors", "robots read lidar distances", "markets set prices by demand"]
CORPUS = [Document(f"d{i}", " ".join(f"Sentence {j} says that {t} in case {j}." for j in range(4)),
                   f"A study of how {t}") for i, t in enumerate(TOPICS)]


def test_title_pairs_map_a_title_to_its_own_text():
    rows = make_pairs(CORPUS, {"title": 3}, negatives=2, depth=5)
    assert len(rows) == 3
    for row in rows:
        doc = next(d for d in CORPUS if d.id == row["doc_id"])
        assert row["query"] == doc.title and row["pos"] == [doc.text] and row["instruction"] == TITLE_INSTRUCTION
        assert len(row["neg"]) == 2 and doc.text not in " ".join(row["neg"])  # never its own document


def test_sentence_pairs_take_the_sentence_out_of_its_passage():
    rows = make_pairs(CORPUS, {"sentence": 4, "title": 2}, negatives=1, depth=5)
    kinds = [r["source"] for r in rows]
    assert kinds.count("sentence") == 4 and kinds.count("title") == 2
    assert len({r["doc_id"] for r in rows}) == 6  # one pair per document
    for row in (r for r in rows if r["source"] == "sentence"):
        doc = next(d for d in CORPUS if d.id == row["doc_id"])
        assert row["query"] in split_sentences(doc.text) and row["query"] not in row["pos"][0]
        assert row["pos"][0].startswith(doc.title + "\n") and row["instruction"] == SENTENCE_INSTRUCTION
    assert make_pairs(CORPUS, {"sentence": 4}, seed=1) != make_pairs(CORPUS, {"sentence": 4}, seed=2)


def test_pair_errors():
    with pytest.raises(T1Error, match="unknown pair kind"):
        make_pairs(CORPUS, {"abstract": 1})
    with pytest.raises(T1Error, match="no document"):
        make_pairs([Document("x", "too short", "no")], {"title": 1, "sentence": 1})


def test_whole_sentences_cuts_back_to_the_last_sentence_end():
    assert whole_sentences("The claim holds. It was shown in mice. The dose") == "The claim holds. It was shown in mice."
    assert whole_sentences("Is it true? Yes!") == "Is it true? Yes!"
    assert whole_sentences("version 2.5 of the drug without an end") == ""  # a decimal point ends nothing


def test_paired_bootstrap():
    a = {f"q{i}": 0.5 + 0.01 * i for i in range(50)}
    shifted = {q: v - 0.1 for q, v in a.items()}
    mean, low, high = paired_bootstrap(a, shifted)
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = {q: v + (0.2 if i % 2 else -0.2) for i, (q, v) in enumerate(a.items())}
    mean, low, high = paired_bootstrap(noisy, a, seed=3)
    assert low < 0 < high and low < mean < high  # no supported difference
    with pytest.raises(ValueError, match="no query"):
        paired_bootstrap({"a": 1.0}, {"b": 1.0})


def test_data_pairs_command(tmp_path, capsys):
    import json

    from t1.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in CORPUS))
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "pairs", str(corpus), "--out", str(out), "--title", "2", "--sentence", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in rows].count("title") == 2 and len(rows) == 4
    assert {r["domain"] for r in rows} == {"corpus"}  # the corpus file's name
    assert main(["data", "pairs", str(corpus), "--out", str(out)]) == 2
    assert "ask for some pairs" in capsys.readouterr().err
