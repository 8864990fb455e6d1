"""`t1 data reason` self-generation: best-of-N with rank filtering, resumable."""

import json

import pytest

from t1 import T1Error
from t1.training import reasoning_data
from t1.training.reasoning_data import SamplingSettings, self_generate
from t1.training.records import Record, read_records

RECORDS = [
    Record("cell protein gene", ["protein gene cell brain"], ["market price", "robot sensor"], extra={"query_id": "a"}),
    Record("solar energy", ["solar energy carbon plant"], ["prime integer"], extra={"query_id": "b"}),
    Record("prime theorem", ["prime theorem proof integer"], ["river water", "virus vaccine"], extra={"query_id": "c"}),
]
SETTINGS = SamplingSettings(samples=3, max_new_tokens=4, max_rank=10, batch_size=1, seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_self_generation_runs_through_the_model_engine(tiny_model, tmp_path, engine_calls):
    self_generate(tiny_model, RECORDS[:2], tmp_path / "r.jsonl", SETTINGS, show_progress=False)
    assert [len(c) for c in engine_calls] == [1, 1]  # one query per batch (batch_size 1), 3 samples each


def test_self_generation_keeps_best_trace_per_record(tiny_model, tmp_path):
    out = tmp_path / "r.jsonl"
    summary = self_generate(tiny_model, RECORDS, out, SETTINGS, show_progress=False)
    rows = lines(out)
    assert summary == {"records": 3, "accepted": len(rows)} and len(rows) >= 2
    for row in rows:
        assert row["reasoning"].strip() and 1 <= row["reasoning_rank"] <= 3 and "query_id" in row
    assert all(r.reasoning for r in read_records(out, require_reasoning=True))
    strict = tmp_path / "strict.jsonl"
    self_generate(tiny_model, RECORDS, strict,
                  SamplingSettings(**{**vars(SETTINGS), "max_rank": 1}), show_progress=False)
    assert all(row["reasoning_rank"] == 1 for row in lines(strict))


def test_self_generation_resumes_after_interrupt(tiny_model, tmp_path, monkeypatch):
    full = tmp_path / "full.jsonl"
    self_generate(tiny_model, RECORDS, full, SETTINGS, show_progress=False)

    out = tmp_path / "out.jsonl"
    original, calls = reasoning_data._best_of_n, []

    def crash_on_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(reasoning_data, "_best_of_n", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        self_generate(tiny_model, RECORDS, out, SETTINGS, show_progress=False)
    monkeypatch.setattr(reasoning_data, "_best_of_n", original)
    with open(out, "a") as f:  # a half-written line from the interrupted batch
        f.write('{"query": "partial')
    with pytest.raises(T1Error, match="other settings"):
        self_generate(tiny_model, list(RECORDS), out, SamplingSettings(samples=2), show_progress=False)
    self_generate(tiny_model, RECORDS, out, SETTINGS, show_progress=False)
    assert out.read_text() == full.read_text()
