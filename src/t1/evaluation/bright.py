"""The BRIGHT protocol, task by task, resumable.

`OUT/run.json` records the settings; each task gets a run folder `OUT/<task>/` (see runs.py),
and a task whose metrics.json exists is skipped, so an interrupted run re-started with the
same command continues where it stopped. `OUT/summary.json` holds every finished task's
metrics and their average, refreshed after each task.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..atomic import write_json
from ..bright_tasks import BRIGHT_LONG_TASKS, BRIGHT_TASKS
from ..errors import T1Error
from ..index.bm25 import DEFAULT_B, DEFAULT_K1
from ..prompts import instruction_or_default
from ..settings import QuerySettings
from .datasets import BRIGHT_HUB, load_bright_task, local_files
from .evaluator import Reasoning, RetrievalEvaluator
from .metrics import bright_metrics, format_headline
from .retrievers import hybrid_fusion, parse_retriever
from .runs import INFO_FILE, METRICS_FILE, read_json

SUMMARY_FILE = "summary.json"
_SETTINGS = ("retriever", "long", "reasoning", "k", "query_instruction", "document_instruction", "max_new_tokens",
             "fusion", "fusion_weight", "num_traces", "temperature", "top_p", "trace_fusion", "model_settings")


def resolve_tasks(tasks: list[str] | None, long: bool = False) -> list[str]:
    """Canonical order; comma-separated names accepted; long mode only has 8 tasks."""
    available = BRIGHT_LONG_TASKS if long else BRIGHT_TASKS
    if not tasks:
        return list(available)
    names = [t.strip() for item in tasks for t in item.split(",") if t.strip()]
    for t in names:
        if t not in BRIGHT_TASKS:
            raise T1Error(f"unknown BRIGHT task {t!r} (expected one of {', '.join(BRIGHT_TASKS)})")
        if t not in available:
            raise T1Error(f"BRIGHT task {t!r} has no long documents (long tasks: {', '.join(BRIGHT_LONG_TASKS)})")
    return [t for t in BRIGHT_TASKS if t in names]


def _check_local_files(source: str, tasks: list[str], long: bool, given: str | None) -> None:
    """Fail before the first task, not after hours, when a local copy lacks a task's files."""
    root = Path(source)
    if not root.is_dir():
        return
    configs = ["examples", "long_documents" if long else "documents"] + ([f"{given}_reason"] if given else [])
    missing = [f"{c}/{t}" for t in tasks for c in configs if not local_files(root, c, t)]
    if missing:
        raise T1Error(f"{root}: no files for {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                      f"(expected <config>/<task>.jsonl or .parquet; use --tasks to run a subset)")


def summarize(out: str | Path) -> dict:
    """Metrics of the finished tasks under `out` and their mean over those tasks."""
    out = Path(out)
    tasks = {t: read_json(out / t / METRICS_FILE) for t in BRIGHT_TASKS if (out / t / METRICS_FILE).exists()}
    names = sorted(set.intersection(*(set(m) for m in tasks.values()))) if tasks else []
    average = {n: sum(m[n] for m in tasks.values()) / len(tasks) for n in names}
    return {"tasks": tasks, "average": average, "num_tasks": len(tasks)}


def run_bright(
    retriever: str,
    out: str | Path,
    source: str = BRIGHT_HUB,
    tasks: list[str] | None = None,
    long: bool = False,
    reasoning: str | None = None,
    k: int = 1000,
    query: QuerySettings = QuerySettings(),
    document_instruction: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    engine: str | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    reasoning_cache: bool = True,
    show_progress: bool | None = None,
    model_settings: dict | None = None,
    index_root: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluate `retriever` (bm25, st:MODEL, t1:MODEL) on BRIGHT. `reasoning` is a T1 mode
    ("generate", the default for T1, or "none") or the name of a BRIGHT reasoning set such as
    "gpt4" (config `gpt4_reason`); T1 embeds and searches as `query` says, its reasoning mode
    set by `reasoning`, its instruction (None: each task's) before the task's. `hybrid:` fuses
    as `hybrid_fusion` says. `model_settings`
    (T1Config fields, e.g. a settings file's) apply to a T1 model; its instructions per task
    (`tasks`) come before BRIGHT's. `index_root/<task>` is the document index of a task (built
    there if missing, e.g. by `torchrun ... t1 index`), else one cached under $T1_CACHE.
    Returns `summarize(out)`."""
    kind, model_name = parse_retriever(retriever)
    if kind == "hybrid":  # the dense side decides what a model and a reasoning mode are
        fusion, fusion_weight = hybrid_fusion(retriever, query.fusion, query.fusion_weight)
        query = replace(query, fusion=fusion, fusion_weight=fusion_weight)
        kind, model_name = parse_retriever(model_name)
    tasks = resolve_tasks(tasks, long)
    chosen = Reasoning.parse(reasoning, retriever, files=False)
    mode, given = chosen.mode, chosen.given_set
    query = replace(query, reasoning=mode)
    if kind != "t1" and (model_settings or index_root):
        raise T1Error(f"T1 settings, lengths and index folders apply to T1 models, not to {retriever}")

    out = Path(out)
    settings = {"kind": "bright", "retriever": retriever, "long": long,
                "reasoning": given or (mode if kind == "t1" else None), "k": k,
                "query_instruction": query.instruction, "document_instruction": document_instruction,
                "max_new_tokens": query.max_new_tokens, "source": str(source), "model_settings": model_settings or None,
                **({"fusion": query.fusion, "fusion_weight": query.fusion_weight}
                   if retriever.lower().startswith("hybrid:") else {}),
                **({"num_traces": query.num_traces, "temperature": query.temperature, "top_p": query.top_p,
                    "trace_fusion": query.trace_fusion} if query.num_traces > 1 else {})}
    _check_local_files(source, [t for t in tasks if not (out / t / METRICS_FILE).exists()], long, given)
    info_path = out / INFO_FILE
    if info_path.exists():
        old = read_json(info_path)
        diff = [key for key in _SETTINGS if old.get(key) != settings.get(key)]
        if diff:
            raise T1Error(f"{out} holds a BRIGHT run with different {', '.join(diff)} "
                          f"({', '.join(f'{d}={old.get(d)!r}' for d in diff)}); use another --out")
        settings["tasks"] = [t for t in BRIGHT_TASKS if t in set(old.get("tasks", [])) | set(tasks)]
    else:
        settings["tasks"] = tasks
    write_json(info_path, settings)

    model = None
    for task in tasks:
        task_dir = out / task
        if (task_dir / METRICS_FILE).exists():
            log(f"{task}: done already ({format_headline(read_json(task_dir / METRICS_FILE), bright_metrics(long))}), "
                "skipped")
            continue
        data = load_bright_task(source, task, long, given)
        if kind == "t1" and model is None:
            from ..model import load_model

            model = load_model(model_name, device, engine, **(model_settings or {}))
        task_query, document = data.query_instruction, None
        if model is not None:  # the model's instructions for this task (its settings, else BRIGHT's)
            name = f"{task}_long" if long else task
            task_query, document = model.instruction_for(name, "query"), model.instruction_for(name, "document")
        evaluator = RetrievalEvaluator.from_data(
            data, k=k, query=replace(query, instruction=instruction_or_default(query.instruction, task_query)),
            retriever_options=dict(document_instruction=instruction_or_default(document_instruction, document),
                                   index_folder=Path(index_root) / task if index_root else None,
                                   batch_size=batch_size, device=device, k1=k1, b=b, reasoning_cache=reasoning_cache,
                                   show_progress=show_progress))
        evaluator(evaluator.retriever(retriever, loaded=model), task_dir,
                  info={"task": task, "long": long, "reasoning_set": given})
        log(f"{task}: {format_headline(evaluator.last.mean, bright_metrics(long))} ({len(data.queries)} queries, "
            f"{len(data.corpus)} docs)")
        write_json(out / SUMMARY_FILE, summarize(out))
    summary = summarize(out)
    write_json(out / SUMMARY_FILE, summary)
    return summary
