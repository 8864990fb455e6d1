"""`t1 eval`, `t1 bright` and `t1 report`; `register(subparsers)` adds them to the t1 CLI."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..backbones import DEFAULT_MODEL
from ..cli_args import (
    DEVICE_HELP,
    add_auto_margin_arg,
    add_document_engine_arg,
    add_engine_arg,
    add_fusion_args,
    add_reasoner_args,
    add_sampling_args,
    add_settings_args,
    device_arg,
    fraction,
    model_settings,
    non_negative_float,
    positive_int,
    query_settings,
)
from ..errors import T1Error
from ..index.bm25 import DEFAULT_B, DEFAULT_K1
from ..prompts import instruction_or_default

RETRIEVER_HELP = ("bm25, st:MODEL (e.g. st:all-minilm-l6-v2), t1:MODEL (t1-smollm2-135m, a folder, a hub id), or "
                  "hybrid:t1:MODEL / hybrid:st:MODEL (fused with BM25)")


def _progress(args) -> bool | None:
    return False if args.no_progress else None  # None: bars when stderr is a terminal


def _add_retriever_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    if default:
        p.add_argument("--retriever", default=default, help=f"{RETRIEVER_HELP} (default {default}; t1:MODEL: T1 "
                                                            "alone)")
    else:
        p.add_argument("--retriever", required=True, help=RETRIEVER_HELP)
    p.add_argument("-k", "--k", type=positive_int, default=1000, help="documents kept per query (default 1000)")
    p.add_argument("--query-instruction", default=None,
                   help="T1 query instruction (default: BRIGHT's task instruction, else the model's)")
    p.add_argument("--document-instruction", default=None, help="T1 document instruction (default: the model's)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="T1 reasoning length limit")
    p.add_argument("--batch-size", type=positive_int, default=None, help="query batch size (T1 default 8, st 64)")
    p.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    add_engine_arg(p)
    add_document_engine_arg(p)
    add_reasoner_args(p)
    p.add_argument("--k1", type=non_negative_float, default=DEFAULT_K1,
                   help=f"BM25 k1 (default {DEFAULT_K1}, BRIGHT's)")
    p.add_argument("--b", type=fraction, default=DEFAULT_B, help=f"BM25 b (default {DEFAULT_B}, BRIGHT's)")
    add_fusion_args(p, "a T1 model's saved fusion weight for a weighted sum, else 0.5")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_args(p)
    add_sampling_args(p, "T1 test-time scaling: sample N traces per query")
    add_auto_margin_arg(p)
    p.add_argument("--no-reasoning-cache", action="store_true",
                   help="generate every trace anew (default: reuse traces cached under $T1_CACHE by an earlier run "
                        "with the same model, prompt and decoding settings)")


def cmd_eval(args) -> int:
    from ..atomic import check_output_folder
    from .datasets import is_bright_source, load_eval_data, load_reasoning_file
    from .evaluator import Reasoning, RetrievalEvaluator
    from .runs import INFO_FILE, describe, read_json

    check_output_folder(args.out)
    reasoning = Reasoning.parse(args.reasoning, args.retriever, dataset_is_bright=is_bright_source(args.dataset))
    data = load_eval_data(args.dataset, args.split, long=args.long, reasoning=reasoning.given_set)
    if reasoning.given_file:
        given = load_reasoning_file(reasoning.given_file)
        lacking = [q for q in data.queries if q not in given]
        if lacking:
            raise T1Error(f"{reasoning.given_file}: no reasoning for query {lacking[0]!r}")
        data.reasoning = {q: given[q] for q in data.queries}

    query = query_settings(args, reasoning=reasoning.mode)
    evaluator = RetrievalEvaluator.from_data(
        data, k=args.k, query=replace(query, instruction=instruction_or_default(args.query_instruction,
                                                                                 data.query_instruction)),
        retriever_options=dict(document_instruction=args.document_instruction, batch_size=args.batch_size,
                               device=args.device, engine=args.engine, k1=args.k1, b=args.b,
                               reasoning_cache=not args.no_reasoning_cache, show_progress=_progress(args),
                               model_settings=model_settings(args)))
    start = time.perf_counter()
    retriever = evaluator.retriever(args.retriever)
    info = {"split": args.split, "reasoning": args.reasoning, "load_seconds": round(time.perf_counter() - start, 2)}
    evaluator(retriever, args.out, info=info)
    print(f"{data.name} · {retriever.name}: {describe(evaluator.last, read_json(Path(args.out) / INFO_FILE))}")
    print(f"wrote {args.out}")
    return 0


def _default_bright_out(args) -> str:
    slug = args.retriever.replace(":", "-").replace("/", "_")
    for part in (args.reasoning, "long" if args.long else None):
        if part:
            slug += f"-{part}"
    return str(Path("runs") / "bright" / slug)


def cmd_bright(args) -> int:
    from ..atomic import check_output_folder
    from .bright import run_bright
    from .report import bright_tables, load_runs

    out = check_output_folder(args.out or _default_bright_out(args))
    if not args.out:
        print(f"BRIGHT run folder: {out}", file=sys.stderr)
    summary = run_bright(
        args.retriever, out, source=args.dataset, tasks=args.tasks, long=args.long, reasoning=args.reasoning,
        k=args.k, query=query_settings(args), document_instruction=args.document_instruction,
        batch_size=args.batch_size, device=args.device, engine=args.engine, k1=args.k1, b=args.b,
        reasoning_cache=not args.no_reasoning_cache, show_progress=_progress(args),
        model_settings=model_settings(args), index_root=args.index_root)
    if summary["num_tasks"]:
        print()
        print("\n\n".join(bright_tables(load_runs([out]))))
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    metrics = tuple(m.strip().lower() for item in args.metrics or () for m in item.split(",") if m.strip())
    text, md, png = write_report(args.runs, args.out, metrics or None)
    print(text, end="")
    print(f"\nwrote {md} and {png}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a retriever on a BEIR dataset or a BRIGHT task")
    p.add_argument("--dataset", required=True,
                   help="BEIR folder, BEIR hub id (BeIR/scifact), or BRIGHT (local folder or xlangai/BRIGHT)")
    p.add_argument("--split", default="test", help="qrels split (BEIR), or the task (BRIGHT)")
    _add_retriever_args(p, default=f"hybrid:t1:{DEFAULT_MODEL}")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--reasoning", default=None,
                   help="T1: generate (default), none or auto; any retriever: a JSONL file of given reasoning "
                        "({id, reasoning}), or for BRIGHT a reasoning set such as gpt4")
    p.add_argument("--long", action="store_true", help="BRIGHT: long documents")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("bright", help="run the BRIGHT benchmark task by task (resumable)")
    _add_retriever_args(p)
    p.add_argument("--dataset", default="xlangai/BRIGHT", help="local BRIGHT folder, or the hub id (default)")
    p.add_argument("--tasks", nargs="+", default=None, help="subset of tasks (default: all 12, or the 8 long ones)")
    p.add_argument("--long", action="store_true", help="long documents (8 tasks)")
    p.add_argument("--reasoning", default=None,
                   help="T1: generate (default), none or auto; or a BRIGHT reasoning set, e.g. gpt4 (config gpt4_reason)")
    p.add_argument("--out", default=None, help="run folder (default runs/bright/<retriever>)")
    p.add_argument("--index-root", default=None, metavar="FOLDER",
                   help="T1: FOLDER/<task> is each task's document index (built there when missing; e.g. by "
                        "torchrun ... t1 index, as scripts/bright_multigpu.sh does); default: cached under $T1_CACHE")
    p.set_defaults(func=cmd_bright)

    p = subparsers.add_parser("report", help="compare run folders: markdown table and PNG chart")
    p.add_argument("runs", nargs="+", help="run folders (or folders of run folders)")
    p.add_argument("--out", default="report", help="folder for report.md and report.png (default ./report)")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metrics to tabulate (default: BRIGHT's, nDCG@10 for short documents and Recall@1 and "
                        "nDCG@10 for long ones; other datasets ndcg@10 recall@100)")
    p.set_defaults(func=cmd_report)
