"""Every user mistake is one line on stderr naming the problem, exit status 2, no traceback, found
before any model loads where it can be, and nothing already written is lost. Each test runs the
real `t1.cli.main`."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from t1.cli import main
from t1.model import T1Model

FIXTURE = Path(__file__).parent / "fixtures" / "bright"
DOCS = [("d1", "Solar panels", "Photovoltaic cells turn sunlight into electricity."),
        ("d2", "Wind", "Wind turbines turn moving air into electricity."),
        ("d3", "Vaccines", "A vaccine trains the immune system to recognise a virus.")]


def fails(capsys, argv, message: str) -> str:
    """Run `t1 ARGV`: exit 2 and one stderr line `t1: error: ...` holding `message`."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t1: error: ") and message in lines[0], err
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the mistake must be found before."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was reported")

    monkeypatch.setattr(T1Model, "from_pretrained", loaded)


def write_beir(folder: Path, queries=("q1", "q2"), judged=("d1", "d3")) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                 for i, t, x in DOCS))
    texts = ["how do solar cells make electricity", "how does a vaccine protect against a virus"]
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in zip(queries, texts)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, d in zip(dict.fromkeys(queries), judged)))
    return folder


# ---------------------------------------------------------------- 1. unreadable input files
def _parquet(path: Path, rows: list[dict], keep: float = 1.0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("name, content, message", [
    ("corpus.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "caf\xe9"}\n',
     "corpus.jsonl:2: not valid UTF-8 (byte 0xe9"),
    ("corpus.csv", b"id,text\na,x\nb,caf\xe9\n", "corpus.csv:3: not valid UTF-8"),
    ("corpus.jsonl", b'{"_id": "a", "text": "x"}\n[1, 2]\n', "corpus.jsonl:2: expected a JSON object, got list"),
    ("corpus.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "body2": "y"}\n', "corpus.jsonl:2: missing field 'text'"),
    ("corpus.jsonl", b'{"text": "x"}\n', "corpus.jsonl:1: missing field 'id'"),
    ("corpus.parquet", b"PAR1 this is not a parquet file", "corpus.parquet: not a readable parquet file"),
    ("corpus.parquet", None, "corpus.parquet: not a readable parquet file"),  # truncated
])
def test_unreadable_corpus(tmp_path, capsys, no_model, name, content, message):
    path = tmp_path / name
    if content is None:
        _parquet(path, [{"id": str(i), "text": f"document {i}"} for i in range(100)], keep=0.6)
    else:
        path.write_bytes(content)
    fails(capsys, ["index", "--corpus", path, "--out", tmp_path / "idx"], message)
    assert not (tmp_path / "idx").exists()


def test_unreadable_queries_and_qrels(tmp_path, capsys, no_model):
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "\xff\xfe"}\n')
    fails(capsys, ["search", "--index", tmp_path, "--queries", queries], "queries.jsonl:2: not valid UTF-8")
    folder = write_beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xc3\t1\n")
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"],
          "test.tsv:2: not valid UTF-8")


def test_corrupt_bright_parquet(tmp_path, capsys):
    root = tmp_path / "bright"
    shutil.copytree(FIXTURE, root)
    (root / "documents" / "biology.jsonl").unlink()
    _parquet(root / "documents" / "biology.parquet", [{"id": "a", "content": "x"}] * 50, keep=0.5)
    fails(capsys, ["bright", "--retriever", "bm25", "--dataset", root, "--tasks", "biology", "--out", tmp_path / "o"],
          "biology.parquet: not a readable parquet file")


# ---------------------------------------------------------------- 2. damaged indexes
@pytest.fixture(scope="module")
def built_index(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("damage") / "idx"
    corpus = Path(__file__).parents[1] / "examples" / "corpus.jsonl"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(out),
                 "--device", "cpu", "--shard-size", "8"]) == 0  # 30 documents: 4 shards
    return out


@pytest.fixture
def index(built_index, tmp_path):
    return Path(shutil.copytree(built_index, tmp_path / "idx"))


def _truncate(path: Path, by: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:-by])


def _drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _without_checksums(index: Path) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    del manifest["files"]
    (index / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_records_sizes_rows_and_checksums(index):
    files = json.loads((index / "manifest.json").read_text())["files"]
    assert sorted(f for f in files if not f.startswith("bm25/")) == [
        f"{kind}-{i:05d}.{ext}" for kind, ext in (("docs", "jsonl"), ("emb", "npy")) for i in range(4)]
    assert sorted(f for f in files if f.startswith("bm25/")) == sorted(
        f"bm25/{p.name}" for p in (index / "bm25").iterdir())  # every artefact, BM25's files too
    assert [files[f"emb-{i:05d}.npy"]["rows"] for i in range(4)] == [8, 8, 8, 6]
    assert files["docs-00003.jsonl"]["bytes"] == (index / "docs-00003.jsonl").stat().st_size
    assert all(len(f["sha256"]) == 64 for f in files.values())


@pytest.mark.parametrize("damage, message", [
    (lambda idx: _truncate(idx / "emb-00001.npy"), "emb-00001.npy has"),
    (lambda idx: (idx / "emb-00002.npy").unlink(), "emb-00002.npy is missing"),
    (lambda idx: _drop_last_line(idx / "docs-00000.jsonl"), "docs-00000.jsonl has"),
    (lambda idx: (idx / "emb-00003.npy").write_bytes(b"garbage"), "emb-00003.npy has 7 bytes, the manifest says"),
])
def test_damaged_index_is_one_line_before_the_model(index, capsys, no_model, damage, message):
    damage(index)
    line = fails(capsys, ["search", "--index", index, "q"], message)
    assert "damaged index" in line and "--verify" in line
    fails(capsys, ["index", "--verify", index], message)


def test_verify_lists_every_problem(index, capsys):
    (index / "emb-00003.npy").write_bytes(b"garbage")
    (index / "docs-00001.jsonl").unlink()
    fails(capsys, ["index", "--verify", index], "damaged index: docs-00001.jsonl is missing; emb-00003.npy has 7 "
          "bytes, the manifest says 896; emb-00003.npy: not a .npy array")


def test_manifest_missing_a_key(index, capsys, no_model):
    manifest = json.loads((index / "manifest.json").read_text())
    del manifest["dim"]
    (index / "manifest.json").write_text(json.dumps(manifest))
    fails(capsys, ["search", "--index", index, "q"], "manifest.json: damaged manifest: no 'dim' entry")


def test_verify_checks_checksums(index, capsys):
    assert main(["index", "--verify", str(index)]) == 0
    assert ("30 documents in 4 shards, embedded by the hf document engine: files present, sizes, rows and sha256 "
            "checksums match") in capsys.readouterr().out
    emb = index / "emb-00001.npy"
    data = bytearray(emb.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only a checksum sees it
    emb.write_bytes(bytes(data))
    fails(capsys, ["index", "--verify", index], "emb-00001.npy does not match its sha256 checksum")


def test_old_index_without_file_entries(index, capsys, tiny_model_path):
    _without_checksums(index)
    assert main(["index", "--verify", str(index)]) == 0
    assert "no checksums to compare" in capsys.readouterr().out
    assert main(["search", "--index", str(index), "--model", str(tiny_model_path), "--device", "cpu",
                 "--reasoning", "none", "-k", "30", "--json", "solar"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["hits"]) == 30
    # still checked: a truncated .npy against its header, a short docs file when it is read
    _drop_last_line(index / "docs-00002.jsonl")
    fails(capsys, ["search", "--index", index, "--model", tiny_model_path, "--device", "cpu", "--reasoning", "none",
                   "-k", "30", "solar"], "docs-00002.jsonl: 7 rows, expected 8")
    fails(capsys, ["index", "--verify", index], "docs-00002.jsonl has 7 rows, expected 8")
    _truncate(index / "emb-00000.npy", by=10)
    fails(capsys, ["search", "--index", index, "q"], "emb-00000.npy is truncated")


# ---------------------------------------------------------------- 3. zero and negative numbers
@pytest.mark.parametrize("argv, message", [
    (["index", "--corpus", "{corpus}", "--out", "{tmp}/i", "--shard-size", "-1"], "--shard-size must be at least 1, got -1"),
    (["index", "--corpus", "{corpus}", "--out", "{tmp}/i", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["index", "--corpus", "{corpus}", "--out", "{tmp}/i", "--max-document-length", "0"], "--max-document-length must be at least 1"),
    (["search", "--index", "{tmp}", "-k", "0", "q"], "-k/--k must be at least 1, got 0"),
    (["search", "--index", "{tmp}", "--traces", "0", "q"], "--traces must be at least 1"),
    (["search", "--index", "{tmp}", "--max-new-tokens", "0", "q"], "--max-new-tokens must be at least 1"),
    (["search", "--index", "{tmp}", "--ef-search", "-5", "q"], "--ef-search must be at least 1"),
    (["search", "--index", "{tmp}", "--top-p", "0", "q"], "--top-p must be above 0 and at most 1"),
    (["search", "--index", "{tmp}", "--fusion-weight", "1.5", "q"], "--fusion-weight must be between 0 and 1"),
    (["search", "--index", "{tmp}", "--temperature", "nan", "q"], "--temperature must be positive"),
    (["search", "--index", "{tmp}", "-k", "ten", "q"], "-k/--k must be an integer, got 'ten'"),
    (["eval", "--dataset", "{tmp}", "--retriever", "bm25", "--out", "{tmp}/o", "-k", "0"], "-k/--k must be at least 1"),
    (["eval", "--dataset", "{tmp}", "--retriever", "bm25", "--out", "{tmp}/o", "--batch-size", "-2"],
     "--batch-size must be at least 1"),
    (["bright", "--retriever", "bm25", "--traces", "0"], "--traces must be at least 1"),
    (["bright", "--retriever", "bm25", "--max-new-tokens", "-1"], "--max-new-tokens must be at least 1"),
    (["serve", "--index", "{tmp}", "--max-k", "0"], "--max-k must be at least 1"),
    (["serve", "--index", "{tmp}", "--timeout", "0"], "--timeout must be positive"),
    (["serve", "--index", "{tmp}", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["ann", "check", "--index", "{tmp}", "--queries", "0"], "--queries must be at least 1"),
    (["ann", "build", "--index", "{tmp}", "--nlist", "-1"], "--nlist must be at least 1"),
])
def test_numbers_that_make_no_sense(tmp_path, capsys, no_model, argv, message):
    corpus = Path(__file__).parents[1] / "examples" / "corpus.jsonl"
    fails(capsys, [a.format(tmp=tmp_path, corpus=corpus) for a in argv], message)
    assert not (tmp_path / "i").exists()  # `--shard-size -1` used to write an empty index and report success


# ---------------------------------------------------------------- 4. a failed re-evaluation keeps the old run
def test_failed_reevaluation_keeps_previous_results(tmp_path, capsys, monkeypatch):
    folder = write_beir(tmp_path / "beir")
    out = tmp_path / "run"
    assert main(["eval", "--dataset", str(folder), "--retriever", "bm25", "--out", str(out), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "metrics.json" in before

    from t1.evaluation.retrievers import BM25Retriever

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BM25Retriever, "retrieve", interrupted)
    assert main(["eval", "--dataset", str(folder), "--retriever", "bm25", "--out", str(out), "-k", "1",
                 "--no-progress"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------- 5. duplicate query ids
def test_duplicate_query_ids(tmp_path, capsys, no_model):
    folder = write_beir(tmp_path / "beir", queries=("q1", "q1"))
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"],
          "queries.jsonl:2: duplicate query id 'q1'")
    fails(capsys, ["search", "--index", tmp_path, "--queries", folder / "queries.jsonl"],
          "queries.jsonl:2: duplicate query id 'q1'")
    given = tmp_path / "given.jsonl"
    given.write_text('{"id": "q1", "reasoning": "a"}\n{"id": "q2", "reasoning": "b"}\n{"id": "q1", "reasoning": "c"}\n')
    fails(capsys, ["eval", "--dataset", write_beir(tmp_path / "ok"), "--retriever", "bm25", "--reasoning", given,
                   "--out", tmp_path / "o"], "given.jsonl:3: duplicate id 'q1'")


def test_qrels_judging_a_pair_twice_differently(tmp_path, capsys, no_model):
    folder = write_beir(tmp_path / "beir")
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q1\td1\t1\nq1\td1\t0\n")
    fails(capsys, ["eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "o"],
          "test.tsv:5: query 'q1' judges document 'd1' again, with score 0 after 1")


def test_hub_beir_duplicates_are_errors(monkeypatch):
    import datasets

    from t1 import T1Error
    from t1.evaluation.datasets import load_eval_data

    tables = {"corpus": [{"_id": "d1", "text": "a", "title": ""}],
              "queries": [{"_id": "q1", "text": "x"}, {"_id": "q1", "text": "y"}],
              "test": [{"query-id": "q1", "corpus-id": "d1", "score": 1}]}
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, name=None, split=None: tables[split])
    with pytest.raises(T1Error, match="org/set queries row 1: duplicate query id 'q1'"):
        load_eval_data("org/set", "test")


# ---------------------------------------------------------------- 6. qrels of documents not in the corpus
def test_judged_documents_absent_from_the_corpus(tmp_path, capsys, caplog):
    some = write_beir(tmp_path / "some", judged=("d1", "d9"))
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "--dataset", str(some), "--retriever", "bm25", "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 0
    assert "1 of 2 judged documents are not in corpus.jsonl (e.g. 'd9')" in caplog.text
    none = write_beir(tmp_path / "none", judged=("x1", "x2"))
    fails(capsys, ["eval", "--dataset", none, "--retriever", "bm25", "--out", tmp_path / "o2"],
          "none of the 2 judged documents is in corpus.jsonl (e.g. 'x1')")


# ---------------------------------------------------------------- 7. output paths checked first
def test_output_paths_checked_before_the_model(tmp_path, capsys, no_model, tiny_model_path):
    corpus = Path(__file__).parents[1] / "examples" / "corpus.jsonl"
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    fails(capsys, ["index", "--corpus", corpus, "--out", blocker / "idx"], "cannot be an output folder")
    fails(capsys, ["index", "--corpus", corpus, "--out", blocker], "file: cannot be an output folder (is a file)")
    folder = write_beir(tmp_path / "beir")
    fails(capsys, ["eval", "--dataset", folder, "--retriever", f"t1:{tiny_model_path}", "--out", blocker / "run"],
          "cannot be an output folder")
    fails(capsys, ["bright", "--retriever", f"t1:{tiny_model_path}", "--dataset", FIXTURE, "--tasks", "biology",
                   "--out", blocker / "b"], "cannot be an output folder")
    assert blocker.read_text() == "keep me"


def test_reasoning_cache_path_checked_before_the_model(built_index, tmp_path, capsys, no_model):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    fails(capsys, ["search", "--index", built_index, "--reasoning-cache", blocker / "cache", "q"],
          "cannot open the reasoning cache")
    assert blocker.read_text() == "keep me"


def test_index_folder_of_another_corpus_refused_before_the_model(built_index, tmp_path, capsys, no_model):
    folder = write_beir(tmp_path / "beir")
    fails(capsys, ["index", "--corpus", folder / "corpus.jsonl", "--out", built_index, "--shard-size", "8"],
          "holds an index built with a different count, corpus_hash")


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder(tmp_path, capsys, no_model):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    fails(capsys, ["index", "--corpus", Path(__file__).parents[1] / "examples" / "corpus.jsonl",
                   "--out", locked / "idx"], "is not writable")


# ---------------------------------------------------------------- 8. devices
@pytest.mark.parametrize("device, message", [
    ("gpu", "--device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("cuda:7", "--device must be a device this machine has: cuda:7"),
])
@pytest.mark.parametrize("argv", [
    ["index", "--corpus", "{tmp}/c.jsonl", "--out", "{tmp}/i"],
    ["search", "--index", "{tmp}", "q"],
    ["eval", "--dataset", "{tmp}", "--retriever", "bm25", "--out", "{tmp}/o"],
    ["bright", "--retriever", "bm25"],
    ["serve", "--index", "{tmp}"],
])
def test_bad_device(tmp_path, capsys, no_model, argv, device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    fails(capsys, [a.format(tmp=tmp_path) for a in argv] + ["--device", device], message)


def test_cuda_without_cuda(tmp_path, capsys, no_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fails(capsys, ["search", "--index", tmp_path, "--device", "cuda", "q"],
          "--device must be a device this machine has: cuda needs CUDA")


# ---------------------------------------------------------------- flag spellings and the console script
@pytest.mark.parametrize("argv, flag", [
    (["bright", "--retriever", "bm25", "--data", "x"], "--data"),
    (["index", "--corpus", "c.jsonl", "--out", "o", "--instruction", "x"], "--instruction"),
    (["search", "--index", "i", "--instruction", "x", "q"], "--instruction"),
    (["eval", "--dataset", "d", "--retriever", "bm25", "--out", "o", "--doc-instruction", "x"], "--doc-instruction"),
])
def test_old_flag_spellings_are_gone(capsys, argv, flag):
    fails(capsys, argv, f"unrecognized arguments: {flag}")


def test_console_script_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "t1", "index", "--corpus", "c.jsonl", "--out", str(tmp_path / "i"),
                           "--batch-size", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "t1: error: --batch-size must be at least 1, got 0\n"
