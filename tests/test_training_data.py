"""Training data: record validation, config loading, mining, teacher merge, the loss."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_data

from t1 import T1Error
from t1.cli import main
from t1.training.collator import Collator, RecordDataset, text_key
from t1.training.config_parser import parse_config
from t1.training.contrastive_config import T1TrainingArguments
from t1.training.losses import info_nce
from t1.training.mining import interleave, mine
from t1.training.model_config import ModelArguments
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
TYPES = (ModelArguments, T1TrainingArguments)


def test_config_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_file: t.jsonl\noutput_dir: out\nuse_peft: false\nlearning_rate: 1e-4\nseed: 3\n"
                    "model_settings: {max_new_tokens: 24}\n")
    model_args, args = parse_config(TYPES, ["--config", str(path), "--contrastive_temperature", "0.02",
                                            "--max_steps", "7", "--use_peft", "true", "--lora_r", "4",
                                            "--weight-decay", "0.1"], prog="t1 train contrastive")
    assert model_args.use_peft and model_args.lora_r == 4 and args.contrastive_temperature == 0.02
    assert (args.learning_rate, args.seed, args.max_steps, args.weight_decay) == (1e-4, 3, 7, 0.1)
    assert model_args.model_settings == {"max_new_tokens": 24}
    assert args.remove_unused_columns is False and args.dataloader_drop_last is True
    assert parse_config(TYPES, ["--config", str(path)], prog="x")[0].use_peft is False  # full fine-tuning
    with pytest.raises(T1Error, match="unknown setting.*tempreature"):
        parse_config(TYPES, ["--config", str(path), "--tempreature", "1"], prog="x")
    with pytest.raises(T1Error, match="contrastive_weight"):
        parse_config(TYPES, ["--config", str(path), "--contrastive_weight", "1.5"], prog="x")
    with pytest.raises(T1Error, match="train_file is not set"):
        parse_config(TYPES, ["--output_dir", "out"], prog="x")


def test_example_configs_parse():
    """Every shipped stage config names only known fields with values of the right type (the
    multi-GPU ones with bf16 off, which this CPU cannot run)."""
    from pathlib import Path

    from t1.training.grpo_config import T1GRPOConfig

    folder = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(folder.glob("stage*.yaml")) + sorted(folder.glob("*/stage*.yaml"))
    assert len(files) == 8  # the shipped recipe (configs/t1-smollm2-135m) has no stage 3
    for path in files:
        types = (ModelArguments, T1GRPOConfig if "stage3" in path.name else T1TrainingArguments)
        model_args, args = parse_config(types, ["--config", str(path), "--bf16", "false"], prog="x")
        assert args.train_file and args.output_dir and model_args.model_name_or_path, path
    model_args, _ = parse_config(TYPES, ["--config", str(folder / "stage1-qwen3-4b-8gpu.yaml"), "--bf16", "false"],
                                 prog="x")
    assert model_args.lora_r == 32 and model_args.target_modules == "all-linear"


def test_shipped_recipe_parses_with_its_stage_configs(monkeypatch):
    from pathlib import Path

    from t1.training.curriculum import load_curriculum_config, stage_configs

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    config = load_curriculum_config("configs/t1-smollm2-135m/curriculum.yaml", ["--export.folder", "null"])
    assert config.holdout == 100 and config.distill.teacher == "all-minilm-l6-v2" and config.export.folder is None
    stages = stage_configs(config)
    assert stages.stage3 is None and stages.stage1[1].distill_weight == stages.stage2[1].distill_weight == 200



def test_every_curriculum_setting_has_help():
    from t1.training.config_parser import describe
    from t1.training.curriculum import CurriculumConfig

    lines = describe(CurriculumConfig)
    assert "  --eval.k  Documents kept per query. (default: 100)" in lines
    assert "  --traces.max_new_tokens  Trace length limit in tokens. (default: 128)" in lines
    helps = [line.split("  ", 2)[-1].split(" (default")[0] for line in lines if line.startswith("  --")]
    assert len(helps) > 40 and all(text.strip() for text in helps)


# ---------------------------------------------------------------- loss
def test_info_nce_matches_cross_entropy_and_masks_shared_positives():
    torch.manual_seed(0)
    q, d = torch.randn(3, 8), torch.randn(6, 8)  # groups of 2: positive, negative
    loss, accuracy = info_nce(q, d, group_size=2, temperature=0.1)
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.1
    assert torch.allclose(loss, F.cross_entropy(scores, torch.tensor([0, 2, 4])))
    assert accuracy == (scores.argmax(dim=1) == torch.tensor([0, 2, 4])).float().mean()
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
    assert rank == [1, 3, 2]
    assert margin[0] == pytest.approx(1 - math.sqrt(0.5), abs=1e-5) and margin[1] < 0


def test_trace_rejection_and_reward_share_the_tie_rule():
    """A positive tied with a negative ranks below it, in stage 2's trace rejection as in the
    stage-3 reward: a collapsed embedding never passes as "ranked first"."""
    from t1.training.rewards import best_positive_rank

    docs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # the positive and a negative are the same
    rank, _ = score_traces(torch.tensor([[1.0, 0.0]]), docs, n_positive=1)
    assert rank == [2] == [best_positive_rank([1.0, 1.0, 0.0], [True, False, False])]


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
    queries = {"q0": "solar carbon energy study", "q1": "vaccine for a virus", "q2": "prime theorem"}
    qrels = {"q0": {"d0": 1}, "q1": {"d1": 1, "d5": 0}, "q2": {"d2": 1, "missing": 1}}
    return BeirDataset(corpus, queries, qrels)


def test_mine_excludes_positives_and_is_deterministic(tmp_path):
    """Negatives come from the evaluation's BM25 (k1 0.9, b 0.4): only documents sharing a term
    with the query are candidates, as in the BM25 baseline's ranking."""
    from t1.index.bm25 import BM25Index

    dataset = _beir(tmp_path)
    records = mine(dataset, negatives=3, depth=8, seed=1)
    assert [r["query_id"] for r in records] == ["q0", "q1", "q2"]
    bm25 = BM25Index().index([d.full_text for d in dataset.corpus])
    for r in records:
        positives = {d for d, s in dataset.qrels[r["query_id"]].items() if s > 0}
        assert set(r["pos_ids"]) == positives & {d.id for d in dataset.corpus}
        matching = {dataset.corpus[i].id for i, _ in bm25.search([r["query"]], 8)[0]} - positives
        assert set(r["neg_ids"]) <= matching and len(r["neg"]) == min(3, len(matching))
        assert r["pos"][0].startswith("title ")
    assert [len(r["neg"]) for r in records] == [3, 0, 0]  # only q0 shares a term ("study") with other documents
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
    dataset = _beir(tmp_path)
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    write_lines(folder / "corpus.jsonl", [{"_id": d.id, "title": d.title, "text": d.text} for d in dataset.corpus])
    write_lines(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in dataset.queries.items()])
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in dataset.qrels.items() for d, s in docs.items()))
    records = tmp_path / "train.jsonl"
    assert main(["data", "mine", str(folder), "--out", str(records), "--negatives", "2", "--depth", "6"]) == 0
    assert len(read_records(records)) == 3
    teacher = write_lines(tmp_path / "teacher.jsonl", [{"id": "q0", "reasoning": "sun"}, {"id": "q2", "reasoning": "math"}])
    out = tmp_path / "reasoning.jsonl"
    assert main(["data", "reason", str(records), "--teacher", str(teacher), "--out", str(out)]) == 0
    assert [r.reasoning for r in read_records(out, require_reasoning=True)] == ["sun", "math"]
    assert "1 records without a teacher trace" in capsys.readouterr().out
    assert main(["data", "reason", str(tmp_path / "nope.jsonl"), "--teacher", str(teacher), "--out", str(out)]) == 2


def test_data_commands_check_their_arguments_before_any_work(tmp_path, monkeypatch, capsys):
    from t1.training import mining, reasoning_data

    def never(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    monkeypatch.setattr(mining, "mine_beir", never)
    monkeypatch.setattr(reasoning_data, "self_generate", never)
    records = tmp_path / "r.jsonl"
    records.write_text('{"query": "q", "pos": ["p"]}\n')
    cases = [
        (["data", "mine", str(tmp_path), "--out", str(tmp_path)], "is a folder, not a file to write"),
        (["data", "mine", str(tmp_path), "--out", "x.jsonl", "--depth", "0"], "--depth must be at least 1, got 0"),
        (["data", "reason", str(records), "--model", "m", "--out", "o.jsonl", "--device", "gpu"], "--device must be"),
        (["data", "reason", str(records), "--model", "m", "--out", "o.jsonl", "--samples", "-1"], "--samples must be"),
        (["data", "pairs", str(records), "--out", "o.jsonl"], "ask for some pairs"),
        (["train", "contrastive", "--learning_rat", "1"], "unknown setting(s) learning_rat"),  # no abbreviations
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
