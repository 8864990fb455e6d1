"""The 22 kinds of bad input of issue #20 that crashed, lied, left damage or bloated: each is now
one line naming the problem (CLI: exit 2; HTTP: a 4xx; Python: a `T1Error`, `TypeError` or
`ValueError` naming the argument), and nothing already written is lost."""

import json
import re
from pathlib import Path

import numpy as np
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
    ("c.jsonl", b'{"_id": "b", "text": "  "}\n', "c.jsonl: no documents with text"),  # one empty is indexed (#32)
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


# ---------------------------------------------------------------- an index folder and what lies in it
@pytest.fixture(scope="module")
def built(tiny_model_path, tmp_path_factory):
    """A 30-document index with BM25 and an HNSW structure, built once."""
    out = tmp_path_factory.mktemp("bad") / "idx"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(EXAMPLES), "--out", str(out),
                 "--device", "cpu", "--shard-size", "8", "--ann", "hnsw"]) == 0
    return out


@pytest.fixture
def index(built, tmp_path):
    import shutil

    return Path(shutil.copytree(built, tmp_path / "idx"))


def _edit_manifest(index: Path, **entries) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    for key, value in entries.items():
        manifest[key] = value
    (index / "manifest.json").write_text(json.dumps(manifest))


def fails_after_progress(capsys, argv, message: str) -> str:
    """`fails`, for a command that fails mid-way: its progress bar's lines on stderr are left out."""
    assert main([str(a) for a in argv]) == 2
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if line.strip() and not re.match(r"^[\w ]+: +\d+%\|", line)]
    assert len(lines) == 1 and lines[0].startswith("t1: error: ") and message in lines[0], lines
    return lines[0]


def search(index, *flags, query="solar power"):
    return ["search", "--index", index, "--reasoning", "none", "--device", "cpu", "--json", *flags, query]


@pytest.mark.parametrize("entries, message", [
    ({"count": "30"}, "damaged manifest: 'count' must be an integer, got \"30\""),
    ({"model": ["x"]}, "damaged manifest: 'model' must be an object"),
    ({"model": {"name": "x"}}, "'model' must hold a string 'name' and 'fingerprint'"),
    ({"shard_size": 0}, "'shard_size' must be at least 1, got 0"),
    ({"dtype": "int8"}, "'dtype' must be float16 or float32"),
    ({"files": {"emb-00000.npy": 5}}, "'files' entry 'emb-00000.npy' must hold its 'bytes' and 'sha256'"),
    ({"ann": {"hnsw": "ann-hnsw.faiss"}}, "'ann' entry 'hnsw' must hold its 'file', 'count' and 'corpus_hash'"),
])
def test_manifest_of_the_wrong_shape(index, capsys, no_model, entries, message):
    _edit_manifest(index, **entries)
    fails(capsys, search(index), message)
    fails(capsys, ["index", "--verify", index], message)
    fails(capsys, ["index", "--corpus", EXAMPLES, "--out", index, "--shard-size", "8"], message)  # resuming


def test_manifest_that_is_a_list(index, capsys, no_model):
    (index / "manifest.json").write_text("[1, 2]")
    fails(capsys, search(index), "manifest.json: damaged manifest: not a JSON object")


def test_every_artefact_is_in_the_manifest(index, capsys):
    files = json.loads((index / "manifest.json").read_text())["files"]
    assert "ann-hnsw.faiss" in files and any(name.startswith("bm25/") for name in files)
    assert main(["index", "--verify", str(index)]) == 0


def test_damaged_bm25_folder(index, capsys, tiny_model_path):
    params = next((index / "bm25").glob("*.npy"))
    params.write_bytes(params.read_bytes()[:20])
    fails(capsys, search(index, "--hybrid"), "damaged index: bm25/")
    fails(capsys, ["index", "--verify", index], f"bm25/{params.name} has 20 bytes")
    # damaged the same size (only the checksum sees it), or in an index from before checksums
    _edit_manifest(index, files={k: v for k, v in json.loads((index / "manifest.json").read_text())["files"].items()
                                 if not k.startswith("bm25/")})
    fails(capsys, search(index, "--hybrid", "--model", tiny_model_path), "bm25: damaged BM25 index (")


def test_damaged_ann_file(index, capsys, tiny_model_path):
    ann = index / "ann-hnsw.faiss"
    data = bytearray(ann.read_bytes())
    data[100:200] = b"\0" * 100  # same size: only the checksum sees it
    ann.write_bytes(bytes(data))
    fails(capsys, ["index", "--verify", index], "ann-hnsw.faiss does not match its sha256 checksum")
    fails(capsys, search(index, "--model", tiny_model_path), "ann-hnsw.faiss: does not match its sha256 checksum")
    ann.write_bytes(b"garbage")
    fails(capsys, search(index), "ann-hnsw.faiss has 7 bytes")


def test_ann_file_of_another_index_is_refused(index, tmp_path, capsys, tiny_model_path):
    import shutil

    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"_id": f"o{i}", "text": f"other words {i} " * 3}) + "\n" for i in range(30)))
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(other), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--shard-size", "8", "--ann", "hnsw", "--no-bm25"]) == 0
    capsys.readouterr()
    shutil.copy(tmp_path / "o" / "ann-hnsw.faiss", index / "ann-hnsw.faiss")  # same count, other vectors
    fails(capsys, ["index", "--verify", index], "ann-hnsw.faiss")  # it passed before
    fails(capsys, search(index), "ann-hnsw.faiss")


def test_foreign_sqlite_file_as_reasoning_cache(index, tmp_path, capsys, no_model):
    import sqlite3

    foreign = tmp_path / "app.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE traces (id INTEGER, text TEXT)")
    fails(capsys, ["search", "--index", index, "--reasoning-cache", foreign, "q"],
          "app.sqlite: not a t1 reasoning cache (its table 'traces' has the columns id, text)")
    with sqlite3.connect(foreign) as db:
        assert db.execute("SELECT COUNT(*) FROM traces").fetchone() == (0,)  # left as it was


def test_k_is_capped_at_the_index_size(index, capsys):
    import tracemalloc

    tracemalloc.start()
    assert main([str(a) for a in search(index, "-k", "20000000", "--ann", "exact")]) == 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(json.loads(capsys.readouterr().out)[0]["hits"]) == 30
    assert peak < 100 * 2**20  # 20M slots per query were ~1 GB


# ---------------------------------------------------------------- instructions and lengths
def test_max_length_that_leaves_no_room_then_the_corrected_command(tmp_path, capsys, tiny_model_path):
    out = tmp_path / "idx"
    argv = ["index", "--model", tiny_model_path, "--corpus", EXAMPLES, "--out", out, "--device", "cpu"]
    fails(capsys, argv + ["--max-document-length", "1"], "max_document_length must be an integer of at least 2, got 1")
    fails_after_progress(capsys, argv + ["--max-document-length", "4", "--document-instruction", "word " * 20],
                         "max_document_length=4 leaves no room for text after the instruction")
    assert main([str(a) for a in argv]) == 0  # the failed run left nothing that refuses it
    assert "indexed 30 documents" in capsys.readouterr().out


def test_query_instruction_that_leaves_no_room(index, capsys, tiny_model_path):
    fails(capsys, search(index, "--model", tiny_model_path, "--query-instruction", "word " * 3000),
          "leaves no room for the query")


# ---------------------------------------------------------------- the machine refuses: disk full, permissions
@pytest.mark.parametrize("errno_, why", [("ENOSPC", "no space left on the device"),
                                         ("EPERM", "operation not permitted (an immutable or protected file?)"),
                                         ("EACCES", "permission denied")])
def test_a_write_the_disk_refuses_then_the_job_resumes(tmp_path, capsys, tiny_model_path, monkeypatch, errno_, why):
    import errno
    import os

    import t1.atomic

    real, calls = os.replace, []

    def refuse_fifth(src, dst):  # manifest, shard 0 (docs, emb), docs of shard 1, then the disk refuses
        calls.append(dst)
        if len(calls) == 5:
            raise OSError(getattr(errno, errno_), os.strerror(getattr(errno, errno_)), str(dst))
        return real(src, dst)

    monkeypatch.setattr(t1.atomic.os, "replace", refuse_fifth)
    out = tmp_path / "idx"
    argv = ["index", "--model", tiny_model_path, "--corpus", EXAMPLES, "--out", out, "--device", "cpu",
            "--shard-size", "8"]
    line = fails_after_progress(capsys, argv, f"cannot read or write ({why})")
    assert str(calls[4]) in line and "re-run the same command" in line and (out / "emb-00000.npy").exists()
    assert not list(out.glob(".*.tmp"))  # no temporary left behind
    monkeypatch.setattr(t1.atomic.os, "replace", real)
    assert main([str(a) for a in argv]) == 0


def test_a_file_that_cannot_be_read(tmp_path, capsys, no_model, monkeypatch):
    import builtins
    import errno

    import t1.data

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(t1.data, "open", refuse, raising=False)
    assert builtins.open is not refuse
    fails(capsys, ["index", "--corpus", EXAMPLES, "--out", tmp_path / "idx"],
          f"{EXAMPLES}: cannot read or write (permission denied)")


def test_a_reasoning_cache_on_a_full_disk(tmp_path):
    import sqlite3

    from t1 import T1Error
    from t1.reasoning_cache import ReasoningCache

    cache = ReasoningCache(tmp_path)

    class Full:
        def __enter__(self):
            raise sqlite3.OperationalError("database or disk is full")

        def __exit__(self, *exc):
            return False

    cache.db = type("DB", (), {"__enter__": Full.__enter__, "__exit__": Full.__exit__})()
    with pytest.raises(T1Error, match="reasoning-cache.sqlite: cannot write the reasoning cache \\(database or disk"):
        cache.put([])


# ---------------------------------------------------------------- t1 report
@pytest.mark.parametrize("metrics, message", [
    ('{"ndcg@10": "high"}', "metrics.json: 'ndcg@10' must be a number, got \"high\""),
    ("[0.5]", "metrics.json: malformed JSON (expected an object, got list)"),
    ('{"ndcg@10": 0.5', "metrics.json: malformed JSON"),
])
def test_report_on_a_malformed_metrics_file(tmp_path, capsys, metrics, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(metrics)
    fails(capsys, ["report", run, "--out", tmp_path / "report"], message)


# ---------------------------------------------------------------- training numbers and --help
@pytest.mark.parametrize("stage", ["contrastive", "sft", "grpo"])
@pytest.mark.parametrize("steps, message", [
    ("0", "max_steps must be at least 1, or -1 to train num_train_epochs epochs; got 0"),  # trained a step
    ("-5", "max_steps must be at least 1, or -1 to train num_train_epochs epochs; got -5"),  # trained everything
])
def test_max_steps_that_make_no_sense(tmp_path, capsys, stage, steps, message):
    config = tmp_path / "stage.yaml"
    config.write_text(f"train_file: {tmp_path / 'records.jsonl'}\noutput_dir: {tmp_path / 'out'}\n")
    fails(capsys, ["train", stage, "--config", config, f"--max_steps={steps}"], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--per_device_train_batch_size=0", "--learning_rate=-1e-4",
                                  "--num_train_epochs=0", "--gradient_accumulation_steps=0"])
def test_training_numbers_that_must_be_positive(tmp_path, capsys, flag):
    config = tmp_path / "stage.yaml"
    config.write_text(f"train_file: {tmp_path / 'records.jsonl'}\noutput_dir: {tmp_path / 'out'}\n")
    fails(capsys, ["train", "contrastive", "--config", config, flag], f"{flag[2:].split('=')[0]} must be positive")


@pytest.mark.parametrize("types", ["stage12", "grpo"])
def test_every_training_field_has_help(types):
    from t1.training.config_parser import ConfigParser
    from t1.training.contrastive_config import T1TrainingArguments
    from t1.training.grpo_config import T1GRPOConfig
    from t1.training.model_config import ModelArguments

    parser = ConfigParser((ModelArguments, T1TrainingArguments if types == "stage12" else T1GRPOConfig), prog="t")
    silent = sorted({a.dest for a in parser._actions if a.dest != "help" and not (a.help or "").strip()})
    assert silent == []  # 16 re-declared fields printed no explanation


# ---------------------------------------------------------------- the Python API
@pytest.fixture(scope="module")
def opened(built, tiny_model):
    from t1.index import Index

    return Index.open(built, model=tiny_model)


@pytest.mark.parametrize("call, error, message", [
    (lambda m, i: m.encode_query([1], reasoning="none"), TypeError, "queries[0] must be a string, got int"),
    (lambda m, i: m.encode_query(None), TypeError, "queries must be a string or a list of strings, got null"),
    (lambda m, i: m.encode_document([{"text": "x"}]), TypeError, "texts[0] must be a string, got an object"),
    (lambda m, i: i.search_queries(m, [None], reasoning="none"), TypeError, "queries[0] must be a string"),
    (lambda m, i: i.search("not numbers"), TypeError, "query_embeddings must be an array of numbers"),
    (lambda m, i: i.search(np.ones((1, m.dim)), k="3"), TypeError, "k must be an integer, got str"),
    (lambda m, i: i.search(np.ones((1, m.dim)), exclude=7), TypeError, "exclude must be an id"),
    (lambda m, i: __import__("t1.index").index.Index.build(m, ["a text"], "unused"), TypeError,
     "documents must be t1.data.Document objects"),
])
def test_api_mistakes_name_the_argument(tiny_model, opened, call, error, message):
    with pytest.raises(error) as info:
        call(tiny_model, opened)
    assert message in str(info.value)


def test_api_empty_input_gives_empty_output(tiny_model, opened):
    assert tiny_model.encode_document([]).shape == (0, tiny_model.dim)
    assert tiny_model.encode_query([], reasoning="none").embeddings.shape == (0, tiny_model.dim)
    assert opened.search_queries(tiny_model, [], reasoning="none") == ([], [])


def test_api_one_query_string_is_one_query(tiny_model, opened):
    hits, _ = opened.search_queries(tiny_model, "solar power", reasoning="none", k=3)
    assert len(hits) == 1  # was one search per character


@pytest.mark.parametrize("exclude", ["leaves-autumn", ["leaves-autumn"], [["leaves-autumn"]], [{"leaves-autumn"}]])
def test_api_exclude_one_id_in_every_shape(tiny_model, opened, exclude):
    q = tiny_model.encode_query(["solar power"], reasoning="none").embeddings
    ids = [h.id for h in opened.search(q, k=30, exclude=exclude)[0]]
    assert "leaves-autumn" not in ids and len(ids) == 29  # a string was iterated by character: nothing was excluded
