"""transformers `Trainer` for the two first stages of T1 (configured by `contrastive_config`).

Stage 1 (`reasoning=False`): queries in mode `none` (prompt + <emb_token>), `InfoNCELoss`
against the in-batch and hard-negative documents of the global batch. Stage 2
(`reasoning=True`): `ReasoningSFTLoss`, one forward pass over prompt + reasoning + <emb_token>
giving both the query embedding and the next-token loss of the trace and its <emb_token>.
`grad_cache_chunk_size` wraps either in `CachedLoss`. The Trainer only calls the loss module.
Given an `evaluator` (a `RetrievalEvaluator`), `evaluate()` runs it on the live model.

Everything distributed is the Trainer's (accelerate: DDP, mixed precision, gradient
accumulation, checkpoints); the only cross-process step of our own is the all-gather of
embeddings in `losses.functional.info_nce`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ..backbones import has_adapter
from ..errors import T1Error
from ..model import T1Model
from .collator import Collator, RecordDataset
from .contrastive_config import T1TrainingArguments
from .evaluate_hook import EvaluatorMixin
from .losses import CachedLoss, InfoNCELoss, ReasoningSFTLoss
from .losses.functional import next_token_nll
from .model_config import ModelArguments
from .modeling import build_model, load_weights, resolve_resume
from .records import read_records

logger = logging.getLogger(__name__)

TRAINING_ARGS_NAME = "training_args.bin"


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
        base = backbone.get_base_model() if has_adapter(backbone) else backbone
        base.activation_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload)


class _EpochCallback(TrainerCallback):
    """Tells the dataset the epoch, so each epoch draws other positives and negatives."""

    def __init__(self, dataset: RecordDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = math.floor((state.epoch or 0) + 1e-6)


class T1Trainer(EvaluatorMixin, Trainer):
    loss_is_scaled_for_ga = False  # the Trainer divides the loss by the accumulation steps

    def __init__(self, *args, loss: torch.nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss = loss

    @property
    def t1_model(self) -> T1Model:
        return self.accelerator.unwrap_model(self.model).t1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise T1Error("T1Trainer's loss modules return no model outputs")
        return self.loss(model, inputs)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the LoRA <emb_token> row in its own group when
        `emb_token_learning_rate` is set (the scheduler then scales that group's rate too)."""
        optimizer = super().create_optimizer(model)
        rate = self.args.emb_token_learning_rate
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
        parts = self.loss.metrics
        if "loss" in logs and parts:
            logs.update({k: round(sum(v) / len(v), 4) for k, v in parts.items() if v})
            parts.clear()
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


def make_loss(args: T1TrainingArguments, reasoning: bool) -> torch.nn.Module:
    distill = dict(distill_weight=args.distill_weight, distill_temperature=args.distill_temperature)
    loss = (ReasoningSFTLoss(args.contrastive_temperature, args.contrastive_weight, **distill) if reasoning
            else InfoNCELoss(args.contrastive_temperature, **distill))
    return CachedLoss(loss, args.grad_cache_chunk_size) if args.grad_cache_chunk_size else loss


def make_trainer(model_args: ModelArguments, args: T1TrainingArguments, reasoning: bool, t1: T1Model | None = None,
                 callbacks=(), evaluator=None) -> T1Trainer:
    records = read_records(args.train_file, require_reasoning=reasoning)
    global_batch = args.per_device_train_batch_size * args.world_size
    if len(records) < global_batch:
        raise T1Error(f"{args.train_file}: {len(records)} records, fewer than one global batch ({global_batch})")
    t1 = t1 or build_model(model_args, device=args.device, seed=args.seed)
    dataset = RecordDataset(records, args.negatives_per_query, seed=args.seed)
    collator = Collator(
        prompts=t1.prompts, pad_id=t1.tokenizer.pad_token_id,
        query_instruction=t1.config.query_instruction, document_instruction=t1.config.document_instruction,
        max_query_length=args.max_query_length, max_document_length=args.max_document_length,
        max_reasoning_length=args.max_reasoning_length, reasoning=reasoning,
    )
    return T1Trainer(
        model=T1ForTraining(t1), args=args, data_collator=collator, train_dataset=dataset,
        callbacks=[_EpochCallback(dataset), *callbacks], loss=make_loss(args, reasoning), evaluator=evaluator,
    )


def train(model_args: ModelArguments, args: T1TrainingArguments, reasoning: bool, evaluator=None) -> Path:
    """Run stage 1 (`reasoning=False`) or stage 2, resuming from the newest checkpoint in
    output_dir (or `resume_from_checkpoint`); the final model goes to output_dir. `evaluator`
    (a `RetrievalEvaluator`) is what `eval_strategy` runs during training."""
    trainer = make_trainer(model_args, args, reasoning, evaluator=evaluator)
    trainer.train(resume_from_checkpoint=resolve_resume(args.output_dir, args.resume_from_checkpoint))
    trainer.save_model(args.output_dir)
    return Path(args.output_dir)
