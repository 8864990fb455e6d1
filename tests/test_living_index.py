"""A living index (#36): add, replace and delete documents in place, as new generations.

The reference for every check is a fresh build of the resulting corpus (the live documents in
the updated index's row order): hits — ids and scores to 1e-5 — must be the same, dense, BM25
and hybrid, exact and through an ANN structure, before and after compaction."""

import json
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from t1 import Document, T1Error
from t1.cli import main
from t1.data import load_corpus
from t1.index import Index

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corpus.jsonl"
QUERIES = ["why do leaves change colour in autumn", "how do plants use light", "volcano eruption lava",
           "prime numbers and proofs", "vaccines and the immune system"]


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    monkeypatch.setenv("T1_INDEX_RETIRE_S", "0")


def _corpus():
    return load_corpus(EXAMPLE)


def _changes(docs):
    """A base of 22 documents; an update with 8 new, 2 changed and 3 unchanged; then 3 deletes."""
    base, new = docs[:22], docs[22:]
    changed = [replace(base[3], text=base[3].text + " Also, volcanoes."), replace(base[7], title="A new title")]
    return base, [*new, *changed, *base[10:13]], [base[0].id, base[15].id, new[1].id]


def _result(index, docs_by_id):
    """The resulting corpus, live documents in the index's row order."""
    return [docs_by_id[i] for i in index.ids]


def _hits(index, model, mode):
    q = model.encode_query(QUERIES, reasoning="none").embeddings
    if mode == "dense":
        rows = index.search(q, k=10)
    elif mode == "hybrid":
        rows = index.search_hybrid(q, QUERIES, k=10, fusion="weighted", weight=0.5)
    else:
        return [[(index.ids[i], s) for i, s in row] for row in index.bm25.search(QUERIES, 10)]
    return [[(h.id, h.score) for h in row] for row in rows]


def _assert_same(a, b):
    for row_a, row_b in zip(a, b, strict=True):
        assert [i for i, _ in row_a] == [i for i, _ in row_b]
        np.testing.assert_allclose([s for _, s in row_a], [s for _, s in row_b], atol=1e-5)


def _assert_like_fresh(index, model, docs_by_id, tmp_path, name):
    fresh = Index.build(model, _result(index, docs_by_id), tmp_path / name, dtype="float32", show_progress_bar=False)
    for mode in ("dense", "bm25", "hybrid"):
        _assert_same(_hits(index, model, mode), _hits(fresh, model, mode))
    return fresh


@pytest.mark.parametrize("ann", [None, "hnsw"])
def test_update_delete_compact_equal_a_fresh_build(tiny_model, tmp_path, ann):
    from t1.index.ann import build as build_ann

    docs = _corpus()
    by_id = {d.id: d for d in docs}
    base, more, gone = _changes(docs)
    index = Index.build(tiny_model, base, tmp_path / "idx", dtype="float32", show_progress_bar=False)
    if ann:
        build_ann(index, ann)
    report = index.update(tiny_model, more)
    assert (len(report.added), len(report.replaced), len(report.unchanged)) == (8, 2, 3)
    assert report.generation == 1 and report.documents == 30
    assert index.generation == 0 and len(index) == 22  # this object keeps its generation
    index = index.reopen()
    assert index.generation == 1 and len(index) == 30
    by_id.update({d.id: d for d in more})
    _assert_like_fresh(index, tiny_model, by_id, tmp_path, "fresh-1")
    report = index.delete([*gone, "no-such-id"])
    assert report.deleted == gone and report.not_found == ["no-such-id"] and report.documents == 27
    index = index.reopen()
    assert index.resolve_ann(None) == ann  # ANN over the base, exact over the new segment
    assert not set(gone) & {h.id for row in index.search(tiny_model.encode_query(QUERIES, reasoning="none")
                                                          .embeddings, k=30) for h in row}
    _assert_like_fresh(index, tiny_model, by_id, tmp_path, "fresh-2")
    # excluding an id works across segments (a replaced document is excluded by its id)
    q = tiny_model.encode_query(QUERIES[:1], reasoning="none").embeddings
    assert base[3].id not in [h.id for h in index.search(q, k=27, exclude=[base[3].id])[0]]
    assert "generation 2" in Index.verify(index.folder)
    report = index.compact()
    assert report.compacted and report.generation == 3
    index = index.reopen()
    assert not index.manifest.get("deleted") and len(index.manifest["segments"]) == 1
    assert sorted(index.ann_kinds) == ([ann] if ann else [])
    _assert_like_fresh(index, tiny_model, by_id, tmp_path, "fresh-3")
    assert "generation 3" in Index.verify(index.folder)
    # an update after compaction, then the old files are gone once retired (grace 0 here)
    index.update(tiny_model, [Document("late", "a late volcano document", "Late")])
    names = {p.name for p in index.folder.iterdir()}
    assert not {"emb-00000.npy", "seg-000001", "bm25-000001"} & names


def test_reader_keeps_its_generation(tiny_model, tmp_path):
    docs = _corpus()
    index = Index.build(tiny_model, docs[:10], tmp_path / "idx", show_progress_bar=False)
    q = tiny_model.encode_query(QUERIES, reasoning="none").embeddings
    before = _hits(index, tiny_model, "hybrid")
    Index.open(index.folder).update(tiny_model, docs[10:20])
    Index.open(index.folder).delete([docs[0].id])
    assert index.reopen() is not index and len(index.reopen()) == 19
    assert _hits(index, tiny_model, "hybrid") == before and len(index.search(q, k=30)[0]) == 10
    newest = index.reopen()
    assert newest.generation == 2 and newest.reopen() is newest


def test_refusals(tiny_model, tiny_model_path, tmp_path):
    from t1 import T1Model

    docs = _corpus()
    index = Index.build(tiny_model, docs[:5], tmp_path / "idx", show_progress_bar=False)
    with pytest.raises(T1Error, match="given twice"):
        index.update(tiny_model, [docs[6], docs[6]])
    other = T1Model.from_pretrained(str(tiny_model_path), device="cpu", document_engine="bf16")
    with pytest.raises(T1Error, match="document engine"):
        index.update(other, docs[6:7])
    nothing = index.update(tiny_model, docs[:5])
    assert not nothing.changed and nothing.unchanged == [d.id for d in docs[:5]] and nothing.generation == 0


def test_old_index_opens_searches_and_verifies(tiny_model, tmp_path):
    """An index built before generations (no hash in its rows, no words in its BM25) is
    generation 0: it opens, searches and verifies as before; an update explains what it needs."""
    docs = _corpus()
    index = Index.build(tiny_model, docs[:10], tmp_path / "idx", show_progress_bar=False)
    (index.folder / "bm25" / "t1_tokens.jsonl").unlink()
    manifest = json.loads((index.folder / "manifest.json").read_text())
    del manifest["files"]["bm25/t1_tokens.jsonl"]
    (index.folder / "manifest.json").write_text(json.dumps(manifest))
    old = Index.open(index.folder)
    assert old.generation == 0 and len(old) == 10
    assert _hits(old, tiny_model, "hybrid") == _hits(index, tiny_model, "hybrid")
    assert "sha256 checksums match" in Index.verify(old.folder)
    with pytest.raises(T1Error, match="kept the words"):
        old.update(tiny_model, docs[10:12])


# ---------------------------------------------------------------- the command line
def test_cli_update_delete_compact_report(tiny_model_path, tmp_path, capsys):
    docs = _corpus()
    folder, more = tmp_path / "idx", tmp_path / "more.jsonl"
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs[:20]))
    changed = replace(docs[2], text="changed text about volcanoes")
    more.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
                            for d in [*docs[20:23], changed, docs[5]]))
    common = ["--model", str(tiny_model_path), "--device", "cpu"]
    assert main(["index", *common, "--corpus", str(base), "--out", str(folder)]) == 0
    capsys.readouterr()
    assert main(["index", *common, "--corpus", str(more), "--out", str(folder), "--update"]) == 0
    out = capsys.readouterr().out
    assert "3 added, 1 replaced, 1 unchanged, 0 deleted, 0 not found; generation 1, 23 documents" in out
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{docs[0].id}\n\nnope\n")
    assert main(["index", "--delete", str(ids), "--delete-id", docs[1].id, "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 replaced, 0 unchanged, 2 deleted, 1 not found (not found: nope); generation 2, 21" in out
    assert main(["index", "--verify", str(folder)]) == 0
    assert "generation 2" in capsys.readouterr().out
    assert main(["index", "--compact", "--out", str(folder)]) == 0
    assert "compacted; generation 3, 21 documents" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "x", "text": "fine"}\n{"_id": 3}\n')
    assert main(["index", *common, "--corpus", str(bad), "--out", str(folder), "--update"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:2:" in err and "Traceback" not in err
    assert main(["index", "--model", str(tiny_model_path), "--device", "cpu", "--engine", "bf16", "--corpus",
                 str(more), "--out", str(folder), "--update"]) == 2
    assert "document engine" in capsys.readouterr().err


# ---------------------------------------------------------------- killed mid-update, two writers
def _t1(args, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "t1", *map(str, args)], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=180)


@pytest.mark.parametrize("point", ["after-segment", "after-bm25", "after-manifest"])
def test_killed_mid_update_leaves_a_generation(tiny_model_path, tmp_path, point):
    docs = _corpus()
    folder, base, more = tmp_path / "idx", tmp_path / "base.jsonl", tmp_path / "more.jsonl"
    base.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs[:15]))
    more.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs[15:]))
    common = ["--model", tiny_model_path, "--device", "cpu"]
    assert main([str(a) for a in ["index", *common, "--corpus", base, "--out", folder]]) == 0
    update = ["index", *common, "--corpus", more, "--out", folder, "--update"]
    killed = _t1(update, {"T1_TEST_DIE_AT": point, "T1_INDEX_RETIRE_S": "0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    index = Index.open(folder)
    assert index.generation == (1 if point == "after-manifest" else 0)
    assert len(index) == (30 if point == "after-manifest" else 15)
    assert main(["index", "--verify", str(folder)]) == 0
    again = _t1(update)
    assert again.returncode == 0, again.stderr[-2000:]
    assert ("15 unchanged" if point == "after-manifest" else "15 added") in again.stdout
    index = Index.open(folder)
    assert len(index) == 30 and main(["index", "--verify", str(folder)]) == 0
    assert {p.name for p in folder.iterdir() if p.name.startswith(("seg-", "bm25-"))} == (
        {"seg-000001", "bm25-000001"})


def test_second_writer_refused_and_readers_never_fail(tiny_model, tmp_path, monkeypatch):
    from t1.index.build import hold_lock

    monkeypatch.setenv("T1_INDEX_RETIRE_S", "60")  # readers reopen well within this
    docs = _corpus()
    index = Index.build(tiny_model, docs[:10], tmp_path / "idx", show_progress_bar=False)
    with hold_lock(index.folder), pytest.raises(T1Error, match="another t1 process"):
        Index.open(index.folder).update(tiny_model, docs[10:12])
    q = tiny_model.encode_query(QUERIES, reasoning="none").embeddings
    errors, done = [], threading.Event()

    def read():
        reader = index
        while not done.is_set():
            try:
                reader = reader.reopen()
                reader.search_hybrid(q, QUERIES, k=5)
            except Exception as e:  # noqa: BLE001 - any failure is the test's finding
                errors.append(e)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(10, 30, 4):
            Index.open(index.folder).update(tiny_model, docs[i : i + 4])
            Index.open(index.folder).delete([docs[i].id])
    finally:
        done.set()
        thread.join()
    assert not errors and len(index.reopen()) == 30 - 5
