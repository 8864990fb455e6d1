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

from .errors import T1Error


MODEL_HELP = ("T1 model: 't1-smollm2-135m' (the shipped trained model), a model folder, a hub id, or "
              "'smollm2-135m-instruct' (the untrained offline backbone)")


def _add_model_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--model", default=default, help=MODEL_HELP + (f" (default {default})" if default else ""))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _load_model(args):
    from .model import T1Model

    return T1Model.from_pretrained(args.model, device=args.device)


def cmd_index(args) -> int:
    from .data import load_corpus
    from .index import Index

    documents = load_corpus(args.corpus)  # read (and validate) before loading the model
    model = _load_model(args)
    index = Index.build(model, documents, args.out, instruction=args.instruction, max_length=args.max_length,
                        shard_size=args.shard_size, dtype=args.dtype, batch_size=args.batch_size, bm25=args.bm25)
    extra = " + BM25" if index.has_bm25 else ""
    print(f"indexed {len(index)} documents into {args.out} (dim {index.manifest['dim']}, {index.manifest['dtype']}{extra})")
    return 0


def cmd_search(args) -> int:
    from .data import load_queries
    from .index import Index

    if args.queries_file:
        queries = list(load_queries(args.queries_file).items())
    else:
        queries = [(f"q{i}", q) for i, q in enumerate(args.query, 1)]
    if not queries:
        raise T1Error("give a query, or --queries FILE")
    if args.traces < 1:
        raise T1Error(f"--traces must be at least 1, got {args.traces}")
    for qid, q in queries:
        if not q.strip():
            raise T1Error(f"query {qid} is empty")
    index = Index.open(args.index)
    if args.model is None:
        args.model = index.manifest["model"]["name"]
    model = _load_model(args)
    index = Index.open(args.index, model=model)
    cache = None
    if args.reasoning in ("generate", "auto") and not args.no_reasoning_cache:
        from .reasoning_cache import ReasoningCache

        cache = ReasoningCache(args.reasoning_cache or args.index)
    hits, reasoning = index.search_queries(
        model, [q for _, q in queries], k=args.k, reasoning=args.reasoning, cache=cache,
        query_ids=[qid for qid, _ in queries],
        max_new_tokens=args.max_new_tokens, instruction=args.instruction, show_progress_bar=len(queries) > 1,
        hybrid=args.fusion if args.hybrid else None, fusion_weight=args.fusion_weight,
        num_traces=args.traces, temperature=args.temperature, top_p=args.top_p, trace_fusion=args.trace_fusion,
        **({"margin": args.auto_margin} if args.reasoning == "auto" else {}),
    )
    if args.json:
        out = [{"qid": qid, "query": q, "reasoning": r, "hits": [vars(h) for h in hs]}
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


def cmd_traces(args) -> int:
    from pathlib import Path

    from .reasoning_cache import FILE_NAME, ReasoningCache

    source = Path(args.cache)
    if not (source.is_file() or (source / FILE_NAME).is_file()):
        raise T1Error(f"{source}: no reasoning cache ({FILE_NAME}) there")
    n = ReasoningCache(source).export(args.out, model=args.model)
    print(f"wrote {n} traces to {args.out}")
    return 0


def cmd_export(args) -> int:
    from .export import export_model

    out = export_model(args.model, args.out, merged=args.merged)
    kind = "full weights" if args.merged else "as saved (adapter or full weights)"
    print(f"exported {args.model} to {out} ({kind}); load it with T1Model.from_pretrained({str(out)!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backbones import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="t1", description="T1: a retriever that reasons before it embeds.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="encode a corpus into an index folder (resumable)")
    _add_model_args(p, DEFAULT_MODEL)
    p.add_argument("--corpus", required=True, help="BEIR corpus.jsonl, or JSONL/CSV/parquet with id and text")
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--instruction", default=None, help="document instruction (default: the model's)")
    p.add_argument("--max-length", type=int, default=None, help="max tokens per document")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=8192)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--bm25", action="store_true", help="also store a BM25 index for `t1 search --hybrid` (added to "
                                                       "an existing index without re-encoding)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="reason about queries and search an index")
    _add_model_args(p, None)  # default: the index's own model
    p.add_argument("--index", required=True, help="index folder built by `t1 index`")
    p.add_argument("query", nargs="*", help="query text(s)")
    p.add_argument("--queries", dest="queries_file", default=None, help="file of queries (JSONL/CSV/TXT)")
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--reasoning", choices=["generate", "none", "auto"], default="generate",
                   help="generate (default), none, or auto: reason only when the plain embedding's top result "
                        "does not lead the second by --auto-margin")
    p.add_argument("--auto-margin", type=float, default=0.02, help="with --reasoning auto (cosine; default 0.02)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--instruction", default=None, help="query instruction (default: the model's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hybrid", action="store_true", help="fuse with the index's BM25 (built by `t1 index --bm25`)")
    p.add_argument("--fusion", choices=["rrf", "weighted"], default="rrf",
                   help="hybrid: reciprocal rank fusion (default) or a weighted sum of min-max normalised scores")
    p.add_argument("--fusion-weight", type=float, default=0.5, help="hybrid: weight of the T1 list (BM25: 1 - W)")
    p.add_argument("--traces", type=int, default=1, help="test-time scaling: sample N traces per query and fuse them")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature with --traces N")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling with --traces N")
    p.add_argument("--trace-fusion", choices=["mean", "rrf"], default="mean",
                   help="with --traces N: mean of the trace embeddings, or reciprocal-rank fusion of their results")
    p.add_argument("--reasoning-cache", default=None,
                   help="folder or file of the reasoning cache (default: the index folder)")
    p.add_argument("--no-reasoning-cache", action="store_true", help="generate every trace anew, store nothing")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("traces", help="export cached reasoning traces as JSONL (id, query, reasoning)")
    p.add_argument("action", choices=["export"])
    p.add_argument("--cache", required=True, help="reasoning cache: an index folder, $T1_CACHE, or the .sqlite file")
    p.add_argument("--out", required=True, help="JSONL file to write; replay it with `t1 eval --reasoning FILE`")
    p.add_argument("--model", default=None, help="only the traces of this model name")
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("export", help="write a model as a folder that T1Model.from_pretrained loads (e.g. to "
                                      "publish on a hub)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP + f" (default {DEFAULT_MODEL})")
    p.add_argument("--out", required=True, help="folder to write (must not exist, or be empty)")
    p.add_argument("--merged", action="store_true", help="fold a LoRA adapter into plain full weights")
    p.set_defaults(func=cmd_export)

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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    try:
        return args.func(args)
    except T1Error as e:
        print(f"t1: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("t1: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
