import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import shared_data

from t1.bright_tasks import BRIGHT_LONG_TASKS, BRIGHT_TASKS, bright_instruction
from t1.data import Document
from t1.errors import T1Error
from t1.evaluation import bright as bright_mod
from t1.evaluation.bright import resolve_tasks, run_bright
from t1.evaluation.datasets import EvalData, load_bright_examples, load_bright_task, load_eval_data
from t1.evaluation.retrievers import BM25Retriever, T1Retriever
from t1.evaluation.runs import ranked, read_trec_run, run_evaluation
from t1.settings import QuerySettings

FIXTURE = Path(__file__).parent / "fixtures" / "bright"
QUERY_COUNTS = dict(zip(BRIGHT_TASKS, (103, 116, 103, 101, 101, 117, 108, 142, 112, 111, 194, 76)))


# ------------------------------------------------------------------ the real BRIGHT examples
def test_real_examples_load_and_every_gold_id_survives_exclusion():
    root = shared_data("bright")
    total = 0
    for task in BRIGHT_TASKS:
        ex = load_bright_examples(str(root), task)
        assert len(ex.queries) == QUERY_COUNTS[task], task
        for qid, gold in ex.qrels.items():
            assert gold and "N/A" not in gold and set(gold.values()) == {1}
            assert "N/A" not in ex.excluded[qid]
            assert not set(gold) & ex.excluded[qid], (task, qid)
        total += len(ex.queries)
    assert total == 1384
    assert load_bright_examples(str(root), "leetcode").excluded["0"]  # real exclusions are kept
    assert load_bright_examples(str(root), "biology").excluded["0"] == set()  # ["N/A"] means none


def test_real_examples_long_setting_has_eight_tasks():
    root = str(shared_data("bright"))
    for task in BRIGHT_LONG_TASKS:
        ex = load_bright_examples(root, task, long=True)
        assert all("/" in g or g.endswith(".txt") for gold in ex.qrels.values() for g in gold)
    with pytest.raises(T1Error, match="no queries with long-document gold"):
        load_bright_examples(root, "aops", long=True)


@pytest.mark.parametrize("task", ["leetcode", "aops", "theoremqa_questions"])
def test_real_exclusions_never_reach_a_run_file(task, tmp_path):
    """A corpus built from the real gold and excluded ids of the first queries, where every
    excluded document is written to match its query best: none may appear in the run file,
    and every gold document must."""
    ex = load_bright_examples(str(shared_data("bright")), task)
    qids = list(ex.queries)[:3]
    texts: dict[str, list[str]] = {}
    for q in qids:
        words = " ".join(ex.queries[q].split()[:10])
        for d in ex.excluded[q]:
            texts.setdefault(d, []).extend([words, words])  # excluded: the query, twice
        for g in ex.qrels[q]:
            texts.setdefault(g, []).append(words)
    corpus = [Document(d, " ".join(t)) for d, t in texts.items()]
    data = EvalData(task, corpus, {q: ex.queries[q] for q in qids}, {q: ex.qrels[q] for q in qids},
                    {q: ex.excluded[q] for q in qids})
    run_evaluation(data, BM25Retriever(corpus, show_progress=False), tmp_path, k=len(corpus))
    run = read_trec_run(tmp_path / "run.trec")
    for q in qids:
        assert not set(run[q]) & ex.excluded[q]
        assert set(ex.qrels[q]) <= set(run[q])
    assert sum(len(ex.excluded[q]) for q in qids) > 0


# ------------------------------------------------------------------ the fixture
def test_fixture_na_handling_and_instructions():
    short = load_bright_task(str(FIXTURE), "biology")
    assert short.excluded == {"0": set(), "1": set(), "2": set()}
    assert short.qrels["0"] == {"phototaxis_0.txt": 1, "phototaxis_1.txt": 1}
    assert short.query_instruction == "Given a biology post, retrieve relevant passages that help answer the post"
    long = load_bright_task(str(FIXTURE), "biology", long=True)
    assert set(long.queries) == {"0", "1"}  # query 2's gold_ids_long is ["N/A"]
    assert long.name == "bright/biology-long" and len(long.corpus) == 4
    assert "documents that help" in long.query_instruction
    assert bright_instruction("theoremqa_theorems").startswith("Given a Math problem, retrieve relevant theorems")
    leet = load_eval_data(str(FIXTURE), "leetcode", reasoning="gpt4")
    assert leet.excluded["1"] == {"leetcode/leetcode_3.txt", "leetcode/leetcode_159.txt"}
    assert leet.reasoning["0"].startswith("Use a hash map")


def test_parquet_documents_in_the_hub_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "bright"
    shutil.copytree(FIXTURE / "examples", root / "examples")
    rows = [json.loads(line) for line in (FIXTURE / "documents" / "biology.jsonl").read_text().splitlines()]
    (root / "documents").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "documents" / "biology-00000-of-00001.parquet")
    data = load_bright_task(str(root), "biology")
    assert [d.id for d in data.corpus] == [r["id"] for r in rows]
    assert data.corpus[0].text == rows[0]["content"]


def test_bad_examples_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "examples").mkdir()
    bad = {"query": "q", "id": "0", "excluded_ids": ["d1"], "gold_ids": ["d1"], "gold_ids_long": ["N/A"]}
    (tmp_path / "examples" / "pony.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(T1Error, match=r"pony.jsonl:1: gold id 'd1' is also in excluded_ids"):
        load_bright_examples(str(tmp_path), "pony")
    (tmp_path / "examples" / "pony.jsonl").write_text('{"query": "q", "id": "0"}\n')
    with pytest.raises(T1Error, match=r"pony.jsonl:1: missing field 'gold_ids'"):
        load_bright_examples(str(tmp_path), "pony")
    with pytest.raises(T1Error, match="no documents.*not bundled|documents: no pony"):
        load_bright_task(str(shared_data("bright")), "pony")
    with pytest.raises(T1Error, match="unknown BRIGHT task"):
        resolve_tasks(["biology", "chemistry"])
    with pytest.raises(T1Error, match="no long documents"):
        resolve_tasks(["leetcode"], long=True)
    assert resolve_tasks(["leetcode,biology"]) == ["biology", "leetcode"]


def test_bm25_protocol_end_to_end_and_resume(tmp_path):
    out = tmp_path / "bm25"
    logs: list[str] = []
    summary = run_bright("bm25", out, source=str(FIXTURE), tasks=["biology", "leetcode"], log=logs.append,
                         show_progress=False)
    assert summary["num_tasks"] == 2
    for task in ("biology", "leetcode"):
        for name in ("run.trec", "results.json", "metrics.json", "per_query.json", "run.json"):
            assert (out / task / name).exists(), (task, name)
    run = read_trec_run(out / "leetcode" / "run.trec")
    assert "leetcode/leetcode_1.txt" not in run["0"]
    assert not {"leetcode/leetcode_3.txt", "leetcode/leetcode_159.txt"} & set(run["1"])
    assert max(run["0"], key=run["0"].get) == "leetcode/leetcode_167.txt"
    tasks = summary["tasks"]
    assert summary["average"]["ndcg@10"] == pytest.approx((tasks["biology"]["ndcg@10"] + tasks["leetcode"]["ndcg@10"]) / 2)
    assert json.loads((out / "summary.json").read_text())["num_tasks"] == 2

    # resume: finished tasks are skipped without loading data or retrieving again
    def fail(*a, **kw):
        raise AssertionError("a finished task was run again")

    before = (out / "biology" / "metrics.json").stat().st_mtime_ns
    monkey = pytest.MonkeyPatch()
    monkey.setattr(bright_mod, "RetrievalEvaluator", fail)
    monkey.setattr(bright_mod, "load_bright_task", fail)
    try:
        logs.clear()
        again = run_bright("bm25", out, source=str(FIXTURE), tasks=["biology", "leetcode"], log=logs.append)
    finally:
        monkey.undo()
    assert all("skipped" in line for line in logs) and len(logs) == 2
    assert again["tasks"] == tasks
    assert (out / "biology" / "metrics.json").stat().st_mtime_ns == before
    with pytest.raises(T1Error, match="different reasoning"):
        run_bright("bm25", out, source=str(FIXTURE), tasks=["biology"], reasoning="gpt4")


def test_gpt4_reasoning_queries_for_bm25(tmp_path):
    summary = run_bright("bm25", tmp_path / "r", source=str(FIXTURE), tasks=["leetcode"], reasoning="gpt4",
                         log=lambda s: None, show_progress=False)
    plain = run_bright("bm25", tmp_path / "p", source=str(FIXTURE), tasks=["leetcode"], log=lambda s: None,
                       show_progress=False)
    top = {name: max(run["2"], key=run["2"].get)
           for name, run in (("gpt4", read_trec_run(tmp_path / "r" / "leetcode" / "run.trec")),
                             ("plain", read_trec_run(tmp_path / "p" / "leetcode" / "run.trec")))}
    # the reasoning text replaced the query: it names a heap, as the gold document does
    assert top == {"gpt4": "leetcode/leetcode_23.txt", "plain": "leetcode/leetcode_21.txt"}
    assert summary["tasks"]["leetcode"]["ndcg@10"] > plain["tasks"]["leetcode"]["ndcg@10"]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["reasoning"] == "gpt4"
    with pytest.raises(T1Error, match="cannot generate reasoning"):
        run_bright("bm25", tmp_path / "x", source=str(FIXTURE), tasks=["leetcode"], reasoning="generate")


def test_t1_protocol_with_generation_and_cached_index(tmp_path, tiny_model_path, monkeypatch):
    out = tmp_path / "t1"
    summary = run_bright(f"t1:{tiny_model_path}", out, source=str(FIXTURE), tasks=["biology", "leetcode"],
                         query=QuerySettings(max_new_tokens=4), device="cpu", log=lambda s: None, show_progress=False)
    assert summary["num_tasks"] == 2
    rows = [json.loads(line) for line in (out / "leetcode" / "reasoning.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"] and all(isinstance(r["reasoning"], str) for r in rows)
    run = read_trec_run(out / "leetcode" / "run.trec")
    assert "leetcode/leetcode_1.txt" not in run["0"] and len(run["0"]) == 7  # 8 documents, 1 excluded
    info = json.loads((out / "leetcode" / "run.json").read_text())
    assert info["settings"]["mode"] == "generate"
    assert info["settings"]["query_instruction"].startswith("Given a coding problem")
    index_folder = Path(info["settings"]["index"])
    assert (index_folder / "manifest.json").exists()

    # a second evaluation of the same corpus opens the cached index instead of re-encoding
    from t1.evaluation import retrievers

    def no_build(*a, **kw):
        raise AssertionError("corpus re-encoded")

    monkeypatch.setattr(retrievers.Index, "build", no_build)
    data = load_bright_task(str(FIXTURE), "leetcode")
    from t1 import T1Model

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    r = T1Retriever(model, data.corpus, QuerySettings(reasoning="none", instruction=data.query_instruction),
                    show_progress=False)
    ev = run_evaluation(data, r, tmp_path / "again", k=5)
    assert r.settings["index"] == str(index_folder)
    assert r.reasoning == {} and not (tmp_path / "again" / "reasoning.jsonl").exists()
    assert all(len(docs) == 5 for docs in read_trec_run(tmp_path / "again" / "run.trec").values())
    # the metric, computed here from the written run and the gold ids (binary gains, 5 documents kept)
    run = read_trec_run(tmp_path / "again" / "run.trec")

    def ndcg10(qid):
        gains = [float(doc in data.qrels[qid]) for doc, _ in ranked(run[qid])[:10]]
        ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(data.qrels[qid]))))
        return sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / ideal

    expected = [ndcg10(q) for q in data.queries]
    assert 0 < sum(expected) < len(expected)  # neither every gold document first nor none found
    assert ev.per_query.keys() == data.queries.keys()
    assert [ev.per_query[q]["ndcg@10"] for q in data.queries] == pytest.approx(expected)
    assert ev.mean["ndcg@10"] == pytest.approx(sum(expected) / len(expected))
