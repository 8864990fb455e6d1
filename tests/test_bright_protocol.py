"""BRIGHT as BRIGHT runs it (issue 19): lengths, the cut-query report, BRIGHT's metrics and
instruction strings, and one settings file for a checkpoint."""

import json
import logging
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

from t1.bright_tasks import BRIGHT_LONG_TASKS, BRIGHT_TASKS, bright_instruction
from t1.cli import build_parser, main
from t1.cli_args import model_settings
from t1.errors import T1Error
from t1.prompts import PromptBuilder
from t1.settings import BRIGHT_LLM_LENGTH, T1Config, load_settings, write_settings

FIXTURES = Path(__file__).parent / "fixtures"
BRIGHT = FIXTURES / "bright"
LONG_TEXT = " ".join(["the protein in the cell binds the gene because the data say so"] * 120)  # > 1,000 tokens


# ------------------------------------------------------------------ lengths
def test_config_less_checkpoint_takes_brights_lengths_not_512(tiny_model, tmp_path):
    # the tiny Llama has 2,048 positions, fewer than BRIGHT's 8,192: its own limit applies
    assert (tiny_model.config.max_query_length, tiny_model.config.max_document_length) == (2048, 2048)
    ids = tiny_model.prompts.document(LONG_TEXT, "", tiny_model.config.max_document_length)
    assert len(ids) > 1000  # no longer cut at 512
    from t1 import T1Model

    wide = T1Model.from_pretrained(str(build_tiny_model(tmp_path / "wide", positions=32768)), device="cpu")
    assert (wide.config.max_query_length, wide.config.max_document_length) == (BRIGHT_LLM_LENGTH, BRIGHT_LLM_LENGTH)
    # a t1 model keeps the lengths saved with it
    wide.config.max_document_length = 300
    wide.save_pretrained(tmp_path / "saved")
    assert T1Model.from_pretrained(str(tmp_path / "saved"), device="cpu").config.max_document_length == 300


def test_length_flags_reach_tokenisation(tiny_model_path, tmp_path, monkeypatch, capsys):
    seen = {"document": [], "query": []}
    document, query_prompts = PromptBuilder.document, PromptBuilder.query_prompts

    def record_document(self, text, instruction, max_length):
        ids = document(self, text, instruction, max_length)
        seen["document"].append((max_length, len(ids)))
        return ids

    def record_queries(self, queries, instruction, max_length):
        seen["query"].append(max_length)
        return query_prompts(self, queries, instruction, max_length)

    monkeypatch.setattr(PromptBuilder, "document", record_document)
    monkeypatch.setattr(PromptBuilder, "query_prompts", record_queries)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": LONG_TEXT}) + "\n" for i in range(3)))
    index = tmp_path / "index"
    assert main(["index", "--model", str(tiny_model_path), "--corpus", str(corpus), "--out", str(index),
                 "--no-bm25", "--device", "cpu", "--max-document-length", "40"]) == 0
    assert seen["document"] == [(40, 40)] * 3
    assert json.loads((index / "manifest.json").read_text())["max_length"] == 40
    assert main(["search", "--index", str(index), "--reasoning", "none", "--max-query-length", "120",
                 "--device", "cpu", "cell protein"]) == 0
    assert seen["query"] == [120]
    assert main(["search", "--index", str(index), "--reasoning", "none", "--max-query-length", "20", "--device",
                 "cpu", "cell"]) == 2
    assert "max_query_length=20 leaves no room for the query" in capsys.readouterr().err

    seen["query"].clear()
    out = tmp_path / "bright"
    assert main(["bright", "--retriever", f"t1:{tiny_model_path}", "--dataset", str(BRIGHT), "--tasks", "biology",
                 "--reasoning", "none", "--out", str(out), "--device", "cpu", "--no-progress",
                 "--max-query-length", "160", "--max-document-length", "40"]) == 0
    assert seen["query"] == [160]
    settings = json.loads((out / "biology" / "run.json").read_text())["settings"]
    assert (settings["max_query_length"], settings["max_document_length"]) == (160, 40)
    args = build_parser().parse_args(["serve", "--index", str(index), "--max-query-length", "99"])
    assert model_settings(args) == {"max_query_length": 99}
    args = build_parser().parse_args(["eval", "--dataset", "d", "--out", "o", "--max-document-length", "77"])
    assert model_settings(args) == {"max_document_length": 77}


def test_an_over_long_query_is_reported(tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="t1.model"):
        tiny_model.encode_query([LONG_TEXT, "cell"], reasoning="none", max_length=64)
    message = " ".join(r.getMessage() for r in caplog.records)
    prompt = len(tiny_model.prompts.query_prompt(LONG_TEXT, tiny_model.config.query_instruction, 10 ** 6))
    assert f"1 of 2 queries cut to fit max_query_length=64 (longest prompt {prompt} tokens)" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="t1.model"):
        tiny_model.encode_query(["cell"], reasoning="none")
    assert not caplog.records  # nothing cut, nothing said


# ------------------------------------------------------------------ BRIGHT's metrics
def _recall_at_1(run_file: Path, examples: Path) -> float:
    """Recall@1 from the run file and BRIGHT's examples alone (no t1 code, no pytrec_eval)."""
    gold = {}
    for line in examples.read_text().splitlines():
        row = json.loads(line)
        ids = [g for g in row["gold_ids_long"] if g != "N/A"]
        if ids:
            gold[row["id"]] = set(ids)
    top = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, rank, _, _ = line.split()
        if int(rank) == 1:
            top[qid] = doc
    return sum(len({top.get(q)} & g) / len(g) for q, g in gold.items()) / len(gold)


def test_long_documents_report_recall_at_1_recomputed_from_the_run_file(tmp_path, capsys):
    out = tmp_path / "long"
    assert main(["bright", "--retriever", "bm25", "--dataset", str(BRIGHT), "--tasks", "biology", "--long",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    expected = _recall_at_1(out / "biology" / "run.trec", BRIGHT / "examples" / "biology.jsonl")
    assert json.loads((out / "biology" / "metrics.json").read_text())["recall@1"] == pytest.approx(expected)
    assert "BRIGHT long documents, Recall@1 ×100" in printed and "BRIGHT long documents, nDCG@10 ×100" in printed
    assert printed.index("Recall@1 ×100") < printed.index("nDCG@10 ×100")  # BRIGHT's headline first
    row = next(line for line in printed.splitlines() if line.startswith("| long |"))
    assert row.split("|")[2].strip() == f"{100 * expected:.1f}"  # the mean over the one task

    short = tmp_path / "short"
    assert main(["bright", "--retriever", "bm25", "--dataset", str(BRIGHT), "--out", str(short), "--no-progress",
                 "--tasks", "leetcode,biology"]) == 0
    capsys.readouterr()
    assert main(["report", str(short), str(out), "--out", str(tmp_path / "report")]) == 0
    report = capsys.readouterr().out
    assert report.count("×100") == 3  # short: nDCG@10; long: Recall@1 and nDCG@10
    header = next(line for line in report.splitlines() if line.startswith("| Run |"))
    assert header.split("|")[3:5] == [" Bio. ", " Leet. "]  # BRIGHT's column order, after the mean


# ------------------------------------------------------------------ BRIGHT's instruction strings
def test_instructions_equal_brights_configs():
    fixture = json.loads((FIXTURES / "bright_instructions.json").read_text())
    assert "xlang-ai/BRIGHT" in fixture["_source"]
    for key, long in (("instructions", False), ("instructions_long", True)):
        assert tuple(fixture[key]) == (BRIGHT_LONG_TASKS if long else BRIGHT_TASKS)
        for task, template in fixture[key].items():
            filled = template.format(task=task)  # as BRIGHT's add_instruct_concatenate fills it
            assert filled.startswith("Instruct: ") and filled.endswith("\nQuery: ")
            assert bright_instruction(task, long) == filled.removeprefix("Instruct: ").removesuffix("\nQuery: "), task


# ------------------------------------------------------------------ the settings file
def test_mre_t1_settings_file_holds_brights_instructions_and_lengths():
    settings = load_settings(Path(__file__).parents[1] / "configs" / "settings" / "mre-t1.json")
    assert (settings["max_query_length"], settings["max_document_length"]) == (BRIGHT_LLM_LENGTH, BRIGHT_LLM_LENGTH)
    expected = {t: bright_instruction(t) for t in BRIGHT_TASKS}
    expected.update({f"{t}_long": bright_instruction(t, long=True) for t in BRIGHT_LONG_TASKS})
    assert {task: sides["query"] for task, sides in settings["tasks"].items()} == expected


SETTINGS = {
    "query_template": "Task: {instruction} || Question: {query}",
    "document_template": "[{instruction}] {text} [end]",
    "chat_template": "",
    "max_query_length": 40,
    "max_document_length": 30,
    "max_new_tokens": 3,
    "do_sample": True,
    "temperature": 0.5,
    "top_k": 7,
    "tasks": {"biology": {"query": "Find biology passages", "document": "A biology passage"}},
}


def test_settings_file_round_trips(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"_note": "comments start with _", **SETTINGS}))
    settings = load_settings(path)
    assert settings == SETTINGS
    write_settings(T1Config(**settings), tmp_path / "again.json")
    again = load_settings(tmp_path / "again.json")
    assert {k: again[k] for k in SETTINGS} == SETTINGS and T1Config(**again) == T1Config(**settings)
    path.write_text(json.dumps({"max_query_lenght": 10}))
    with pytest.raises(T1Error, match="unknown setting 'max_query_lenght'"):
        load_settings(path)
    path.write_text(json.dumps({"document_template": "{instruction}"}))
    with pytest.raises(T1Error, match=r"document_template must be a string holding \{text\}"):
        load_settings(path)


def test_settings_file_changes_template_lengths_and_decoding(tiny_model_path, tmp_path, monkeypatch):
    from t1 import T1Model

    model = T1Model.from_pretrained(str(tiny_model_path), device="cpu", **SETTINGS)
    tok = model.tokenizer
    doc = model.prompts.document(LONG_TEXT, "A biology passage", model.config.max_document_length)
    assert len(doc) == 30 and tok.decode(doc).startswith("[A biology passage] the protein")
    assert tok.decode(model.prompts.document("cell", "X", 30)[:-1]) == "[X] cell [end]"
    prompt = model.prompts.query_prompt("why cells?", "Find", model.config.max_query_length)
    assert tok.decode(prompt) == "Task: Find || Question: why cells?\n"  # "" chat template: plain text
    assert model.instruction_for("biology", "query") == "Find biology passages"
    assert model.instruction_for("biology", "document") == "A biology passage"
    assert model.instruction_for("biology_long", "query") == bright_instruction("biology", long=True)

    seen = {}
    rollout = model.engine.rollout

    def record(prompts, max_new_tokens, num_samples, decoding, **extra):
        seen.update(decoding.kwargs(), max_new_tokens=max_new_tokens, prompt_length=max(map(len, prompts)))
        return rollout(prompts, max_new_tokens, num_samples, decoding, **extra)

    monkeypatch.setattr(model.engine, "rollout", record)
    model.encode_query([LONG_TEXT], instruction="Find")
    assert seen == {"do_sample": True, "temperature": 0.5, "top_p": 1.0, "top_k": 7, "max_new_tokens": 3,
                    "prompt_length": 40}
    model.encode_query(["cell"], instruction="Find", do_sample=False)  # the caller's choice wins
    assert seen["do_sample"] is False


def test_bright_applies_a_settings_file(tiny_model_path, tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"tasks": SETTINGS["tasks"], "max_document_length": 50}))
    out = tmp_path / "run"
    assert main(["bright", "--retriever", f"t1:{tiny_model_path}", "--dataset", str(BRIGHT), "--tasks", "biology",
                 "--reasoning", "none", "--settings", str(path), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    settings = json.loads((out / "biology" / "run.json").read_text())["settings"]
    assert settings["query_instruction"] == "Find biology passages"
    assert settings["document_instruction"] == "A biology passage"
    assert settings["max_document_length"] == 50
    assert json.loads((out / "run.json").read_text())["model_settings"] == json.loads(path.read_text())
    path.write_text(json.dumps({"max_document_length": 60}))  # another file: another run folder
    with pytest.raises(T1Error, match="different model_settings"):
        from t1.evaluation.bright import run_bright

        run_bright(f"t1:{tiny_model_path}", out, source=str(BRIGHT), tasks=["biology"], reasoning="none",
                   model_settings=load_settings(path), device="cpu", log=lambda s: None)
    with pytest.raises(T1Error, match="apply to T1 models"):
        run_bright("bm25", tmp_path / "bm25", source=str(BRIGHT), tasks=["biology"], model_settings={"max_new_tokens": 2})
