"""BM25 over a list of texts (bm25s, Lucene variant), the one construction used everywhere:
the evaluation baseline, the sparse half of hybrid search, and an index folder's `bm25/`.

Defaults are BRIGHT's (and Anserini's): `DEFAULT_K1`, `DEFAULT_B`, English stop words, Snowball stemming.
Documents that match no query term score 0 and are not returned, as Lucene would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import T1Error

SETTINGS_FILE = "t1_bm25.json"
DEFAULT_K1, DEFAULT_B = 0.9, 0.4  # BRIGHT's (and Anserini's)


def _sorted_vocab(tokens):
    """bm25s numbers the words in set order, which changes with Python's hash seed: renumbered
    alphabetically, the same corpus gives the same bytes in every process (so that the files'
    checksums in an index manifest are reproducible)."""
    order = {word: i for i, word in enumerate(sorted(tokens.vocab))}
    new = {old: order[word] for word, old in tokens.vocab.items()}
    return tokens._replace(ids=[[new[i] for i in doc] for doc in tokens.ids], vocab=order)


class BM25Index:
    def __init__(self, k1: float = DEFAULT_K1, b: float = DEFAULT_B, stemmer: str = "english", stopwords: str = "en"):
        self.k1, self.b, self.stemmer_name, self.stopwords = k1, b, stemmer, stopwords
        self.model = None
        self.count = 0

    @property
    def settings(self) -> dict:
        return {"method": "lucene", "k1": self.k1, "b": self.b, "stemmer": self.stemmer_name,
                "stopwords": self.stopwords}

    def _stemmer(self):
        import Stemmer

        return Stemmer.Stemmer(self.stemmer_name)

    def _tokenize(self, texts: Sequence[str], return_ids: bool, show_progress: bool = False):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer(), return_ids=return_ids,
                              show_progress=show_progress and return_ids)

    def index(self, texts: Sequence[str], show_progress: bool = False) -> "BM25Index":
        import bm25s

        if logging.getLogger("bm25s").level == logging.DEBUG:  # bm25s forces DEBUG on import
            logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        tokens = _sorted_vocab(self._tokenize(texts, True, show_progress))
        if not tokens.vocab:
            raise T1Error("BM25 finds no word to index in any document (only stop words, single letters or "
                          "punctuation); index without BM25 (`--no-bm25`, Python: bm25=False)")
        self.model.index(tokens, show_progress=show_progress)
        self.count = len(texts)
        return self

    def search(self, queries: Sequence[str], k: int,
               excluded: Sequence[np.ndarray] | None = None) -> list[list[tuple[int, float]]]:
        """Top-k (document position, score) per query, best first; `excluded[q]` positions are
        removed before the cut, and documents scoring 0 are left out."""
        tokens = self._tokenize(queries, False)
        out = []
        for q, toks in enumerate(tokens):
            ids = self.model.get_tokens_ids(toks)
            if not ids:
                out.append([])
                continue
            scores = self.model.get_scores_from_ids(ids).astype(np.float32)
            if excluded is not None and len(excluded[q]):
                scores[excluded[q]] = -np.inf
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append([(int(i), float(scores[i])) for i in top if scores[i] > 0])
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> None:
        """Write the index to `folder` whole or not at all."""
        from ..atomic import atomic_folder

        with atomic_folder(folder) as tmp:
            self.model.save(str(tmp), show_progress=False)
            (tmp / SETTINGS_FILE).write_text(json.dumps({**self.settings, "count": self.count}))

    @classmethod
    def load(cls, folder: str | Path) -> "BM25Index":
        import bm25s

        settings = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        index = cls(settings["k1"], settings["b"], settings["stemmer"], settings["stopwords"])
        index.model = bm25s.BM25.load(str(folder), show_progress=False)
        index.count = settings["count"]
        return index
