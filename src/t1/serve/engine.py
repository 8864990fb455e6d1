"""What the worker thread runs: one batched encode/generate and one batched search per batch.

`Engine.run(plan, jobs)` gets jobs that share a `Plan` (the settings that decide how queries are
embedded and searched), concatenates their queries, embeds them together and searches them
together with the largest k asked for; each job then gets its own queries' hits, cut to its k.
Exact search ranks by (score, row), so a shorter list is a prefix of a longer one and batching
does not change anybody's hits.

Reasoning (`generate`, one trace) is generated here rather than through `encode_query`, for two
things the library call does not offer: the trace of each row is streamed as it is generated
(`on_text`), and a row whose client went away stops generating at the next step. It is the same
computation as `T1Model.encode_query(reasoning="generate")` (same prompts, greedy decoding,
the model's generation engine `model.engine`, the same stop tokens and reasoning-cache keys),
which the tests check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import T1Error
from ..index import SearchRanking
from ..prompts import instruction_or_default


@dataclass(frozen=True)
class Plan:
    """The grouping key: requests with equal plans share a batch."""

    kind: str  # "search", "queries" (embed queries) or "documents" (embed documents)
    reasoning: str = "none"  # generate | none | given | auto
    max_new_tokens: int = 0
    instruction: str | None = None  # query instruction; None: the model's
    ranking: SearchRanking = SearchRanking()  # T1 alone, or fused with the index's BM25
    traces: int = 1
    trace_fusion: str = "mean"
    temperature: float = 1.0
    top_p: float = 0.95
    margin: float = 0.02  # reasoning "auto"
    depth_k: int = 0  # k, where it changes a fused ranking (k > 100); else 0


@dataclass
class Work:
    """One request's part of a batch."""

    texts: list[str]  # queries (or documents)
    given: list[str] | None = None  # reasoning "given": one trace per query
    exclude: list[set[str]] | None = None  # per query
    k: int = 10
    on_text: Callable[[str], None] | None = None  # streaming: called with each new piece of reasoning


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Engine:
    """The model and the (read-only) index, used from the worker thread only."""

    def __init__(self, model, index, reasoning_cache: str | Path | None = None, batch_size: int = 16):
        self.model = model
        self.index = index
        self.fingerprint = model.fingerprint()
        ids = index.ids  # a list (index folder), or a store's id lookup (`t1.stores.qdrant.StoreIds`)
        self.ids = frozenset(ids) if isinstance(ids, (list, tuple)) else ids
        self.batch_size = max(1, batch_size)
        self.cache_path = None if reasoning_cache is None else Path(reasoning_cache)
        self.cache = None  # opened on the worker thread (SQLite connections stay on their thread)
        self.doc_instruction = index.manifest.get("instruction")
        self.doc_max_length = index.manifest.get("max_length")
        self.ranking = index.ranking(model)  # what a search without hybrid settings uses

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

    # ---------------------------------------------------------------- batches
    def run(self, plan: Plan, jobs: list) -> list[dict]:
        """Results of `jobs` (batcher `Job`s whose payload is a `Work`), in order."""
        works: list[Work] = [j.payload for j in jobs]
        texts = [t for w in works for t in w.texts]
        owner = [i for i, w in enumerate(works) for _ in w.texts]  # row -> job
        abandoned = [jobs[i]._abandoned.is_set for i in owner]
        callbacks = [works[i].on_text for i in owner]
        if plan.kind == "documents":
            start = time.perf_counter()
            emb = self.model.encode_document(texts, instruction=self.doc_instruction, max_length=self.doc_max_length,
                                             batch_size=self.batch_size, show_progress_bar=False)
            ms = _ms(start)
            return [{"embeddings": emb[_rows(owner, i)], "timings": {"encode_ms": ms}} for i in range(len(works))]

        start = time.perf_counter()
        if plan.kind == "search" and plan.reasoning == "auto":
            exclude = self._exclusions(works)
            hits, reasoning = self.index.search_adaptive(
                self.model, texts, k=max(w.k for w in works), exclude=exclude, margin=plan.margin,
                ranking=plan.ranking, instruction=plan.instruction, max_new_tokens=plan.max_new_tokens,
                batch_size=self.batch_size, cache=self.cache)
            per_query = [{"query": q, "reasoning": r, "reasoned": bool(r)} for q, r in zip(texts, reasoning)]
            return self._split(works, owner, per_query, hits, {"encode_ms": None, "search_ms": None,
                                                               "model_ms": _ms(start)})
        given = [g for w in works for g in (w.given or [])] if plan.reasoning == "given" else None
        emb, reasoning, ended, traces, trace_emb = self._embed_queries(plan, texts, given, abandoned, callbacks)
        encode_ms = _ms(start)
        if plan.kind == "queries":
            return [{"embeddings": emb[_rows(owner, i)], "reasoning": [reasoning[r] for r in _rows(owner, i)],
                     "timings": {"encode_ms": encode_ms}} for i in range(len(works))]

        start = time.perf_counter()
        k, exclude = max(w.k for w in works), self._exclusions(works)
        fused_traces = trace_emb if plan.traces > 1 and plan.trace_fusion == "rrf" else None
        hits = self.index.search_ranked(plan.ranking, emb, texts, k, exclude, fused_traces)
        per_query = []
        for row, q in enumerate(texts):
            item = {"query": q, "reasoning": reasoning[row]}
            if plan.reasoning == "generate":
                item["ended"] = bool(ended[row])
            if traces is not None:
                item["traces"] = traces[row]
            per_query.append(item)
        return self._split(works, owner, per_query, hits, {"encode_ms": encode_ms, "search_ms": _ms(start)})

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

    # ---------------------------------------------------------------- embedding queries
    def _embed_queries(self, plan: Plan, texts, given, abandoned, callbacks):
        """(normalised embeddings, reasoning, ended, traces or None, trace embeddings or None)."""
        model = self.model
        if plan.reasoning in ("none", "given") or plan.max_new_tokens == 0:
            reasoning = given if plan.reasoning == "given" else "none"
            out = model.encode_query(texts, instruction=plan.instruction, reasoning=reasoning,
                                     max_new_tokens=plan.max_new_tokens, batch_size=self.batch_size,
                                     show_progress_bar=False)
            return out.embeddings, list(out.reasoning), [False] * len(texts), None, None
        if plan.traces > 1:
            out = model.encode_query(texts, instruction=plan.instruction, reasoning="generate",
                                     max_new_tokens=plan.max_new_tokens, batch_size=self.batch_size,
                                     num_traces=plan.traces, temperature=plan.temperature, top_p=plan.top_p,
                                     cache=self.cache, show_progress_bar=False)
            for text, cb in zip(out.reasoning, callbacks):
                if cb is not None and text:
                    cb(text)
            return out.embeddings, list(out.reasoning), list(out.ended), out.traces, out.trace_embeddings
        emb, reasoning, ended = self._generate(plan, texts, abandoned, callbacks)
        return emb, reasoning, ended, None, None

    def _generate(self, plan: Plan, texts, abandoned, callbacks):
        """Greedy generate-then-embed of one trace per query, as `encode_query` does it, with
        each row streamed to its callback and stopped once its request is abandoned."""
        from ..batching import plan_batches
        from ..generation import trace_settings
        from ..reasoning import sampling_kwargs, stop_token_ids

        model, tok = self.model, self.model.tokenizer
        instruction = instruction_or_default(plan.instruction, model.config.query_instruction)
        try:
            prompts = [model.prompts.query_prompt(q, instruction, model.config.max_query_length) for q in texts]
        except ValueError as e:  # an instruction that leaves no room for the query
            raise T1Error(str(e)) from None
        n, steps = len(texts), plan.max_new_tokens
        raw = np.zeros((n, model.dim), dtype=np.float32)
        reasoning, ended = [""] * n, [False] * n
        settings = trace_settings(model.engine, steps, sampling_kwargs(False, 1.0, 1.0, None))
        keys, found = None, {}
        if self.cache is not None:
            keys = [self.cache.key(self.fingerprint, p, settings, 0) for p in prompts]
            found = self.cache.get(keys)
            for i, key in enumerate(keys):
                if key in found:
                    reasoning[i], ended[i], raw[i] = found[key]
                    if callbacks[i] is not None and reasoning[i]:
                        callbacks[i](reasoning[i])

        stop_ids = set(stop_token_ids(model))
        todo = [i for i in range(n) if (keys is None or keys[i] not in found) and not abandoned[i]()]
        for idx in plan_batches([len(prompts[i]) for i in todo], self.batch_size):
            rows = [todo[j] for j in idx if not abandoned[todo[j]]()]
            if not rows:
                continue
            streamer = None
            if any(callbacks[r] is not None for r in rows):
                streamer = RowStreamer(tok, [callbacks[r] for r in rows], stop_ids, [abandoned[r] for r in rows])
            rollout = model.engine.rollout([prompts[r] for r in rows], steps, streamer=streamer,
                                           stop_rows=lambda rows=rows: [abandoned[r]() for r in rows])
            batch_raw = rollout.embeddings.cpu().numpy()
            stored = []
            for j, r in enumerate(rows):
                raw[r] = batch_raw[j]
                reasoning[r] = tok.decode(rollout.reasoning_ids[j], skip_special_tokens=True)
                ended[r] = rollout.emitted_emb_token[j]
                if not abandoned[r]():  # a row stopped early has a cut trace: never cache it
                    stored.append(r)
            if self.cache is not None and stored:
                self.cache.put({"key": keys[r], "model": model.name_or_path, "instruction": instruction,
                                "query_id": None, "query": texts[r], "reasoning": reasoning[r], "ended": ended[r],
                                "embedding": raw[r], "settings": settings} for r in stored)
        emb = _normalized(raw) if model.config.normalize else raw
        return emb, reasoning, ended


class RowStreamer:
    """A Hugging Face generation streamer for a batch: each row's new text goes to its callback
    (decoded from the row's whole trace so far, so multi-byte characters arrive whole). A row
    ends at its first stop token; what the batch generates after that is ignored."""

    def __init__(self, tokenizer, callbacks, stop_ids, abandoned):
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.stop_ids = stop_ids
        self.abandoned = abandoned
        self.ids = [[] for _ in callbacks]
        self.sent = [""] * len(callbacks)
        self.done = [cb is None for cb in callbacks]
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate first passes the prompts
            self.prompt_seen = True
            return
        for r, token in enumerate(value.reshape(-1).tolist()):
            if self.done[r]:
                continue
            if token in self.stop_ids or self.abandoned[r]():
                self.done[r] = True
                self._flush(r, final=True)
                continue
            self.ids[r].append(token)
            self._flush(r, final=False)

    def end(self) -> None:
        for r in range(len(self.callbacks)):
            if not self.done[r]:
                self.done[r] = True
                self._flush(r, final=True)

    def _flush(self, r: int, final: bool) -> None:
        text = self.tokenizer.decode(self.ids[r], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):  # a character cut mid-way: wait for its next byte
            return
        if text.startswith(self.sent[r]) and len(text) > len(self.sent[r]):
            self.callbacks[r](text[len(self.sent[r]):])
            self.sent[r] = text


def _rows(owner: list[int], job: int) -> list[int]:
    return [r for r, o in enumerate(owner) if o == job]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
