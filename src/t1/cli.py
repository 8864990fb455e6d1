"""The `t1` command: index a corpus, search it, evaluate, train.

User mistakes (`T1Error`) print one line and exit 2; Ctrl-C exits 130 and leaves resumable
jobs resumable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .cli_args import (
    DEVICE_HELP,
    MODEL_HELP,
    Parser,
    add_auto_margin_arg,
    add_document_engine_arg,
    add_engine_arg,
    add_fusion_args,
    add_reasoner_args,
    add_sampling_args,
    add_settings_args,
    device_arg,
    model_config,
    model_from_args,
    positive_int,
    query_settings,
)
from .errors import T1Error, disk_error, is_disk_error
from .settings import REASONING_MODES, QuerySettings


def _add_model_args(p: argparse.ArgumentParser, default: str | None, query: bool = True,
                    document: bool = True) -> None:
    p.add_argument("--model", default=default, help=MODEL_HELP + (f" (default {default})" if default else ""))
    p.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    add_settings_args(p, query, document)


def cmd_index(args) -> int:
    from .data import load_corpus
    from .distributed import from_env, leave, local_device

    if args.verify:
        return _verify_index(args.verify)
    if args.update or args.delete or args.delete_id or args.compact:
        return _update_index(args)
    if not args.corpus:
        raise T1Error("--corpus is required to build an index (--out or --store)")
    if args.store and args.ann:
        raise T1Error("--ann applies to an index folder (--out); a Qdrant store (--store) has its own HNSW graph")
    documents = load_corpus(args.corpus, skip_empty=args.skip_empty)  # read (and validate) before loading the model
    if args.out:
        from .index.build import check_output

        check_output(args.out, documents, args.shard_size, args.dtype, inputs=[args.corpus, args.model])
    group = from_env()  # torchrun / accelerate launch: every rank encodes its share of the shards
    try:
        args.device = local_device(group, args.device)
        model = model_from_args(args)
        settings = dict(instruction=args.document_instruction, shard_size=args.shard_size,
                        dtype=args.dtype, batch_size=args.batch_size, group=group)
        if args.store:
            from .stores import build_store

            store = build_store(model, documents, args.store, **settings)
            store.close()
            if group.is_main:
                print(f"indexed {len(store)} documents into {args.store} (Qdrant collection {store.collection!r}, "
                      f"dim {store.manifest['dim']}, {store.manifest['dtype']})")
            return 0
        from .index import Index

        index = Index.build(model, documents, args.out, bm25=not args.no_bm25, **settings)
        if not group.is_main:
            return 0
        if args.ann and args.ann not in index.ann_kinds:
            from .index.ann import build as build_ann

            build_ann(index, args.ann)
        extra = " + BM25" if index.has_bm25 else ""
        extra += "".join(f" + {kind}" for kind in index.ann_kinds)
        print(f"indexed {len(index)} documents into {args.out} (dim {index.manifest['dim']}, "
              f"{index.manifest['dtype']}{extra})")
        return 0
    finally:
        if group.world > 1:
            leave()


def _update_index(args) -> int:
    """`t1 index --update` / `--delete` / `--delete-id` / `--compact` on an existing folder: one
    new generation each (`t1.index.update`), reported on one line."""
    from .index import Index

    if not (args.out or args.store):
        raise T1Error("--update, --delete and --compact change an existing index: give it with --out (or --store)")
    if args.store and args.compact:
        raise T1Error("--compact applies to an index folder (--out); a Qdrant store compacts itself")
    if sum(map(bool, (args.update, args.delete or args.delete_id, args.compact))) > 1:
        raise T1Error("give one of --update, --delete / --delete-id and --compact at a time")
    if args.update and not args.corpus:
        raise T1Error("--update needs --corpus: the documents to add or replace")
    if not args.update and args.corpus:
        raise T1Error("--corpus with an existing index: add --update to add or replace its documents")
    if args.store:
        from .stores import open_store

        index = open_store(args.store)
    else:
        index = Index.open(args.out)  # before the model loads: a damaged or missing index fails now
    try:
        report = _apply_update(args, index)
    finally:
        if args.store:
            index.close()
    print(f"{args.out or args.store}: {report}")
    return 0


def _apply_update(args, index):
    if args.compact:
        report = index.compact()
    elif args.update:
        from .backbones import DEFAULT_MODEL
        from .data import load_corpus

        documents = load_corpus(args.corpus, skip_empty=args.skip_empty)
        if args.model == DEFAULT_MODEL:  # not named: the index's own (its fingerprint is checked all the same)
            args.model = index.manifest["model"]["name"]
        args.document_engine = args.document_engine or index.manifest.get("engine", "hf")  # as the build embedded
        model = model_from_args(args)
        report = index.update(model, documents, batch_size=args.batch_size, instruction=args.document_instruction)
    else:
        report = index.delete([*_read_ids(args.delete), *(args.delete_id or [])])
    return report


def _read_ids(path) -> list[str]:
    """Document ids, one a line (blank lines skipped)."""
    if path is None:
        return []
    from .data import surrogate_problem

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: cannot read ids ({getattr(e, 'strerror', None) or e})") from None
    for n, line in enumerate(lines, 1):
        if surrogate_problem(line):
            raise T1Error(f"{path}:{n}: {surrogate_problem(line)}")
    return [line.strip() for line in lines if line.strip()]


def _verify_index(folder) -> int:
    from .index import Index

    report = Index.verify(folder)
    print(f"{folder}: {report}")
    return 0


def _open_searchable(args, model=None):
    """The index folder (--index) or the store (--store) of a search command."""
    if getattr(args, "store", None):
        from .stores import open_store

        return open_store(args.store, model=model)
    from .index import Index

    return Index.open(args.index, model=model)


def cmd_search(args) -> int:
    from .data import load_queries

    if args.queries_file:
        queries = list(load_queries(args.queries_file).items())
    else:
        queries = [(f"q{i}", q) for i, q in enumerate(args.query, 1)]
    if not queries:
        raise T1Error("give a query, or --queries FILE")
    for qid, q in queries:
        if not q.strip():
            raise T1Error(f"query {qid} is empty")
    index = _open_searchable(args)
    try:
        hits, reasoning, ranking = _search(args, index, queries)
    finally:
        if args.store:
            index.close()
    if args.json:
        out = [{"qid": qid, "query": q, "reasoning": r, "ranking": str(ranking), "hits": [vars(h) for h in hs]}
               for (qid, q), r, hs in zip(queries, reasoning, hits)]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    for (qid, q), r, hs in zip(queries, reasoning, hits):
        print(f"query {qid}: {q}")
        if r:
            print(f"reasoning: {r.strip()}")
        for rank, h in enumerate(hs, 1):
            title = f"  {h.title}" if h.title else ""
            print(f"{rank:>3}. {h.score:.4f}  {h.id}{title}")
            snippet = " ".join(h.snippet.split())[:160]
            if snippet:
                print(f"     {snippet}")
        print()
    return 0


def _search(args, index, queries):
    """(hits, reasoning, the `SearchRanking` used); a note on stderr when hybrid search is off."""
    from .query import choose_ranking, search

    if args.model is None:
        args.model = index.manifest["model"]["name"]
    index.use_ann(args.ann, ef_search=args.ef_search, nprobe=args.nprobe, refine=args.refine)
    settings = query_settings(args, reasoning=args.reasoning,
                              hybrid=False if args.dense_only else (True if args.hybrid else None))
    ranking = choose_ranking(index, model_config(args), settings)  # decided (or refused) before the model loads
    cache = None
    if args.reasoning in ("generate", "auto") and not args.no_reasoning_cache:
        from .backbones import cache_dir
        from .reasoning_cache import ReasoningCache

        cache = ReasoningCache(args.reasoning_cache or args.index or cache_dir())  # opened before the model loads
    model = model_from_args(args)
    index.check(model)  # opened (and its files checked) before the model loaded
    if ranking.note:
        print(f"t1: note: {ranking.note}", file=sys.stderr)
    try:
        results = search(model, index, [q for _, q in queries], settings, k=args.k, ranking=ranking, cache=cache,
                         query_ids=[qid for qid, _ in queries], show_progress_bar=len(queries) > 1)
    finally:
        if cache is not None:
            cache.close()
    return results.hits, results.reasoning, ranking


def cmd_ann(args) -> int:
    from .index import Index

    index = Index.open(args.index)
    if args.action == "build":
        from .index.ann import build

        info = build(index, args.kind or "hnsw", m=args.m, ef_construction=args.ef_construction, nlist=args.nlist,
                     pq_m=args.pq_m, nbits=args.nbits, sample=args.sample, seed=args.seed,
                     ef_search=args.ef_search or 128, nprobe=args.nprobe, refine=args.refine or 256)
        settings = ", ".join(f"{k} {v}" for k, v in {**info["params"], **info["search"]}.items())
        print(f"built {info['kind']} over {info['count']} vectors of {args.index} in {info['build_s']} s ({settings})")
        return 0
    from .index.ann import check

    result = check(index, args.kind, queries=args.queries, k=args.k, ef_search=args.ef_search, nprobe=args.nprobe,
                   refine=args.refine, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['kind']}: recall@{args.k} {result['recall']:.4f} against exact search over {result['queries']} "
              f"sampled documents (each excluding itself); {result['ann_qps']:.1f} queries/s vs exact "
              f"{result['exact_qps']:.1f} ({result['speedup']:.1f}x)")
    return 0


def cmd_traces(args) -> int:
    from pathlib import Path

    from .atomic import check_output_file
    from .reasoning_cache import FILE_NAME, ReasoningCache

    source = Path(args.cache)
    if not (source.is_file() or (source / FILE_NAME).is_file()):
        raise T1Error(f"{source}: no reasoning cache ({FILE_NAME}) there")
    database = source if source.is_file() else source / FILE_NAME
    check_output_file(args.out, inputs=[database, *(Path(f"{database}{end}") for end in ("-wal", "-shm"))])
    n = ReasoningCache(source).export(args.out, model=args.model)
    print(f"wrote {n} traces to {args.out}")
    return 0


def cmd_export(args) -> int:
    if args.gguf:
        from .gguf_export import export_gguf
        from .model import load_model

        out = export_gguf(load_model(args.model, "cpu"), args.out)
        print(f"exported {args.model} to {out} (GGUF, fp32, adapter merged) for llama.cpp")
        return 0
    from .export import export_model

    out = export_model(args.model, args.out, merged=args.merged)
    kind = "full weights" if args.merged else "as saved (adapter or full weights)"
    print(f"exported {args.model} to {out} ({kind}); load it with T1Model.from_pretrained({str(out)!r})")
    return 0


def cmd_cache(args) -> int:
    """The t1 cache: what each entry holds and weighs; `--clear-gguf` removes the GGUF files the
    llama.cpp engines write (one per model fingerprint and precision; re-made at first use)."""
    import shutil

    from .backbones import cache_dir

    root = cache_dir()
    if root.exists() and not root.is_dir():
        raise T1Error(f"{root}: the t1 cache (T1_CACHE) is a file, not a folder")
    if args.clear_gguf:
        gguf = root / "gguf"
        if not gguf.is_dir():
            print(f"no GGUF files in {root}")
            return 0
        freed = sum(f.stat().st_size for f in gguf.glob("*.gguf"))
        shutil.rmtree(gguf)
        print(f"removed {gguf} ({freed / 1e6:,.0f} MB); the llama.cpp engines write it again at first use")
        return 0
    print(f"t1 cache: {root} (set T1_CACHE to move it)")
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for entry in entries:
        files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        print(f"  {entry.name + ('/' if entry.is_dir() else ''):<32} {size / 1e6:>9,.0f} MB  {len(files)} files")
        if entry.name == "gguf":
            for f in sorted(files):
                print(f"    {f.name:<30} {f.stat().st_size / 1e6:>9,.0f} MB")
    if not entries:
        print("  (empty)")
    return 0


ANN_KINDS = ["hnsw", "ivf-pq"]


def _add_ann_search_args(p: argparse.ArgumentParser, with_auto: bool) -> None:
    if with_auto:
        p.add_argument("--ann", choices=["auto", "exact", *ANN_KINDS], default="auto",
                       help="auto (default): the index's approximate structure if it has one (HNSW first), else "
                            "exact; exact; or a structure built by `t1 ann build` (a Qdrant store: its HNSW, or exact)")
    p.add_argument("--ef-search", type=positive_int, default=None,
                   help="hnsw: candidate list size at search time (default: as built, 128); a Qdrant store: hnsw_ef")
    p.add_argument("--nprobe", type=positive_int, default=None, help="ivf-pq: inverted lists visited (default: as built)")
    p.add_argument("--refine", type=positive_int, default=None,
                   help="ivf-pq: PQ candidates re-scored exactly (default: as built, 256)")


def build_parser() -> argparse.ArgumentParser:
    from .backbones import DEFAULT_MODEL

    parser = Parser(prog="t1", description="T1: a retriever that reasons before it embeds.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="encode a corpus into an index folder (resumable)")
    _add_model_args(p, DEFAULT_MODEL, query=False)  # an index embeds no query
    p.add_argument("--corpus", help="BEIR corpus.jsonl, or JSONL/CSV/parquet with id and text (with --out or --store)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="index folder")
    where.add_argument("--store", help="a vector database instead of a folder: qdrant://HOST:PORT/COLLECTION, or a "
                                       "local Qdrant folder PATH[#COLLECTION]")
    where.add_argument("--verify", metavar="FOLDER",
                       help="check an index folder instead of building one: every shard's size, rows and sha256")
    p.add_argument("--document-instruction", default=None, help="document instruction (default: the model's)")
    add_document_engine_arg(p, "--engine")
    p.add_argument("--skip-empty", action="store_true",
                   help="leave out documents with neither title nor text (by default they are indexed, with a warning)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--shard-size", type=positive_int, default=8192)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--no-bm25", action="store_true",
                   help="no BM25 index (by default one is stored, for hybrid search; rerun without this flag to add "
                        "it to an existing index without re-encoding)")
    p.add_argument("--ann", choices=ANN_KINDS, default=None,
                   help="also build an approximate-search structure (faiss; default settings, see `t1 ann build`)")
    p.add_argument("--update", action="store_true",
                   help="add the --corpus documents to the existing index in --out: new ids added, changed texts "
                        "re-encoded, unchanged ones skipped (same model, instruction and engine as the build)")
    p.add_argument("--delete", metavar="IDS_FILE", help="delete the documents whose ids are listed (one a line)")
    p.add_argument("--delete-id", metavar="ID", action="append", help="delete this document (repeatable)")
    p.add_argument("--compact", action="store_true",
                   help="merge the index's segments, drop deleted rows, rebuild its ANN structures")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="reason about queries and search an index")
    _add_model_args(p, None, document=False)  # default: the index's own model; documents: as indexed
    add_engine_arg(p)
    add_reasoner_args(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="index folder built by `t1 index`")
    where.add_argument("--store", help="Qdrant store built by `t1 index --store`")
    p.add_argument("query", nargs="*", help="query text(s)")
    p.add_argument("--queries", dest="queries_file", default=None, help="file of queries (JSONL/CSV/TXT)")
    p.add_argument("-k", "--k", type=positive_int, default=10)
    p.add_argument("--reasoning", choices=REASONING_MODES, default=QuerySettings.reasoning,
                   help="generate (default), none, or auto: reason only when the plain embedding's top result "
                        "does not lead the second by --auto-margin")
    add_auto_margin_arg(p)
    p.add_argument("--max-new-tokens", type=positive_int, default=None)
    p.add_argument("--query-instruction", default=None, help="query instruction (default: the model's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    ranking = p.add_mutually_exclusive_group()
    ranking.add_argument("--hybrid", action="store_true",
                         help="fuse with the index's BM25, or fail without one (default: fused by a weighted sum "
                              "when the model has a saved fusion weight and the index BM25, else T1 alone)")
    ranking.add_argument("--dense-only", action="store_true", help="rank by T1 alone, without BM25")
    add_fusion_args(p, "the model's saved fusion weight for a weighted sum, else 0.5")
    add_sampling_args(p, "test-time scaling: sample N traces per query and fuse them")
    p.add_argument("--reasoning-cache", default=None,
                   help="folder or file of the reasoning cache (default: the index folder)")
    p.add_argument("--no-reasoning-cache", action="store_true", help="generate every trace anew, store nothing")
    _add_ann_search_args(p, with_auto=True)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ann", help="approximate search: build a faiss structure in an index folder, or check its "
                                   "recall against exact search")
    p.add_argument("action", choices=["build", "check"])
    p.add_argument("--index", required=True, help="index folder built by `t1 index`")
    p.add_argument("--kind", choices=ANN_KINDS, default=None,
                   help="hnsw (a graph; default for build) or ivf-pq (inverted lists of product-quantized codes, "
                        "re-scored exactly); check: the index's (HNSW first)")
    p.add_argument("--m", type=positive_int, default=32, help="hnsw: links per node (default 32)")
    p.add_argument("--ef-construction", type=positive_int, default=200, help="hnsw: build-time candidate list (default 200)")
    p.add_argument("--nlist", type=positive_int, default=None, help="ivf-pq: inverted lists (default: a power of 2 near sqrt(N))")
    p.add_argument("--pq-m", type=positive_int, default=None, help="ivf-pq: sub-quantizers (default: about dim / 8)")
    p.add_argument("--nbits", type=positive_int, default=None, help="ivf-pq: bits per sub-quantizer code (default 8)")
    p.add_argument("--sample", type=positive_int, default=None,
                   help="ivf-pq: rows to train on (default: 64 per list, at least 65,536)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (training rows; check: query rows)")
    p.add_argument("--queries", type=positive_int, default=1000, help="check: documents used as queries (default 1000)")
    p.add_argument("-k", "--k", type=positive_int, default=10, help="check: recall@k (default 10)")
    p.add_argument("--json", action="store_true", help="check: machine-readable output")
    _add_ann_search_args(p, with_auto=False)
    p.set_defaults(func=cmd_ann)

    p = sub.add_parser("traces", help="export cached reasoning traces as JSONL (id, query, reasoning)")
    p.add_argument("action", choices=["export"])
    p.add_argument("--cache", required=True, help="reasoning cache: an index folder, $T1_CACHE, or the .sqlite file")
    p.add_argument("--out", required=True, help="JSONL file to write; replay it with `t1 eval --reasoning FILE`")
    p.add_argument("--model", default=None, help="only the traces of this model name")
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("export", help="write a model as a folder that T1Model.from_pretrained loads (e.g. to "
                                      "publish on a hub)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP + f" (default {DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="folder to write (must not exist, or be empty); with --gguf, the file")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--merged", action="store_true", help="fold a LoRA adapter into plain full weights")
    kind.add_argument("--gguf", action="store_true",
                      help="one GGUF file for llama.cpp (adapter merged, fp32; backbones shipped as GGUF only)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cache", help="list the t1 cache ($T1_CACHE, default ~/.cache/t1), or clear its GGUF files")
    p.add_argument("--clear-gguf", action="store_true",
                   help="remove the llama.cpp engines' GGUF files (re-made at first use, a few seconds each)")
    p.set_defaults(func=cmd_cache)

    _register_plugins(sub)
    return parser


def _register_plugins(sub) -> None:
    """Evaluation, training and service commands live with their packages."""
    from .evaluation.commands import register as register_eval
    from .serve.commands import register as register_serve
    from .training.commands import register as register_train

    register_eval(sub)
    register_train(sub)
    register_serve(sub)


def _check_argv(argv: list[str]) -> None:
    """Arguments that are not Unicode text (bytes that are not UTF-8 reach Python as lone
    surrogates) are refused before they reach a file name, a query or a log line."""
    from .data import surrogate_problem

    for i, arg in enumerate(argv, 1):
        if isinstance(arg, str) and surrogate_problem(arg):
            raise T1Error(f"command-line argument {i} ({arg!a}) {surrogate_problem(arg)}; pass UTF-8 text")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _check_argv(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if not args.verbose:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        if hasattr(args, "reasoner"):  # the writer's settings are checked before any file is read or model loaded
            from .cli_args import reasoner_settings

            reasoner_settings(args)
        return args.func(args)
    except T1Error as e:
        print(f"t1: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a permission met outside `atomic_open`
        if not is_disk_error(e):
            raise
        print(f"t1: error: {disk_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("t1: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
