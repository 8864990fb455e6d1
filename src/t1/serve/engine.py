"""What the worker thread runs: one batched encode/generate and one batched search per batch.

`Engine.run(plan, jobs)` gets jobs that share a `Plan` (the settings that decide how queries are
embedded and searched), concatenates their queries, embeds them together and searches them
together with the largest k asked for; each job then gets its own queries' hits, cut to its k.
Exact search ranks by (score, row), so a shorter list is a prefix of a longer one and batching
does not change anybody's hits.

Queries go through the one query pipeline (`t1.query`), as `t1 search` and `t1 eval` do; what
serving adds are its hooks (`t1.generation.streaming.RowHooks`): the trace of each row is
streamed as it is generated (`on_text`), and a row whose client went away stops generating at
the next step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..generation.streaming import RowHooks
from ..index.searchable import SearchRanking
from ..prompts import instruction_or_default
from ..query import encode, search
from ..settings import QuerySettings


@dataclass(frozen=True)
class Plan:
    """The grouping key: requests with equal plans share a batch."""

    kind: str  # "search", "queries" (embed queries) or "documents" (embed documents)
    query: QuerySettings = QuerySettings(reasoning="none")  # reasoning "given": traces in each `Work`
    ranking: SearchRanking = SearchRanking()  # T1 alone, or fused with the index's BM25
    depth_k: int = 0  # k, where it changes a fused ranking (k > 100); else 0
    written: bool = False  # reasoning "given" holds traces another writer wrote for "generate" (`Engine.write`)


@dataclass
class Work:
    """One request's part of a batch."""

    texts: list[str]  # queries (or documents)
    given: list[str] | None = None  # reasoning "given": one trace per query
    exclude: list[set[str]] | None = None  # per query
    k: int = 10
    on_text: Callable[[str], None] | None = None  # streaming: called with each new piece of reasoning
    count_tokens: bool = False  # also return each text's token count (the embedding APIs' usage)


class Engine:
    """The model and the index, used from the worker thread only. Each batch searches the
    newest generation of an index folder (`refresh`: one `stat` of its manifest), so that what
    `POST /documents` or `t1 index --update` committed is served without a restart."""

    def __init__(self, model, index, reasoning_cache: str | Path | None = None, batch_size: int = 16):
        self.model = model
        self.index = index
        self.fingerprint = model.fingerprint()
        self._ids: tuple = (None, None)  # (index object, its ids as a set)
        self.batch_size = max(1, batch_size)
        self.cache_path = None if reasoning_cache is None else Path(reasoning_cache)
        self.cache = None  # opened on the worker thread (SQLite connections stay on their thread)
        self.doc_instruction = index.manifest.get("instruction")
        self.doc_max_length = index.manifest.get("max_length")
        self.ranking = index.ranking(model)  # what a search without hybrid settings uses

    @property
    def ids(self):
        """The served documents' ids: a set (index folder), or a store's id lookup
        (`t1.stores.qdrant.StoreIds`)."""
        index = self.index
        if self._ids[0] is not index:
            ids = index.ids
            self._ids = (index, frozenset(ids) if isinstance(ids, (list, tuple)) else ids)
        return self._ids[1]

    def newest(self):
        """The newest generation of the index (this one when nothing was committed since; a
        store, which has no generations, as it is). Reads only: safe from any thread."""
        reopen = getattr(self.index, "reopen", None)
        return self.index if reopen is None else reopen()

    def refresh(self):
        """Serve the newest generation from now on (on the worker thread)."""
        self.index = self.newest()
        return self.index

    def encode_documents(self, texts: list[str]):
        """Documents embedded as the index embeds them (for an update; on the worker thread)."""
        return self.model.encode_document(texts, instruction=self.doc_instruction, max_length=self.doc_max_length,
                                          batch_size=self.batch_size, show_progress_bar=False)

    def open_cache(self) -> None:
        if self.cache_path is not None and self.cache is None:
            from ..reasoning_cache import ReasoningCache

            self.cache = ReasoningCache(self.cache_path)

    def warm_up(self) -> None:
        """Load everything a first request would (documents, BM25) before serving."""
        self.index.ids
        if self.index.has_bm25:
            self.index.bm25
        emb = self.model.encode_query(["warm up"], reasoning="none").embeddings
        self.index.search(emb, k=1)
        self.model.encode_query(["warm up"], reasoning="generate", max_new_tokens=1)

    # ---------------------------------------------------------------- another writer's traces
    def writes_elsewhere(self, plan: Plan) -> bool:
        """Whether `plan`'s traces come from the model's reasoner (one per query), to be asked
        before the request queues, so that no request waits behind another's trace."""
        return (self.model.reasoner is not None and plan.kind in ("search", "queries")
                and plan.query.reasoning == "generate" and plan.query.traces == 1)

    def write(self, plan: Plan, work: Work) -> tuple[Plan, Work]:
        """The plan and work of a request whose traces the reasoner has written (on the calling
        thread, with a connection of its own to the reasoning cache): reasoning "given"."""
        from dataclasses import replace

        cache = None
        if self.cache_path is not None:
            from ..reasoning_cache import ReasoningCache

            cache = ReasoningCache(self.cache_path)
        try:
            instruction = instruction_or_default(plan.query.instruction, self.model.config.query_instruction)
            tokens = plan.query.max_new_tokens or self.model.config.max_new_tokens
            traces = self.model.reasoner.write(work.texts, instruction, max_tokens=tokens, cache=cache,
                                               show_progress_bar=False)
        finally:
            if cache is not None:
                cache.close()
        given = replace(plan, query=replace(plan.query, reasoning="given"), written=True)
        return given, replace(work, given=[t.text for t in traces])

    # ---------------------------------------------------------------- batches
    def run(self, plan: Plan, jobs: list) -> list[dict]:
        """Results of `jobs` (batcher `Job`s whose payload is a `Work`), in order."""
        works: list[Work] = [j.payload for j in jobs]
        index = self.refresh() if plan.kind == "search" else self.index  # one generation for the batch
        texts = [t for w in works for t in w.texts]
        owner = [i for i, w in enumerate(works) for _ in w.texts]  # row -> job
        start = time.perf_counter()
        if plan.kind == "documents":
            emb = self.model.encode_document(texts, instruction=self.doc_instruction, max_length=self.doc_max_length,
                                             batch_size=self.batch_size, show_progress_bar=False)
            return self._counted(works, [{"embeddings": emb[_rows(owner, i)], "timings": {"encode_ms": _ms(start)}}
                                         for i in range(len(works))])
        hooks = RowHooks([works[i].on_text for i in owner], [jobs[i]._abandoned.is_set for i in owner])
        given = [g for w in works for g in (w.given or [])] if plan.query.reasoning == "given" else None
        run = dict(given=given, cache=self.cache, batch_size=self.batch_size, show_progress_bar=False, hooks=hooks)
        if plan.kind == "queries":
            out = encode(self.model, texts, plan.query, **run)
            per_job = (_rows(owner, i) for i in range(len(works)))
            return self._counted(works, [{"embeddings": out.embeddings[rows],
                                          "reasoning": [out.reasoning[r] for r in rows],
                                          "timings": {"encode_ms": _ms(start)}} for rows in per_job])
        results = search(self.model, index, texts, plan.query, k=max(w.k for w in works),
                         exclude=self._exclusions(works), ranking=plan.ranking, **run)
        per_query = []
        for row, q in enumerate(texts):
            item = {"query": q, "reasoning": results.reasoning[row]}
            if plan.query.reasoning == "auto":
                item["reasoned"] = bool(results.reasoning[row])
            if plan.query.reasoning == "generate":
                item["ended"] = bool(results.ended[row])
            if results.traces is not None:
                item["traces"] = results.traces[row]
            per_query.append(item)
        timings = {"encode_ms": None, "search_ms": None, **results.timings}
        return self._split(works, owner, per_query, results.hits, timings)

    def _counted(self, works: list[Work], results: list[dict]) -> list[dict]:
        """`results` with the token count of each text (the texts as given, without the prompt),
        where a job asks for them: counted here because the tokenizer is not safe to share
        between threads."""
        for work, result in zip(works, results):
            if work.count_tokens:
                ids = self.model.tokenizer(work.texts, add_special_tokens=False)["input_ids"]
                result["tokens"] = [len(i) for i in ids]
        return results

    @staticmethod
    def _exclusions(works: list[Work]) -> list[set[str]] | None:
        if not any(w.exclude for w in works):
            return None
        return [ex for w in works for ex in (w.exclude or [set() for _ in w.texts])]

    @staticmethod
    def _split(works, owner, per_query, hits, timings) -> list[dict]:
        out = []
        for i, w in enumerate(works):
            rows = _rows(owner, i)
            results = [{**per_query[r], "hits": [vars(h) for h in hits[r][: w.k]]} for r in rows]
            out.append({"results": results, "timings": dict(timings)})
        return out


def _rows(owner: list[int], job: int) -> list[int]:
    return [r for r, o in enumerate(owner) if o == job]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
