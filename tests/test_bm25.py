from pathlib import Path

import pytest

from t1.data import Document, load_corpus
from t1.errors import T1Error
from t1.evaluation.retrievers import BM25Retriever, parse_retriever

FIXTURE = Path(__file__).parent / "fixtures" / "bright"


@pytest.fixture(scope="module")
def leetcode():
    return BM25Retriever(load_corpus(FIXTURE / "documents" / "leetcode.jsonl"), show_progress=False)


QUERY = {"0": "Given an array of integers nums and an integer target, return indices of the two numbers "
              "such that they add up to target."}


def test_excluded_documents_are_removed_before_the_cut(leetcode):
    top1 = leetcode.retrieve(QUERY, k=1)
    assert list(top1["0"]) == ["leetcode/leetcode_1.txt"]  # the verbatim duplicate wins...
    excluded = leetcode.retrieve(QUERY, k=1, exclude={"0": {"leetcode/leetcode_1.txt", "not-in-corpus"}})
    assert list(excluded["0"]) == ["leetcode/leetcode_167.txt"]  # ...and once excluded, k=1 still fills
    full = leetcode.retrieve(QUERY, k=100, exclude={"0": {"leetcode/leetcode_1.txt"}})
    assert "leetcode/leetcode_1.txt" not in full["0"]


def test_scores_are_sorted_positive_and_non_matching_documents_dropped(leetcode):
    res = leetcode.retrieve(QUERY, k=100)["0"]
    scores = list(res.values())
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert "leetcode/leetcode_70.txt" not in res  # shares no term with the query
    assert leetcode.retrieve({"q": "the of and"}, k=10) == {"q": {}}  # only stop words


def test_stemming_matches_inflected_forms():
    bm25 = BM25Retriever([Document("a", "moths circling a lamp"), Document("b", "a river of rocks")], show_progress=False)
    assert list(bm25.retrieve({"q": "moth circles"}, k=5)["q"]) == ["a"]


def test_lucene_bm25_score_by_hand():
    # one term, in 1 of 2 documents; Lucene BM25: idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    import math

    docs = [Document("a", "solar solar energy"), Document("b", "wind power")]
    bm25 = BM25Retriever(docs, k1=0.9, b=0.4, show_progress=False)
    score = bm25.retrieve({"q": "solar"}, k=2)["q"]["a"]
    idf = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))
    tf, dl, avgdl = 2, 3, 2.5  # bm25s keeps every non-stop-word token
    assert score == pytest.approx(idf * tf / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avgdl)), rel=1e-5)
    assert bm25.settings == {"method": "lucene", "k1": 0.9, "b": 0.4, "stemmer": "english", "stopwords": "en"}


def test_reasoning_replaces_the_query(leetcode):
    res = leetcode.retrieve({"1": "unrelated words"}, k=3,
                            reasoning={"1": "slide a window and count distinct characters"})
    assert next(iter(res["1"])) == "leetcode/leetcode_340.txt"
    with pytest.raises(T1Error, match="no reasoning given"):
        leetcode.retrieve({"1": "x", "2": "y"}, k=3, reasoning={"1": "z"})


def test_retriever_specs():
    assert parse_retriever("bm25") == ("bm25", "")
    assert parse_retriever("st:all-minilm-l6-v2") == ("st", "all-minilm-l6-v2")
    assert parse_retriever("t1:org/model") == ("t1", "org/model")
    for bad in ("bm25:x", "st:", "dense", "t1"):
        with pytest.raises(T1Error, match="unknown retriever"):
            parse_retriever(bad)
