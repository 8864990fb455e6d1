"""T1 as a LlamaIndex `BaseEmbedding` (`T1Embedding`), and a t1 index folder as a LlamaIndex
vector store (`T1VectorStore`: add, delete and query without rebuilding).

Texts (nodes) are embedded by `T1Model.encode_document`, one pass each; queries by
`T1Model.encode_query`, after the model reasons. The trace of the last query is in
`last_reasoning`.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.vector_stores.types import BasePydanticVectorStore
    from pydantic import Field, PrivateAttr
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("llama-index-core is not installed: pip install 't1[llamaindex]'") from e

from ..backbones import DEFAULT_MODEL
from ..model import load_model


class T1Embedding(BaseEmbedding):
    """`model`: a loaded `T1Model` or a name for `T1Model.from_pretrained` (`device` and
    `settings` apply when loading by name). The fields below select instructions and
    reasoning as in `T1Model.encode_query`; `embed_batch_size` is the document batch."""

    query_instruction: str | None = Field(default=None, description="None: the model's query instruction")
    document_instruction: str | None = Field(default=None, description="None: the model's document instruction")
    prompt_name: str | None = Field(default=None, description="a named instruction, e.g. a BRIGHT task")
    reasoning: str = Field(default="generate", description="'generate' or 'none'")
    max_new_tokens: int | None = Field(default=None, description="trace limit (None: the model's)")
    query_batch_size: int = Field(default=8, description="queries generated together")
    last_reasoning: str | None = Field(default=None, description="the trace of the last query")
    _model: Any = PrivateAttr()

    def __init__(self, model: Any = DEFAULT_MODEL, *, device: str | None = None,
                 settings: dict | None = None, **kwargs: Any) -> None:
        t1 = load_model(model, device, **(settings or {}))
        kwargs.setdefault("model_name", t1.name_or_path)
        super().__init__(**kwargs)
        self._model = t1

    @classmethod
    def class_name(cls) -> str:
        return "T1Embedding"

    @property
    def model(self):
        return self._model

    def _get_query_embedding(self, query: str) -> list[float]:
        out = self._model.encode_query(query, instruction=self.query_instruction, prompt_name=self.prompt_name,
                                       reasoning=self.reasoning, max_new_tokens=self.max_new_tokens,
                                       batch_size=self.query_batch_size)
        self.last_reasoning = out.reasoning
        return out.embeddings.tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        emb = self._model.encode_document(list(texts), instruction=self.document_instruction,
                                          prompt_name=self.prompt_name, batch_size=self.embed_batch_size)
        return emb.tolist()


class T1VectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a t1 index folder (`t1.index.Index`), thin over its update
    API: `add(nodes)` upserts each node under its `node_id` (embedded by the T1 model as the
    index embeds documents: the node's text, its metadata "title" as title), `delete(ref_doc_id)`
    deletes the document stored under that id, `delete_nodes(node_ids)` several, and `query`
    searches the newest generation with the query embedding (from `T1Embedding`, reasoning
    first). A missing folder is built by the first `add`. Nodes come back as `TextNode`s holding
    the stored snippet and title."""

    stores_text: bool = True
    folder: str = Field(description="the index folder")
    _model: Any = PrivateAttr()
    _index: Any = PrivateAttr(default=None)

    def __init__(self, folder, model: Any, **kwargs: Any) -> None:
        from ..index.folder import open_built

        super().__init__(folder=str(folder), **kwargs)
        self._model = model.model if isinstance(model, T1Embedding) else load_model(model)
        self._index = open_built(folder)

    @classmethod
    def class_name(cls) -> str:
        return "T1VectorStore"

    @property
    def client(self):
        """The newest generation of the index (None before anything was added)."""
        if self._index is not None:
            self._index = self._index.reopen()
        return self._index

    def add(self, nodes, **kwargs: Any) -> list[str]:
        from ..data import Document
        from ..index.folder import upsert_or_build

        docs = [Document(n.node_id, n.get_content(), str(n.metadata.get("title", ""))) for n in nodes]
        self._index = upsert_or_build(self.client, self._model, docs, self.folder)
        return [d.id for d in docs]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        if self.client is not None:
            self._index.delete([ref_doc_id])

    def delete_nodes(self, node_ids: list[str] | None = None, filters=None, **delete_kwargs: Any) -> None:
        if filters is not None:
            raise NotImplementedError("T1VectorStore deletes by id only")
        if node_ids and self.client is not None:
            self._index.delete(node_ids)

    def query(self, query, **kwargs: Any):
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores.types import VectorStoreQueryResult

        if self.client is None or not len(self._index) or query.query_embedding is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        hits = self._index.search([query.query_embedding], k=query.similarity_top_k)[0]
        nodes = [TextNode(id_=h.id, text=h.snippet, metadata={"title": h.title}) for h in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits])
