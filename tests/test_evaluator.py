"""`RetrievalEvaluator` (t1.evaluation.evaluator): the same numbers as `t1 eval`, whichever way
the model is given, and the one reading of `--reasoning`."""

import io
import json
from pathlib import Path

import pytest
import torch

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


# ---------------------------------------------------------------------------- the trainers call it
class Spy:
    """A RetrievalEvaluator that records the models it was called on, and whether they trained."""

    def __init__(self, inner: RetrievalEvaluator):
        self.inner, self.calls = inner, []

    def __call__(self, model, output_path=None):
        self.calls.append((model, model.backbone.training, torch.is_grad_enabled()))
        return self.inner(model, output_path)


@pytest.mark.usefixtures("one_thread")
def test_the_contrastive_trainer_calls_it(tiny_model_path, tmp_path):
    from test_training_trainer import make_config

    from t1.training.contrastive_trainer import make_trainer

    config = make_config(tmp_path, tiny_model_path, max_steps=2, eval_strategy="steps", eval_steps=1)
    spy = Spy(evaluator(name="examples"))
    trainer = make_trainer(*config, reasoning=False, evaluator=spy)
    trainer.train()
    assert len(spy.calls) == 2  # eval_steps 1, two steps
    model, training, grad = spy.calls[-1]
    assert model is trainer.model.t1 and not training and not grad
    assert trainer.model.training  # back in training mode after each evaluation
    logged = [h for h in trainer.state.log_history if "eval_examples_ndcg@10" in h]
    assert len(logged) == 2 and {h["step"] for h in logged} == {1, 2}
    # On demand, the numbers are those of the same evaluator called on the trained model.
    metrics = trainer.evaluate()
    assert metrics["eval_examples_ndcg@10"] == spy.inner(trainer.model.t1)["examples_ndcg@10"]


@pytest.mark.usefixtures("one_thread")
def test_the_grpo_trainer_calls_it(tiny_model_path, tmp_path):
    from test_grpo import _stage

    from t1.training.grpo_trainer import train_grpo

    rows = [{"query": "cell protein gene", "pos": ["cell protein gene brain"], "neg": ["solar energy", "prime proof"]}
            for _ in range(4)]
    records = tmp_path / "train.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spy = Spy(evaluator(name=""))
    stage = _stage(tiny_model_path, records, tmp_path / "stage3", max_steps=1, save_steps=5, eval_strategy="steps",
                   eval_steps=1, contrastive_weight=0.0, beta=0.0)
    _, trainer = train_grpo(*stage, evaluator=spy, stream=io.StringIO())
    assert len(spy.calls) == 1 and spy.calls[0][0] is trainer.t1 and not spy.calls[0][1]
    assert any("eval_ndcg@10" in h for h in trainer.state.log_history)
