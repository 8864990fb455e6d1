"""Updating the served index over HTTP: `POST /documents` (upsert a batch) and
`DELETE /documents/{id}`, behind the API key like every route but /health.

One writer: updates run one at a time on a thread of their own (`DocumentWriter`), in the order
they came, so that the folder's write lock (`t1.index.build.hold_lock`) is never contended from
inside the server; a `t1 index --update` running meanwhile makes an update fail with 409. The
documents' embeddings are computed on the model's worker thread (`Batcher.call`, between search
batches: the model and its tokenizer are never used by two threads at once), the commit on the
writer's thread. Searches go on meanwhile: each batch runs on one generation (`Engine.refresh`,
which also picks up what `t1 index --update` committed, without a restart).

A request answers 202 at once (queued), or with `?wait=true` once its update is committed, with
the report. A batch with one bad document is refused whole (422), naming its position.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..data import Document, surrogate_problem
from ..errors import T1Error

logger = logging.getLogger("t1.serve")
MAX_UPSERT = 256  # documents per request


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    documents: list[Any] = Field(description='[{"id", "title" (optional), "text"}], added or replaced by id')


def parse_documents(rows: list, max_chars: int) -> list[Document]:
    """The batch as `Document`s, or `ValueError` naming the first bad one's position (a wrong
    type too: it is the request's mistake, answered 422 like the others)."""
    if not rows:
        raise ValueError("documents: give at least one")
    if len(rows) > MAX_UPSERT:
        raise ValueError(f"documents: {len(rows)} given, more than the limit of {MAX_UPSERT} per request")
    out, seen = [], {}
    for i, row in enumerate(rows):
        where = f"documents[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with id, title and text")  # noqa: TRY004
        extra = sorted(set(row) - {"id", "title", "text"})
        if extra:
            raise ValueError(f"{where}: unknown field {extra[0]!r}")
        for name in ("id", "text", "title"):
            value = row.get(name, "" if name == "title" else None)
            if not isinstance(value, str):
                raise ValueError(  # noqa: TRY004
                    f"{where}.{name}: expected a string" if name in row else f"{where}: missing {name!r}")
            if surrogate_problem(value):
                raise ValueError(f"{where}.{name} {surrogate_problem(value)}")
        if not row["id"].strip():
            raise ValueError(f"{where}.id is empty")
        if len(row["text"]) > max_chars:
            raise ValueError(f"{where}.text is {len(row['text'])} characters long, more than the limit of {max_chars}")
        if row["id"] in seen:
            raise ValueError(f"{where}: id {row['id']!r} is given twice (first at documents[{seen[row['id']]}])")
        seen[row["id"]] = i
        out.append(Document(row["id"], row["text"], row.get("title", "")))
    return out


class DocumentWriter:
    """The one thread that commits updates, in order; what it did last is in `state`."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t1-writer")
        self._lock = threading.Lock()  # `pending` is counted up on the event loop, down on the writer
        self.pending = 0
        self.state: dict = {"updates": 0, "last": None, "last_error": None}

    def submit(self, fn) -> Future:
        with self._lock:
            self.pending += 1

        def run():
            try:
                report = fn()
                self.state.update(updates=self.state["updates"] + 1, last=report.to_dict(), last_error=None)
                return report
            except Exception as e:
                self.state["last_error"] = str(e).splitlines()[0] if isinstance(e, T1Error) else type(e).__name__
                if not isinstance(e, T1Error):
                    logger.error("update failed", exc_info=e)
                raise
            finally:
                with self._lock:
                    self.pending -= 1

        return self._executor.submit(run)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)


def add_document_routes(app: FastAPI, responder, writer: DocumentWriter) -> None:
    engine, batcher, settings = responder.engine, responder.batcher, responder.settings

    def on_worker(loop):
        """texts -> embeddings, computed on the model's worker thread (called from the writer's)."""
        return lambda texts: asyncio.run_coroutine_threadsafe(batcher.call(engine.encode_documents, texts),
                                                              loop).result()

    async def answer(request: Request, future: Future, wait: bool, what: dict) -> Response | dict:
        if not wait:
            return JSONResponse({"status": "queued", **what, "pending": writer.pending}, status_code=202)
        try:
            report = await asyncio.wrap_future(future)
        except T1Error as e:
            status = 409 if "another t1 process" in str(e) else 422
            return responder.refuse(request, status, str(e).splitlines()[0])
        return {"status": "done", **report.to_dict()}

    @app.post("/documents", summary="add or replace documents by id (applied in the background)",
              responses={202: {"description": "queued"}})
    async def upsert(req: UpsertRequest, request: Request, wait: bool = False):
        try:
            documents = parse_documents(req.documents, settings.max_document_chars)
        except ValueError as e:
            return responder.refuse(request, 422, str(e))
        encode = on_worker(asyncio.get_running_loop())
        future = writer.submit(lambda: engine.index.update(engine.model, documents, encode=encode))
        return await answer(request, future, wait, {"documents": len(documents)})

    @app.delete("/documents/{doc_id:path}", summary="delete a document by id (applied in the background)",
                responses={202: {"description": "queued"}})
    async def delete(doc_id: str, request: Request, wait: bool = False):
        future = writer.submit(lambda: engine.index.delete([doc_id]))
        return await answer(request, future, wait, {"id": doc_id})
