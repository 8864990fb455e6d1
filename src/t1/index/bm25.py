"""BM25 over a list of texts (bm25s, Lucene variant), the one construction used everywhere:
the evaluation baseline, the sparse half of hybrid search, and an index folder's `bm25/`.

Defaults are BRIGHT's (and Anserini's): `DEFAULT_K1`, `DEFAULT_B`, English stop words, Snowball stemming.
Documents that match no query term score 0 and are not returned, as Lucene would.

The index keeps the words of every document (`TOKENS_FILE`, one JSON list per row): an index
folder that is updated in place (`t1.index.update`) re-indexes its live documents from them at
each commit, without the texts and without tokenising again, so that its scores stay those of a
fresh build of the same documents (document frequencies and average length over every row).
A fresh build and an update go through the same `index_words`, so they give the same bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import T1Error

SETTINGS_FILE = "t1_bm25.json"
TOKENS_FILE = "t1_tokens.jsonl"  # the words of each row, for re-indexing after an update
DEFAULT_K1, DEFAULT_B = 0.9, 0.4  # BRIGHT's (and Anserini's)


class BM25Index:
    def __init__(self, k1: float = DEFAULT_K1, b: float = DEFAULT_B, stemmer: str = "english", stopwords: str = "en"):
        self.k1, self.b, self.stemmer_name, self.stopwords = k1, b, stemmer, stopwords
        self.model = None
        self.count = 0
        # each row's words, kept by `save` for updates; the vocabulary is numbered alphabetically
        # (bm25s numbers it in set order, which changes with Python's hash seed), so the same corpus
        # gives the same bytes in every process and the manifest's checksums are reproducible
        self.words: list[list[str]] | None = None

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

    def tokenize(self, texts: Sequence[str], show_progress: bool = False) -> list[list[str]]:
        """Each text's words as BM25 indexes them (lower-cased, stop words out, stemmed)."""
        tokens = self._tokenize(texts, True, show_progress)
        words = {i: w for w, i in tokens.vocab.items()}
        return [[words[i] for i in doc] for doc in tokens.ids]

    def index(self, texts: Sequence[str], show_progress: bool = False) -> "BM25Index":
        return self.index_words(self.tokenize(texts, show_progress), show_progress)

    def index_words(self, words: Sequence[Sequence[str]], show_progress: bool = False) -> "BM25Index":
        """Index documents given as their words (`tokenize`): how a fresh build and an update
        both index, so that the same documents give the same scores and the same files."""
        import bm25s
        from bm25s.tokenization import Tokenized

        if logging.getLogger("bm25s").level == logging.DEBUG:  # bm25s forces DEBUG on import
            logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        vocab = {w: i for i, w in enumerate(sorted({w for doc in words for w in doc}))}
        if not vocab:
            raise T1Error("BM25 finds no word to index in any document (only stop words, single letters or "
                          "punctuation); index without BM25 (`--no-bm25`, Python: bm25=False)")
        self.model.index(Tokenized(ids=[[vocab[w] for w in doc] for doc in words], vocab=vocab),
                         show_progress=show_progress)
        self.words = [list(doc) for doc in words]
        self.count = len(words)
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
            if self.words is not None:
                with open(tmp / TOKENS_FILE, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in self.words)

    @classmethod
    def load(cls, folder: str | Path) -> "BM25Index":
        import bm25s

        settings = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        index = cls(settings["k1"], settings["b"], settings["stemmer"], settings["stopwords"])
        index.model = bm25s.BM25.load(str(folder), show_progress=False)
        index.count = settings["count"]
        return index

    @staticmethod
    def load_words(folder: str | Path) -> list[list[str]] | None:
        """The words of each row of the index saved in `folder` (None: saved before t1 kept them)."""
        path = Path(folder) / TOKENS_FILE
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
