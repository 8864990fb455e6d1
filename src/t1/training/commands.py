"""Command-line entry points: `t1 train contrastive|sft|grpo|curriculum` and
`t1 data mine|reason|pairs|distill`.

Training takes a YAML config and per-field flags on top, as TRL's scripts do (`--help` lists
every field; `config_parser`), and runs the same way on one CPU and on many GPUs:

    t1 train contrastive --config configs/stage1-smollm2-cpu.yaml --max_steps 100 --lora_r 8
    torchrun --nproc_per_node 8 -m t1 train contrastive --config configs/stage1-qwen3-4b-8gpu.yaml
    t1 train grpo --config configs/stage3-smollm2-cpu.yaml [--max_steps 2 --reward_k 5 ...]
    accelerate launch --num_processes 8 -m t1 train grpo --config configs/stage3-qwen3-4b-8gpu.yaml
    t1 train curriculum --config configs/curriculum-smollm2.yaml [--eval.max_queries 20 --stage3.max_steps 5]
"""

from __future__ import annotations

import os

from ..errors import T1Error
from ..settings import DEFAULT_TOP_P

STAGES = {"contrastive": "stage 1: InfoNCE with queries in mode `none`",
          "sft": "stage 2: λ·InfoNCE(query + reasoning) + (1−λ)·NLL(reasoning + <emb_token>)"}


def register(subparsers) -> None:
    from ..cli_args import (
        DEVICE_HELP,
        add_config_command,
        add_engine_arg,
        device_arg,
        non_negative_int,
        positive_int,
        temperature,
        top_p,
    )

    train = subparsers.add_parser("train", help="train T1 (contrastive, sft, grpo, or the whole curriculum)")
    stages = train.add_subparsers(dest="stage", required=True)
    for name, help_text in STAGES.items():
        add_config_command(stages, name, help_text, _train)
    add_config_command(stages, "grpo",
                       "stage 3: GRPO on sampled reasoning traces, rewarded by retrieval (TRL's GRPOTrainer); "
                       "re-running resumes from the newest checkpoint; --plot PNG only plots the reward curve", _grpo)
    add_config_command(stages, "curriculum",
                       "stages 1 → 2 → 3, evaluated on a dev split after each, into one table (resumable); "
                       "--section.key value overrides the config, --stageN.field value a stage's", _curriculum)

    data = subparsers.add_parser("data", help="build training records")
    tools = data.add_subparsers(dest="tool", required=True)
    mine = tools.add_parser("mine", help="records with BM25 (+ dense) hard negatives from a BEIR folder")
    mine.add_argument("beir_folder")
    mine.add_argument("--split", default="train", help="qrels split (qrels/<split>.tsv), default train")
    mine.add_argument("--out", required=True, help="JSONL file to write")
    mine.add_argument("--negatives", type=non_negative_int, default=7, help="hard negatives per query (default 7)")
    mine.add_argument("--depth", type=positive_int, default=50, help="draw negatives from the top DEPTH (default 50)")
    mine.add_argument("--skip-top", type=non_negative_int, default=0,
                      help="never take the top SKIP_TOP (false negatives)")
    mine.add_argument("--dense-model", help="also rank with this model: a T1 model, all-minilm-l6-v2, or a "
                                            "sentence-transformers model")
    mine.add_argument("--query-instruction", help="query instruction stored in each record")
    mine.add_argument("--seed", type=int, default=0)
    mine.set_defaults(func=_mine)

    reason = tools.add_parser("reason", help="add reasoning traces (teacher file, or best-of-N self-generation)")
    reason.add_argument("input", help="training records (JSONL)")
    reason.add_argument("--out", required=True, help="JSONL file to write (resumed if a run was interrupted)")
    source = reason.add_mutually_exclusive_group(required=True)
    source.add_argument("--teacher", help="JSONL with `reasoning` and `query_id`/`id` or `query`")
    source.add_argument("--model", help="T1 model that writes its own traces (e.g. the stage-1 output)")
    reason.add_argument("--samples", type=positive_int, default=4, help="traces sampled per query (default 4)")
    reason.add_argument("--temperature", type=temperature, default=0.8)
    reason.add_argument("--top-p", type=top_p, default=DEFAULT_TOP_P)
    reason.add_argument("--max-new-tokens", type=positive_int, default=256)
    reason.add_argument("--max-rank", type=positive_int, default=1,
                        help="keep a trace only if the best positive ranks at most this high among the "
                             "record's documents (default 1: above every negative)")
    reason.add_argument("--batch-size", type=positive_int, default=8, help="queries per generation batch")
    reason.add_argument("--seed", type=int, default=0)
    reason.add_argument("--device", type=device_arg, help=DEVICE_HELP)
    add_engine_arg(reason)
    reason.add_argument("--restart", action="store_true", help="start over instead of resuming")
    reason.add_argument("--whole-sentences", action="store_true",
                        help="cut each trace back to its last complete sentence, so stage 2 teaches the model to end "
                             "its reasoning with <emb_token> itself")
    reason.set_defaults(func=_reason)

    pairs = tools.add_parser("pairs", help="self-supervised records from a corpus or installed Debian packages: "
                                           "title -> text, sentence -> passage, term -> definition")
    pairs.add_argument("corpus", nargs="?", help="corpus file (BEIR corpus.jsonl, JSONL/CSV/parquet) or BEIR folder")
    from .sources import SOURCES

    pairs.add_argument("--source", action="append", default=[], metavar="NAME",
                       help="instead of CORPUS, text from an installed Debian package (repeatable): "
                            + ", ".join(f"{name} ({s.package})" for name, s in SOURCES.items()))
    pairs.add_argument("--out", required=True, help="JSONL file to write")
    pairs.add_argument("--title", type=non_negative_int, default=0,
                       help="title -> text pairs, per corpus or source (default 0)")
    pairs.add_argument("--sentence", type=non_negative_int, default=0,
                       help="sentence -> rest of the passage pairs, per corpus or source (default 0)")
    pairs.add_argument("--term", type=non_negative_int, default=0,
                       help="term -> definition pairs, per corpus or source (default 0). A source makes only "
                            "the kinds that suit it: " + "; ".join(f"{name} {' and '.join(s.kinds)}"
                                                                   for name, s in SOURCES.items()))
    pairs.add_argument("--max-documents", type=positive_int,
                       help="use at most N documents of the corpus or of each --source, spread over all of it")
    pairs.add_argument("--negatives", type=non_negative_int, default=3,
                       help="BM25 hard negatives per pair, from the same corpus or source (default 3)")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.set_defaults(func=_pairs)

    distill = tools.add_parser("distill", help="add a teacher embedder's scores of each record's passages, for "
                                               "distillation (`distill_weight` in stages 1-2)")
    distill.add_argument("input", help="training records (JSONL)")
    distill.add_argument("--out", required=True, help="JSONL file to write (the records with pos_scores, neg_scores)")
    distill.add_argument("--teacher", default="all-minilm-l6-v2",
                         help="a sentence-transformers model (default all-minilm-l6-v2, the offline package)")
    distill.add_argument("--batch-size", type=positive_int, default=64)
    distill.add_argument("--device", type=device_arg, help=DEVICE_HELP)
    distill.set_defaults(func=_distill)


def _train(args) -> int:
    from ..distributed import leave
    from .config_parser import parse_config
    from .contrastive_config import T1TrainingArguments
    from .contrastive_trainer import train
    from .model_config import ModelArguments

    model_args, training_args = parse_config((ModelArguments, T1TrainingArguments), args.argv,
                                             prog=f"t1 train {args.stage}")
    try:
        folder = train(model_args, training_args, reasoning=args.stage == "sft")
    finally:
        leave()  # under torchrun: join gloo's threads now; left to interpreter exit, one aborted a rank (SIGABRT)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved the trained model to {folder}")
    return 0


def take_option(argv: list[str], option: str) -> str | None:
    """Remove `option VALUE` from `argv`; return VALUE (None when absent)."""
    if option not in argv:
        return None
    i = argv.index(option)
    if i + 1 >= len(argv):
        raise T1Error(f"{option} needs a value")
    value = argv[i + 1]
    del argv[i: i + 2]
    return value


def _grpo(args) -> int:
    from .config_parser import parse_config
    from .grpo_config import T1GRPOConfig
    from .grpo_trainer import train_grpo
    from .model_config import ModelArguments
    from .reward_curve import plot_rewards

    argv = list(args.argv)
    plot = take_option(argv, "--plot")
    model_args, config = parse_config((ModelArguments, T1GRPOConfig), argv, prog="t1 train grpo")
    if plot:
        print(f"wrote {plot_rewards(config.output_dir, plot)}")
        return 0
    from ..distributed import leave

    try:
        final, trainer = train_grpo(model_args, config)
    finally:
        leave()  # as `_train`
    if trainer.state.global_step < trainer.state.max_steps:
        print(f"stopped at step {trainer.state.global_step}; re-run the same command to resume")
        return 1
    print(f"saved the trained model to {final}")
    return 0


def _curriculum(args) -> int:
    from . import curriculum
    from .config_parser import describe
    from .curriculum import load_curriculum_config, run_curriculum

    argv = list(args.argv)
    if "--help" in argv or "-h" in argv:
        print("usage: t1 train curriculum --config FILE [--section.key VALUE ...] [--stageN.field VALUE ...]\n")
        print(curriculum.__doc__)
        print("settings:")
        print("\n".join(describe(curriculum.CurriculumConfig)))
        return 0
    config_path = take_option(argv, "--config")
    table = run_curriculum(load_curriculum_config(config_path, argv))
    print(table)
    return 0


def _mine(args) -> int:
    from ..atomic import check_output_file, write_jsonl
    from .mining import mine_beir

    check_output_file(args.out, inputs=[args.beir_folder, args.dense_model])
    records = mine_beir(args.beir_folder, args.split, negatives=args.negatives, depth=args.depth,
                        skip_top=args.skip_top, dense_model=args.dense_model, query_instruction=args.query_instruction,
                        seed=args.seed)
    write_jsonl(args.out, records)
    print(f"wrote {len(records)} records to {args.out}")
    return 0


def _distill(args) -> int:
    from ..atomic import check_output_file
    from .distill import score_file

    check_output_file(args.out, inputs=[args.input])
    n = score_file(args.input, args.out, args.teacher, args.batch_size, args.device)
    print(f"wrote {n} records with {args.teacher} scores to {args.out}")
    return 0


def _pairs(args) -> int:
    from ..atomic import check_output_file, write_jsonl
    from .pairs import make_pairs

    asked = {kind: n for kind, n in (("title", args.title), ("sentence", args.sentence), ("term", args.term)) if n}
    if not asked:
        raise T1Error("ask for some pairs: --term N, --title N and/or --sentence N (N >= 1)")
    if bool(args.corpus) == bool(args.source):
        raise T1Error("give either a CORPUS or --source NAME")
    check_output_file(args.out, inputs=[args.corpus])
    rows = []
    for domain, counts, read in _pair_plan(args, asked):
        corpus = read()
        try:
            made = make_pairs(corpus, counts, negatives=args.negatives, seed=args.seed, domain=domain)
        except T1Error as e:
            raise T1Error(f"{domain}: {e}") from None
        made_by_kind = ", ".join(f"{sum(r['source'] == k for r in made)} {k}" for k in counts)
        print(f"{domain}: {len(corpus)} documents, {made_by_kind} pairs")
        rows += made
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} records to {args.out}")
    return 0


def _pair_plan(args, asked: dict[str, int]) -> list:
    """(domain, pair counts, reader) for the CORPUS or each --source, all checked before any
    is read; a source makes only the kinds that suit it, and one source is in memory at a time."""
    from pathlib import Path

    from .sources import SOURCES, check_source, read_source, spread

    if args.corpus:
        from ..data import load_corpus

        path = Path(args.corpus)
        file = path / "corpus.jsonl" if path.is_dir() else path
        return [(path.stem, asked, lambda: spread(load_corpus(file), args.max_documents))]
    plan = []
    for name in dict.fromkeys(args.source):
        kinds = SOURCES[check_source(name)].kinds
        counts = {kind: n for kind, n in asked.items() if kind in kinds}
        if not counts:
            raise T1Error(f"{name} gives {' and '.join(kinds)} pairs, not {' or '.join(asked)}")
        plan.append((name, counts, lambda name=name: read_source(name, limit=args.max_documents)))
    return plan


def _reason(args) -> int:
    from ..atomic import check_output_file
    from ..cli_args import model_from_args
    from .reasoning_data import SamplingSettings, merge_teacher, self_generate
    from .records import read_records, write_records

    check_output_file(args.out, inputs=[args.input, args.teacher, getattr(args, "model", None)])
    records = read_records(args.input)
    if args.teacher:
        merged, missing = merge_teacher(records, args.teacher)
        write_records(args.out, merged)
        note = f" ({missing} records without a teacher trace dropped)" if missing else ""
        print(f"wrote {len(merged)} records to {args.out}{note}")
        return 0
    settings = SamplingSettings(samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, max_rank=args.max_rank,
                                batch_size=args.batch_size, seed=args.seed, whole_sentences=args.whole_sentences)
    model = model_from_args(args)
    summary = self_generate(model, records, args.out, settings, restart=args.restart)
    print(f"kept {summary['accepted']} of {summary['records']} records (best positive ranked <= "
          f"{settings.max_rank}) in {args.out}")
    return 0
