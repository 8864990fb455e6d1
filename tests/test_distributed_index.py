"""`torchrun -m t1 index`: two CPU processes (gloo) encode disjoint shards into one folder and
produce the index one process produces; the run resumes a build that died part-way."""

import json

import numpy as np
import pytest
from interrupt import Killed, encode_counting  # noqa: E402
from torchrun import torchrun_beside  # noqa: E402

from t1 import Document, T1Model
from t1.distributed import SINGLE, Group, current, env_world
from t1.index import Index

WORDS = "cell protein gene river water rock prime integer theorem solar energy carbon robot sensor code".split()
DOCS = [Document(f"d{i}", " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 4)), f"title {i}")
        for i in range(11)]




def _write_corpus(path):
    path.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in DOCS))


def test_two_processes_resume_and_match_one_process(tmp_path, tiny_model_path, monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    _write_corpus(corpus)
    two, one = tmp_path / "two", tmp_path / "one"
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")

    # A build that died after its first shard (of 6): the two-process run must resume it.
    encode_counting(monkeypatch, die_at=2)
    with pytest.raises(Killed):
        Index.build(model, DOCS, two, shard_size=2)
    monkeypatch.undo()
    first = (two / "emb-00000.npy").stat().st_mtime_ns
    assert not (two / "emb-00001.npy").exists() and not json.loads((two / "manifest.json").read_text())["complete"]

    # torchrun resumes it on two processes; meanwhile the same corpus is indexed in this process.
    reference, output = torchrun_beside(
        ["t1", "index", "--model", tiny_model_path, "--corpus", corpus, "--out", two, "--shard-size", "2",
         "--device", "cpu"], lambda: Index.build(model, DOCS, one, shard_size=2))
    assert output.count("indexed 11 documents") == 1  # rank 0 reports, once

    built = json.loads((two / "manifest.json").read_text())
    assert built.pop("built_by") == {"world_size": 2, "shards_per_rank": [3, 2]}  # the 5 missing shards, split
    assert built == reference.manifest
    assert (two / "emb-00000.npy").stat().st_mtime_ns == first  # the finished shard was not encoded again
    names = sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in two.iterdir()) == names  # no temporary files left behind
    for name in names:
        if name.startswith("docs-"):
            assert (two / name).read_bytes() == (one / name).read_bytes()
        elif name.startswith("emb-"):
            a, b = np.load(two / name), np.load(one / name)
            assert a.dtype == b.dtype == np.float16
            np.testing.assert_array_equal(a, b)  # same shards, same batches, one thread: identical
    q = model.encode_query(["river water"], reasoning="none").embeddings
    opened = Index.open(two, model=model)
    assert [h.id for h in opened.search(q, k=11)[0]] == [h.id for h in reference.search(q, k=11)[0]]


def test_one_process_group_without_a_launcher(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert env_world() == (0, 1, 0) and current() == SINGLE
    assert SINGLE.broadcast("x") == "x" and SINGLE.all_gather(3) == [3] and SINGLE.is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (3, 4, 1)
    assert not Group(rank=3, world=4, local_rank=1).is_main
