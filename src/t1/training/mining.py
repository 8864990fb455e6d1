"""`t1 data mine`: training records from a BEIR folder, with mined hard negatives.

For each query of the split, the corpus is ranked by BM25 (and, optionally, by a dense model;
the two rankings are interleaved). The judged-relevant documents are removed, and the
negatives are drawn at random from ranks [skip_top, depth) of what is left: close enough to
the query to be hard, while `skip_top` keeps away from the very top, where unjudged relevant
documents (false negatives) concentrate.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from ..data import BeirDataset, Document, load_beir
from ..errors import T1Error
from ..index.bm25 import BM25Index
from ..index.search import exact_search

logger = logging.getLogger(__name__)


def bm25_rankings(corpus: list[Document], queries: list[str], depth: int) -> list[list[int]]:
    """Indices into `corpus` of the top `depth` documents per query, best first: the same BM25
    as the evaluation baseline (`t1.index.bm25`), so documents matching no query term are left out."""
    index = BM25Index().index([d.full_text for d in corpus])
    return [[i for i, _ in hits] for hits in index.search(queries, min(depth, len(corpus)))]


def dense_rankings(model: str, corpus: list[Document], queries: list[str], depth: int,
                   query_instruction: str | None = None, batch_size: int = 32) -> list[list[int]]:
    """Top `depth` by cosine similarity under a dense model: a T1 model (folder or alias, queries
    in mode `none`), `all-minilm-l6-v2` (the offline package), or any sentence-transformers model."""
    from ..backbones import GGUF_ALIASES
    from ..model import CONFIG_NAME

    texts = [d.full_text for d in corpus]
    if (Path(model) / CONFIG_NAME).exists() or model.lower() in GGUF_ALIASES:
        from ..model import T1Model

        t1 = T1Model.from_pretrained(model)
        docs = t1.encode_document(texts, batch_size=batch_size)
        qs = t1.encode_query(queries, instruction=query_instruction, reasoning="none",
                             batch_size=batch_size).embeddings
    else:
        from ..evaluation.retrievers import load_sentence_transformer

        encoder, _ = load_sentence_transformer(model)
        docs = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        qs = encoder.encode(queries, batch_size=batch_size, normalize_embeddings=True)
    _, positions = exact_search(qs, [(0, docs)], min(depth, len(corpus)))
    return np.asarray(positions).tolist()


def interleave(*rankings: list[int]) -> list[int]:
    seen, merged = set(), []
    for rank in range(max(len(r) for r in rankings)):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank] not in seen:
                seen.add(ranking[rank])
                merged.append(ranking[rank])
    return merged


def mine(
    dataset: BeirDataset,
    negatives: int = 7,
    depth: int = 50,
    skip_top: int = 0,
    dense_model: str | None = None,
    query_instruction: str | None = None,
    seed: int = 0,
) -> list[dict]:
    """One record per query with at least one relevant document in the corpus:
    `{query_id, query, pos, neg, pos_ids, neg_ids[, instruction]}`; texts are title + text."""
    if negatives < 0 or depth < 1 or not 0 <= skip_top < depth:
        raise T1Error("mining needs negatives >= 0 and 0 <= skip_top < depth")
    index = {d.id: i for i, d in enumerate(dataset.corpus)}
    qids = list(dataset.queries)
    queries = [dataset.queries[q] for q in qids]
    rankings = [bm25_rankings(dataset.corpus, queries, depth)]
    if dense_model:
        rankings.append(dense_rankings(dense_model, dataset.corpus, queries, depth, query_instruction))
    records, skipped, short = [], 0, 0
    for row, qid in enumerate(qids):
        positives = [d for d, score in dataset.qrels[qid].items() if score > 0 and d in index]
        if not positives:
            skipped += 1
            continue
        ranked = interleave(*(r[row] for r in rankings))[skip_top:depth]
        excluded = set(positives)
        candidates = [i for i in ranked if dataset.corpus[i].id not in excluded]
        rng = random.Random(f"{seed}:{qid}")
        chosen = sorted(rng.sample(candidates, min(negatives, len(candidates))), key=ranked.index)
        short += len(chosen) < negatives
        record = {
            "query_id": qid, "query": dataset.queries[qid],
            "pos": [dataset.corpus[index[d]].full_text for d in positives],
            "neg": [dataset.corpus[i].full_text for i in chosen],
            "pos_ids": positives, "neg_ids": [dataset.corpus[i].id for i in chosen],
        }
        if query_instruction:
            record["instruction"] = query_instruction
        records.append(record)
    if skipped:
        logger.warning("%d queries have no judged-relevant document in the corpus: skipped", skipped)
    if short:
        logger.warning("%d queries got fewer than %d negatives (depth %d too small?)", short, negatives, depth)
    if not records:
        raise T1Error("no query has a relevant document in the corpus: nothing to train on")
    return records


def mine_beir(folder: str | Path, split: str = "train", **kwargs) -> list[dict]:
    return mine(load_beir(folder, split), **kwargs)
