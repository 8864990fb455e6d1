"""Offline stand-ins shared by the integration tests: a local mteb retrieval task, mteb's BRIGHT
loader reading tests/fixtures/bright, and `T1Model.from_pretrained` answering hub names with the
tiny test models."""

from __future__ import annotations

import json
from pathlib import Path

BRIGHT_FIXTURE = Path(__file__).parent / "fixtures" / "bright"
HUB_T1 = "ForwardAILabs/MRE-T1"


def local_retrieval_task(prompt=None, name: str = "T1LocalRetrieval"):
    """A small mteb retrieval task held in memory. Query q1's best match by construction
    (d3, the query itself) is excluded from its candidates (`top_ranked`), as BRIGHT's
    excluded ids are in mteb's BRIGHT v1.1 tasks."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name, description="A local retrieval task for T1's tests.", reference=None,
        dataset={"path": "local/t1-tests", "revision": "1"}, type="Retrieval", category="t2t",
        eval_splits=["test"], eval_langs=["eng-Latn"], main_score="ndcg_at_10", date=None, domains=None,
        task_subtypes=None, license=None, annotations_creators=None, dialect=None, modalities=["text"],
        sample_creation=None, bibtex_citation="", prompt=prompt,
    )
    queries = [{"id": "q1", "text": "why do cells divide"}, {"id": "q2", "text": "how do rivers carve rock"}]
    corpus = [
        {"id": "d1", "title": "", "text": "cells divide by mitosis to grow and repair tissue"},
        {"id": "d2", "title": "", "text": "rivers carve rock over millions of years"},
        {"id": "d3", "title": "", "text": "why do cells divide"},
        {"id": "d4", "title": "", "text": "prime numbers have exactly two divisors"},
    ]
    split = {
        "queries": queries, "corpus": corpus,
        "relevant_docs": {"q1": {"d1": 1}, "q2": {"d2": 1}},
        "top_ranked": {"q1": ["d1", "d2", "d4"], "q2": ["d1", "d2", "d3", "d4"]},
    }

    class LocalRetrieval(AbsTaskRetrieval):
        def load_data(self, **kwargs):
            self.dataset = {"default": {"test": RetrievalSplitData(
                queries=Dataset.from_list(split["queries"]), corpus=Dataset.from_list(split["corpus"]),
                relevant_docs=split["relevant_docs"], top_ranked=split["top_ranked"])}}
            self.data_loaded = True

    LocalRetrieval.metadata = metadata
    return LocalRetrieval()


def fixture_bright_load_dataset(real_load_dataset):
    """A `datasets.load_dataset` that serves mteb's BRIGHT repository from the local fixture
    (every domain without a fixture file reads the biology one) and defers all else."""
    from datasets import Dataset

    def load_dataset(path, name=None, split=None, **kwargs):
        if path not in ("mteb/BRIGHT", "xlangai/BRIGHT"):
            return real_load_dataset(path, name, split=split, **kwargs)
        folder = BRIGHT_FIXTURE / name
        file = folder / f"{split}.jsonl"
        if not file.exists():
            file = folder / "biology.jsonl"
        return Dataset.from_list([json.loads(line) for line in file.read_text().splitlines() if line.strip()])

    return load_dataset


def patch_from_pretrained(monkeypatch, tiny_model_path: Path, tiny_qwen3_path: Path, **defaults) -> None:
    """`T1Model.from_pretrained(name)` loads a tiny model on CPU instead: the tiny Qwen3 with
    `<emb_token>` for the hub T1 checkpoint, the tiny Llama for any other name. The model keeps
    the requested name."""
    from t1 import T1Model

    original = T1Model.from_pretrained.__func__

    def from_pretrained(cls, name_or_path="t1-smollm2-135m", device=None, dtype=None, **overrides):
        path = tiny_qwen3_path if name_or_path == HUB_T1 else tiny_model_path
        model = original(cls, str(path), device="cpu", **{**defaults, **overrides})
        model.name_or_path = name_or_path
        return model

    monkeypatch.setattr(T1Model, "from_pretrained", classmethod(from_pretrained))
