"""`RetrievalEvaluator` (t1.evaluation.evaluator): the same numbers as `t1 eval`, whichever way
the model is given, and the one reading of `--reasoning`."""

import json
from pathlib import Path

import pytest

from t1 import T1Error, T1Model
from t1.cli import main
from t1.evaluation.datasets import load_eval_data
from t1.evaluation.evaluator import Reasoning, RetrievalEvaluator
from t1.settings import QuerySettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def t1_eval(out: Path, *argv) -> dict:
    assert main(["eval", "--dataset", str(EXAMPLES), "--split", "test", "--out", str(out), "--k", "10",
                 "--no-progress", *map(str, argv)]) == 0
    return json.loads((out / "metrics.json").read_text())


def evaluator(**kwargs) -> RetrievalEvaluator:
    data = load_eval_data(str(EXAMPLES), "test")
    query = QuerySettings(reasoning="none", instruction=data.query_instruction)
    return RetrievalEvaluator.from_data(data, k=10, query=query, retriever_options={"show_progress": False}, **kwargs)


def test_metrics_equal_t1_eval(tiny_model_path, tmp_path):
    expected = t1_eval(tmp_path / "cli", "--retriever", f"t1:{tiny_model_path}", "--reasoning", "none")
    by_spec = evaluator(name="")(f"t1:{tiny_model_path}")
    assert by_spec == expected
    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu")
    assert evaluator(name="")(model) == expected  # a loaded model, as the curriculum and the trainers pass it
    # With an output path it writes the run folder `t1 eval` writes, metrics.json the same bytes.
    written = evaluator(name="")(model, tmp_path / "api")
    assert written == expected
    assert (tmp_path / "api" / "metrics.json").read_bytes() == (tmp_path / "cli" / "metrics.json").read_bytes()
    assert (tmp_path / "api" / "run.trec").read_bytes() == (tmp_path / "cli" / "run.trec").read_bytes()


def test_bm25_names_and_primary_metric(tmp_path):
    expected = t1_eval(tmp_path / "cli", "--retriever", "bm25")
    named = evaluator()  # named after the data, sentence-transformers' prefix rule
    metrics = named("bm25")
    assert named.primary_metric == f"{named.name}_ndcg@10" and named.name == "examples/test"
    assert metrics == {f"examples/test_{k}": v for k, v in expected.items()}
    assert named.last.mean == expected and named.last_retriever.name == "bm25"
    few = evaluator(name="", cutoffs=(10,), primary_metric="ndcg_cut_10")
    assert few.primary_metric == "ndcg@10" and few("bm25")["ndcg@10"] == expected["ndcg@10"]


def test_reasoning_is_read_in_one_place(tmp_path):
    trace = tmp_path / "traces.jsonl"
    trace.write_text('{"id": "q1", "reasoning": "r"}\n')
    assert Reasoning.parse(None, "t1:m") == Reasoning("generate")
    assert Reasoning.parse("none", "hybrid:t1:m").mode == "none"
    assert Reasoning.parse(str(trace), "bm25", dataset_is_bright=False).given_file == str(trace)
    assert Reasoning.parse("gpt4", "bm25").given_set == "gpt4"
    assert Reasoning.parse(str(trace), "bm25", files=False).given_set == str(trace)  # BRIGHT: sets only
    with pytest.raises(T1Error, match="cannot generate reasoning; use a T1 model or --reasoning FILE"):
        Reasoning.parse("generate", "hybrid:st:x")
    with pytest.raises(T1Error, match=r"use a T1 model or a BRIGHT reasoning set \(e.g. gpt4\)"):
        Reasoning.parse("auto", "bm25", files=False)
    with pytest.raises(T1Error, match="not 'generate', 'none' or an existing file"):
        Reasoning.parse("gpt4", "bm25", dataset_is_bright=False)
