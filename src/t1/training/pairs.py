"""`t1 data pairs`: self-supervised training records from any corpus, no judgements needed.

Three kinds of pair, standard in embedder pre-training (E5, Contriever, ICT):

    title     the document's title -> its text                  (the title is removed)
    sentence  one sentence of the text -> the rest of the text  (inverse cloze task)
    term      a dictionary headword -> its definition           (`t1.training.sources`)

A sentence is taken out of its passage, so the pair teaches what the passage is about rather
than string matching. Hard negatives are the passages BM25 ranks highest for the query (the
source document excluded). Each kind carries its own query instruction, so the model learns
that the instruction changes what counts as relevant.
"""

from __future__ import annotations

import random
import re

from ..data import Document
from ..errors import T1Error
from .mining import bm25_rankings

TITLE_INSTRUCTION = "Given a title, retrieve the passage it heads"
SENTENCE_INSTRUCTION = "Given a sentence, retrieve the passage it was taken from"
TERM_INSTRUCTION = "Given a term, retrieve the passage that defines it"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _title_pair(doc: Document, rng: random.Random):
    if len(doc.title.split()) < 3 or len(doc.text.split()) < 20:
        return None
    return doc.title, doc.text, TITLE_INSTRUCTION


def _sentence_pair(doc: Document, rng: random.Random):
    sentences = split_sentences(doc.text)
    candidates = [i for i, s in enumerate(sentences) if 6 <= len(s.split()) <= 60]
    if len(sentences) < 3 or not candidates:
        return None
    i = rng.choice(candidates)
    rest = " ".join(sentences[:i] + sentences[i + 1:])
    passage = f"{doc.title}\n{rest}" if doc.title else rest
    return sentences[i], passage, SENTENCE_INSTRUCTION


def _term_pair(doc: Document, rng: random.Random):
    if not doc.title.strip() or len(doc.text.split()) < 3:
        return None
    return doc.title, doc.text, TERM_INSTRUCTION


KINDS = {"title": _title_pair, "sentence": _sentence_pair, "term": _term_pair}


def _negative_pool(kind: str, corpus: list[Document], i: int, ranking: list[int]) -> list[str]:
    """A term's or a title's negatives are texts without their headword or title, like its
    positive, so a heading line cannot give a passage away; one with the same heading (another
    sense) is no negative."""
    if kind not in ("term", "title"):
        return [corpus[j].full_text for j in ranking if j != i]
    title = corpus[i].title.casefold()
    return [corpus[j].text for j in ranking if j != i and corpus[j].title.casefold() != title]


def make_pairs(corpus: list[Document], counts: dict[str, int], negatives: int = 3, depth: int = 30,
               seed: int = 0, domain: str | None = None) -> list[dict]:
    """Up to `counts[kind]` records of each kind, from distinct documents drawn at random;
    `{query, pos, neg, instruction, source, doc_id[, domain]}` with BM25 negatives from `corpus`."""
    unknown = sorted(set(counts) - set(KINDS))
    if unknown:
        raise T1Error(f"unknown pair kind(s) {', '.join(unknown)} (use {', '.join(KINDS)})")
    if negatives < 0 or depth <= negatives:
        raise T1Error("pairs need negatives >= 0 and depth > negatives")
    rng = random.Random(seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    rows: list[dict] = []
    used: set[int] = set()
    for kind, count in counts.items():
        made = 0
        for i in order:
            if made >= count:
                break
            if i in used:
                continue
            pair = KINDS[kind](corpus[i], rng)
            if pair is None:
                continue
            used.add(i)
            query, passage, instruction = pair
            rows.append({"query": query, "pos": [passage], "neg": [], "instruction": instruction,
                         "source": kind, "doc_id": corpus[i].id, "_index": i})
            made += 1
    if not rows:
        raise T1Error("no document of the corpus gave a pair (titles and texts too short?)")
    if negatives:
        ranked = bm25_rankings(corpus, [r["query"] for r in rows], depth)
        for row, ranking in zip(rows, ranked):
            others = _negative_pool(row["source"], corpus, row["_index"], ranking)
            row["neg"] = rng.sample(others, min(negatives, len(others)))
    for row in rows:
        del row["_index"]
        if domain:
            row["domain"] = domain
    return rows
