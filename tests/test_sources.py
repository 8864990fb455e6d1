"""Training text from Debian packages (`t1.training.sources`) and the `term` pairs built from it.

The fixtures under tests/fixtures/sources/ are laid out like the installed packages:
wordnet/ like /usr/share/wordnet, dictd/ like /usr/share/dictd, python/ like
/usr/share/doc/python3.11/html and man/ like /usr/share/man.
"""

import json
from pathlib import Path

import pytest

from t1 import T1Error
from t1.cli import main
from t1.data import Document
from t1.training import sources
from t1.training.pairs import TERM_INSTRUCTION, make_pairs
from t1.training.sources import SOURCES, read_foldoc, read_manpages, read_python_docs, read_source, read_wordnet

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
FOLDERS = {"wordnet": "wordnet", "foldoc": "dictd", "python-docs": "python", "manpages": "man"}


def _titles_texts(docs):
    return [(d.title, d.text) for d in docs]


def test_wordnet_synsets_become_lemmas_and_glosses():
    docs = read_wordnet(FIXTURES / "wordnet")
    assert [d.id for d in docs][:2] == ["wordnet:noun:09411430", "wordnet:noun:09448361"]
    assert _titles_texts(docs) == [
        ("river", 'a large natural stream of water (larger than a creek); "the river was navigable for 50 miles"'),
        ("stream, watercourse", "a natural body of running water flowing on or under the earth"),
        ("brook, creek, rill", 'a natural stream of water smaller than a river (and often a tributary of a river); '
                               '"the creek dried up every summer"'),
        ("current, stream", 'a steady flow of a fluid (usually from natural causes); '
                            '"the raft floated downstream on the current"'),
        ("outback, remote", "inaccessible and sparsely populated"),  # the adjective marker (a) is gone
    ]
    assert [d.title for d in read_wordnet(FIXTURES / "wordnet", limit=2)] == ["river", "brook, creek, rill"]


def test_foldoc_entries_lose_their_dictd_markup():
    assert _titles_texts(read_foldoc(FIXTURES / "dictd")) == [  # one per entry: "$" and "recursive" are aliases
        ("grep", 'A Unix command for searching files for lines matching a given regular expression (RE). '
                 'Named after the qed/ed editor subcommand "g/re/p".'),
        ("recursion", "When a function (or procedure) calls itself. See also tail recursion."),
        ("dollar", '"$", numeric character reference: "&#36;". In a regular expression, $ matches the end of '
                   'the string.'),
    ]


def test_python_docs_sections_keep_prose_and_leave_code_out():
    docs = read_python_docs(FIXTURES / "python")
    assert [d.id for d in docs] == ["python-docs:library/shelf.html#module-shelf",
                                    "python-docs:library/shelf.html#shelf-objects",
                                    "python-docs:tutorial/sorting.html#sort-keys"]
    assert _titles_texts(docs) == [
        ("shelf — Keep objects on a shelf",
         "Source code: Lib/shelf.py The shelf module keeps Python objects in a file, so that a later run of the "
         "program finds them again & can change them. Objects must be picklable."),
        ("shelf — Keep objects on a shelf: Shelf Objects",
         "class shelf.Shelf(path) Open the shelf stored at path. Each key is a string and each value any object "
         "that the pickle module can write."),
        ("Sorting lists: Sort keys",  # the h1 section (a table of contents) and "See also" are too short
         "Both list.sort() and sorted() take a key function. It is called once for each element, and the "
         "elements are then ordered by what it returns."),
    ]


def test_man_pages_give_the_name_line_and_the_description():
    docs = read_manpages(FIXTURES / "man")  # gizmos.7 only includes another page (.so): no document
    assert [d.id for d in docs] == ["manpages:man2/frob.2", "manpages:man7/widgets.7"]
    assert _titles_texts(docs) == [
        ("frob, frob2 - twiddle the bits of a file descriptor",
         "frob() twiddles the bits of the open file referred to by fd. The flags argument is zero or FROB_HARD; "
         "see fcntl(2). frob2() is the same, but never blocks — it returns EAGAIN instead."),
        ("widgets - overview of widgets",  # the .EX example is left out
         'A widget is a small "gadget" for a window. Creating widgets Use widget_new(3) to make one: Widgets '
         "are freed with widget_free(3)."),
    ]


def test_term_pairs_map_a_headword_to_its_definition():
    docs = read_wordnet(FIXTURES / "wordnet")
    rows = make_pairs(docs, {"term": 5}, negatives=2, depth=5, domain="wordnet")
    assert len(rows) == 5
    texts = {d.text for d in docs}
    for row in rows:
        doc = next(d for d in docs if d.id == row["doc_id"])
        assert (row["query"], row["pos"], row["instruction"]) == (doc.title, [doc.text], TERM_INSTRUCTION)
        assert row["source"] == "term" and row["domain"] == "wordnet"
        assert set(row["neg"]) <= texts - {doc.text}  # negatives without headwords, like the positive
    river = next(r for r in rows if r["query"] == "river")
    assert river["neg"] == [docs[2].text]  # the only other gloss that says "river"


def test_another_sense_of_the_same_term_is_no_negative():
    senses = [Document("a", "sloping land beside a body of water such as a river", "bank"),
              Document("b", "a financial institution that accepts deposits, not a river", "Bank"),
              Document("c", "a river bank is where the land meets the water of a river", "shore")]
    rows = make_pairs(senses, {"term": 3}, negatives=2, depth=3)
    negatives = {r["query"]: r["neg"] for r in rows}
    assert negatives["bank"] == [senses[2].text] and negatives["Bank"] == [senses[2].text]


@pytest.fixture
def fixture_sources(monkeypatch):
    """The registry's readers pointed at the fixtures."""
    for name, folder in FOLDERS.items():
        source = SOURCES[name]
        monkeypatch.setitem(SOURCES, name, source._replace(
            reader=lambda root, limit, read=source.reader, folder=folder: read(FIXTURES / folder, limit)))


def test_pairs_command_with_sources(tmp_path, capsys, fixture_sources):
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "pairs", "--source", "wordnet", "--source", "foldoc", "--source", "manpages",
                 "--term", "3", "--title", "2", "--negatives", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wordnet: 5 documents, 3 term pairs" in printed and "manpages: 2 documents, 2 title pairs" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # each source makes the kinds that suit it: no title pairs from dictionary headwords, no term pairs from man pages
    assert [(r["domain"], r["source"]) for r in rows] == ([("wordnet", "term")] * 3 + [("foldoc", "term")] * 3
                                                          + [("manpages", "title")] * 2)
    for domain, folder in FOLDERS.items():
        own = {d.text for d in read_source(domain, FIXTURES / folder)}
        for row in (r for r in rows if r["domain"] == domain):
            assert set(row["neg"]) <= own  # mined within the record's own source
    assert any(r["neg"] for r in rows if r["domain"] == "wordnet")
    assert main(["data", "pairs", "--source", "foldoc", "--sentence", "1", "--out", str(out)]) == 2
    assert "foldoc: no document of the corpus gave a pair" in capsys.readouterr().err  # 1-2 sentence entries


def test_pairs_command_errors(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "pairs.jsonl")
    assert main(["data", "pairs", "--source", "wikipedia", "--term", "1", "--out", out]) == 2
    assert "unknown source 'wikipedia' (use wordnet, foldoc, python-docs, manpages)" in capsys.readouterr().err
    monkeypatch.setattr(sources, "WORDNET_ROOT", str(tmp_path / "no-wordnet"))
    assert main(["data", "pairs", "--source", "wordnet", "--term", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "data.noun: not found; install the Debian package: apt-get install wordnet-base" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["data", "pairs", "--term", "1", "--out", out]) == 2
    assert "give either a CORPUS or --source NAME" in capsys.readouterr().err
    assert main(["data", "pairs", "--source", "python-docs", "--term", "1", "--out", out]) == 2
    assert "python-docs gives title and sentence pairs, not term" in capsys.readouterr().err
    with pytest.raises(T1Error, match="apt-get install dict-foldoc"):
        read_foldoc(tmp_path)


def _installed(name: str) -> bool:
    marker = {"wordnet": Path(sources.WORDNET_ROOT) / "data.noun",
              "foldoc": Path(sources.FOLDOC_ROOT) / "foldoc.index",
              "python-docs": Path(sources.PYTHON_DOCS_ROOT) / "library",
              "manpages": sources.DPKG_INFO / "manpages.list"}[name]
    return marker.exists()


@pytest.mark.parametrize("name", list(SOURCES))
def test_installed_packages(name):
    if not _installed(name):
        pytest.skip(f"Debian package {SOURCES[name].package} is not installed")
    docs = read_source(name)
    assert len(docs) > 100 and all(d.text.strip() and d.title.strip() for d in docs)
    assert len({d.id for d in docs}) == len(docs)
