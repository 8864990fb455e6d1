"""The trainable model every stage starts from, and checkpoints to resume it from.

A base causal LM gets a fresh LoRA adapter (or trains in full with `use_peft: false`); a saved
LoRA model keeps training its own adapter (or is merged, then trained in full); a fresh adapter
on a saved full-weights T1 model applies to that folder. The `<emb_token>` row trains with LoRA
through peft's `trainable_token_indices`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..backbones import has_adapter, saved_adapter
from ..errors import T1Error
from ..model import CONFIG_NAME, T1Model, quiet_peft
from ..settings import T1Config
from .model_config import ModelArguments

logger = logging.getLogger(__name__)

FIXED_SETTINGS = ("backbone", "emb_token", "format_version")
TRAINER_STATE = "trainer_state.json"


def lora_config(args: ModelArguments, t1: T1Model):
    from peft import LoraConfig

    base = t1.backbone
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in base.named_modules()}
    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    embed_name = names[id(embed)]
    trainable = None
    if embed_name not in (args.lora_modules_to_save or []):
        tied = head is None or head.weight is embed.weight
        # Tied LM head: peft ties its token adapter to the embedding's. Untied: train both rows,
        # since stage 2 teaches the model to *emit* <emb_token>.
        trainable = [t1.emb_token_id] if tied else {embed_name: [t1.emb_token_id], names[id(head)]: [t1.emb_token_id]}
    return LoraConfig(
        task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=args.target_modules, modules_to_save=args.lora_modules_to_save,
        trainable_token_indices=trainable,
    )


def apply_settings(t1: T1Model, args: ModelArguments) -> None:
    """The instructions and T1 settings to save with the trained model. A model trained from a
    checkpoint without t1 settings saves T1Config's own lengths (512), not the 8,192 tokens that
    such a checkpoint is read with for BRIGHT: `model_settings` sets others."""
    if T1Config.saved(args.model_name_or_path) is None:
        t1.config.max_query_length = T1Config.max_query_length
        t1.config.max_document_length = T1Config.max_document_length
    for key in ("query_instruction", "document_instruction"):
        if getattr(args, key) is not None:
            setattr(t1.config, key, getattr(args, key))
    for key, value in args.model_settings.items():
        if key in FIXED_SETTINGS or not hasattr(t1.config, key):
            raise T1Error(f"model_settings.{key} is not a T1 setting that training may change")
        setattr(t1.config, key, value)


def build_model(args: ModelArguments, device: torch.device | str | None = None, seed: int = 42) -> T1Model:
    """The starting model, made trainable. A fresh adapter's initial weights come from `seed`,
    not from whatever the process drew before (which can vary from process to process)."""
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    t1 = T1Model.from_pretrained(args.model_name_or_path, device=device, dtype=dtype, merge_adapter=False)
    apply_settings(t1, args)
    if has_adapter(t1.backbone):
        if not args.use_peft:
            t1.backbone = t1.backbone.merge_and_unload()
            t1.backbone.requires_grad_(True)
        else:
            logger.info("%s has a LoRA adapter: training it further (its rank and targets are kept)",
                        args.model_name_or_path)
            t1.backbone.set_requires_grad(t1.backbone.active_adapter, True)
    elif args.use_peft:
        from peft import get_peft_model

        if (Path(args.model_name_or_path) / CONFIG_NAME).exists():
            # A fresh adapter on a saved full-weights T1 model applies to that folder, not to
            # the base the folder itself started from.
            t1.config.backbone = str(Path(args.model_name_or_path).resolve())
        with torch.random.fork_rng(devices=[]), quiet_peft():
            torch.manual_seed(seed)
            t1.backbone = get_peft_model(t1.backbone, lora_config(args, t1))
    t1.train()
    return t1


def merged_start(args: ModelArguments, output_dir: str | Path) -> ModelArguments:
    """For vLLM, which loads the starting weights from disk: a LoRA folder merged once into
    `<output_dir>/start` (full weights), on which a fresh adapter then trains."""
    from dataclasses import replace

    from accelerate import PartialState

    folder = Path(args.model_name_or_path)
    if not saved_adapter(folder):
        return args
    start = Path(output_dir) / "start"
    with PartialState().main_process_first():
        if not (start / CONFIG_NAME).exists():
            merged = T1Model.from_pretrained(str(folder), device="cpu")
            merged.save_pretrained(start)
    return replace(args, model_name_or_path=str(start))


def resolve_resume(output_dir: str | Path, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint to resume from: the one named, else the newest complete one in
    `output_dir` (None when there is none). Every stage resumes by default: re-running a command
    continues it. The Trainer writes a checkpoint file by file, `trainer_state.json` last, so a
    process killed while saving leaves a folder without a readable state: it is passed over."""
    if resume_from_checkpoint:
        if not is_complete_checkpoint(resume_from_checkpoint):
            raise T1Error(f"resume_from_checkpoint: {resume_from_checkpoint}: not a complete checkpoint folder")
        return str(resume_from_checkpoint)
    folder = Path(output_dir)
    steps = {p: p.name.removeprefix("checkpoint-") for p in folder.glob("checkpoint-*")} if folder.is_dir() else {}
    candidates = sorted((p for p, step in steps.items() if step.isdigit()), key=lambda p: int(steps[p]), reverse=True)
    for checkpoint in candidates:
        if is_complete_checkpoint(checkpoint):
            return str(checkpoint)
        logger.warning("%s is incomplete (the run was killed while saving it): passed over", checkpoint)
    return None


def is_complete_checkpoint(folder: str | Path) -> bool:
    try:
        json.loads((Path(folder) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def load_weights(t1: T1Model, folder: str | Path) -> None:
    """Load the trained weights of a checkpoint folder into `t1` in place (for resuming)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    adapter = folder / "adapter_model.safetensors"
    if has_adapter(t1.backbone):
        from peft import set_peft_model_state_dict

        if not adapter.exists():
            raise T1Error(f"{folder}: no adapter_model.safetensors to resume the LoRA adapter from")
        result = set_peft_model_state_dict(t1.backbone, load_file(adapter))
        if result.unexpected_keys:
            raise T1Error(f"{folder}: adapter does not match the model ({result.unexpected_keys[0]!r})")
        return
    files = sorted(f for f in folder.glob("*.safetensors") if f.name != adapter.name)
    if not files:
        raise T1Error(f"{folder}: no model weights to resume from")
    for file in files:
        _, unexpected = t1.backbone.load_state_dict(load_file(file), strict=False)
        if unexpected:
            raise T1Error(f"{file}: weights do not match the model ({unexpected[0]!r})")
