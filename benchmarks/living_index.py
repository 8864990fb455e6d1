"""A living index (#36): what adding, replacing and deleting documents in place costs against a
rebuild, search latency while updates stream in, and whether the ranking equals a fresh build.

    nice -n 10 python3 benchmarks/living_index.py [--model tiny] [--queries 100]
        # -> benchmarks/results/living_index-cpu.json

On SciFact's corpus (5,183 abstracts; `../shared/data/scifact`, else the example corpus
replicated), with the tests' tiny random model by default (`--model tiny`: encoding is then
nearly free, so the figures are t1's own overhead — lock, diff by content hash, segment files,
BM25 re-indexing, manifest switch) or a real one (`--model t1-smollm2-135m`: about 2 documents
a second on 2 CPU cores, so use `--base 300 --adds 1,10` there). The base index holds all but
the last 1,101 documents; the update adds 1, then 100, then 1,000 of them (each a new
generation); a rebuild is `Index.build` of the resulting corpus. The BM25 figures compare the
two exact routes (`t1.index.update`'s docstring): re-indexing kept words (chosen) against
tokenising every text again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "results" / "living_index-cpu.json"


def load(args):
    from common import SCIFACT, machine

    from t1 import load_corpus
    from t1.data import load_queries

    if (SCIFACT / "corpus.jsonl").is_file():
        docs, queries, source = load_corpus(SCIFACT / "corpus.jsonl"), list(load_queries(SCIFACT / "queries.jsonl")
                                                                             .values()), "scifact"
    else:
        from t1 import Document

        base = load_corpus(ROOT / "examples" / "corpus.jsonl")
        docs = [Document(f"{d.id}-{i}", d.text, d.title) for i in range(175) for d in base]
        queries, source = list(load_queries(ROOT / "examples" / "queries.jsonl").values()) * 20, "examples x175"
    return docs, queries[: args.queries], source, machine()


def model_of(name: str, engine: str):
    from t1 import T1Model

    if name == "tiny":
        from tiny_model import build_tiny_model

        name = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    return T1Model.from_pretrained(name, device="cpu", document_engine=engine)


def hits(index, model, queries, q):
    dense = index.search(q, k=10)
    hybrid = index.search_hybrid(q, queries, k=10, fusion="weighted", weight=0.5)
    return [[(h.id, h.score) for h in row] for row in dense], [[(h.id, h.score) for h in row] for row in hybrid]


def compare(a, b) -> dict:
    """Same ids in the same order, and the largest score difference, over every query's top 10."""
    same = all([i for i, _ in x] == [i for i, _ in y] for x, y in zip(a, b))
    diff = max((abs(s - t) for x, y in zip(a, b) for (_, s), (_, t) in zip(x, y)), default=0.0)
    return {"same_ids_and_order": same, "max_score_diff": float(f"{diff:.3g}")}


def latency_while_updating(index, model, q, pool, stop_after: float) -> dict:
    """Query latency (one query at a time, reopening per query as `t1 serve` does) idle, then
    while another thread commits updates of 10 documents back to back."""
    def run(seconds):
        out, end = [], time.perf_counter() + seconds
        reader = index
        while time.perf_counter() < end:
            start = time.perf_counter()
            reader = reader.reopen()
            reader.search(q[len(out) % len(q)][None], k=10)
            out.append(time.perf_counter() - start)
        return out, reader.generation

    idle, _ = run(stop_after)
    done, commits = threading.Event(), []

    def write():
        from t1.index import Index

        i = 0
        while not done.is_set() and i + 10 <= len(pool):
            commits.append(Index.open(index.folder).update(model, pool[i : i + 10]).seconds)
            i += 10

    writer = threading.Thread(target=write)
    writer.start()
    busy, generation = run(stop_after)
    done.set()
    writer.join()

    def stats(xs):
        return {"queries": len(xs), "median_ms": round(1000 * statistics.median(xs), 2),
                "p95_ms": round(1000 * float(np.percentile(xs, 95)), 2)}

    return {"idle": stats(idle), "during_updates": stats(busy), "commits": len(commits),
            "commit_median_s": round(statistics.median(commits), 3) if commits else None,
            "generations_seen": generation, "failures": 0}


def bm25_routes(docs) -> dict:
    """The two exact ways to keep BM25 right at a commit, on the whole corpus."""
    from t1.index.bm25 import BM25Index

    texts = [d.full_text for d in docs]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        words = BM25Index().tokenize(texts)
        tokenize_s = time.perf_counter() - start
        start = time.perf_counter()
        index = BM25Index().index_words(words)
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        index.save(Path(tmp) / "bm25")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        BM25Index.load_words(Path(tmp) / "bm25")
        load_s = time.perf_counter() - start
    return {"documents": len(docs), "reindex_kept_words_s": round(load_s + index_s + save_s, 3),
            "of_which": {"read_words_s": round(load_s, 3), "bm25s_index_s": round(index_s, 3),
                         "save_s": round(save_s, 3)},
            "tokenize_again_s": round(tokenize_s, 3),
            "tokenize_again_total_s": round(tokenize_s + index_s + save_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the tests' random model) or a T1 model")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--base", type=int, default=None, help="documents in the base index (default: all but 1,101)")
    parser.add_argument("--adds", default="1,100,1000", help="documents added by each update, in turn")
    parser.add_argument("--latency-s", type=float, default=10.0, help="seconds of queries, idle and while updating")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                        help="float32: a document's stored embedding then hardly depends on the batch it was encoded "
                             "in, so the ranking comparison tests the index, not float16 rounding")
    parser.add_argument("--engine", default="hf", choices=["hf", "bf16"],
                        help="document engine; hf (the reference, default here): a document's embedding does not "
                             "depend on its batch, so the ranking comparison tests the index; bf16 (the default on "
                             "CPUs with native bf16) varies with the batch by ~5e-4, rebuild or update alike")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    import torch

    from t1.index import Index

    docs, queries, source, where = load(args)
    adds = [int(n) for n in args.adds.split(",")]
    n_base = args.base or len(docs) - sum(adds)
    base, pool = docs[:n_base], docs[n_base : n_base + sum(adds)]
    model = model_of(args.model, args.engine)
    q = model.encode_query(queries, reasoning="none").embeddings
    result = {"corpus": source, "model": args.model, "threads": torch.get_num_threads(), "machine": where,
              "note": "2 CPU cores shared with other jobs: timings are indicative", "base_documents": len(base), "dtype": args.dtype, "engine": args.engine}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = Index.build(model, base, Path(tmp) / "idx", show_progress_bar=False, dtype=args.dtype)
        result["build_base_s"] = round(time.perf_counter() - start, 2)
        updates, taken = [], 0
        for n in adds:
            batch = pool[taken : taken + n]
            taken += n
            start = time.perf_counter()  # encoding, timed apart: it is the model's cost, not the index's
            emb = model.encode_document([d.full_text for d in batch], show_progress_bar=False)
            encode_s = time.perf_counter() - start
            report = Index.open(index.folder).update(model, batch, encode=lambda texts, emb=emb: emb)
            updates.append({"documents": n, "encode_s": round(encode_s, 3), "commit_s": report.seconds,
                            "total_s": round(encode_s + report.seconds, 3), "generation": report.generation})
            print(f"add {n}: {updates[-1]}", file=sys.stderr)
        result["updates"] = updates
        resulting = docs[: n_base + taken]
        start = time.perf_counter()
        fresh = Index.build(model, resulting, Path(tmp) / "fresh", show_progress_bar=False, dtype=args.dtype)
        result["rebuild_s"] = round(time.perf_counter() - start, 2)
        result["rebuild_documents"] = len(resulting)
        index = index.reopen()
        d_u, h_u = hits(index, model, queries, q)
        d_f, h_f = hits(fresh, model, queries, q)
        result["after_updates_vs_fresh"] = {"dense": compare(d_u, d_f), "hybrid": compare(h_u, h_f)}
        start = time.perf_counter()
        report = index.delete([d.id for d in resulting[:100]])
        result["delete_100_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        index.reopen().compact()
        result["compact_s"] = round(time.perf_counter() - start, 2)
        index = index.reopen()
        fresh = Index.build(model, resulting[100:], Path(tmp) / "fresh2", show_progress_bar=False, dtype=args.dtype)
        d_c, h_c = hits(index, model, queries, q)
        d_f, h_f = hits(fresh, model, queries, q)
        result["after_delete_and_compact_vs_fresh"] = {"dense": compare(d_c, d_f), "hybrid": compare(h_c, h_f)}
        print(f"ranking: {result['after_updates_vs_fresh']} {result['after_delete_and_compact_vs_fresh']}",
              file=sys.stderr)
        # the 100 deleted documents come back, 10 per commit, while queries run
        result["search_latency"] = latency_while_updating(index, model, q, resulting[:100], args.latency_s)
        print(f"latency: {result['search_latency']}", file=sys.stderr)
    result["bm25_exact_routes"] = bm25_routes(docs)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
