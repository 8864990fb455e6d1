"""sentence-transformers' argument names on `T1Model.encode_query` / `encode_document`.

Code written for a `SentenceTransformer` (mteb, LangChain, a user's script) passes `prompt`,
`prompt_name`, `normalize_embeddings`, `convert_to_numpy`, `convert_to_tensor` and `device`.
They mean here what they mean there, and are turned into t1's settings in this one place, as
sentence-transformers' own compatibility shims turn old names into new ones: `prompt` is the
instruction, `prompt_name` names one (`T1Model.instruction_for`), `normalize_embeddings` is
`normalize`, `device` moves the model, and the `convert_to_*` flags choose the output's form.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .errors import T1Error
from .settings import GIVEN, QuerySettings

ST_NAMES = ("prompt", "prompt_name", "normalize_embeddings", "convert_to_numpy", "convert_to_tensor", "device")
QUERY_FIELDS = frozenset(f.name for f in fields(QuerySettings))


@dataclass(frozen=True)
class Output:
    """The form sentence-transformers' flags ask for: unset both, t1's own result."""

    convert_to_numpy: bool | None = None
    convert_to_tensor: bool | None = None

    @property
    def plain(self) -> bool:
        return self.convert_to_numpy is None and self.convert_to_tensor is None

    def apply(self, emb: np.ndarray, device):
        """`convert_to_tensor` wins (a tensor on the model's device); `convert_to_numpy=False`
        gives a list of tensors (one tensor for a single input); else the float32 array."""
        if self.convert_to_tensor:
            return torch.from_numpy(emb).to(device)
        if self.convert_to_numpy is False:
            tensor = torch.from_numpy(emb).to(device)
            return list(tensor) if tensor.ndim == 2 else tensor
        return emb


def query_call(model, settings: QuerySettings | None, options: dict, method: str = "encode_query"):
    """(settings, given traces, output form) of one `encode_query` call: `options` are
    `QuerySettings` fields by name (`reasoning` may also be a list of traces, one per query) and
    sentence-transformers' names; each is read once, here."""
    options = dict(options)
    output = _output(options)
    instruction = instruction_from(model, "query", options)
    normalize = _same("normalize", options.pop("normalize", None), "normalize_embeddings",
                      options.pop("normalize_embeddings", None))
    given = None
    if options.get("reasoning") is not None and not isinstance(options["reasoning"], str):
        given, options["reasoning"] = list(options["reasoning"]), GIVEN
    unknown = sorted(set(options) - QUERY_FIELDS)
    if unknown:
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
    changes = {k: v for k, v in options.items() if v is not None}
    if instruction is not None:
        changes["instruction"] = instruction
    if normalize is not None:
        changes["normalize"] = normalize
    settings = replace(settings, **changes) if settings is not None else QuerySettings(**changes)
    return settings, given, output


def document_call(model, instruction, normalize, options: dict):
    """(instruction, normalize, output form) of one `encode_document` call with
    sentence-transformers' `options`."""
    options = dict(options)
    unknown = sorted(set(options) - set(ST_NAMES))
    if unknown:
        raise TypeError(f"encode_document() got an unexpected keyword argument {unknown[0]!r}")
    output = _output(options)
    options["instruction"] = instruction
    instruction = instruction_from(model, "document", options)
    normalize = _same("normalize", normalize, "normalize_embeddings", options.pop("normalize_embeddings", None))
    return instruction, normalize, output


def instruction_from(model, side: str, options: dict) -> str | None:
    """`instruction`, or `prompt` (the same thing), or the instruction `prompt_name` names; as
    in sentence-transformers, a prompt given outright wins over `prompt_name`. Moves the model
    when `device` is given. Pops what it reads from `options`."""
    instruction, prompt = options.pop("instruction", None), options.pop("prompt", None)
    prompt_name = options.pop("prompt_name", None)
    _move(model, options.pop("device", None))
    if prompt is not None and instruction is not None and prompt != instruction:
        raise T1Error("pass the instruction as `instruction` or as `prompt`, not both")
    if prompt is not None:
        return prompt
    if instruction is None and prompt_name is not None:
        return model.instruction_for(prompt_name, side)
    return instruction


def _output(options: dict) -> Output:
    return Output(options.pop("convert_to_numpy", None), options.pop("convert_to_tensor", None))


def _move(model, device) -> None:
    """sentence-transformers' `device`: encode there, moving the model."""
    if device is None:
        return
    if isinstance(device, (list, tuple)):
        raise T1Error("multi-process encoding over a list of devices is not supported; pass one device")
    device = torch.device(device)
    current = model.device
    if device.type != current.type or (device.index is not None and device.index != current.index):
        model.to(device)
        model.use_engine(model.engine.name)  # an engine may hold weights of its own on the old device


def _same(name: str, value, alias: str, alias_value):
    """One setting passed under its t1 name or its sentence-transformers alias."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise T1Error(f"{name}={value!r} and {alias}={alias_value!r} disagree; pass one")
    return alias_value
