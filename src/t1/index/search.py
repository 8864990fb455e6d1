"""Exact maximum-inner-product top-k over embedding shards, with per-query exclusions.

Shards are scanned in row chunks so memory stays bounded whatever the corpus size; a running
top-k per query is merged chunk by chunk. Excluded documents (BRIGHT's `excluded_ids`) are removed
from the candidates *before* the top-k cut, so they never push a relevant document out. faiss
(`faiss.knn`, BLAS-backed) and numpy give the same ranking; faiss is used when installed.

Ties are broken by row position, in exact search and in approximate search (`t1.index.ann`) alike, so
a shorter top-k list is always a prefix of a longer one.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..errors import T1Error

BACKENDS = ("auto", "numpy", "faiss")


def check_k(k, size: int) -> int:
    """`k` as searched: a positive integer, capped at the `size` of the collection (a top-20M list of
    5 documents holds 5, and allocating 20M slots per query would only waste memory)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k < 1:
        raise T1Error(f"k must be at least 1, got {k}")
    return int(min(k, max(size, 1)))


def query_matrix(query_embeddings) -> np.ndarray:
    """Query embeddings as a float32 [queries, dim] array (one embedding may be 1-D)."""
    try:
        matrix = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
    except (TypeError, ValueError):
        matrix = None
    if query_embeddings is None or matrix is None or matrix.ndim != 2:
        raise TypeError("query_embeddings must be an array of numbers, [queries, dim] or [dim], got "
                        f"{type(query_embeddings).__name__}")
    return matrix


def exclusion_sets(exclude, n_queries: int) -> list[frozenset[str]] | None:
    """The ids each query must not get, from what a caller passes as `exclude`: None; one id (a
    string) or a list of ids, excluded for every query (the shape of an HTTP request's
    `exclude`); or one collection of ids per query (BRIGHT's excluded ids)."""
    if exclude is None:
        return None
    if isinstance(exclude, str):
        return [frozenset([exclude])] * n_queries
    if not isinstance(exclude, (list, tuple)):
        raise TypeError(f"exclude must be an id, a list of ids or one collection of ids per query, got "
                        f"{type(exclude).__name__}")
    if all(isinstance(e, str) for e in exclude):
        return [frozenset(exclude)] * n_queries if exclude else None
    if len(exclude) != n_queries:
        raise T1Error(f"got {len(exclude)} exclusion lists for {n_queries} queries")
    out = [frozenset(() if ids is None else ids) for ids in exclude]
    if any(isinstance(ids, str) for ids in exclude) or not all(isinstance(i, str) for ids in out for i in ids):
        raise TypeError("exclude: each query's entry must be a collection of string ids (or None)")
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faiss" if _faiss() is not None else "numpy"
    if backend == "faiss" and _faiss() is None:
        raise ValueError("backend 'faiss' needs faiss-cpu installed")
    return backend


def _chunk_topk(queries: np.ndarray, chunk: np.ndarray, k: int, excluded: Sequence[np.ndarray], backend: str):
    """Top-k (scores, row positions within chunk) for each query, excluded rows removed."""
    n = chunk.shape[0]
    extra = max((len(e) for e in excluded), default=0)
    kk = min(n, k + extra)
    if backend == "faiss":
        faiss = _faiss()
        scores, rows = faiss.knn(queries, chunk, kk, metric=faiss.METRIC_INNER_PRODUCT)
        for qi, ex in enumerate(excluded):
            if len(ex):
                scores[qi, np.isin(rows[qi], ex)] = -np.inf
    else:
        all_scores = queries @ chunk.T
        for qi, ex in enumerate(excluded):
            all_scores[qi, ex] = -np.inf
        rows = np.argpartition(-all_scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(queries), 1))
        scores = np.take_along_axis(all_scores, rows, axis=1)
    return scores, rows.astype(np.int64)


def exact_search(
    queries: np.ndarray,
    chunks: Iterable[tuple[int, np.ndarray]],
    k: int,
    excluded: Sequence[np.ndarray] | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Search `chunks` of (global offset, embeddings [rows, dim]).

    `excluded[q]` holds global row positions to drop for query q. Returns (scores, positions),
    each [n_queries, k], best first; missing slots (fewer than k candidates) have position -1.
    """
    backend = resolve_backend(backend)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(queries)
    excluded = excluded if excluded is not None else [np.empty(0, np.int64)] * nq
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    best_pos = np.full((nq, k), -1, dtype=np.int64)
    for offset, chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        local_ex = [e[(e >= offset) & (e < offset + len(chunk))] - offset for e in excluded]
        scores, rows = _chunk_topk(queries, chunk, k, local_ex, backend)
        rows = np.where(np.isfinite(scores) & (rows >= 0), rows + offset, -1)
        scores = np.where(rows >= 0, scores, -np.inf)
        best_scores, best_pos = best_first(np.concatenate([best_scores, scores], axis=1),
                                           np.concatenate([best_pos, rows], axis=1), k)
    best_pos[~np.isfinite(best_scores)] = -1
    return best_scores, best_pos


def best_first(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, position) pairs of each row, by score descending, then position
    ascending (so every backend breaks ties the same way); position -1 marks an empty slot and
    sorts last. Rows with fewer than k candidates are padded with (-inf, -1)."""
    scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        positions = np.pad(positions, ((0, 0), (0, pad)), constant_values=-1)
    order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)
