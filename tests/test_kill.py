"""SIGKILL mid-job, then the same command again: the result equals an uninterrupted run's.

Each job runs as users run it (`python -m t1 ...` in a subprocess) and is killed with SIGKILL,
either by itself at a chosen point (a `sitecustomize` hook, `interrupt.killing_env`) or from
outside once its first piece of output is on disk. Every test checks that the kill really landed
mid-job (partial output on disk, the job marked incomplete) before it compares the resumed result
with an uninterrupted run, so none can pass because the job finished before it was killed.

The uninterrupted run and the killed ones run side by side (each on one thread), as do the
resumes: a module fixture per command runs them all once, and the tests check what they left."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from interrupt import killing_env

from t1.cli import main

WORDS = "cell protein gene river water rock prime integer theorem solar energy carbon robot sensor code".split()
N_DOCS, SHARD = 12, 2  # 6 shards
QUERIES = ["river water", "prime theorem", "solar energy carbon"]
RECORDS = [
    {"query": "cell protein gene", "pos": ["protein gene cell brain"], "neg": ["market price", "robot sensor"], "query_id": "a"},
    {"query": "solar energy", "pos": ["solar energy carbon plant"], "neg": ["prime integer"], "query_id": "b"},
    {"query": "prime theorem", "pos": ["prime theorem proof integer"], "neg": ["river water", "virus vaccine"], "query_id": "c"},
    {"query": "river rock", "pos": ["river water rock"], "neg": ["code array", "gene cell"], "query_id": "d"},
    {"query": "virus vaccine", "pos": ["virus vaccine animal cell"], "neg": ["solar carbon"], "query_id": "e"},
]
TIMEOUT = 180
SLOW_S = 1.0  # the jobs killed from outside sleep this long before each shard / batch


def _start(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "t1", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, check: bool = True) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if check:
        assert proc.returncode == 0, err[-3000:]
    return proc.returncode, out


def _kill_when(proc: subprocess.Popen, ready) -> int:
    """SIGKILL `proc` from outside as soon as `ready()` holds; its return code."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            return _finish(proc, check=False)[0]  # finished (or failed) before it was killed: the test says so
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    return _finish(proc, check=False)[0]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _search(index: Path, queries: Path, capsys) -> list[dict]:
    """`t1 search` (greedy reasoning, a few tokens, then the search), run here for speed."""
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--queries", str(queries), "--json", "-k", str(N_DOCS),
                 "--max-new-tokens", "6", "--no-reasoning-cache", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- t1 index, then t1 search
INDEX_KILLS = {
    # the 3rd shard's embeddings written to their temporary file, not yet renamed into place
    "inside-shard-write": {"kill": "numpy:save:3:after"},
    # a slowed encoder, killed from outside once the first shard is on disk
    "from-outside": {"slow": f"t1.model:T1Model.encode_document:{SLOW_S}"},
}


def _temporary(folder: Path) -> list[str]:
    return [n for n in _listing(folder) if n.startswith(".") and n.endswith(".tmp")]  # t1.atomic's


@pytest.fixture(scope="module")
def index_runs(tiny_model_path, tmp_path_factory):
    """An uninterrupted `t1 index`; and per INDEX_KILLS entry, a build killed mid-way, the state
    it left, and the same command run again."""
    root = tmp_path_factory.mktemp("kill-index")
    corpus, queries = root / "corpus.jsonl", root / "queries.txt"
    corpus.write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"title {i}",
                    "text": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 4))}) + "\n"
        for i in range(N_DOCS)))
    queries.write_text("\n".join(QUERIES) + "\n")

    def args(name):
        return ["index", "--model", tiny_model_path, "--corpus", corpus, "--out", root / name,
                "--shard-size", SHARD, "--device", "cpu"]

    def env(**hook):
        return {**killing_env(root, **hook), "T1_CACHE": str(root / "t1-cache")}

    reference = _start(args("reference"), env())
    killed = {name: _start(args(name), env(**hook)) for name, hook in INDEX_KILLS.items()}
    runs = {"inside-shard-write": {"returncode": _finish(killed["inside-shard-write"], check=False)[0]},
            "from-outside": {"returncode": _kill_when(killed["from-outside"],
                                                      lambda: (root / "from-outside" / "emb-00000.npy").exists())}}
    for name, run in runs.items():
        out = root / name
        run.update(folder=out, listing=_listing(out), manifest=json.loads((out / "manifest.json").read_text()),
                   shards=[i for i in range(N_DOCS // SHARD) if (out / f"emb-{i:05d}.npy").exists()],
                   first_mtime=(out / "emb-00000.npy").stat().st_mtime_ns)
    resumed = {name: _start(args(name), env()) for name in INDEX_KILLS}
    for name, proc in resumed.items():
        runs[name]["stdout"] = _finish(proc)[1]
    _finish(reference)
    return {"reference": root / "reference", "queries": queries, **runs}


def _assert_killed_mid_build(run: dict):
    """Killed: some shards written, not all, and the index not marked complete."""
    assert run["returncode"] == -signal.SIGKILL
    assert run["manifest"]["complete"] is False and "shards" not in run["manifest"]
    assert 1 <= len(run["shards"]) < N_DOCS // SHARD and run["shards"] == list(range(len(run["shards"])))


def _assert_same_index(built: Path, reference: Path):
    def index_files(folder):  # not a temporary file (another test's matter)
        return [n for n in _listing(folder) if n not in _temporary(folder)]

    names = index_files(reference)
    assert json.loads((built / "manifest.json").read_text()) == json.loads((reference / "manifest.json").read_text())
    assert index_files(built) == names  # the same shards
    for name in names:
        if name.startswith("docs-"):  # the ids, titles and snippets, row for row
            assert (built / name).read_bytes() == (reference / name).read_bytes(), name
        elif name.startswith("emb-"):
            a, b = np.load(built / name), np.load(reference / name)
            assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), name  # same shards, same batches, one thread: the same bits


def _assert_resumed_to_the_reference(run: dict, runs: dict, capsys):
    assert f"indexed {N_DOCS} documents" in run["stdout"]
    assert (run["folder"] / "emb-00000.npy").stat().st_mtime_ns == run["first_mtime"]  # not encoded again
    _assert_same_index(run["folder"], runs["reference"])
    hits = _search(run["folder"], runs["queries"], capsys)
    assert [row["query"] for row in hits] == QUERIES and all(len(row["hits"]) == N_DOCS for row in hits)
    assert hits == _search(runs["reference"], runs["queries"], capsys)  # same reasoning, ids, scores, order


def test_index_killed_inside_a_shard_write_resumes_to_the_same_index(index_runs, capsys):
    run = index_runs["inside-shard-write"]
    _assert_killed_mid_build(run)
    assert run["shards"] == [0, 1] and "docs-00002.jsonl" in run["listing"]
    assert [n for n in run["listing"] if n.startswith(".emb-00002.npy.")]  # the interrupted write
    _assert_resumed_to_the_reference(run, index_runs, capsys)


def test_index_killed_from_outside_resumes_to_the_same_index(index_runs, capsys):
    _assert_killed_mid_build(index_runs["from-outside"])
    _assert_resumed_to_the_reference(index_runs["from-outside"], index_runs, capsys)


def test_index_resumed_after_a_kill_keeps_no_temporary_file(index_runs):
    """The kill inside a shard write left that shard's temporary file; the resumed build removes it."""
    run = index_runs["inside-shard-write"]
    assert [n for n in run["listing"] if n.startswith(".emb-") and n.endswith(".tmp")]  # left by the kill
    assert _temporary(run["folder"]) == []


# ---------------------------------------------------------------- t1 data reason (self-generated traces)
REASON_KILLS = {
    # the 3rd batch's records appended to the output, the progress file not yet updated
    # (save 1 starts the run, save N + 1 follows batch N)
    "between-output-and-progress": {"kill": "t1.training.reasoning_data:_Progress.save:4:before"},
    # slowed generation, killed from outside once the first batch is recorded
    "from-outside": {"slow": f"t1.training.reasoning_data:_best_of_n:{SLOW_S}"},
}


def _progress_file(out: Path) -> Path:
    return out.with_name(out.name + ".progress.json")


@pytest.fixture(scope="module")
def reason_runs(tiny_model_path, tmp_path_factory):
    """An uninterrupted `t1 data reason --model`; and per REASON_KILLS entry, a run killed
    mid-way, the state it left, and the same command run again."""
    root = tmp_path_factory.mktemp("kill-reason")
    records = root / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    def args(name):
        return ["data", "reason", records, "--model", tiny_model_path, "--out", root / f"{name}.jsonl",
                "--samples", 2, "--max-new-tokens", 6, "--max-rank", 10, "--batch-size", 1, "--seed", 3,
                "--device", "cpu"]

    def env(**hook):
        return {**killing_env(root, **hook), "T1_CACHE": str(root / "t1-cache")}

    def first_batch_done():
        try:
            return json.loads(_progress_file(root / "from-outside.jsonl").read_text())["done"] >= 1
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    reference = _start(args("reference"), env())
    killed = {name: _start(args(name), env(**hook)) for name, hook in REASON_KILLS.items()}
    runs = {"between-output-and-progress": {"returncode": _finish(killed["between-output-and-progress"],
                                                                   check=False)[0]},
            "from-outside": {"returncode": _kill_when(killed["from-outside"], first_batch_done)}}
    for name, run in runs.items():
        out = root / f"{name}.jsonl"
        run.update(output=out, written=out.read_text(), progress=json.loads(_progress_file(out).read_text()))
    resumed = {name: _start(args(name), env()) for name in REASON_KILLS}
    for name, proc in resumed.items():
        runs[name]["stdout"] = _finish(proc)[1]
    _finish(reference)
    out = root / "reference.jsonl"
    return {"reference": {"output": out.read_bytes(), "progress": json.loads(_progress_file(out).read_text())},
            **runs}


def _assert_resumed_reasoning(run: dict, reference: dict):
    progress = run["progress"]  # killed mid-job: some records done, not all
    assert run["returncode"] == -signal.SIGKILL
    assert progress["complete"] is False and 1 <= progress["done"] < len(RECORDS)
    lines = reference["output"].decode().splitlines(keepends=True)
    # enough kept traces that a resume which lost or repeated a batch would show
    assert len(lines) >= 3 and reference["progress"] == {**progress, "done": len(RECORDS), "accepted": len(lines),
                                                         "complete": True}
    written = run["written"].splitlines(keepends=True)
    assert 0 < len(written) < len(lines) and written == lines[: len(written)]

    assert f"of {len(RECORDS)} records" in run["stdout"]
    assert run["output"].read_bytes() == reference["output"]  # byte for byte
    assert json.loads(_progress_file(run["output"]).read_text()) == reference["progress"]


def test_data_reason_killed_between_output_and_progress_resumes_to_the_same_output(reason_runs):
    run = reason_runs["between-output-and-progress"]
    assert run["progress"]["done"] == 2
    # the output holds a batch more than the progress file counts: the resume must drop it
    assert len(run["written"].splitlines()) > run["progress"]["accepted"]
    _assert_resumed_reasoning(run, reason_runs["reference"])


def test_data_reason_killed_from_outside_resumes_to_the_same_output(reason_runs):
    _assert_resumed_reasoning(reason_runs["from-outside"], reason_runs["reference"])
