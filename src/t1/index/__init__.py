"""Storage and search of document embeddings: an index folder and what it holds.

    folder      `Index`: the index folder (open, build, search, verify)
    build       encoding a corpus into shards, resumably, under the folder's lock
    format      the files of a folder (shards, ids, snippets) and their checks
    manifest    `manifest.json`: what was built, with which model, and each file's size and checksum
    segments    the generations of a folder: which segments, tombstones and BM25 a manifest names
    update      updating a folder in place (upsert, delete, compact), one new generation each
    searchable  `Searchable`: what every collection offers (an index folder, a Qdrant store)
    search      exact top-k over row chunks, exclusions, tie-breaking
    hits        `Hit` and `SearchRanking`, what a search returns and how it ranked
    ann         approximate search structures (faiss IVF / HNSW / PQ)
    bm25        the BM25 index of the folder (bm25s)
    fusion      fusing ranked lists (weighted sum, reciprocal rank, adaptive)

Queries are embedded elsewhere (`t1.query`): nothing here loads or runs a model, except the
build, which is handed one to encode documents with.
"""

from .folder import Index
from .hits import Hit, SearchRanking
from .searchable import Searchable

__all__ = ["Hit", "Index", "SearchRanking", "Searchable"]
