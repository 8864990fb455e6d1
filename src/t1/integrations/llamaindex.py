"""T1 as a LlamaIndex `BaseEmbedding`: `T1Embedding`.

Texts (nodes) are embedded by `T1Model.encode_document`, one pass each; queries by
`T1Model.encode_query`, after the model reasons. The trace of the last query is in
`last_reasoning`.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
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
