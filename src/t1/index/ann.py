"""Approximate nearest-neighbour search over an index folder, with faiss.

Two structures, stored beside the shards (`ann-<kind>.faiss`, written atomically) and listed in
the manifest's "ann" entry with their build and default search settings:

- **hnsw**: `faiss.IndexHNSWFlat` (inner product). A graph over float32 copies of the vectors;
  nothing to train. Search setting: `ef_search` (candidate list size; larger is slower and
  more exact).
- **ivf-pq**: `faiss.IndexIVFPQ` (inner product), trained on a random sample of the index, inside
  `faiss.IndexRefine` whose refinement index holds the vectors as stored (float16 scalar
  quantizer for a float16 index: lossless; flat for float32). Search settings: `nprobe` (inverted
  lists visited) and `refine` (PQ candidates re-scored exactly; at least 2k).

Both return exact inner products for the candidates they find (HNSW compares full vectors; the
refinement re-scores PQ candidates), so only recall is approximate. Exclusions are applied
before the top-k cut by over-fetching: each search asks faiss for k + (the largest number of
excluded rows of any query) and drops the excluded rows; the candidate pool (`ef_search`, or
`refine` PQ candidates) is at least that large, so excluded rows never push a match out. Ties
are broken by row position, as in exact search, so a shorter list is a prefix of a longer one
whenever k fits the candidate pool.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..errors import T1Error, disk_error
from .search import best_first

KINDS = ("hnsw", "ivf-pq")
DEFAULT_EF_SEARCH = 128
DEFAULT_REFINE = 256
MIN_IVF_ROWS = 1000


def _faiss():
    try:
        import faiss
    except ImportError:
        raise T1Error("approximate search needs faiss: pip install faiss-cpu") from None
    return faiss


def file_name(kind: str, generation: int = 0) -> str:
    """A structure's file; after the first generation each gets its own name, so that a reader
    of an older generation never finds another structure under the name it knew."""
    return f"ann-{kind}.faiss" if not generation else f"ann-{kind}-g{generation:06d}.faiss"


def check_search_settings(ann: str | None, ef_search=None, nprobe=None, refine=None) -> None:
    if ann is not None and ann not in ("auto", "exact", *KINDS):
        raise T1Error(f"ann must be auto, exact, {' or '.join(KINDS)}; got {ann!r}")
    for name, value in (("ef_search", ef_search), ("nprobe", nprobe), ("refine", refine)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise T1Error(f"{name} must be a positive integer, got {value!r}")


def default_nlist(n: int) -> int:
    """A power of two near sqrt(n), with at least 39 training rows per list (faiss's minimum)."""
    target = 2 ** round(math.log2(max(1.0, math.sqrt(n))))
    return int(max(1, min(target, 2 ** int(math.log2(max(1, n // 39))))))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers of about 8 dimensions: the largest divisor of dim not above dim / 8."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def build(index, kind: str, *, m: int = 32, ef_construction: int = 200, nlist: int | None = None,
          pq_m: int | None = None, nbits: int | None = None, sample: int | None = None, seed: int = 0,
          ef_search: int = DEFAULT_EF_SEARCH, nprobe: int | None = None, refine: int = DEFAULT_REFINE,
          show_progress_bar: bool | None = None, record: bool = True) -> dict:
    """Build structure `kind` over `index` (an `Index`), store it in the index folder, record it
    in the manifest, and return its manifest entry. The vectors are read in chunks; IVF-PQ is
    trained on `sample` random rows (default: 64 per list, at least 65,536, at most all).
    The structure covers every row of the index's generation, deleted ones too (searches exclude
    them); `record=False` leaves the manifest to the caller (a compaction)."""
    faiss = _faiss()
    if kind not in KINDS:
        raise T1Error(f"ANN kind must be one of {', '.join(KINDS)}, got {kind!r}")
    n, dim = index.rows, index.manifest["dim"]
    start = time.perf_counter()
    params: dict = {}
    train_rows = 0
    if kind == "hnsw":
        if m < 2 or ef_construction < 1:
            raise T1Error(f"hnsw needs m >= 2 and ef_construction >= 1, got m={m}, ef_construction={ef_construction}")
        structure = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        structure.hnsw.efConstruction = ef_construction
        params = {"m": m, "ef_construction": ef_construction}
        search = {"ef_search": ef_search}
    else:
        if n < MIN_IVF_ROWS:
            raise T1Error(f"ivf-pq needs at least {MIN_IVF_ROWS} vectors to train on, this index has {n}; "
                          "use --kind hnsw (or exact search)")
        nlist = nlist or default_nlist(n)
        pq_m = pq_m or default_pq_m(dim)
        if dim % pq_m:
            raise T1Error(f"pq_m must divide the dimension {dim}, got {pq_m}")
        sample = min(n, sample or max(64 * nlist, 65536))
        nbits = nbits or int(min(8, max(4, math.floor(math.log2(max(16, sample // 39))))))
        if nlist > sample // 39 or 2 ** nbits > sample:
            raise T1Error(f"{sample} training rows are too few for nlist {nlist} and nbits {nbits} "
                          f"(need 39 per list and 2^nbits)")
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        base.cp.seed = seed
        base.pq.cp.seed = seed
        if index.manifest.get("dtype") == "float16":
            exact = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            exact = faiss.IndexFlatIP(dim)
        structure = faiss.IndexRefine(base, exact)
        structure.train(_sample_rows(index, sample, seed)[1])
        train_rows = sample
        nprobe = nprobe or max(16, nlist // 16)
        params = {"nlist": nlist, "pq_m": pq_m, "nbits": nbits, "refine_index": "fp16" if
                  index.manifest.get("dtype") == "float16" else "flat"}
        search = {"nprobe": min(nprobe, nlist), "refine": refine}
    bar = tqdm(total=n, desc=f"Building {kind}", unit="vec", disable=show_progress_bar is False)
    for _, rows in index.chunks():
        structure.add(np.ascontiguousarray(rows, dtype=np.float32))
        bar.update(len(rows))
    bar.close()
    if structure.ntotal != n:
        raise T1Error(f"{index.folder}: read {structure.ntotal} vectors, the manifest says {n}")
    name = file_name(kind, index.generation)
    _write_index(structure, index.folder / name)
    info = {"kind": kind, "file": name, "params": params, "search": search, "count": n,
            "corpus_hash": index.manifest["corpus_hash"], "train_rows": train_rows, "seed": seed,
            "build_s": round(time.perf_counter() - start, 2), "faiss": faiss.__version__}
    if record:
        index.add_ann(kind, info)  # its size and checksum: opening and --verify check them
    return info


def _sample_rows(index, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, rows as float32) of `size` distinct random rows of the index, read chunk by
    chunk."""
    n = index.rows
    picked = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)) if size < n else np.arange(n)
    out = np.empty((len(picked), index.manifest["dim"]), dtype=np.float32)
    filled = 0
    for offset, rows in index.chunks():
        lo, hi = np.searchsorted(picked, [offset, offset + len(rows)])
        out[filled : filled + hi - lo] = rows[picked[lo:hi] - offset]
        filled += hi - lo
    return picked, out


def _write_index(structure, path: Path) -> None:
    faiss = _faiss()
    try:
        with atomic_path(path) as tmp:
            faiss.write_index(structure, str(tmp))
    except OSError as e:
        raise disk_error(e, path) from None
    except RuntimeError as e:  # faiss's own write error: a full disk, mostly
        raise T1Error(f"{path}: cannot write ({str(e).strip().splitlines()[-1][:160]}); fix it and re-run the "
                      "same command") from None


def load(index, kind: str):
    """Read structure `kind` of `index`, refusing one built over other vectors."""
    info = index.manifest.get("ann", {}).get(kind)
    if info is None or not (index.folder / info["file"]).exists():
        raise T1Error(f"{index.folder}: no {kind} structure; build it with `t1 ann build --index {index.folder} "
                      f"--kind {kind}`")
    if info["count"] > index.rows or info["corpus_hash"] != index.manifest["corpus_hash"]:
        raise T1Error(f"{index.folder}: the {kind} structure was built over other vectors; rebuild it with "
                      f"`t1 ann build --index {index.folder} --kind {kind}`")
    structure = _read_index(index, kind, info["file"])
    if structure.ntotal != info["count"]:
        raise T1Error(f"{index.folder / info['file']}: holds {structure.ntotal} vectors, the manifest says "
                      f"{info['count']}")
    return structure


def _read_index(index, kind: str, name: str):
    """The faiss structure in file `name` of the index folder, refused when it is damaged or is
    not the file recorded at build time (a copy from another index)."""
    faiss = _faiss()
    path = index.folder / name
    data = path.read_bytes()
    want = index.manifest.get("files", {}).get(name)
    if want is not None and hashlib.sha256(data).hexdigest() != want["sha256"]:
        raise T1Error(f"{path}: does not match its sha256 checksum (damaged, or from another index); rebuild it "
                      f"with `t1 ann build --index {index.folder} --kind {kind}`")
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        raise T1Error(f"{path}: not a readable faiss structure (damaged); rebuild it with `t1 ann build --index "
                      f"{index.folder} --kind {kind}`") from None


def search(structure, info: dict, queries: np.ndarray, k: int, excluded: list[np.ndarray] | None = None,
           ef_search: int | None = None, nprobe: int | None = None,
           refine: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions), [queries, k], best first, -1 in empty slots; `excluded[q]` holds
    row positions query q must not get."""
    faiss = _faiss()
    check_search_settings(None, ef_search, nprobe, refine)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(queries)
    extra = max((len(e) for e in excluded), default=0) if excluded is not None else 0
    fetch = max(1, min(k + extra, structure.ntotal))
    defaults = info.get("search", {})
    if info["kind"] == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef_search or defaults.get("ef_search", DEFAULT_EF_SEARCH), fetch)
        keep = ()
    else:
        ivf = faiss.SearchParametersIVF()
        ivf.nprobe = nprobe or defaults.get("nprobe", 1)
        params = faiss.IndexRefineSearchParameters()
        params.base_index_params = ivf
        pool = max(refine or defaults.get("refine", DEFAULT_REFINE), 2 * fetch)
        params.k_factor = (pool + 0.5) / fetch  # IndexRefine asks its base for int(fetch * k_factor) = pool
        keep = (ivf,)  # alive while faiss reads it
    scores, positions = structure.search(queries, fetch, params=params)
    del keep
    positions = positions.astype(np.int64)
    if excluded is not None:
        for q, ex in enumerate(excluded):
            if len(ex):
                positions[q, np.isin(positions[q], ex)] = -1
    if nq == 0:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    scores, positions = best_first(scores, positions, k)
    positions[~np.isfinite(scores)] = -1
    return scores, positions


def check(index, kind: str | None = None, queries: int = 1000, k: int = 10, ef_search: int | None = None,
          nprobe: int | None = None, refine: int | None = None, seed: int = 0) -> dict:
    """Recall@k of structure `kind` against exact search, and both speeds, with `queries`
    random documents of the index as queries, each excluding itself (so exclusions are
    exercised too)."""
    from .search import exact_search

    resolved = index.resolve_ann(kind or "auto")
    if resolved is None:
        raise T1Error(f"{index.folder}: no approximate structure to check; build one with `t1 ann build`")
    if queries < 1 or k < 1:
        raise T1Error(f"queries and k must be positive, got {queries} and {k}")
    positions, q = _sample_rows(index, min(queries, index.rows), seed + 1)
    excluded = [np.array([p], dtype=np.int64) for p in positions]
    structure, info = index.ann_index(resolved), index.manifest["ann"][resolved]
    start = time.perf_counter()
    _, truth = exact_search(q, index.chunks(), k, excluded)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    _, found = search(structure, info, q, k, excluded, ef_search, nprobe, refine)
    ann_s = time.perf_counter() - start
    settings = {**info.get("search", {}), **{name: v for name, v in
                                             (("ef_search", ef_search), ("nprobe", nprobe), ("refine", refine))
                                             if v is not None and name in info.get("search", {})}}
    return {"kind": resolved, "queries": len(q), "k": k, "recall": recall_at_k(found, truth),
            "exact_qps": len(q) / exact_s, "ann_qps": len(q) / ann_s, "speedup": exact_s / ann_s,
            "settings": settings, "vectors": len(index)}


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each exact top-k list (positions; -1 ignored) found in the approximate one."""
    found = total = 0
    for a, e in zip(approx, exact):
        truth = set(e[e >= 0].tolist())
        found += len(truth & set(a[a >= 0].tolist()))
        total += len(truth)
    return found / total if total else 1.0
