"""T1 as a LangChain `Embeddings`: `T1Embeddings`.

`embed_documents` is `T1Model.encode_document` (one pass each); `embed_query` is
`T1Model.encode_query` (the model reasons, then embeds), so any LangChain vector store or
retriever searches with reasoning queries. The trace of the last query is in `last_reasoning`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from langchain_core.embeddings import Embeddings
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
