"""T1 as a LangChain `Embeddings` (`T1Embeddings`), and a t1 index folder as a LangChain
`VectorStore` (`T1VectorStore`: add, delete and search without rebuilding).

`embed_documents` is `T1Model.encode_document` (one pass each); `embed_query` is
`T1Model.encode_query` (the model reasons, then embeds), so any LangChain vector store or
retriever searches with reasoning queries. The trace of the last query is in `last_reasoning`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("langchain-core is not installed: pip install 't1[langchain]'") from e

from ..backbones import DEFAULT_MODEL
from ..model import load_model

if TYPE_CHECKING:
    from ..model import T1Model


class T1Embeddings(Embeddings):
    """`model`: a loaded `T1Model` or a name for `T1Model.from_pretrained` (other keyword
    arguments are T1 settings for loading). `query_instruction` / `document_instruction`:
    None for the model's own; `prompt_name`: a named instruction instead (e.g. a BRIGHT task,
    see `T1Model.instruction_for`); `reasoning`: "generate" or "none"."""

    def __init__(
        self,
        model: str | T1Model = DEFAULT_MODEL,
        *,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        prompt_name: str | None = None,
        reasoning: str = "generate",
        max_new_tokens: int | None = None,
        batch_size: int = 32,
        query_batch_size: int = 8,
        device: str | None = None,
        **settings: Any,
    ) -> None:
        self.model = load_model(model, device, **settings)
        self.query_instruction = query_instruction
        self.document_instruction = document_instruction
        self.prompt_name = prompt_name
        self.reasoning = reasoning
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.query_batch_size = query_batch_size
        self.last_reasoning: str | None = None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        emb = self.model.encode_document(list(texts), instruction=self.document_instruction,
                                         prompt_name=self.prompt_name, batch_size=self.batch_size)
        return emb.tolist()

    def embed_query(self, text: str) -> list[float]:
        out = self.model.encode_query(text, instruction=self.query_instruction, prompt_name=self.prompt_name,
                                      reasoning=self.reasoning, max_new_tokens=self.max_new_tokens,
                                      batch_size=self.query_batch_size)
        self.last_reasoning = out.reasoning
        return out.embeddings.tolist()


class T1VectorStore(VectorStore):
    """A LangChain `VectorStore` over a t1 index folder (`t1.index.Index`), thin over its update
    API: `add_texts` / `add_documents` upsert by id (a new generation; unchanged texts are
    skipped), `delete(ids)` tombstones, `similarity_search` embeds the query with
    `embedding` (reasoning first) and searches the newest generation. A missing folder is built
    by the first `add_texts`. The folder keeps each document's title (from metadata "title")
    and a snippet, not the rest of the metadata: hits carry `page_content` = the snippet."""

    def __init__(self, folder, embedding: T1Embeddings) -> None:
        from pathlib import Path

        from ..index.folder import open_built

        self.folder = Path(folder)
        self.embedding = embedding
        self._index = open_built(self.folder)

    @property
    def embeddings(self) -> T1Embeddings:
        return self.embedding

    @property
    def index(self):
        """The newest generation of the index (None before anything was added)."""
        if self._index is not None:
            self._index = self._index.reopen()
        return self._index

    def add_texts(self, texts, metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        import uuid

        from ..data import Document
        from ..index.folder import upsert_or_build

        texts = list(texts)
        ids = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in texts]
        metadatas = metadatas or [{} for _ in texts]
        docs = [Document(i, t, str((m or {}).get("title", ""))) for i, t, m in zip(ids, texts, metadatas, strict=True)]
        self._index = upsert_or_build(self.index, self.embedding.model, docs, self.folder,
                                      self.embedding.document_instruction)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if not ids or self.index is None:
            return False
        return bool(self._index.delete(ids).deleted)

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any):
        from langchain_core.documents import Document as LCDocument

        if self.index is None or not len(self._index):
            return []
        emb = self.embedding.embed_query(query)
        hits = self._index.search([emb], k=k, exclude=kwargs.get("exclude"))[0]
        return [(LCDocument(page_content=h.snippet, metadata={"title": h.title}, id=h.id), h.score) for h in hits]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any):
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    @classmethod
    def from_texts(cls, texts, embedding: T1Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, folder=None, **kwargs: Any) -> "T1VectorStore":
        if folder is None:
            raise ValueError("T1VectorStore.from_texts needs folder=: the index folder to write")
        store = cls(folder, embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store
