"""The trainers' `evaluate()`: a `RetrievalEvaluator` called on the live model, as
sentence-transformers' trainer calls its evaluator. With `eval_strategy: steps` (or `epoch`)
the Trainer evaluates during training; `trainer.evaluate()` runs it once on demand."""

from __future__ import annotations

import time

import torch


class EvaluatorMixin:
    """Mixed into a transformers `Trainer` (before it): `evaluator=` (a
    `t1.evaluation.evaluator.RetrievalEvaluator`) replaces the loss on an eval dataset. The
    metrics are logged and passed to the callbacks with the `eval_` prefix, so
    `metric_for_best_model` and early stopping can use them. Every process evaluates, in memory
    (no run folder): a T1 model's document index is built once, its shards shared among the
    ranks (`t1.index.build`), and cached by the model's fingerprint, which follows the weights.
    The T1 model is `self.t1_model`, in eval mode under no_grad."""

    def __init__(self, *args, evaluator=None, **kwargs):
        self.evaluator = evaluator
        train_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if evaluator is None or kwargs.get("eval_dataset") is not None or train_args is None:
            super().__init__(*args, **kwargs)
            return
        strategy = train_args.eval_strategy
        train_args.eval_strategy = "no"  # the Trainer wants an eval_dataset for a strategy; ours is the evaluator
        try:
            super().__init__(*args, **kwargs)
        finally:
            train_args.eval_strategy = strategy

    @property
    def t1_model(self):
        raise NotImplementedError

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.evaluator is None or eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        model = self.t1_model
        backbone = model.backbone
        was_training = backbone.training
        start = time.perf_counter()
        backbone.eval()
        try:
            with torch.no_grad():
                found = self.evaluator(model)
        finally:
            backbone.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in found.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
