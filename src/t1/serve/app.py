"""The HTTP service: FastAPI routes over a `Batcher` and an `Engine`.

Routes: `POST /search`, `POST /search/stream` (server-sent events: the reasoning as it is
generated, then the hits), `POST /encode`, `GET /health`, `GET /info`, the search page at `/`,
`POST /documents` and `DELETE /documents/{id}` (updating the index, one writer: `documents`),
and FastAPI's own `/docs`, `/redoc` and `/openapi.json`; the embedding APIs other tools speak
(OpenAI's `/v1/embeddings`, Ollama's `/api/embed`) are added by `openai_api`. Every request is
logged on one line; a bad request gets a 4xx whose body is `{"detail": "one line"}` (on the
compatible routes, that API's error shape: `error_shapes`).

With an API key, every route but `/health` answers 401 without it. A client sends it as
`X-API-Key: KEY` or `Authorization: Bearer KEY`; a browser opens `/?key=KEY` once, which sets
an HttpOnly, SameSite=Strict cookie and redirects to `/` (the key leaves the address bar).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..data import surrogate_problem
from ..errors import T1Error
from ..index.fusion import METHODS
from ..reasoners import ReasonerError
from ..settings import (
    DEFAULT_AUTO_MARGIN,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    GIVEN,
    REASONING_MODES,
    TRACE_FUSIONS,
    QuerySettings,
)
from .batcher import Batcher, Busy, Job
from .documents import DocumentWriter, add_document_routes
from .engine import Engine, Plan, Work
from .error_shapes import error_response
from .gate import BODY_TIMEOUT_S, NOTE, Gate
from .openai_api import add_embedding_routes

logger = logging.getLogger("t1.serve")

KEEP_ALIVE_S = 15.0  # an idle stream (queued behind others) gets a comment line this often
SEARCH_MODES = (*REASONING_MODES, GIVEN)
SearchMode = Literal[SEARCH_MODES]
EncodeMode = Literal[tuple(m for m in SEARCH_MODES if m != "auto")]


@dataclass
class ServeSettings:
    """Batching, limits and access of one server (the `t1 serve` options)."""

    api_key: str | None = None
    max_batch: int = 16  # rows (queries x traces) per batch; 1 turns batching off
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its batch
    adaptive_wait: bool = True  # ... but not when every request in the server is queued already
    max_queue: int = 256  # requests waiting beyond this are refused with 503
    timeout_s: float = 120.0  # per request, queueing included: then 504
    max_k: int = 100
    max_queries: int = 32  # per request
    max_query_chars: int = 8192
    max_documents: int = 64  # per /encode request
    max_document_chars: int = 100_000
    max_traces: int = 8
    max_new_tokens: int | None = None  # default and ceiling of the reasoning length; None: the model's
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = BODY_TIMEOUT_S  # the longest wait for the next part of a body: then 408
    model_name: str | None = None  # the model's id on the embedding APIs; None: the model's folder or hub name


class BadRequest(Exception):
    """A request that is well-formed JSON of the right types but asks for something invalid."""


# ---------------------------------------------------------------- request and response bodies
class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str | list[str] = Field(description="one query, or a list searched together")
    k: int = Field(10, description="hits per query (1 to the server's max_k)")
    reasoning: SearchMode = Field(
        QuerySettings.reasoning, description="generate: the model reasons first; none: embed the query alone; given: embed "
                                "with reasoning_text; auto: reason only when the plain embedding is unsure")
    reasoning_text: str | list[str] | None = Field(None, description="reasoning 'given': one trace per query")
    exclude: list[str] | list[list[str]] | None = Field(
        None, description="document ids never returned: a list for one query, or one list per query")
    hybrid: bool | None = Field(
        None, description="true: fuse with the index's BM25; false: T1 alone; unset: the server's default "
                          "(GET /info's ranking: hybrid when the model has a saved fusion weight and the index BM25)")
    fusion: Literal[METHODS] | None = Field(None, description="hybrid: weighted sum (default) or rrf")
    fusion_weight: float | None = Field(
        None, description="hybrid: weight of the T1 list, BM25 gets 1 - w (default: the model's saved fusion "
                          "weight for a weighted sum, else 0.5)")
    traces: int = Field(1, description="test-time scaling: sample this many traces per query and fuse them")
    trace_fusion: Literal[TRACE_FUSIONS] = QuerySettings.trace_fusion
    temperature: float = Field(DEFAULT_TEMPERATURE, description="sampling temperature with traces > 1")
    top_p: float = Field(DEFAULT_TOP_P, description="nucleus sampling with traces > 1")
    margin: float = Field(DEFAULT_AUTO_MARGIN,
                          description="reasoning 'auto': reason when the top hit leads the second by less")
    max_new_tokens: int | None = Field(None, description="reasoning length limit (default and ceiling: the server's)")
    instruction: str | None = Field(None, description="query instruction (default: the model's)")


class EncodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    documents: str | list[str] | None = Field(None, description="embedded as the index embeds documents")
    queries: str | list[str] | None = None
    reasoning: EncodeMode = Field("none", description="queries only")
    reasoning_text: str | list[str] | None = None
    max_new_tokens: int | None = None
    instruction: str | None = Field(None, description="query instruction (default: the model's)")


class HitOut(BaseModel):
    id: str
    score: float
    title: str = ""
    snippet: str = ""


class QueryResult(BaseModel):
    query: str
    reasoning: str = Field(description="the trace the query was embedded with ('' without reasoning)")
    ended: bool | None = Field(None, description="generate: the model ended its trace itself")
    reasoned: bool | None = Field(None, description="auto: whether the model reasoned for this query")
    traces: list[str] | None = None
    hits: list[HitOut]


class Timings(BaseModel):
    queue_ms: float = Field(description="waiting for a batch and the worker")
    encode_ms: float | None = Field(None, description="embedding and reasoning of the whole batch")
    search_ms: float | None = Field(None, description="searching the whole batch")
    model_ms: float | None = Field(None, description="reasoning 'auto': embedding and searching together")
    total_ms: float
    batch_queries: int = Field(description="queries in the batch this request ran in")
    batch_requests: int = Field(description="requests in that batch")


class SearchResponse(BaseModel):
    results: list[QueryResult]
    mode: str
    ranking: str = Field(description="dense (T1 alone), or hybrid-<fusion>(<T1 weight>), e.g. hybrid-weighted(0.3)")
    k: int
    timings: Timings


class EncodeResponse(BaseModel):
    kind: Literal["documents", "queries"]
    dim: int
    embeddings: list[list[float]]
    reasoning: list[str] | None = None
    timings: Timings


# ---------------------------------------------------------------- validation
def _texts(value, what: str, limit: int, max_chars: int) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise BadRequest(f"{what}: give at least one")
    if len(texts) > limit:
        raise BadRequest(f"{what}: {len(texts)} given, more than the limit of {limit} per request")
    for i, t in enumerate(texts):
        name = what if isinstance(value, str) else f"{what}[{i}]"
        _unicode(t, name)
        if not t.strip():
            raise BadRequest(f"{name} is empty")
        if len(t) > max_chars:
            raise BadRequest(f"{name} is {len(t)} characters long, more than the limit of {max_chars}")
    return texts


def _unicode(text: str | None, name: str) -> None:
    """JSON's \\ud800 escapes decode to lone surrogates, which no tokenizer or response can hold."""
    problem = text is not None and surrogate_problem(text)
    if problem:
        raise BadRequest(f"{name} {problem}")


def _given(req, n: int) -> list[str] | None:
    if req.reasoning != "given":
        if req.reasoning_text is not None:
            raise BadRequest("reasoning_text is only used with reasoning 'given'")
        return None
    if req.reasoning_text is None:
        raise BadRequest("reasoning 'given' needs reasoning_text")
    given = [req.reasoning_text] if isinstance(req.reasoning_text, str) else list(req.reasoning_text)
    if len(given) != n:
        raise BadRequest(f"reasoning_text: got {len(given)} texts for {n} queries (give one per query)")
    for i, text in enumerate(given):
        _unicode(text, "reasoning_text" if isinstance(req.reasoning_text, str) else f"reasoning_text[{i}]")
    return given


def _tokens(req, settings: ServeSettings, engine: Engine) -> int:
    ceiling = settings.max_new_tokens if settings.max_new_tokens is not None else engine.model.config.max_new_tokens
    if req.max_new_tokens is None:
        return ceiling
    if not 0 <= req.max_new_tokens <= ceiling:
        raise BadRequest(f"max_new_tokens must be between 0 and {ceiling}, got {req.max_new_tokens}")
    return req.max_new_tokens


def _instruction(req, settings: ServeSettings) -> str | None:
    _unicode(req.instruction, "instruction")
    if req.instruction is not None and len(req.instruction) > settings.max_query_chars:
        raise BadRequest(f"instruction is {len(req.instruction)} characters long, more than the limit of "
                         f"{settings.max_query_chars}")
    return req.instruction


def plan_search(req: SearchRequest, settings: ServeSettings, engine: Engine) -> tuple[Plan, Work]:
    queries = _texts(req.query, "query", settings.max_queries, settings.max_query_chars)
    if not 1 <= req.k <= settings.max_k:
        raise BadRequest(f"k must be between 1 and {settings.max_k}, got {req.k}")
    exclude = None
    if req.exclude:
        lists = req.exclude if isinstance(req.exclude[0], list) else [req.exclude]
        if len(lists) != len(queries):
            raise BadRequest(f"exclude: got {len(lists)} lists of ids for {len(queries)} queries (give one per query)")
        exclude = [set(ids) for ids in lists]
        unknown = sorted({i for ids in exclude for i in ids} - engine.ids)
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise BadRequest(f"exclude: unknown document id {unknown[0]!r}{more}")
    given = _given(req, len(queries))
    mode = req.reasoning
    try:
        ranking = engine.index.ranking(engine.model, req.hybrid, req.fusion, req.fusion_weight)
    except T1Error as e:
        raise BadRequest(str(e)) from None
    if not 1 <= req.traces <= settings.max_traces:
        raise BadRequest(f"traces must be between 1 and {settings.max_traces}, got {req.traces}")
    if req.traces > 1 and mode != "generate":
        raise BadRequest("traces > 1 needs reasoning 'generate'")
    if req.traces > 1 and not (req.temperature > 0 and 0 < req.top_p <= 1):
        raise BadRequest("traces > 1 needs temperature > 0 and 0 < top_p <= 1")
    if mode == "auto" and req.margin < 0:
        raise BadRequest(f"margin must be >= 0, got {req.margin}")
    tokens = _tokens(req, settings, engine)
    sampled = mode == "generate" and req.traces > 1 and tokens > 0
    defaults = QuerySettings()  # what a request's unused settings are set to, so that equal plans batch together
    query = _settings(
        reasoning=mode if (mode != "generate" or tokens > 0) else "none",
        max_new_tokens=tokens if mode != "none" else None, instruction=_instruction(req, settings), num_traces=req.traces if sampled else 1,
        trace_fusion=req.trace_fusion if sampled else defaults.trace_fusion,
        temperature=req.temperature if sampled else defaults.temperature,
        top_p=req.top_p if sampled else defaults.top_p,
        auto_margin=req.margin if mode == "auto" else defaults.auto_margin,
        hybrid=ranking.hybrid, fusion=ranking.fusion, fusion_weight=ranking.weight)
    # Fused lists are cut at depth max(k, 100): past 100 only requests of equal k share a batch.
    depth_k = req.k if (ranking.hybrid or (sampled and req.trace_fusion == "rrf")) and req.k > 100 else 0
    return Plan("search", query, ranking, depth_k), Work(queries, given, exclude, req.k)


def _settings(**fields) -> QuerySettings:
    try:
        return QuerySettings(**fields)
    except T1Error as e:
        raise BadRequest(str(e)) from None


def plan_encode(req: EncodeRequest, settings: ServeSettings, engine: Engine,
                field: str | None = None) -> tuple[Plan, Work]:
    """`field`: the name of the texts in error messages, where a request calls them otherwise."""
    if (req.documents is None) == (req.queries is None):
        raise BadRequest("give either documents or queries")
    if req.documents is not None:
        if req.reasoning != "none" or req.reasoning_text is not None or req.max_new_tokens is not None \
                or req.instruction is not None:
            raise BadRequest("reasoning, reasoning_text, max_new_tokens and instruction apply to queries only")
        docs = _texts(req.documents, field or "documents", settings.max_documents, settings.max_document_chars)
        return Plan(kind="documents"), Work(docs)
    queries = _texts(req.queries, field or "queries", settings.max_queries, settings.max_query_chars)
    given = _given(req, len(queries))
    tokens = _tokens(req, settings, engine)
    mode = req.reasoning if (req.reasoning != "generate" or tokens > 0) else "none"
    query = _settings(reasoning=mode, max_new_tokens=tokens if mode != "none" else None,
                      instruction=_instruction(req, settings), hybrid=False)
    return Plan("queries", query), Work(queries, given)


EXPECTED = {
    "query": "a string or a list of strings", "queries": "a string or a list of strings",
    "documents": "a string or a list of strings", "reasoning_text": "a string or a list of strings",
    "exclude": "a list of document ids, or one such list per query", "input": "a string or a list of strings",
}


def validation_message(errors) -> tuple[int, str]:
    """(status, one line) for pydantic errors of a request body."""
    first = errors[0]
    if first["type"] == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return 400, f"malformed JSON{': ' + str(detail) if detail else ''}"
    loc = [p for p in first["loc"] if p != "body"]
    if not loc:
        return 422, "the request body must be a JSON object"
    field = str(loc[0])
    fields_wrong = {str([p for p in e["loc"] if p != "body"][:1]) for e in errors}
    if first["type"] == "extra_forbidden":
        msg = f"unknown field {field!r}"
    elif first["type"] == "missing":
        msg = f"missing field {field!r}"
    elif field in EXPECTED and len(loc) > 1 and isinstance(loc[1], str):  # a union: name the accepted types
        msg = f"{field}: expected {EXPECTED[field]}"
    else:
        msg = f"{field}: {first['msg']}"
    if len(fields_wrong) > 1:
        msg += f" (and {len(fields_wrong) - 1} more field{'s' if len(fields_wrong) > 2 else ''} wrong)"
    return 422, " ".join(msg.split())


# ---------------------------------------------------------------- access and logging
# ---------------------------------------------------------------- the app
class Responder:
    """Queues planned work on the batcher and turns each job's outcome into a response: the
    result, or the status of its failure (422 a user's mistake, 499 a client gone, 503 busy or
    cancelled, 504 a timeout, 500 a bug)."""

    def __init__(self, engine: Engine, settings: ServeSettings, batcher: Batcher):
        self.engine, self.settings, self.batcher = engine, settings, batcher

    @staticmethod
    def refuse(request: Request, status: int, msg: str, code: str | None = None) -> JSONResponse:
        """The error response, in the shape of the route's API family."""
        request.scope[NOTE] = msg
        return error_response(request.scope["path"], status, msg, code)

    def submit(self, request: Request, plan: Plan, work: Work) -> Job:
        return self.batcher.submit(plan, len(work.texts) * plan.query.traces, work)

    async def outcome(self, request: Request, job: Job) -> dict | Response:
        """The job's result, or the response for its failure (timeout, error, disconnect)."""
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, gone}, timeout=max(0.0, job.arrived + self.settings.timeout_s
                                                                  - time.perf_counter()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            job.abandon()
            if gone.done() and not gone.cancelled():
                request.scope[NOTE] = "client disconnected"
                return Response(status_code=499)
            return self.refuse(request, 504, f"timed out after {self.settings.timeout_s:g}s")
        failed = self.failure(job)
        return self.refuse(request, *failed) if failed else job.future.result()

    @staticmethod
    def failure(job: Job) -> tuple[int, str] | None:
        """The status and one-line reason of a finished job that failed; None if it succeeded."""
        if job.future.cancelled():
            return 503, "request cancelled"
        exc = job.future.exception()
        if isinstance(exc, T1Error):
            return 422, str(exc).splitlines()[0] if str(exc) else "invalid request"
        if exc is not None:
            logger.error("request failed", exc_info=exc)
            return 500, f"internal error ({type(exc).__name__})"
        return None

    async def run_planned(self, request: Request, planner, req) -> tuple[Job | None, dict | Response]:
        """Plan a request, queue it and wait: (job, its result) or (job or None, the error response)."""
        try:
            plan, work = planner(req, self.settings, self.engine)
        except BadRequest as e:
            return None, self.refuse(request, 422, str(e))
        if self.engine.writes_elsewhere(plan):  # the writer is asked here, concurrently with other requests
            try:
                plan, work = await asyncio.to_thread(self.engine.write, plan, work)
            except ReasonerError as e:
                return None, self.refuse(request, 502, str(e))
        job = self.queued(request, plan, work)
        if isinstance(job, Response):
            return None, job
        return job, await self.outcome(request, job)

    async def embed(self, request: Request, texts, queries: bool, field: str) -> dict | Response:
        """`texts` embedded as `/encode` embeds documents, or queries (reasoning first), with each
        text's token count: the batch result, or the error response (the embedding APIs' path)."""
        req = EncodeRequest(queries=texts, reasoning="generate") if queries else EncodeRequest(documents=texts)

        def planner(req, settings, engine):
            plan, work = plan_encode(req, settings, engine, field)
            work.count_tokens = True
            return plan, work

        return (await self.run_planned(request, planner, req))[1]

    @staticmethod
    def timings(job: Job, result: dict) -> dict:
        return {"queue_ms": round(((job.started or job.arrived) - job.arrived) * 1000, 2), **result["timings"],
                "total_ms": round((time.perf_counter() - job.arrived) * 1000, 2),
                "batch_queries": job.batch_rows, "batch_requests": job.batch_jobs}

    def queued(self, request, plan, work) -> Job | JSONResponse:
        try:
            return self.submit(request, plan, work)
        except Busy as e:
            return self.refuse(request, 503, str(e))


def describe(engine: Engine, settings: ServeSettings, batcher: Batcher) -> dict:
    """What /info answers: the model, the index, the ranking and the limits (never the key)."""
    from .. import __version__

    index = engine.newest()
    return {
        "model": {"name": engine.model.name_or_path, "fingerprint": engine.fingerprint, "dim": engine.model.dim,
                  "max_new_tokens": engine.model.config.max_new_tokens,
                  "document_engine": engine.model.document_engine.name},  # what /encode embeds documents with
        "index": {"folder": str(index.folder), "documents": len(index), "dim": index.manifest["dim"],
                  "generation": index.manifest.get("generation", 0),
                  "dtype": index.manifest.get("dtype"), "bm25": index.has_bm25,
                  "document_engine": index.manifest.get("engine", "hf"),
                  "built_with": index.manifest["model"]["name"]},
        "reasoning_modes": list(SEARCH_MODES),
        # who writes the traces of reasoning "generate": the model itself, or its reasoner
        "reasoner": None if engine.model.reasoner is None else {k: v for k, v in engine.model.reasoner.identity().items()
                                                                if k != "prompt"} | {"prompt": engine.model.reasoner.prompt.name},
        "hybrid": index.has_bm25,
        "ranking": str(engine.ranking),  # what a search without hybrid settings uses
        "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                     "adaptive_wait": settings.adaptive_wait, "batches_run": batcher.batches},
        "limits": {k: v for k, v in asdict(settings).items() if k != "api_key"}
                  | {"max_new_tokens": settings.max_new_tokens or engine.model.config.max_new_tokens},
        "auth": settings.api_key is not None,
        "reasoning_cache": None if engine.cache_path is None else str(engine.cache_path),
        "version": __version__,
    }


async def stream_events(responder: Responder, request: Request, req: SearchRequest, plan: Plan, job: Job,
                        pieces: asyncio.Queue) -> AsyncIterator[str]:
    """The server-sent events of one streamed search: each piece of the trace as it comes
    (`reasoning`), keep-alive comments while it waits, then `result` or `error`."""
    settings = responder.settings
    try:
        while True:
            piece = asyncio.ensure_future(pieces.get())
            left = job.arrived + settings.timeout_s - time.perf_counter()
            await asyncio.wait({piece, job.future}, timeout=max(0.0, min(left, KEEP_ALIVE_S)),
                               return_when=asyncio.FIRST_COMPLETED)
            if piece.done():
                yield _sse("reasoning", {"text": piece.result()})
                continue
            piece.cancel()
            if not job.future.done() and left > KEEP_ALIVE_S:
                yield ": keep-alive\n\n"  # an SSE comment: keeps proxies from closing an idle stream
                continue
            if not job.future.done():
                request.scope[NOTE] = f"timed out after {settings.timeout_s:g}s"
                yield _sse("error", {"detail": request.scope[NOTE]})
                return
            while not pieces.empty():
                yield _sse("reasoning", {"text": pieces.get_nowait()})
            failed = responder.failure(job)
            if failed is not None:
                request.scope[NOTE] = failed[1]
                yield _sse("error", {"detail": failed[1]})
                return
            result = job.future.result()
            body = SearchResponse(results=result["results"], mode=plan.query.reasoning,
                                  ranking=str(plan.ranking),
                                  k=req.k, timings=responder.timings(job, result))
            yield _sse("result", body.model_dump(exclude_none=True))
            return
    finally:
        job.abandon()  # no-op when it finished; stops its generation when the client left


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    in_flight = [0]
    batcher = Batcher(engine.run, settings.max_batch, settings.max_wait_ms, settings.max_queue,
                      in_flight=(lambda: in_flight[0]) if settings.adaptive_wait else None)
    page = files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    writer = DocumentWriter()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        await batcher.call(engine.open_cache)
        await batcher.call(engine.warm_up)
        yield
        await batcher.stop()  # after uvicorn has drained the requests in flight
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)

    from .. import __version__

    app = FastAPI(title="T1 search", version=__version__, lifespan=lifespan,
                  description="Reasoning retrieval over a T1 index: the model writes a reasoning trace for a "
                              "query, embeds it, and searches the index.")
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_middleware(Gate, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes, counter=in_flight,
                       poke=batcher.poke, body_timeout_s=settings.body_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, msg = validation_message(exc.errors())
        kind = request.headers.get("content-type", "")
        if status == 422 and msg.startswith("the request body") and kind and "json" not in kind.lower():
            status, msg = 415, f"send the body as JSON (Content-Type: application/json), not {kind.split(';')[0]}"
        return Responder.refuse(request, status, msg)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):  # 404, 405, 413: in the route family's shape
        request.scope[NOTE] = str(exc.detail)
        return error_response(request.scope["path"], exc.status_code, str(exc.detail), headers=exc.headers)

    responder = Responder(engine, settings, batcher)
    refuse, queued, timings = responder.refuse, responder.queued, responder.timings

    # ---------------------------------------------------------------- routes
    @app.get("/health", summary="liveness (no key needed)")
    async def health():
        return {"status": "ok", "queued": batcher.queued}

    @app.get("/info", summary="model, index and limits")
    async def info():
        return describe(engine, settings, batcher) | {"updates": {**writer.state, "pending": writer.pending}}

    @app.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
              summary="reason about one query or a list, and search the index")
    async def search(req: SearchRequest, request: Request):
        job, result = await responder.run_planned(request, plan_search, req)
        if isinstance(result, Response):
            return result
        plan = job.key  # the batch key is the request's plan
        mode = "generate" if plan.written else plan.query.reasoning
        return {"results": result["results"], "mode": mode, "ranking": str(plan.ranking),
                "k": req.k, "timings": timings(job, result)}

    @app.post("/search/stream", summary="search one query, streaming the reasoning (server-sent events)",
              response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "events `reasoning` ({text}: the next piece of the trace), then "
                                              "`result` (a /search response) or `error` ({detail})"}})
    async def search_stream(req: SearchRequest, request: Request):
        if not isinstance(req.query, str):
            return refuse(request, 422, "query: stream one query at a time (a string)")
        try:
            plan, work = plan_search(req, settings, engine)
        except BadRequest as e:
            return refuse(request, 422, str(e))
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()

        def on_text(text: str) -> None:  # on the worker thread
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, text)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

        work.on_text = on_text
        job = queued(request, plan, work)
        if isinstance(job, Response):
            return job
        return StreamingResponse(stream_events(responder, request, req, plan, job, pieces),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/encode", response_model=EncodeResponse, response_model_exclude_none=True,
              summary="embed documents (as the index does) or queries")
    async def encode(req: EncodeRequest, request: Request):
        job, result = await responder.run_planned(request, plan_encode, req)
        if isinstance(result, Response):
            return result
        return {"kind": job.key.kind, "dim": engine.model.dim, "embeddings": result["embeddings"].tolist(),
                "reasoning": result.get("reasoning"), "timings": timings(job, result)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache",
                                           "Content-Security-Policy": "default-src 'self'; "
                                           "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    add_embedding_routes(app, responder)
    add_document_routes(app, responder, writer)
    _document_api_key(app, settings)
    return app


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _document_api_key(app: FastAPI, settings: ServeSettings) -> None:
    """Describe the key in the OpenAPI schema, so /docs offers 'Authorize'."""
    if settings.api_key is None:
        return
    plain = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"apiKey": []}, {"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
