"""Peak resident memory of exact search over N x 576 float16 vectors, against the chunk size.

Each measurement runs in a fresh subprocess: it opens the index, makes the queries, runs a
one-query search (imports, thread pools), notes its resident memory and restarts its peak count
(/proc/self/clear_refs), runs one exact search (`Index.search`, hits included), and reports how far
the peak (VmHWM; `resource.getrusage` where /proc is missing) rose above the start. By default the index is one shard file of N rows, the worst case
for a memory map; `--mmap` also measures reading that file through `np.load(mmap_mode="r")`, as
t1 did before, whose resident pages grow with the index rather than the chunk.

    python benchmarks/search_memory.py --n 100000 300000 --chunk-rows 8192 65536 262144
    python benchmarks/search_memory.py --n 1000000 --chunk-rows 8192 65536 262144 --mmap
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Start the peak over from the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak RSS of this process: VmHWM, which belongs to this program's address space (getrusage's
    ru_maxrss also counts what the parent held before exec, on Linux)."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    from t1.index import Index
    from t1.index.search import exact_search

    index = Index.open(args.child)
    queries = np.random.default_rng(1).standard_normal((args.queries, index.manifest["dim"])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index.search(queries[:1], k=args.k, ann="exact", backend=args.backend)  # imports, faiss threads, docs offsets
    reset = reset_peak()
    before = _status_mb("VmRSS") if reset else peak_mb()
    start = time.perf_counter()
    if args.mode == "mmap":  # what t1 did before: slices of a memory map
        def chunks():
            offset = 0
            for emb_file, _ in index._shards():
                emb = np.load(emb_file, mmap_mode="r")
                for s in range(0, len(emb), args.chunk_rows):
                    yield offset + s, emb[s : s + args.chunk_rows]
                offset += len(emb)

        exact_search(queries, chunks(), args.k, backend=args.backend)
    else:
        index.chunk_rows = args.chunk_rows
        index.search(queries, k=args.k, ann="exact", backend=args.backend)
    seconds = time.perf_counter() - start
    after = peak_mb()
    print(json.dumps({"baseline_mb": round(before, 1), "peak_mb": round(after, 1), "peak_reset": reset,
                      "search_mb": round(after - before, 1), "search_s": round(seconds, 2)}))


def write_index(folder: Path, n: int, dim: int, shard_size: int) -> None:
    from t1.index import Index

    def blocks():
        for i, start in enumerate(range(0, n, 65536)):
            x = np.random.default_rng([7, i]).standard_normal((min(65536, n - start), dim)).astype(np.float32)
            yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)

    Index.from_embeddings(folder, blocks(), [f"d{i}" for i in range(n)], shard_size=shard_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--chunk-rows", type=int, nargs="+", default=[8192, 65536, 262144])
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backend", default="faiss", choices=["faiss", "numpy"])
    ap.add_argument("--shard-size", type=int, default=None, help="rows per shard file (default: N, one file)")
    ap.add_argument("--mmap", action="store_true", help="also measure the memory-mapped reading t1 used before")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="chunks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.chunk_rows = args.chunk_rows[0]
        return child(args)

    sys.path.insert(0, str(HERE))
    from common import report

    work = Path(args.work or tempfile.mkdtemp(prefix="t1-mem-"))
    rows = []
    try:
        for n in args.n:
            folder = work / f"idx-{n}"
            write_index(folder, n, args.dim, args.shard_size or n)
            index_mb = round(sum(p.stat().st_size for p in folder.glob("emb-*.npy")) / 2**20, 1)
            for mode in ["chunks"] + (["mmap"] if args.mmap else []):
                for chunk in args.chunk_rows:
                    out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--mode", mode,
                                          "--chunk-rows", str(chunk), "--queries", str(args.queries), "--k", str(args.k),
                                          "--backend", args.backend],
                                         capture_output=True, text=True, check=True, env={**os.environ})
                    row = {"vectors": n, "index_mb": index_mb, "reader": mode, "chunk_rows": chunk,
                           "chunk_mb_float16": round(chunk * args.dim * 2 / 2**20, 1),
                           **json.loads(out.stdout.strip().splitlines()[-1])}
                    rows.append(row)
                    print(row, flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report("search_memory", {"dim": args.dim, "queries": args.queries, "k": args.k, "backend": args.backend,
                             "shard_size": args.shard_size or "N (one file)", "runs": rows})


if __name__ == "__main__":
    main()
