"""Public behaviour, pinned across refactors (issue #35): a fixed set of searches and evals on the
example corpus with the tiny model gives the hits, scores and traces recorded before the code was
reshaped (`tests/fixtures/behaviour.json`).

    python3 tests/test_behaviour_snapshot.py --record   # rewrite the snapshot (only on purpose)

The tiny model is built from a seed, so its traces and scores are the same on every run; scores
are compared to 1e-4, which absorbs the last bits that differ between CPUs' float paths.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SNAPSHOT = HERE / "fixtures" / "behaviour.json"
EXAMPLES = HERE.parent / "examples"
QUERIES = ["Why do trees turn red and yellow in the fall?", "What makes prices go up across the whole economy?",
           "How can I find an element quickly in a sorted list?"]
# name -> keyword arguments of Searchable.search_queries
SEARCHES = {
    "none": {"reasoning": "none"},
    "generate": {"reasoning": "generate", "max_new_tokens": 12},
    "given": {"reasoning": ["leaves lose chlorophyll", "money supply grows", "binary search halves the range"]},
    "auto": {"reasoning": "auto", "max_new_tokens": 8, "margin": 0.5},
    "hybrid": {"reasoning": "generate", "max_new_tokens": 8, "hybrid": True, "fusion_weight": 0.4},
    "rrf": {"reasoning": "none", "fusion": "rrf"},
    "sampled": {"reasoning": "generate", "max_new_tokens": 6, "num_traces": 2, "temperature": 0.8,
                "trace_fusion": "rrf"},
    "instruction": {"reasoning": "none", "instruction": "Find the passage that answers the question."},
}


def record(model_path: Path, work: Path) -> dict:
    import torch

    from t1 import T1Model
    from t1.cli import main
    from t1.data import load_corpus
    from t1.index import Index

    model = T1Model.from_pretrained(str(model_path), device="cpu")
    index = Index.build(model, load_corpus(EXAMPLES / "corpus.jsonl"), work / "index", batch_size=8)
    out = {"searches": {}}
    for name, options in SEARCHES.items():
        torch.manual_seed(0)
        hits, traces = index.search_queries(model, QUERIES, k=5, **options)
        out["searches"][name] = {"hits": [[[h.id, round(float(h.score), 5)] for h in row] for row in hits],
                                 "traces": list(traces)}
    doc = model.encode_document(["A leaf turns yellow when chlorophyll breaks down."])
    out["encode_document"] = [round(float(x), 5) for x in doc[0][:8]]
    code = main(["eval", "--retriever", f"hybrid:t1:{model_path}", "--dataset", str(EXAMPLES), "--split", "test",
                 "--max-new-tokens", "6", "--out", str(work / "eval"), "--k", "10", "--no-progress"])
    assert code == 0
    out["eval"] = {k: round(v, 5) for k, v in json.loads((work / "eval" / "metrics.json").read_text()).items()
                   if isinstance(v, float)}
    return out


def _close(a, b, path="") -> list[str]:
    if isinstance(a, float) or isinstance(b, float):
        return [] if abs(float(a) - float(b)) <= 1e-4 else [f"{path}: {a} != {b}"]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_searches_and_evals_match_the_recorded_behaviour(tiny_model_path, tmp_path):
    if not SNAPSHOT.exists():
        pytest.fail(f"{SNAPSHOT} is missing: record it with `python3 {Path(__file__).name} --record`")
    differences = _close(record(tiny_model_path, tmp_path), json.loads(SNAPSHOT.read_text()))
    assert not differences, "\n".join(differences[:20])


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import os
    import tempfile

    os.environ["T1_DOCUMENT_ENGINE"] = "hf"
    sys.path.insert(0, str(HERE))
    from tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["T1_CACHE"] = str(Path(tmp) / "cache")
        result = record(build_tiny_model(Path(tmp) / "model"), Path(tmp))
    SNAPSHOT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {SNAPSHOT}")
