"""Vector databases that hold T1 document embeddings instead of an index folder.

A store is named by a string: `qdrant://HOST:PORT/COLLECTION` (`qdrants://` for HTTPS) for a
Qdrant server or cluster, or a local folder `PATH` / `PATH#COLLECTION` for Qdrant's embedded
local mode (collection "t1" by default). `open_store` / `build_store` return a
`QdrantIndex`, which searches like an `Index`.
"""

from __future__ import annotations


def open_store(spec: str, model=None, instruction: str | None = None):
    from .qdrant import QdrantIndex

    return QdrantIndex.open(spec, model=model, instruction=instruction)


def build_store(model, documents, spec: str, **kwargs):
    from .qdrant import QdrantIndex

    return QdrantIndex.build(model, documents, spec, **kwargs)
