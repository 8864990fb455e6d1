"""From records to padded tensors: one positive and a fixed number of negatives per query.

Every query brings a group of G = 1 + negatives_per_query documents (positive first), so every
process holds the same number of documents and embeddings can be all-gathered. The choice of
positive and negatives depends only on (seed, epoch, index): a resumed or distributed run sees
the same groups as an uninterrupted single-process one.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import torch

from ..batching import pad
from ..prompts import instruction_or_default
from .distill import candidate_scores
from .records import Record

MAX_POSITIVE_KEYS = 32


def text_key(text: str) -> int:
    """A stable 63-bit key of a passage (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class RecordDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record], negatives_per_query: int, seed: int = 0):
        self.records = records
        self.negatives = negatives_per_query
        self.seed = seed
        self.epoch = 0  # set by EpochCallback so each epoch draws other negatives
        self.pool = sorted({t for r in records for t in r.pos + r.neg})  # fallback negatives
        self.max_positives = min(MAX_POSITIVE_KEYS, max(len(r.pos) for r in records))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        negatives = list(record.neg)
        if len(negatives) >= self.negatives:
            negatives = rng.sample(negatives, self.negatives)
        else:  # too few hard negatives: fill with random passages of other records
            positives, tries = set(record.pos), 0
            while len(negatives) < self.negatives:
                text = rng.choice(self.pool)
                if text not in positives:
                    negatives.append(text)
                elif (tries := tries + 1) > 1000:
                    raise ValueError("the training file has too few passages to fill the negatives")
        return {
            "record": record,
            "documents": [rng.choice(record.pos)] + negatives,
            "positive_keys": [text_key(t) for t in record.pos[: self.max_positives]],
            "max_positives": self.max_positives,
        }


@dataclass
class Collator:
    """Tokenises a list of dataset items. Queries: chat prompt (+ reasoning when `reasoning`)
    + <emb_token>; with reasoning, the labels cover the trace and the final <emb_token>."""

    prompts: object  # t1.prompts.PromptBuilder
    pad_id: int
    query_instruction: str
    document_instruction: str
    max_query_length: int
    max_document_length: int
    max_reasoning_length: int
    reasoning: bool = False

    def query(self, record: Record) -> tuple[list[int], list[int]]:
        instruction = instruction_or_default(record.instruction, self.query_instruction)
        prompt = self.prompts.query_prompt(record.query, instruction, self.max_query_length)
        trace = self.prompts.reasoning(record.reasoning or "", self.max_reasoning_length) if self.reasoning else []
        target = trace + [self.prompts.emb_token_id]
        return prompt + target, [-100] * len(prompt) + target

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        queries, labels, documents = [], [], []
        for item in items:
            ids, lab = self.query(item["record"])
            queries.append(ids)
            labels.append(lab)
            instruction = instruction_or_default(item["record"].document_instruction, self.document_instruction)
            documents += [self.prompts.document(t, instruction, self.max_document_length) for t in item["documents"]]
        q_ids, q_mask = pad(queries, self.pad_id)
        d_ids, d_mask = pad(documents, self.pad_id)
        width = items[0]["max_positives"]
        positive_keys = torch.full((len(items), width), -1, dtype=torch.long)
        for row, item in enumerate(items):
            positive_keys[row, : len(item["positive_keys"])] = torch.tensor(item["positive_keys"])
        batch = {
            "query_input_ids": q_ids, "query_attention_mask": q_mask,
            "doc_input_ids": d_ids, "doc_attention_mask": d_mask,
            "positive_keys": positive_keys,
            "doc_keys": torch.tensor([text_key(t) for item in items for t in item["documents"]], dtype=torch.long),
        }
        scores = [candidate_scores(item["record"], item["documents"]) for item in items]
        if any(s is not None for s in scores):  # teacher scores for distillation; NaN rows have none
            group = len(items[0]["documents"])
            batch["teacher_scores"] = torch.tensor([s or [float("nan")] * group for s in scores], dtype=torch.float32)
        if self.reasoning:
            batch["query_labels"] = pad(labels, -100)[0]
        return batch
