"""T1 as an mteb (>= 2.10) encoder: `T1Encoder`.

mteb calls `encode` with the task's metadata and a prompt type. Queries (`PromptType.query`)
reason and then embed (`T1Model.encode_query`); documents, and every input of a task without a
query/document split, take one forward pass (`T1Model.encode_document`). The instruction comes
from the task, in this order:

1. `model_prompts`, keyed as mteb keys prompts ("TaskName-query", "TaskName", "Retrieval-query",
   "Retrieval", "query"/"document");
2. a BRIGHT task (mteb's BrightBiologyRetrieval ... BrightTheoremQATheoremsRetrieval, their Long
   variants, and the superseded BrightRetrieval/BrightLongRetrieval by subset): the model's
   instruction for that task (`T1Model.instruction_for`, as `t1 bright` does): its settings'
   `tasks` entry, else for queries BRIGHT's instruction in place of mteb's "Represent this ...
   post for searching relevant passages:" prompt, and for documents the model's document
   instruction;
3. the task's own prompt (`TaskMetadata.prompt`), without a trailing colon;
4. the model's query or document instruction.

BRIGHT's excluded ids reach the model as mteb's `top_ranked` candidates (mteb's BRIGHT v1.1 tasks
list every document but the excluded ones), which mteb's search scores instead of the whole
corpus: an excluded document is never ranked. The superseded BrightRetrieval task has no
exclusions; use the per-domain tasks of the "BRIGHT(v1.1)" benchmark.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

try:
    from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("mteb is not installed: pip install 't1[mteb]'") from e

from ..backbones import DEFAULT_MODEL
from ..bright_tasks import BRIGHT_TASKS
from ..model import load_model

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader

    from ..model import T1Model

_BRIGHT_KEYS = {t.replace("_", ""): t for t in BRIGHT_TASKS}  # "earthscience" -> "earth_science"


def bright_task(task_name: str, hf_subset: str | None = None) -> tuple[str, bool] | None:
    """(BRIGHT task, long documents) of an mteb task name, or None for any other task."""
    whole = re.fullmatch(r"Bright(Long)?Retrieval", task_name)
    if whole:
        return (hf_subset, bool(whole[1])) if hf_subset in BRIGHT_TASKS else None
    m = re.fullmatch(r"Bright(\w+?)(Long)?Retrieval", task_name)
    if m and m[1].lower() in _BRIGHT_KEYS:
        return _BRIGHT_KEYS[m[1].lower()], bool(m[2])
    return None


class T1Encoder(AbsEncoder):
    """An mteb encoder over a `T1Model` (or a name `T1Model.from_pretrained` loads).

    `reasoning`: "generate" (default) or "none" for queries; `max_new_tokens`: the trace limit
    (default: the model's); `query_batch_size`: generation batch (default: mteb's batch_size);
    `model_prompts`: instructions by mteb key (see the module docstring); `cache`: a
    `t1.reasoning_cache.ReasoningCache`, so that a re-run generates no trace twice;
    `max_query_length` / `max_document_length`: token limits (default: the model's; a
    checkpoint without t1_config.json has BRIGHT's 8,192), which also apply to a model passed
    loaded. Other keyword arguments are T1 settings for loading (e.g. `do_sample=True`). The
    traces of each task's queries are kept in `traces[task_name]`, in mteb's query order."""

    def __init__(
        self,
        model_name: str | T1Model = DEFAULT_MODEL,
        revision: str | None = None,
        *,
        device: str | None = None,
        reasoning: str = "generate",
        max_new_tokens: int | None = None,
        query_batch_size: int | None = None,
        model_prompts: dict[str, str] | None = None,
        cache=None,
        max_query_length: int | None = None,
        max_document_length: int | None = None,
        **settings: Any,
    ) -> None:
        self.model = load_model(model_name, device, **settings)
        self.max_query_length = max_query_length or self.model.config.max_query_length
        self.max_document_length = max_document_length or self.model.config.max_document_length
        self.reasoning = reasoning
        self.max_new_tokens = max_new_tokens
        self.query_batch_size = query_batch_size
        self.model_prompts = dict(model_prompts or {})
        self.cache = cache
        self.traces: dict[str, list[str]] = {}
        name = self.model.name_or_path
        hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name if hub_id else f"t1/{name.rstrip('/').split('/')[-1]}",
            "revision": revision or self.model.fingerprint(),
            "embed_dim": self.model.dim,
            "max_tokens": self.max_document_length,
            "n_parameters": sum(p.numel() for p in self.model.backbone.parameters()),
            "similarity_fn_name": ScoringFunction.COSINE,
            "use_instructions": True,
            "framework": ["PyTorch", "Transformers"],
            "reference": f"https://huggingface.co/{name}" if hub_id else None,
        })

    def instruction(self, task_metadata: TaskMetadata, prompt_type: PromptType | None,
                    hf_subset: str | None = None) -> str:
        """The instruction T1 uses for this task and side (see the module docstring)."""
        query = prompt_type == PromptType.query
        name = get_prompt_name(self.model_prompts, task_metadata, prompt_type) if self.model_prompts else None
        if name:
            return self.model_prompts[name]
        bright = bright_task(task_metadata.name, hf_subset)
        if bright:
            task, long = bright
            return self.model.instruction_for(f"{task}_long" if long else task, "query" if query else "document")
        prompt = task_metadata.prompt
        if isinstance(prompt, dict):
            prompt = prompt.get(prompt_type.value) if prompt_type else None
        if prompt and prompt.strip():
            return prompt.strip().removesuffix(":").rstrip()
        return self.model.config.query_instruction if query else self.model.config.document_instruction

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ):
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = self.instruction(task_metadata, prompt_type, hf_subset)
        batch_size = kwargs.get("batch_size") or 32
        progress = kwargs.get("show_progress_bar")
        if prompt_type == PromptType.query:
            out = self.model.encode_query(texts, instruction=instruction, reasoning=self.reasoning,
                                          max_new_tokens=self.max_new_tokens, max_length=self.max_query_length,
                                          batch_size=self.query_batch_size or batch_size,
                                          show_progress_bar=progress, cache=self.cache)
            self.traces.setdefault(task_metadata.name, []).extend(out.reasoning)
            return out.embeddings
        return self.model.encode_document(texts, instruction=instruction, batch_size=batch_size,
                                          max_length=self.max_document_length, show_progress_bar=progress)
