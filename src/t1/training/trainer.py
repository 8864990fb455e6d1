"""transformers `Trainer` for the two first stages of T1.

Stage 1 (`reasoning=False`): queries in mode `none` (prompt + <emb_token>), InfoNCE against the
in-batch and hard-negative documents of the global batch. Stage 2 (`reasoning=True`): one
forward pass over prompt + reasoning + <emb_token> gives both the query embedding and the
next-token loss of the trace and its final <emb_token>; loss = λ·InfoNCE + (1−λ)·NLL.

Everything distributed is the Trainer's (accelerate: DDP, mixed precision, gradient
accumulation, checkpoints); the only cross-process step of our own is the all-gather of
embeddings in `losses.info_nce`. With `grad_cache_chunk_size`, `training_step` runs
gradient caching (Gao et al., 2021): embeddings of the whole batch are computed without a
graph, the loss gives their gradients, then each chunk is re-encoded with a graph and
back-propagates its share, so the negatives of a large batch cost the memory of one chunk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..errors import T1Error
from ..model import CONFIG_NAME, T1Model
from .collator import Collator, RecordDataset
from .config import TrainConfig
from .losses import all_sum, count_targets, info_nce, next_token_nll, with_value, world
from .records import read_records

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("query_input_ids", "query_attention_mask", "query_labels", "doc_input_ids", "doc_attention_mask")
TRAINING_ARGS_NAME = "training_args.bin"


def _is_peft(module) -> bool:
    return hasattr(module, "peft_config")


class T1ForTraining(torch.nn.Module):
    """What the Trainer (and DDP) wraps: one forward call encodes queries and/or documents."""

    def __init__(self, t1: T1Model):
        super().__init__()
        self.t1 = t1

    def forward(self, query_input_ids=None, query_attention_mask=None, query_labels=None,
                doc_input_ids=None, doc_attention_mask=None) -> dict[str, torch.Tensor]:
        out = {}
        if query_input_ids is not None:
            hidden = self.t1.hidden_states(query_input_ids)
            out["query"] = self.t1.pool(hidden, query_attention_mask)
            if query_labels is not None:
                out["nll"] = next_token_nll(hidden, query_labels, self.t1.backbone.get_output_embeddings())
        if doc_input_ids is not None:
            out["docs"] = self.t1.embed(doc_input_ids, doc_attention_mask)
        return out

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        backbone = self.t1.backbone
        base = backbone.get_base_model() if _is_peft(backbone) else backbone
        base.activation_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload)


class _EpochCallback(TrainerCallback):
    """Tells the dataset the epoch, so each epoch draws other positives and negatives."""

    def __init__(self, dataset: RecordDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = math.floor((state.epoch or 0) + 1e-6)


class _RngState:
    """CPU/CUDA random state captured before a chunk's first forward pass and replayed for its
    second, so dropout masks match between the two passes of gradient caching."""

    def __init__(self, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            yield


class T1Trainer(Trainer):
    loss_is_scaled_for_ga = False  # training_step divides by the accumulation steps

    def __init__(self, *args, t1_config: TrainConfig, reasoning: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.t1_config = t1_config
        self.reasoning = reasoning
        self._parts: dict[str, list[float]] = defaultdict(list)

    # ------------------------------------------------------------------ losses
    def _combine(self, out: dict, inputs: dict) -> torch.Tensor:
        """Total loss from the encoded batch (gradients flow into out["query"/"docs"/"nll"])."""
        q, d = out["query"], out["docs"]
        contrastive = self._contrastive(q, d, inputs)
        if not self.reasoning:
            return contrastive
        tokens = _target_tokens(inputs)
        nll = with_value(out["nll"] * world()[1] / tokens, all_sum(out["nll"]) / tokens)  # scaled like InfoNCE
        self._parts["lm_loss"].append(nll.item())
        weight = self.t1_config.contrastive_weight
        return weight * contrastive + (1 - weight) * nll

    def _contrastive(self, q: torch.Tensor, d: torch.Tensor, inputs: dict) -> torch.Tensor:
        loss, accuracy = info_nce(q, d, d.shape[0] // q.shape[0], self.t1_config.temperature,
                                  inputs.get("positive_keys"), inputs.get("doc_keys"))
        self._parts["contrastive_loss"].append(loss.item())
        self._parts["accuracy"].append(accuracy.item())
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**_model_inputs(inputs))
        loss = self._combine(out, inputs)
        return (loss, out) if return_outputs else loss

    # ------------------------------------------------------------------ gradient caching
    def training_step(self, model, inputs, num_items_in_batch=None):
        chunk = self.t1_config.grad_cache_chunk_size
        if not chunk or chunk >= inputs["query_input_ids"].shape[0]:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        return self._grad_cache_step(model, self._prepare_inputs(inputs), chunk)

    def _grad_cache_step(self, model, inputs: dict, chunk: int) -> torch.Tensor:
        n_queries = inputs["query_input_ids"].shape[0]
        group = inputs["doc_input_ids"].shape[0] // n_queries
        pieces = [_slice(inputs, start, min(start + chunk, n_queries), group) for start in range(0, n_queries, chunk)]
        # 1. Embeddings of the whole batch without a graph, and the loss's gradient w.r.t. them.
        states, embedded = [], []
        with torch.no_grad():
            for piece in pieces:
                states.append(_RngState(self.args.device))
                with self.compute_loss_context_manager():
                    embedded.append(model(**_model_inputs(piece, labels=False)))
        q = torch.cat([e["query"] for e in embedded]).requires_grad_()
        d = torch.cat([e["docs"] for e in embedded]).requires_grad_()
        weight = self.t1_config.contrastive_weight if self.reasoning else 1.0
        contrastive = self._contrastive(q, d, inputs)
        grad_q, grad_d = torch.autograd.grad(weight * contrastive, [q, d])
        # 2. Each chunk again, with a graph: back-propagate its embeddings' gradients (and its
        #    share of the next-token loss). Only the last backward all-reduces the gradients.
        tokens = _target_tokens(inputs) if self.reasoning else None
        steps = self.current_gradient_accumulation_steps
        nll_sum = torch.zeros((), device=q.device)
        for i, (piece, state) in enumerate(zip(pieces, states)):
            sync = contextlib.nullcontext() if i == len(pieces) - 1 else self.accelerator.no_sync(model)
            with sync:
                with state.replay(), self.compute_loss_context_manager():
                    out = model(**_model_inputs(piece))
                    q_rows = slice(i * chunk, i * chunk + out["query"].shape[0])
                    d_rows = slice(q_rows.start * group, q_rows.stop * group)
                    surrogate = (out["query"] * grad_q[q_rows]).sum() + (out["docs"] * grad_d[d_rows]).sum()
                    if self.reasoning:
                        surrogate = surrogate + (1 - weight) * out["nll"] * world()[1] / tokens
                        nll_sum += out["nll"].detach()
                self.accelerator.backward(surrogate / steps)
        loss = weight * contrastive.detach()
        if self.reasoning:
            nll = all_sum(nll_sum) / tokens
            self._parts["lm_loss"].append(nll.item())
            loss = loss + (1 - weight) * nll
        return loss / steps

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the LoRA <emb_token> row in its own group when
        `emb_token_learning_rate` is set (the scheduler then scales that group's rate too)."""
        optimizer = super().create_optimizer(model)
        rate = self.t1_config.emb_token_learning_rate
        if rate is None or getattr(self, "_token_group_added", False):
            return optimizer
        token = {id(p) for n, p in (model or self.model).named_parameters()
                 if p.requires_grad and "trainable_tokens_delta" in n}
        if not token:
            logger.warning("emb_token_learning_rate is set but no LoRA token row trains (full fine-tuning?): ignored")
            return optimizer
        moved = []
        for group in optimizer.param_groups:
            moved += [p for p in group["params"] if id(p) in token]
            group["params"] = [p for p in group["params"] if id(p) not in token]
        optimizer.add_param_group({"params": moved, "lr": rate, "weight_decay": 0.0})
        self._token_group_added = True
        return optimizer

    # ------------------------------------------------------------------ logging, saving, resuming
    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._parts:
            logs.update({k: round(sum(v) / len(v), 4) for k, v in self._parts.items() if v})
            self._parts.clear()
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save a folder `T1Model.from_pretrained` loads (full weights or LoRA adapter)."""
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        self.accelerator.unwrap_model(self.model).t1.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights(self.accelerator.unwrap_model(model or self.model).t1, resume_from_checkpoint)


def _model_inputs(inputs: dict, labels: bool = True) -> dict:
    return {k: inputs[k] for k in MODEL_INPUTS if k in inputs and (labels or k != "query_labels")}


def _target_tokens(inputs: dict) -> torch.Tensor:
    """Labelled (next-token) positions in the global batch."""
    return all_sum(count_targets(inputs["query_labels"])).clamp(min=1)


def _slice(inputs: dict, start: int, stop: int, group: int) -> dict:
    """Queries [start, stop) with their documents."""
    out = {}
    for key, value in inputs.items():
        if key.startswith("query_") or key == "positive_keys":
            out[key] = value[start:stop]
        elif key.startswith("doc_"):
            out[key] = value[start * group: stop * group]
    return out


def load_weights(t1: T1Model, folder: str | Path) -> None:
    """Load the trained weights of a checkpoint folder into `t1` in place (for resuming)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    adapter = folder / "adapter_model.safetensors"
    if _is_peft(t1.backbone):
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


# ---------------------------------------------------------------------- building and running
def lora_config(settings, t1: T1Model):
    from peft import LoraConfig

    base = t1.backbone
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in base.named_modules()}
    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    embed_name = names[id(embed)]
    trainable = None
    if embed_name not in (settings.modules_to_save or []):
        tied = head is None or head.weight is embed.weight
        # Tied LM head: peft ties its token adapter to the embedding's. Untied: train both rows,
        # since stage 2 teaches the model to *emit* <emb_token>.
        trainable = [t1.emb_token_id] if tied else {embed_name: [t1.emb_token_id], names[id(head)]: [t1.emb_token_id]}
    return LoraConfig(
        task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=settings.target_modules, modules_to_save=settings.modules_to_save,
        trainable_token_indices=trainable,
    )


def build_model(config: TrainConfig, device: torch.device | str | None = None) -> T1Model:
    """The starting model, made trainable. A base causal LM gets a fresh LoRA adapter (or is
    fully trained with `lora: null`); a saved LoRA model keeps training its adapter (or is
    merged, then fully trained, with `lora: null`)."""
    dtype = None if config.dtype == "auto" else getattr(torch, config.dtype)
    t1 = T1Model.from_pretrained(config.model, device=device, dtype=dtype)
    for key in ("query_instruction", "document_instruction"):
        if getattr(config, key) is not None:
            setattr(t1.config, key, getattr(config, key))
    for key, value in (config.model_settings or {}).items():
        if key in ("backbone", "emb_token", "format_version") or not hasattr(t1.config, key):
            raise T1Error(f"config: model_settings.{key} is not a T1 setting that training may change")
        setattr(t1.config, key, value)
    if _is_peft(t1.backbone):
        if config.lora is None:
            t1.backbone = t1.backbone.merge_and_unload()
            t1.backbone.requires_grad_(True)
        else:
            logger.info("%s has a LoRA adapter: training it further (its rank and targets are kept)", config.model)
            t1.backbone.set_requires_grad(t1.backbone.active_adapter, True)
    elif config.lora is not None:
        from peft import get_peft_model

        if (Path(config.model) / CONFIG_NAME).exists():
            # A fresh adapter on a saved full-weights T1 model applies to that folder, not to
            # the base the folder itself started from.
            t1.config.backbone = str(Path(config.model).resolve())
        t1.backbone = get_peft_model(t1.backbone, lora_config(config.lora, t1))
    t1.train()
    return t1


def resolve_resume(config: TrainConfig) -> str | None:
    if not config.resume:
        return None
    if config.resume is True:
        last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if last is None:
            logger.info("no checkpoint in %s: starting from scratch", config.output_dir)
        return last
    if not Path(config.resume).is_dir():
        raise T1Error(f"resume: {config.resume}: no such checkpoint folder")
    return str(config.resume)


def make_trainer(config: TrainConfig, reasoning: bool, t1: T1Model | None = None, callbacks=()) -> T1Trainer:
    args = config.training_arguments()
    records = read_records(config.train_file, require_reasoning=reasoning)
    global_batch = args.per_device_train_batch_size * args.world_size
    if len(records) < global_batch:
        raise T1Error(f"{config.train_file}: {len(records)} records, fewer than one global batch ({global_batch})")
    t1 = t1 or build_model(config, device=args.device)
    dataset = RecordDataset(records, config.negatives_per_query, seed=args.seed)
    collator = Collator(
        prompts=t1.prompts, pad_id=t1.tokenizer.pad_token_id,
        query_instruction=t1.config.query_instruction, document_instruction=t1.config.document_instruction,
        max_query_length=config.max_query_length, max_document_length=config.max_document_length,
        max_reasoning_length=config.max_reasoning_length, reasoning=reasoning,
    )
    return T1Trainer(
        model=T1ForTraining(t1), args=args, data_collator=collator, train_dataset=dataset,
        callbacks=[_EpochCallback(dataset), *callbacks], t1_config=config, reasoning=reasoning,
    )


def train(config: TrainConfig, reasoning: bool) -> Path:
    """Run stage 1 (`reasoning=False`) or stage 2; the final model goes to output_dir."""
    trainer = make_trainer(config, reasoning)
    trainer.train(resume_from_checkpoint=resolve_resume(config))
    trainer.save_model(config.output_dir)
    return Path(config.output_dir)
