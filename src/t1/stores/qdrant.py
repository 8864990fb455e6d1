"""T1 document embeddings in Qdrant: `t1 index --store`, `t1 search --store`, `t1 serve --store`.

- **Where.** `qdrant://HOST:PORT/COLLECTION` talks to a server or cluster over HTTP
  (`qdrants://` over HTTPS; the API key, if any, comes from $QDRANT_API_KEY). Any other spec is
  a local folder for qdrant-client's embedded mode, `PATH` or `PATH#COLLECTION` (collection "t1"
  by default); only one process may open a local folder at a time.
- **Points.** One point per document: its id is a UUID5 of the document id (the same id always
  maps to the same point, so re-writing is idempotent), its vector the T1 embedding (dot
  product, float16 or float32 as `--dtype`), its payload {"id", "title", "snippet", "position"}.
- **Manifest.** The index manifest (model fingerprint, instruction, corpus hash, ...) is kept in
  the collection's metadata under "t1", so a store built by another model is refused as an index
  folder is.
- **Building** goes shard by shard, as for an index folder (`t1.index.build_shards`): a shard
  whose points all exist is skipped, so an interrupted build resumes, and under torchrun the
  ranks upsert disjoint shards (a server only).
- **Updating** (`update`, `delete`): a document is re-encoded only when its title or
  text changed (the payload's "hash"), and written as a point under the same id, so Qdrant
  replaces it; deletes remove points by id. The manifest's count follows (and "generation" counts
  the updates). Qdrant applies each batch itself; there are no segments or tombstones to keep.
- **Searching** sends one batched query per batch of query embeddings; excluded documents are a
  `must_not` `HasIdCondition` filter, so they are removed before the top-k cut. Scores are inner
  products; ties are ordered by position, as in an index folder. A server searches its HNSW
  graph (`ef_search` sets `hnsw_ef`; ann "exact" asks for exact search); local mode is always
  exact.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from ..data import Document
from ..errors import T1Error
from ..index.build import ShardSink, build_shards, plan_build
from ..index.format import doc_row
from ..index.manifest import check_shape
from ..index.search import check_k, exclusion_sets
from ..index.searchable import Hit, Searchable

DEFAULT_COLLECTION = "t1"
DEFAULT_PORT = 6333
METADATA_KEY = "t1"
NAMESPACE = uuid.UUID("5f1c0a4e-7b1d-5d3e-9a57-3f4c1e0b7a21")  # fixed: point ids must never change
UPSERT_BATCH = 256
QUERY_BATCH = 64
RETRIEVE_BATCH = 1024
API_KEY_ENV = "QDRANT_API_KEY"


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id (deterministic)."""
    return str(uuid.uuid5(NAMESPACE, doc_id))


def _models():
    try:
        from qdrant_client import models
    except ImportError:
        raise T1Error("a Qdrant store needs qdrant-client: pip install qdrant-client") from None
    return models


def parse_spec(spec: str) -> tuple[dict, str, bool]:
    """(QdrantClient arguments, collection, local?) of a store spec."""
    if spec.startswith(("qdrant://", "qdrants://")):
        parts = urlsplit(spec)
        collection = parts.path.strip("/")
        if not parts.hostname or not collection or "/" in collection:
            raise T1Error(f"store {spec!r}: expected qdrant://HOST:PORT/COLLECTION")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise T1Error(f"store {spec!r}: bad port") from None
        scheme = "https" if parts.scheme == "qdrants" else "http"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return {"url": f"{scheme}://{host}:{port}", "api_key": os.environ.get(API_KEY_ENV) or None}, collection, False
    if "://" in spec:
        raise T1Error(f"store {spec!r}: unknown scheme (use qdrant://HOST:PORT/COLLECTION or a local folder)")
    path, _, collection = spec.partition("#")
    if not path:
        raise T1Error(f"store {spec!r}: empty path")
    return {"path": path}, collection or DEFAULT_COLLECTION, True


def connect(spec: str):
    from qdrant_client import QdrantClient  # noqa: F401  (the import error first, as one line)

    _models()
    kwargs, collection, local = parse_spec(spec)
    if local:
        folder = Path(kwargs["path"])
        if folder.exists() and not folder.is_dir():
            raise T1Error(f"{folder}: not a folder")
    try:
        client = QdrantClient(**kwargs, **({"force_disable_check_same_thread": True} if local else {"timeout": 60}))
    except RuntimeError as e:  # a local folder another client holds
        raise T1Error(f"{spec}: {str(e).splitlines()[0]}") from None
    return client, collection, local


class _Sink(ShardSink):
    def __init__(self, store: "QdrantIndex", dtype: str):
        self.store = store
        self.dtype = dtype

    def read_manifest(self) -> dict | None:
        return self.store._read_manifest()

    def write_manifest(self, manifest: dict) -> None:
        s = self.store
        models = _models()
        with s._lock:
            if not s.client.collection_exists(s.collection):
                datatype = models.Datatype.FLOAT16 if self.dtype == "float16" else models.Datatype.FLOAT32
                s.client.create_collection(
                    s.collection, metadata={METADATA_KEY: manifest},
                    vectors_config=models.VectorParams(size=manifest["dim"], distance=models.Distance.DOT,
                                                       datatype=datatype))
                if not s.local:  # a keyword index on the document id, for filters by id
                    s.client.create_payload_index(s.collection, "id", models.PayloadSchemaType.KEYWORD)
            else:
                s.client.update_collection(s.collection, metadata={METADATA_KEY: manifest})
        stored = s._read_manifest()
        if stored is None or stored.get("complete") != manifest.get("complete"):
            raise T1Error(f"{s.spec}: the Qdrant server does not keep collection metadata (it needs Qdrant 1.16 "
                          "or later)")
        s.manifest = stored

    def done(self, i: int, chunk: Sequence[Document]) -> bool:
        return not self.store._missing([d.id for d in chunk])

    def wait_done(self, shards) -> list[int]:
        # Every point of this corpus (the manifest's corpus hash keeps out any other): one count
        # instead of looking up every id; look shard by shard only when it falls short.
        s = self.store
        with s._lock:
            count = s.client.count(s.collection, exact=True).count
        if count == len({d.id for _, chunk in shards for d in chunk}):
            return []
        return super().wait_done(shards)

    def write(self, i: int, chunk: Sequence[Document], embeddings: np.ndarray) -> None:
        s = self.store
        models = _models()
        first = i * s._shard_size
        for start in range(0, len(chunk), UPSERT_BATCH):
            part = chunk[start : start + UPSERT_BATCH]
            batch = models.Batch(ids=[point_id(d.id) for d in part],
                                 vectors=embeddings[start : start + len(part)].astype(np.float32).tolist(),
                                 payloads=[{**doc_row(d), "position": first + start + j} for j, d in enumerate(part)])
            with s._lock:
                s.client.upsert(s.collection, points=batch, wait=True)


class QdrantIndex(Searchable):
    """A Qdrant collection of T1 document embeddings, searched like an `Index`."""

    def __init__(self, spec: str, client=None):
        self.spec = spec
        self.folder = spec  # what messages and /info show
        if client is None:
            client, collection, local = connect(spec)
        else:
            _, collection, local = parse_spec(spec)
        self.client, self.collection, self.local = client, collection, local
        self._lock = threading.RLock()  # local mode is not thread-safe; a server client does not mind
        self.manifest: dict = {}
        self._shard_size = 0
        self._ann = {"ann": "auto", "ef_search": None}

    # ---------------------------------------------------------------- building
    @classmethod
    def build(cls, model, documents: Sequence[Document], spec: str, instruction: str | None = None,
              max_length: int | None = None, shard_size: int = 8192, dtype: str = "float16", batch_size: int = 32,
              show_progress_bar: bool | None = None, group=None) -> "QdrantIndex":
        """Encode `documents` with `model` into the store `spec`, resuming an interrupted build;
        under torchrun every rank calls this and upserts its share of the shards."""
        plan = plan_build(model, documents, instruction, max_length, shard_size, dtype, batch_size, group)
        _, _, local = parse_spec(spec)
        if local and plan.group.world > 1:
            raise T1Error(f"{spec}: a local Qdrant folder can be written by one process only; give a server "
                          "(qdrant://HOST:PORT/COLLECTION) to index with several processes")
        if local:
            Path(parse_spec(spec)[0]["path"]).mkdir(parents=True, exist_ok=True)
        store = cls(spec)
        store._shard_size = shard_size

        try:
            manifest, _ = build_shards(_Sink(store, dtype), model, documents, plan.spec, where=spec,
                                       encode=plan.encode, group=plan.group, show_progress_bar=show_progress_bar)
        except BaseException:
            store.close()
            raise
        store.manifest = manifest
        return store

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, spec: str, model=None, instruction: str | None = None) -> "QdrantIndex":
        """Open a complete store; with `model`, refuse one built by a different model."""
        store = cls(spec)
        try:
            manifest = store._read_manifest()
            if manifest is None:
                raise T1Error(f"{spec}: no t1 collection {store.collection!r} there")
            if not manifest.get("complete"):
                raise T1Error(f"{spec}: index is incomplete; re-run `t1 index` with the same arguments to resume")
            store.manifest = manifest
            store._shard_size = manifest["shard_size"]
            store.check(model, instruction)
        except BaseException:
            store.close()
            raise
        return store

    def check(self, model=None, instruction: str | None = None) -> "QdrantIndex":
        """Refuse `model` / `instruction` when the store was built with others."""
        from ..index.format import check_built_with

        check_built_with(self.manifest, self.spec, model, instruction)
        return self

    def _read_manifest(self) -> dict | None:
        with self._lock:
            if not self.client.collection_exists(self.collection):
                return None
            metadata = self.client.get_collection(self.collection).config.metadata or {}
        if METADATA_KEY not in metadata:
            raise T1Error(f"{self.spec}: collection {self.collection!r} exists but was not written by t1")
        return check_shape(metadata[METADATA_KEY], f"{self.spec} (collection metadata)")

    def close(self) -> None:
        with self._lock:
            try:
                self.client.close()
            except Exception:  # pragma: no cover - closing twice, or a server gone away
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def ids(self) -> "StoreIds":
        """Membership of document ids (`id in store.ids`, `set_of_ids - store.ids`), asked of
        the store; the ids are never all loaded."""
        return StoreIds(self)

    def _missing(self, doc_ids: Sequence[str]) -> set[str]:
        doc_ids = list(dict.fromkeys(doc_ids))
        return set(doc_ids) - {doc_id for doc_id, _ in self._points(doc_ids, with_payload=False)}

    def _points(self, doc_ids: Sequence[str], with_payload):
        """(id, record) of each of these documents the store holds, fetched `RETRIEVE_BATCH` at a time."""
        for start in range(0, len(doc_ids), RETRIEVE_BATCH):
            by_point = {point_id(d): d for d in doc_ids[start : start + RETRIEVE_BATCH]}
            with self._lock:
                records = self.client.retrieve(self.collection, list(by_point), with_payload=with_payload,
                                               with_vectors=False)
            yield from ((by_point[str(r.id)], r) for r in records)

    # ---------------------------------------------------------------- updating
    def update(self, model, documents: Sequence[Document], batch_size: int = 32, instruction: str | None = None,
               encode=None):
        """Add new documents and replace changed ones by id (unchanged ones are skipped), with
        the model, instruction and document engine the store was built with. Returns an
        `UpdateReport` (`t1.index.update`). `encode` (texts -> embeddings) replaces the model's
        own encoding, for a caller that runs the model elsewhere (`t1 serve`)."""
        from ..index.update import UpdateReport, check_batch, check_same_build, sort_changes

        check_batch(documents)
        check_same_build(self.manifest, self.spec, model, instruction)
        report = UpdateReport(self.manifest.get("generation", 0), len(self))
        new = sort_changes(documents, self._hashes([d.id for d in documents]), report)
        if new:
            from ..index.update import document_encoder

            m, models = self.manifest, _models()
            emb = np.asarray((encode or document_encoder(model, m, batch_size))([d.full_text for d in new]))
            first = m.get("rows", m["count"])  # positions keep growing: ties rank older documents first
            for start in range(0, len(new), UPSERT_BATCH):
                part = new[start : start + UPSERT_BATCH]
                batch = models.Batch(ids=[point_id(d.id) for d in part],
                                     vectors=emb[start : start + len(part)].astype(np.float32).tolist(),
                                     payloads=[{**doc_row(d), "position": first + start + j}
                                               for j, d in enumerate(part)])
                with self._lock:
                    self.client.upsert(self.collection, points=batch, wait=True)
            self._commit(report, added=len(report.added), rows=first + len(new))
        return report

    def delete(self, ids) -> "object":
        """Delete documents by id; returns an `UpdateReport` (ids not in the store: `not_found`)."""
        from ..index.update import UpdateReport

        ids = list(dict.fromkeys(ids))
        missing = self._missing(ids)
        report = UpdateReport(self.manifest.get("generation", 0), len(self),
                              deleted=[i for i in ids if i not in missing], not_found=[i for i in ids if i in missing])
        if report.deleted:
            models = _models()
            with self._lock:
                self.client.delete(self.collection, points_selector=models.PointIdsList(
                    points=[point_id(i) for i in report.deleted]), wait=True)
            self._commit(report, added=-len(report.deleted))
        return report

    def _hashes(self, doc_ids: Sequence[str]) -> dict[str, str | None]:
        """The payload "hash" of each of these ids the store holds."""
        return {doc_id: r.payload.get("hash") for doc_id, r in self._points(doc_ids, with_payload=["hash"])}

    def _commit(self, report, added: int, rows: int | None = None) -> None:
        manifest = {**self.manifest, "count": self.manifest["count"] + added,
                    "generation": self.manifest.get("generation", 0) + 1}
        if rows is not None:
            manifest["rows"] = rows
        with self._lock:
            self.client.update_collection(self.collection, metadata={METADATA_KEY: manifest})
        self.manifest = manifest
        report.generation, report.documents = manifest["generation"], manifest["count"]

    # ---------------------------------------------------------------- searching
    def use_ann(self, ann: str = "auto", ef_search: int | None = None, nprobe=None, refine=None) -> "QdrantIndex":
        """"auto" / "hnsw": Qdrant's HNSW graph (with `ef_search` as hnsw_ef), "exact": exact
        search. Returns the store."""
        self._ann = {"ann": self._check_ann(ann, nprobe, refine), "ef_search": ef_search}
        return self

    def _check_ann(self, ann, nprobe=None, refine=None) -> str:
        if ann not in ("auto", "exact", "hnsw"):
            raise T1Error(f"a Qdrant store searches with its own HNSW graph or exactly: ann must be auto, hnsw or "
                          f"exact, got {ann!r}")
        if nprobe is not None or refine is not None:
            raise T1Error("nprobe and refine apply to ivf-pq index folders, not to a Qdrant store")
        return ann

    def search(self, query_embeddings: np.ndarray, k: int = 10, exclude=None, backend: str = "auto",
               ann: str | None = None, ef_search: int | None = None, nprobe: int | None = None,
               refine: int | None = None) -> list[list[Hit]]:
        """Top-k by inner product for each query embedding; `exclude[q]` lists document ids
        removed from query q's candidates before the cut (`backend` is ignored: Qdrant searches)."""
        models = _models()
        query_embeddings = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        if query_embeddings.shape[1] != self.manifest["dim"]:
            raise T1Error(f"query embeddings have dimension {query_embeddings.shape[1]}, index has "
                          f"{self.manifest['dim']}")
        exclude = exclusion_sets(exclude, len(query_embeddings))
        k = check_k(k, len(self))
        ann = self._check_ann(ann if ann is not None else self._ann["ann"], nprobe, refine)
        ef_search = ef_search or self._ann["ef_search"]
        params = None
        if not self.local and (ann == "exact" or ef_search):  # local mode is exact and warns about params
            params = models.SearchParams(exact=ann == "exact", hnsw_ef=ef_search)
        requests = []
        for q, vector in enumerate(query_embeddings):
            ex = sorted(exclude[q]) if exclude is not None and exclude[q] else None
            flt = models.Filter(must_not=[models.HasIdCondition(has_id=[point_id(i) for i in ex])]) if ex else None
            requests.append(models.QueryRequest(query=vector.tolist(), limit=k, filter=flt, params=params,
                                                with_payload=["id", "title", "snippet", "position"]))
        out = []
        for start in range(0, len(requests), QUERY_BATCH):
            with self._lock:
                responses = self.client.query_batch_points(self.collection, requests[start : start + QUERY_BATCH])
            for response in responses:
                points = sorted(response.points, key=lambda p: (-p.score, p.payload.get("position", 0)))
                out.append([Hit(p.payload["id"], float(p.score), p.payload.get("title", ""),
                                p.payload.get("snippet", "")) for p in points[:k]])
        return out


class StoreIds:
    """Document-id membership answered by the store (for request validation)."""

    def __init__(self, store: QdrantIndex):
        self.store = store

    def __contains__(self, doc_id) -> bool:
        return isinstance(doc_id, str) and not self.store._missing([doc_id])

    def __rsub__(self, other) -> set[str]:
        """`ids - store.ids`: the ids the store does not hold."""
        return self.store._missing([i for i in other])

    def __len__(self) -> int:
        return len(self.store)
