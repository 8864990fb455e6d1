"""One query pipeline: queries in, hits and traces out, as `QuerySettings` say.

`t1 search`, `t1 eval` / `t1 bright`, `t1 serve` and `Searchable.search_queries` all run
`search` (or `encode`, for the embeddings alone), so the reasoning modes (none, generate, auto,
traces given by the caller), test-time scaling (several sampled traces, fused by their mean
embedding or by reciprocal rank of their lists) and the ranking (T1 alone, or fused with BM25)
are decided here and nowhere else. The collection searched (`t1.index.Searchable`: an index
folder, a vector database) only searches the embeddings it is handed; the model
(`T1Model.encode_query`) only embeds.

The run's resources travel beside the settings: the reasoning cache, query ids (recorded in the
cache), the batch size, a progress bar, and `hooks` (`t1.generation.streaming.RowHooks`: `t1
serve` streams each trace and stops the rows whose client went away).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Sequence

from .data import as_texts
from .errors import T1Error
from .index.hits import Hit, SearchRanking
from .index.search import exclusion_sets
from .query_encoding import QueryEmbeddings, RunOptions, encode_queries
from .settings import GIVEN, QuerySettings

# What a run needs beside its settings (`Searchable.search_queries` takes both as keywords).
RUN_OPTIONS = ("cache", "query_ids", "batch_size", "show_progress_bar")


@dataclass
class QueryResults:
    hits: list[list[Hit]]
    reasoning: list[str]  # the trace each query was embedded with ("" where the model did not reason)
    ended: list[bool]  # the model ended its trace with <emb_token> by itself
    ranking: SearchRanking = SearchRanking()
    traces: list[list[str]] | None = None  # every sampled trace of each query (num_traces > 1)
    # milliseconds: "encode_ms" and "search_ms"; reasoning "auto", which interleaves them: "model_ms"
    timings: dict[str, float] = field(default_factory=dict)


def choose_ranking(index, model, settings: QuerySettings) -> SearchRanking:
    """Which ranking a search uses, the one rule of every entry point.

    By default (`hybrid` None, no fusion setting) T1 fused with BM25 by the model's saved
    `fusion` method (default a weighted sum) with its saved `fusion_weight`, when it has one and
    `index` has BM25; else T1 alone (with a `note` when only BM25 is missing). `hybrid=False`:
    T1 alone. `hybrid=True`, a `fusion` method or a `fusion_weight`: fused with BM25, which must
    be there; unset settings default as `t1.index.fusion.resolve` says. `model`: a `T1Model`, or
    its `T1Config` (`t1 search` decides before the weights load), or None (no saved fusion)."""
    from .index.fusion import resolve

    if settings.hybrid is False:
        return SearchRanking()
    config = getattr(model, "config", model)
    saved = config.fusion_weight if config is not None else None
    asked = settings.fusion is not None or settings.fusion_weight is not None
    if not (settings.hybrid or asked):
        if saved is None:
            return SearchRanking()
        if not index.has_bm25:
            return SearchRanking(note=f"hybrid search is off: {index.no_bm25}; searching with T1 alone")
    elif not index.has_bm25:
        raise T1Error(f"hybrid search needs BM25: {index.no_bm25}")
    return SearchRanking(*resolve(settings.fusion, settings.fusion_weight, saved,
                                  getattr(config, "fusion", None) if config is not None else None))


def encode(model, queries: Sequence[str], settings: QuerySettings = QuerySettings(), *,
           given: Sequence[str] | None = None, **run) -> QueryEmbeddings:
    """Query embeddings as `settings` say: without reasoning, after generating
    `settings.traces` traces, or with the traces `given` (reasoning "given"). Reasoning "auto"
    needs an index: use `search`. `run`: `RunOptions`' fields (cache, query ids, batch size,
    progress, hooks)."""
    run = RunOptions(**run)
    hooks, streamed = run.hooks, settings.traces == 1 and settings.reasoning == "generate"
    if not streamed:
        run.hooks = None
    out = encode_queries(model, queries, settings, given, run)
    if hooks is not None and settings.traces > 1:  # sampled traces are not streamed: each query's first, once done
        for row, text in enumerate(out.reasoning):
            hooks.send(row, text)
    return out


def search(model, index, queries: Sequence[str], settings: QuerySettings = QuerySettings(), *, k: int = 10,
           exclude=None, given: Sequence[str] | None = None, ranking: SearchRanking | None = None,
           backend: str = "auto", **run) -> QueryResults:
    """Embed `queries` with `model` and search `index` (top `k`, `exclude` as `Index.search`
    takes it), as `settings` say; `ranking` (default: `choose_ranking`) may be decided ahead,
    as `t1 serve` does. `run`: the `RUN_OPTIONS` (cache, query ids, batch size, progress)
    and `hooks`."""
    queries, _ = as_texts(queries, "queries")  # one string is one query, not its characters
    ranking = ranking or choose_ranking(index, model, settings)  # fails before the (slow) reasoning
    start = time.perf_counter()
    if settings.reasoning == "auto":
        results = _adaptive(model, index, queries, settings, k, exclude, ranking, **run)
        results.timings["model_ms"] = _ms(start)
        return results
    encoded = encode(model, queries, settings, given=given, **run)
    encode_ms, start = _ms(start), time.perf_counter()
    fused = encoded.trace_embeddings if settings.trace_fusion == "rrf" else None
    hits = index.search_ranked(ranking, encoded.embeddings, queries, k, exclude, fused, backend)
    return QueryResults(hits, list(encoded.reasoning), list(encoded.ended), ranking, encoded.traces,
                        {"encode_ms": encode_ms, "search_ms": _ms(start)})


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _adaptive(model, index, queries, settings, k, exclude, ranking, query_ids=None, hooks=None, **run) -> QueryResults:
    """Reasoning only where it is worth its cost (reasoning "auto"). Every query is first
    embedded without reasoning (one forward pass); when its best document leads the second by at
    least `auto_margin` in cosine, the embedding is confident and its ranking is kept; otherwise
    the model reasons and the query is searched again. A hybrid `ranking` fuses each query's
    final embedding's list with BM25."""
    exclude = exclusion_sets(exclude, len(queries))
    quick = encode(model, queries, replace(settings, reasoning="none"), batch_size=run.get("batch_size", 8))
    first = index.search(quick.embeddings, k=max(k, 2), exclude=exclude)
    unsure = [i for i, h in enumerate(first) if len(h) > 1 and h[0].score - h[1].score < settings.auto_margin]
    hits, reasoning, ended = [h[:k] for h in first], [""] * len(queries), [False] * len(queries)
    embeddings = quick.embeddings.copy()
    if unsure:
        deep = encode(model, [queries[i] for i in unsure], replace(settings, reasoning="generate"),
                      query_ids=None if query_ids is None else [query_ids[i] for i in unsure],
                      hooks=None if hooks is None else hooks.subset(unsure), **run)
        embeddings[unsure] = deep.embeddings
        for j, i in enumerate(unsure):
            reasoning[i], ended[i] = deep.reasoning[j], bool(deep.ended[j])
    if ranking.hybrid:
        return QueryResults(index.search_ranked(ranking, embeddings, queries, k, exclude), reasoning, ended, ranking)
    if unsure:
        again = index.search(deep.embeddings, k=k, exclude=None if exclude is None else [exclude[i] for i in unsure])
        for j, i in enumerate(unsure):
            hits[i] = again[j]
    return QueryResults(hits, reasoning, ended, ranking)


def split_options(options: dict) -> tuple[QuerySettings, dict, list[str] | None]:
    """(settings, run options, given traces) of keyword arguments in the style of
    `Searchable.search_queries`: `QuerySettings` fields (`margin` for `auto_margin`), a list of
    traces as `reasoning`, and the `RUN_OPTIONS`."""
    options = dict(options)
    if "margin" in options:
        options["auto_margin"] = options.pop("margin")
    given = None
    if options.get("reasoning") is not None and not isinstance(options["reasoning"], str):
        given, options["reasoning"] = list(options["reasoning"]), GIVEN
    names = {f.name for f in fields(QuerySettings)}
    unknown = sorted(set(options) - names - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    settings = QuerySettings(**{n: v for n, v in options.items() if n in names and v is not None})
    return settings, {n: v for n, v in options.items() if n in RUN_OPTIONS}, given
