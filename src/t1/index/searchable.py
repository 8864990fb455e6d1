"""What every searchable collection of T1 document embeddings offers (an index folder,
`t1.index.Index`; a vector database, `t1.stores.qdrant.QdrantIndex`): its own `search` of
embeddings, and on top of it the ranked searches the query pipeline (`t1.query`) uses: fused
with BM25, fused over several traces per query."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..data import as_texts
from ..errors import T1Error
from .hits import Hit, SearchRanking


class Searchable:
    """The searches every collection offers on top of its own `search`: ranked as a
    `SearchRanking` says, fused over traces, fused with BM25 (where it has BM25), and
    `search_queries`, the query pipeline (`t1.query.search`) in one call."""

    has_bm25 = False

    def search(self, query_embeddings, k: int = 10, exclude=None, **kwargs) -> list[list[Hit]]:
        raise NotImplementedError

    @property
    def no_bm25(self) -> str:
        """Why this has no BM25 index, and how to get one."""
        return f"{self.folder} has no BM25 index: only an index folder (`t1 index --out FOLDER`) has one"

    @property
    def bm25(self):
        raise T1Error(f"hybrid search needs BM25: {self.no_bm25}")

    def ranking(self, model=None, hybrid: bool | str | None = None, fusion: str | None = None,
                fusion_weight: float | None = None) -> SearchRanking:
        """Which ranking a search with these settings uses (`t1.query.choose_ranking`)."""
        from ..query import choose_ranking
        from ..settings import QuerySettings

        return choose_ranking(self, model, QuerySettings(hybrid=hybrid, fusion=fusion, fusion_weight=fusion_weight))

    def search_ranked(self, ranking: SearchRanking, embeddings: np.ndarray, texts: Sequence[str], k: int = 10,
                      exclude=None, trace_embeddings: np.ndarray | None = None, backend: str = "auto"):
        """Search encoded queries as `ranking` says. `trace_embeddings` ([queries, traces, dim]):
        the traces' lists fused by reciprocal rank take the place of the mean `embeddings`."""
        if ranking.hybrid:
            dense = embeddings if trace_embeddings is None else trace_embeddings
            return self.search_hybrid(dense, list(texts), k, exclude, ranking.fusion, ranking.weight)
        if trace_embeddings is not None:
            return self.search_traces(trace_embeddings, k, exclude)
        return self.search(embeddings, k=k, exclude=exclude, backend=backend)

    def search_hybrid(self, query_embeddings, query_texts, k=10, exclude=None, fusion="rrf", weight=0.5,
                      depth=100) -> list[list[Hit]]:
        return self.bm25  # raises

    def search_traces(self, trace_embeddings: np.ndarray, k: int = 10, exclude=None,
                      depth: int = 100) -> list[list[Hit]]:
        """Score-level fusion of several traces per query: each trace's embedding ([queries,
        traces, dim]) is searched `depth` deep, and the lists are fused by reciprocal rank."""
        from .fusion import fuse

        per_trace = [self.search(trace_embeddings[:, t], k=max(k, depth), exclude=exclude)
                     for t in range(trace_embeddings.shape[1])]
        out = []
        for q in range(trace_embeddings.shape[0]):
            found = {h.id: h for hits in per_trace for h in hits[q]}
            fused = fuse([{h.id: h.score for h in hits[q]} for hits in per_trace], "rrf", k=k)
            out.append([Hit(i, float(s), found[i].title, found[i].snippet) for i, s in fused])
        return out

    def search_queries(self, model, queries: Sequence[str], k: int = 10, exclude=None, backend: str = "auto",
                       **options):
        """Encode `queries` with `model` (reasoning first, by default) and search: `t1.query.search`
        with `options` as its `QuerySettings` (`reasoning`, also a list of given traces;
        `max_new_tokens`, `instruction`, `num_traces`, `temperature`, `top_p`, `trace_fusion`,
        `hybrid`, `fusion`, `fusion_weight`, `margin` for reasoning "auto") and its run options
        (`cache`, `query_ids`, `batch_size`, `show_progress_bar`). A warning says when the
        default hybrid ranking is off for want of BM25. Returns (hits per query, reasoning texts)."""
        from ..query import search, split_options

        settings, run, given = split_options(options)
        queries, _ = as_texts(queries, "queries")  # one string is one query, not its characters
        results = search(model, self, queries, settings, k=k, exclude=exclude, given=given, backend=backend, **run)
        if results.ranking.note:
            warnings.warn(results.ranking.note, stacklevel=2)
        return results.hits, results.reasoning
