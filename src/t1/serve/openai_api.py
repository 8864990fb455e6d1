"""The embedding APIs that RAG tools already call, over the same batcher as `/encode`.

- OpenAI: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}` (what the `openai`
  client, LangChain's `OpenAIEmbeddings`, LlamaIndex, Haystack and Open WebUI call with only the
  base URL changed).
- Ollama: `POST /api/embed`, `GET /api/tags`, `GET /api/version`.

These APIs have no flag for the side of a text, so the model has two names: `<name>` embeds
documents (as the index does), `<name>-query` embeds queries, reasoning first as `/search` does;
`/v1/embeddings` also takes an `input_type` (Voyage's `query` / `document`, NVIDIA's `passage`,
Cohere's `search_query` / `search_document`). A query's trace comes back in an extension field
(`"t1": {"reasoning": ...}`) that standard clients ignore.

A request runs as an `/encode` request (`app.Responder.embed`), so the limits, messages and
batching are `/encode`'s; only the shapes of the answers and errors differ.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

QUERY_SUFFIX = "-query"
OLLAMA_TAG = ":latest"
INPUT_TYPES = {"query": "queries", "search_query": "queries",
               "document": "documents", "passage": "documents", "search_document": "documents"}
TEXTS = str | list[str]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: TEXTS | list[int] | list[list[int]] = Field(description="a text or a list of texts (token ids are refused)")
    model: str = Field(description="<name> embeds documents, <name>-query embeds queries (GET /v1/models)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: the little-endian float32 bytes of each vector")
    dimensions: int | None = Field(None, description="only the model's own dimension")
    user: str | None = Field(None, description="accepted and ignored")
    input_type: Literal[tuple(INPUT_TYPES)] | None = Field(
        None, description="query (search_query) or document (passage, search_document); default: the model name's side")


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    t1: dict | None = Field(None, description="queries: {reasoning: the trace the query was embedded with}")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: Usage


class OllamaEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="<name> embeds documents, <name>-query embeds queries (GET /api/tags)")
    input: TEXTS
    truncate: bool = Field(True, description="t1 cuts every text to the model's length; false is refused")
    options: dict | None = Field(None, description="accepted and ignored: no option changes a t1 embedding")
    keep_alive: str | int | float | None = Field(None, description="accepted and ignored: the model stays loaded")
    dimensions: int | None = Field(None, description="only the model's own dimension")


def served_name(model, name: str | None = None) -> str:
    """The model's id on these APIs: `name`, else its folder's name or its hub id."""
    if name:
        return name
    path = str(model.name_or_path)
    return Path(path).name if Path(path).exists() else path


class Embedder:
    """What both APIs share: the model's two names, and one embedding request through `/encode`'s
    planning and the batcher (`responder`: the app's `Responder`)."""

    def __init__(self, responder):
        self.responder = responder
        self.engine = responder.engine
        self.name = served_name(self.engine.model, responder.settings.model_name)
        self.sides = {self.name: "documents", self.name + QUERY_SUFFIX: "queries"}
        self.started = time.time()

    def unknown_model(self, request: Request, model: str) -> Response:
        return self.responder.refuse(
            request, 404, f"model: {model!r} does not exist here (this server embeds documents as {self.name!r} "
                          f"and queries as {self.name + QUERY_SUFFIX!r})", code="model_not_found")

    async def embed(self, request: Request, texts, side: str, dimensions: int | None) -> dict | Response:
        """The batch result for `texts` (embeddings, tokens, reasoning), or the error response."""
        refuse, dim = self.responder.refuse, self.engine.model.dim
        if not isinstance(texts, str) and any(not isinstance(t, str) for t in texts):
            return refuse(request, 400, "input: token ids are not accepted: t1 embeds text (send a string or a "
                                        "list of strings)")
        if dimensions is not None and dimensions != dim:
            return refuse(request, 400, f"dimensions: {self.name} embeds in {dim} dimensions and cannot shorten "
                                        f"them, got {dimensions} (leave dimensions out)")
        return await self.responder.embed(request, texts, queries=side == "queries", field="input")


def _vector(row: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return row.tolist()


def add_embedding_routes(app: FastAPI, responder) -> None:
    """Add the routes of both APIs to `app`, running their requests through `responder`."""
    embedder = Embedder(responder)
    refuse, model = responder.refuse, responder.engine.model

    # ---------------------------------------------------------------- OpenAI
    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": int(embedder.started), "owned_by": "t1"}

    @app.get("/v1/models", summary="OpenAI: the model's two names (documents, queries)", tags=["openai"])
    async def list_models():
        return {"object": "list", "data": [model_card(name) for name in embedder.sides]}

    @app.get("/v1/models/{name:path}", summary="OpenAI: one model", tags=["openai"])
    async def get_model(name: str, request: Request):
        return model_card(name) if name in embedder.sides else embedder.unknown_model(request, name)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, response_model_exclude_none=True, tags=["openai"],
              summary="OpenAI: embed documents, or queries (reasoning first) with <name>-query or input_type")
    async def embeddings(req: EmbeddingsRequest, request: Request):
        side = embedder.sides.get(req.model)
        if side is None:
            return embedder.unknown_model(request, req.model)
        if req.input_type is not None:
            wanted = INPUT_TYPES[req.input_type]
            if side == "queries" and wanted == "documents":
                return refuse(request, 400, f"input_type: {req.input_type!r} contradicts model {req.model!r}, which "
                                            f"embeds queries (name {embedder.name!r} for documents)")
            side = wanted
        result = await embedder.embed(request, req.input, side, req.dimensions)
        if isinstance(result, Response):
            return result
        data = [{"object": "embedding", "index": i, "embedding": _vector(row, req.encoding_format)}
                for i, row in enumerate(result["embeddings"])]
        for item, trace in zip(data, result.get("reasoning") or []):
            item["t1"] = {"reasoning": trace}
        tokens = sum(result["tokens"])
        return JSONResponse({"object": "list", "data": data, "model": req.model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # ---------------------------------------------------------------- Ollama
    def ollama_side(name: str) -> str | None:
        return embedder.sides.get(name.removesuffix(OLLAMA_TAG))

    @app.post("/api/embed", tags=["ollama"], summary="Ollama: embed documents, or queries with <name>-query",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": OllamaEmbedRequest.model_json_schema()}}}})
    async def ollama_embed(request: Request):
        start = time.perf_counter()
        try:  # the body is JSON whatever its Content-Type says, as Ollama reads it (`curl -d` sends a form's)
            req = OllamaEmbedRequest.model_validate_json(await request.body())
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        side = ollama_side(req.model)
        if side is None:
            return embedder.unknown_model(request, req.model)
        if not req.truncate:
            return refuse(request, 400, "truncate: false is not supported: t1 cuts each text to the model's length "
                                        f"({model.config.max_query_length} tokens for queries, "
                                        f"{responder.engine.doc_max_length or model.config.max_document_length} "
                                        "for documents)")
        result = await embedder.embed(request, req.input, side, req.dimensions)
        if isinstance(result, Response):
            return result
        body = {"model": req.model, "embeddings": result["embeddings"].tolist(),
                "total_duration": int((time.perf_counter() - start) * 1e9), "load_duration": 0,
                "prompt_eval_count": sum(result["tokens"])}
        if result.get("reasoning") is not None:
            body["t1"] = {"reasoning": result["reasoning"]}
        return JSONResponse(body)

    @app.get("/api/tags", tags=["ollama"], summary="Ollama: the model's two names")
    async def ollama_tags():
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(embedder.started))
        details = {"format": "t1", "family": "t1", "families": ["t1"], "parameter_size": "",
                   "quantization_level": ""}
        return {"models": [{"name": name + OLLAMA_TAG, "model": name + OLLAMA_TAG, "modified_at": stamp, "size": 0,
                            "digest": responder.engine.fingerprint, "details": details}
                           for name in embedder.sides]}

    @app.get("/api/version", tags=["ollama"], summary="Ollama: the server's version")
    async def ollama_version():
        from .. import __version__

        return {"version": __version__}
