"""Stage 3's reward: how well each sampled trace's embedding retrieves its query's positives.

`RetrievalReward` is the TRL reward function. It holds the live `T1Model`, whose backbone *is*
the policy being trained, and re-embeds prompt + trace + `<emb_token>` with the current weights
under no_grad, whichever backend generated the trace (vLLM included). Each trace is scored
against a candidate pool (the query's positives, its hard negatives, the other queries'
documents in the batch) whose embeddings `DocumentPool` caches; the reward maths is `rewards.py`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from ..prompts import instruction_or_default
from ..reasoning import split_trace, stop_token_ids
from .grpo_config import T1GRPOConfig
from .records import Record
from .rewards import trace_reward


@contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode inside (no dropout, no activation checkpointing); the previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class DocumentPool:
    """Document embeddings from the current model (no_grad), cached and dropped every
    `refresh_steps` optimizer steps: re-encoding every step is unaffordable, and a cache much
    older than that drifts from the model. Only documents a batch asks for are encoded, so the
    cost follows the batch, not the corpus."""

    def __init__(self, model, refresh_steps: int, max_length: int, batch_size: int = 16):
        self.model = model
        self.refresh_steps = max(1, int(refresh_steps))
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache: dict[tuple[str, str], torch.Tensor] = {}
        self.epoch: int | None = None
        self.refreshes = 0  # times the cache was dropped
        self.encoded = 0  # documents encoded so far

    def embed(self, docs: Sequence[tuple[str, str]], step: int) -> torch.Tensor:
        """[len(docs), dim] for (instruction, text) pairs at optimizer step `step`."""
        epoch = step // self.refresh_steps
        if epoch != self.epoch:
            self.refreshes += self.epoch is not None
            self.cache.clear()
            self.epoch = epoch
        missing = [d for d in dict.fromkeys(docs) if d not in self.cache]
        if missing:
            seqs = [self.model.prompts.document(text, instr, self.max_length) for instr, text in missing]
            with torch.no_grad(), eval_mode(self.model.backbone):
                emb = self.model.embed_sequences(seqs, self.batch_size)
            self.cache.update(zip(missing, emb.float().cpu()))
            self.encoded += len(missing)
        return torch.stack([self.cache[d] for d in docs])


class RetrievalReward:
    """The TRL reward function: embeds each trace with the live model and scores it against
    the batch's candidate pool. It holds the model, so TRL need not pass it."""

    __name__ = "retrieval"  # TRL names the reward's metrics after it

    def __init__(self, model, records: list[Record], config: T1GRPOConfig):
        self.model = model
        self.records = records
        self.config = config
        self.pool = DocumentPool(model, config.doc_refresh_steps, config.max_document_length, config.embed_batch_size)
        self.stop_ids = set(stop_token_ids(model))
        self._prompt_ids: dict[int, list[int]] = {}
        self.last: list = []  # TraceReward per row of the latest call, in TRL's order

    def query_instruction(self, record: Record) -> str | None:
        return instruction_or_default(record.instruction, self.model.config.query_instruction)

    def document_instruction(self, record: Record) -> str | None:
        return instruction_or_default(record.document_instruction, self.model.config.document_instruction)

    def prompt_ids(self, index: int) -> list[int]:
        if index not in self._prompt_ids:
            r = self.records[index]
            self._prompt_ids[index] = self.model.prompts.query_prompt(
                r.query, self.query_instruction(r), self.config.max_query_length)
        return self._prompt_ids[index]

    def split_trace(self, completion: Sequence[int]) -> tuple[list[int], bool]:
        """(trace without its stop token, whether the model emitted <emb_token> itself)."""
        return split_trace(completion, self.stop_ids, self.model.emb_token_id)

    def candidate_pool(self, query_index: Sequence[int]) -> tuple[list[tuple[str, str]], np.ndarray]:
        """Documents of every query in the batch (positives + hard negatives), deduplicated, and
        a [rows, documents] mask of each row's positives."""
        docs: dict[tuple[str, str], None] = {}
        for i in dict.fromkeys(query_index):
            r = self.records[i]
            instr = self.document_instruction(r)
            docs.update(dict.fromkeys((instr, t) for t in r.pos + r.neg[: self.config.negatives_per_query]))
        docs_list = list(docs)
        col = {d: j for j, d in enumerate(docs_list)}
        positive = np.zeros((len(query_index), len(docs_list)), dtype=bool)
        for row, i in enumerate(query_index):
            r = self.records[i]
            positive[row, [col[(self.document_instruction(r), t)] for t in r.pos]] = True
        return docs_list, positive

    def __call__(self, prompts, completions, completion_ids, query_index, trainer_state=None,
                 log_metric=None, **_) -> list[float]:
        step = trainer_state.global_step if trainer_state is not None else 0
        query_index = [int(i) for i in query_index]
        split = [self.split_trace(c) for c in completion_ids]
        emb_id = self.model.emb_token_id
        seqs = [self.prompt_ids(i) + trace + [emb_id] for i, (trace, _) in zip(query_index, split)]
        docs, positive = self.candidate_pool(query_index)
        with torch.no_grad():
            with eval_mode(self.model.backbone):
                q = self.model.embed_sequences(seqs, self.config.embed_batch_size)
            d = self.pool.embed(docs, step).to(q.device)
            scores = (q.float() @ d.T).cpu().numpy()
        budget = self.config.max_completion_length
        self.last = [trace_reward(scores[row], positive[row], len(trace), emitted, budget, self.config)
                     for row, (trace, emitted) in enumerate(split)]
        if log_metric is not None:
            for name, value in self._summaries(split, len(docs)).items():
                log_metric(name, value)
        return [r.total for r in self.last]

    def _summaries(self, split, pool_size: int) -> dict[str, float]:
        def mean(xs):
            return float(np.mean(xs))

        return {
            "t1/rank_term": mean([r.rank for r in self.last]),
            "t1/positive_rank": mean([r.best_rank for r in self.last]),
            "t1/margin": mean([r.margin for r in self.last]),
            "t1/emitted_emb_token": mean([r.format for r in self.last]),
            "t1/reasoning_length": mean([len(t) for t, _ in split]),
            "t1/pool_size": float(pool_size),
        }
