"""Training data: record validation, config loading, mining, teacher merge, the loss."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import shared_data
from t1 import T1Error
from t1.training.collator import Collator, RecordDataset, text_key
from t1.training.config import load_config
from t1.training.losses import info_nce
from t1.training.mining import interleave, mine
from t1.training.reasoning_data import merge_teacher, score_traces
from t1.training.records import Record, read_records


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- records
def test_records_read_and_keep_extra_fields(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [
        {"query": "q1", "pos": ["p"], "neg": ["n1", "n2"], "query_id": "7", "instruction": "Find"},
        "",
        {"query": "q2", "pos": "single positive"},
    ])
    first, second = read_records(path)
    assert (first.query, first.pos, first.neg, first.instruction) == ("q1", ["p"], ["n1", "n2"], "Find")
    assert first.to_json()["query_id"] == "7"
    assert second.pos == ["single positive"] and second.neg == []


@pytest.mark.parametrize("row, message", [
    ({"pos": ["p"]}, "'query'"),
    ({"query": "q", "pos": []}, "'pos' needs at least 1"),
    ({"query": "q", "pos": ["p"], "neg": ["ok", ""]}, "neg[1]"),
    ({"query": "q", "pos": ["p"], "reasoning": 3}, "'reasoning' must be a text"),
])
def test_records_bad_line_is_named(tmp_path, row, message):
    path = write_lines(tmp_path / "r.jsonl", [{"query": "fine", "pos": ["p"]}, row])
    with pytest.raises(T1Error) as info:
        read_records(path)
    assert "r.jsonl:2: " in str(info.value) and message in str(info.value)


def test_records_stage2_needs_reasoning(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [{"query": "q", "pos": ["p"], "reasoning": "why"}, {"query": "q", "pos": ["p"]}])
    with pytest.raises(T1Error, match=r"r\.jsonl:2: .*reasoning.*t1 data reason"):
        read_records(path, require_reasoning=True)


# ---------------------------------------------------------------- config
def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_file: t.jsonl\noutput_dir: out\nlora: null\ntraining:\n  learning_rate: 1e-4\n  seed: 3\n")
    config = load_config(path, ["temperature=0.02", "max_steps=7", "lora.r=4", "--weight_decay", "0.1"])
    assert config.lora is not None and config.lora.r == 4 and config.temperature == 0.02
    assert config.training == {"learning_rate": 1e-4, "seed": 3, "max_steps": 7, "weight_decay": 0.1}
    args = config.training_arguments()
    assert args.learning_rate == 1e-4 and args.max_steps == 7
    assert args.remove_unused_columns is False and args.dataloader_drop_last is True
    assert load_config(path).lora is None  # full fine-tuning
    with pytest.raises(T1Error, match="unknown setting 'tempreature'"):
        load_config(path, ["tempreature=1"])
    with pytest.raises(T1Error, match="contrastive_weight"):
        load_config(path, ["contrastive_weight=1.5"])


def test_example_configs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    for name in ("stage1-smollm2-cpu", "stage2-smollm2-cpu", "stage1-qwen3-4b-8gpu", "stage2-qwen3-4b-8gpu"):
        config = load_config(folder / f"{name}.yaml")
        assert config.train_file and config.output_dir
    assert load_config(folder / "stage1-qwen3-4b-8gpu.yaml").lora.r == 32


# ---------------------------------------------------------------- loss
def test_info_nce_matches_cross_entropy_and_masks_shared_positives():
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(6, 8)  # groups of 2: positive, negative
    loss, accuracy = info_nce(q, d, group_size=2, temperature=0.1)
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.1
    assert torch.allclose(loss, F.cross_entropy(scores, torch.tensor([0, 2, 4])))
    assert 0 <= accuracy <= 1
    # Queries 0 and 1 share their positive passage (documents 0 and 2): neither copy is a
    # negative of the other query. Query 2 has document 4 as its positive.
    doc_keys = torch.tensor([10, 11, 10, 13, 14, 15])
    pos_keys = torch.tensor([[10, -1], [10, -1], [14, -1]])
    masked, _ = info_nce(q, d, 2, 0.1, pos_keys, doc_keys)
    scores[0, 2] = scores[1, 0] = float("-inf")
    assert torch.allclose(masked, F.cross_entropy(scores, torch.tensor([0, 2, 4])))


def test_score_traces_rank_and_margin():
    docs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])  # one positive, two negatives
    traces = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.9]])
    rank, margin = score_traces(traces, docs, n_positive=1)
    assert rank.tolist() == [1, 3, 2]
    assert margin[0] == pytest.approx(1 - math.sqrt(0.5), abs=1e-5) and margin[1] < 0


# ---------------------------------------------------------------- dataset and collator
def test_dataset_groups_are_deterministic_and_filled():
    records = [Record("q1", ["p1", "p1b"], ["n1", "n2", "n3"]), Record("q2", ["p2"], [])]
    dataset = RecordDataset(records, negatives_per_query=2, seed=5)
    first = dataset[0]
    assert first == RecordDataset(records, 2, seed=5)[0]
    assert first["documents"][0] in ("p1", "p1b") and set(first["documents"][1:]) <= {"n1", "n2", "n3"}
    assert first["positive_keys"] == [text_key("p1"), text_key("p1b")]
    filled = dataset[1]["documents"]  # no hard negatives: other records' passages, never its positive
    assert filled[0] == "p2" and len(filled) == 3 and "p2" not in filled[1:]
    draws = set()
    for epoch in range(6):
        dataset.epoch = epoch
        draws.add(tuple(dataset[0]["documents"]))
    assert len(draws) > 1  # another epoch, other negatives


def test_collator_labels_cover_reasoning_and_emb_token(tiny_model):
    record = Record("cell protein gene", ["water river rock"], ["code array"], reasoning="because energy")
    collate = Collator(tiny_model.prompts, tiny_model.tokenizer.pad_token_id, "Find", "", 64, 64, 16, reasoning=True)
    batch = collate([RecordDataset([record], 1)[0]])
    ids, labels = batch["query_input_ids"][0], batch["query_labels"][0]
    prompt = tiny_model.prompts.query_prompt(record.query, "Find", 64)
    trace = tiny_model.prompts.reasoning("because energy", 16)
    assert ids.tolist() == prompt + trace + [tiny_model.emb_token_id]
    assert labels.tolist() == [-100] * len(prompt) + trace + [tiny_model.emb_token_id]
    assert batch["doc_input_ids"].shape[0] == 2
    assert batch["doc_input_ids"][0, batch["doc_attention_mask"][0].sum() - 1] == tiny_model.emb_token_id


# ---------------------------------------------------------------- mining and teacher traces
def _beir(tmp_path):
    from t1.data import BeirDataset, Document

    topics = ["solar energy carbon", "virus vaccine cell", "prime integer theorem", "river water rock",
              "robot sensor code", "market price data", "brain gene protein", "graph tree proof"]
    corpus = [Document(f"d{i}", f"{t} {t.split()[0]} study {i}", f"title {i}") for i, t in enumerate(topics)]
    queries = {"q0": "solar carbon energy", "q1": "vaccine for a virus", "q2": "prime theorem"}
    qrels = {"q0": {"d0": 1}, "q1": {"d1": 1, "d5": 0}, "q2": {"d2": 1, "missing": 1}}
    return BeirDataset(corpus, queries, qrels)


def test_mine_excludes_positives_and_is_deterministic(tmp_path):
    dataset = _beir(tmp_path)
    records = mine(dataset, negatives=3, depth=8, seed=1)
    assert [r["query_id"] for r in records] == ["q0", "q1", "q2"]
    for r in records:
        positives = {d for d, s in dataset.qrels[r["query_id"]].items() if s > 0}
        assert set(r["pos_ids"]) == positives & {d.id for d in dataset.corpus}
        assert len(r["neg"]) == 3 and not positives & set(r["neg_ids"])
        assert r["pos"][0].startswith("title ")
    assert records == mine(dataset, negatives=3, depth=8, seed=1)
    assert interleave([1, 2, 3], [3, 4]) == [1, 3, 2, 4]


def test_mine_with_dense_model(tmp_path, tiny_model_path):
    records = mine(_beir(tmp_path), negatives=2, depth=4, dense_model=str(tiny_model_path))
    assert all(len(r["neg"]) == 2 for r in records)


def test_mine_scifact_train():
    from t1.training.mining import mine_beir

    records = mine_beir(shared_data("scifact"), "train", negatives=4, depth=30)
    assert len(records) == 709
    assert all(len(r["neg"]) == 4 and not set(r["neg_ids"]) & set(r["pos_ids"]) for r in records)


def test_teacher_merge_by_id_then_text(tmp_path):
    records = [Record("q a", ["p"], extra={"query_id": "1"}), Record("q b", ["p"]), Record("q c", ["p"])]
    teacher = write_lines(tmp_path / "t.jsonl", [{"id": 1, "reasoning": "r1"}, {"query": "q b", "reasoning": "r2"}])
    merged, missing = merge_teacher(records, teacher)
    assert [(r.query, r.reasoning) for r in merged] == [("q a", "r1"), ("q b", "r2")] and missing == 1
    bad = write_lines(tmp_path / "bad.jsonl", [{"id": 1, "reasoning": ""}])
    with pytest.raises(T1Error, match=r"bad\.jsonl:1: .*reasoning"):
        merge_teacher(records, bad)


def test_cli_mine_then_teacher_traces(tmp_path, capsys):
    from t1.cli import main

    dataset = _beir(tmp_path)
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    write_lines(folder / "corpus.jsonl", [{"_id": d.id, "title": d.title, "text": d.text} for d in dataset.corpus])
    write_lines(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in dataset.queries.items()])
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in dataset.qrels.items() for d, s in docs.items()))
    records = tmp_path / "train.jsonl"
    assert main(["data", "mine", str(folder), "-o", str(records), "--negatives", "2", "--depth", "6"]) == 0
    assert len(read_records(records)) == 3
    teacher = write_lines(tmp_path / "teacher.jsonl", [{"id": "q0", "reasoning": "sun"}, {"id": "q2", "reasoning": "math"}])
    out = tmp_path / "reasoning.jsonl"
    assert main(["data", "reason", str(records), "--teacher", str(teacher), "-o", str(out)]) == 0
    assert [r.reasoning for r in read_records(out, require_reasoning=True)] == ["sun", "math"]
    assert "1 records without a teacher trace" in capsys.readouterr().out
    assert main(["data", "reason", str(tmp_path / "nope.jsonl"), "--teacher", str(teacher), "-o", str(out)]) == 2
