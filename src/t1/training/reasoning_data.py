"""`t1 data reason`: add reasoning traces to training records for stage 2.

Two sources. A teacher's file (JSONL rows with `reasoning` and `query_id`/`id` or `query`) is
merged by query id, else by query text. Without a teacher, the model writes the traces itself:
best-of-N sampling, each trace embedded at <emb_token> (generate-then-embed), ranked against the
record's own documents (positives + hard negatives); the trace whose best positive ranks
highest (ties: the widest margin over the best negative) is kept if that rank is at most
`max_rank`, and the record is dropped otherwise (rejection sampling).

Self-generation appends to the output as it goes and keeps a small progress file next to it,
so an interrupted run resumes where it stopped; each batch is seeded by its position, so the
resumed output equals an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import write_json
from ..data import read_jsonl
from ..errors import T1Error
from ..prompts import instruction_or_default
from ..settings import DEFAULT_TOP_P, Decoding
from .records import Record
from .rewards import best_positive_rank, cosine_margin

logger = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def merge_teacher(records: list[Record], teacher_path: str | Path) -> tuple[list[Record], int]:
    """Records that have a teacher trace, with `reasoning` set; and how many had none."""
    by_id, by_query = {}, {}
    for lineno, row in read_jsonl(teacher_path):
        where = f"{teacher_path}:{lineno}"
        reasoning = row.get("reasoning")
        if not isinstance(reasoning, str) or not reasoning.strip():
            raise T1Error(f"{where}: field 'reasoning' must be a non-empty text")
        qid = row.get("query_id", row.get("id"))
        if qid is None and not isinstance(row.get("query"), str):
            raise T1Error(f"{where}: needs 'query_id' (or 'id') or 'query' to match a record")
        if qid is not None:
            by_id[str(qid)] = reasoning
        if isinstance(row.get("query"), str):
            by_query[row["query"]] = reasoning
    merged, missing = [], 0
    for record in records:
        qid = record.extra.get("query_id")
        reasoning = by_id.get(str(qid)) if qid is not None else None
        reasoning = reasoning if reasoning is not None else by_query.get(record.query)
        if reasoning is None:
            missing += 1
            continue
        record.reasoning = reasoning
        merged.append(record)
    if not merged:
        raise T1Error(f"{teacher_path}: no trace matches any record (by query_id/id or query text)")
    return merged, missing


@dataclass
class SamplingSettings:
    """Best-of-N self-generated traces (`t1 data reason --model`)."""

    samples: int = field(default=4, metadata={"help": "Traces sampled per query."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=DEFAULT_TOP_P, metadata={"help": "Nucleus sampling top-p (the search default)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Trace length limit in tokens."})
    max_rank: int = field(default=1, metadata={
        "help": "Keep a trace only if the best positive ranks at most this high among the record's documents "
                "(1: above every negative)."})
    batch_size: int = field(default=8, metadata={"help": "Queries per generation batch."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    whole_sentences: bool = field(default=False, metadata={
        "help": "Cut each trace back to its last complete sentence."})
    negatives: int | None = field(default=None, metadata={
        "help": "Score against the first N hard negatives (unset: all)."})
    max_document_length: int | None = field(default=None, metadata={
        "help": "Document length in tokens (unset: the model's)."})


def score_traces(queries: torch.Tensor, documents: torch.Tensor, n_positive: int) -> tuple[list[int], list[float]]:
    """For trace embeddings [N, d] against one record's documents [P + M, d] (positives first):
    rank of the best positive among the record's documents (1 = above every negative; ties count
    against the positive, the rule of the stage-3 reward) and its cosine margin."""
    scores = (F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T).double().numpy()
    positive = np.arange(scores.shape[1]) < n_positive
    return ([best_positive_rank(row, positive) for row in scores],
            [cosine_margin(row, positive) if n_positive < scores.shape[1] else 1.0 for row in scores])


class _Progress:
    """Progress file: how many input records are done and how many output lines are valid."""

    def __init__(self, output: Path, settings: dict, restart: bool):
        self.path = output.with_name(output.name + ".progress.json")
        self.output, self.settings = output, settings
        self.done = self.accepted = 0
        self.complete = False
        if self.path.exists() and not restart:
            state = json.loads(self.path.read_text())
            if state.get("settings") != settings:
                raise T1Error(f"{output}: an earlier run used other settings; pass --restart to start over")
            self.done, self.accepted, self.complete = state["done"], state["accepted"], state.get("complete", False)
            self._truncate()
        elif output.exists() and not restart:
            raise T1Error(f"{output} exists (and no progress file): pass --restart to overwrite it")
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("")
            self.save()

    def _truncate(self) -> None:
        """Drop lines written after the last progress save (an interrupt between the two)."""
        lines = self.output.read_text(encoding="utf-8").splitlines(keepends=True) if self.output.exists() else []
        if len(lines) < self.accepted:
            raise T1Error(f"{self.output} is shorter than its progress file says; pass --restart")
        if len(lines) > self.accepted:
            self.output.write_text("".join(lines[: self.accepted]), encoding="utf-8")

    def save(self) -> None:
        write_json(self.path, {"settings": self.settings, "done": self.done, "accepted": self.accepted,
                               "complete": self.complete})


def self_generate(model, records: list[Record], output: str | Path, settings: SamplingSettings,
                  restart: bool = False, show_progress: bool = True) -> dict:
    """Best-of-N traces with rejection by rank; writes accepted records to `output`."""
    output = Path(output)
    progress = _Progress(output, {**asdict(settings), "records": len(records)}, restart)
    if progress.complete:
        logger.info("%s is complete already", output)
    bar = tqdm(total=len(records), initial=progress.done, desc="Reasoning", disable=not show_progress)
    while progress.done < len(records):
        start = progress.done
        batch = records[start: start + settings.batch_size]
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in _best_of_n(model, batch, start, settings)]
        with open(output, "a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        progress.done, progress.accepted = start + len(batch), progress.accepted + len(lines)
        progress.save()
        bar.update(len(batch))
    bar.close()
    progress.complete = True
    progress.save()
    return {"records": len(records), "accepted": progress.accepted}


def whole_sentences(text: str) -> str:
    """The longest prefix of `text` that ends a sentence ("" if none does): a trace cut by the
    token budget mid-sentence is cut back, so the traces stage 2 learns from all end where the
    model should emit <emb_token> itself."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def _best_of_n(model, batch: list[Record], start: int, s: SamplingSettings) -> list[dict]:
    cfg = model.config
    prompts = [model.prompts.query_prompt(r.query, instruction_or_default(r.instruction, cfg.query_instruction),
                                          cfg.max_query_length) for r in batch]
    torch.manual_seed(s.seed + start)
    rollout = model.engine.rollout(prompts, s.max_new_tokens, s.samples, Decoding(True, s.temperature, s.top_p))
    texts = [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in rollout.reasoning_ids]
    embeddings = rollout.embeddings
    if s.whole_sentences:
        cut = [whole_sentences(t) if not ended else t for t, ended in zip(texts, rollout.emitted_emb_token)]
        changed = [r for r, (a, b) in enumerate(zip(texts, cut)) if a != b and b]
        if changed:  # re-embed the traces that were cut back
            seqs = [prompts[r // s.samples] + model.prompts.reasoning(cut[r], s.max_new_tokens) + [model.emb_token_id]
                    for r in changed]
            with torch.inference_mode():
                embeddings = embeddings.clone()
                embeddings[changed] = model.embed_sequences(seqs, batch_size=len(seqs), normalize=False).float()
        texts = cut
    documents = _encode_documents(model, batch, s.negatives, s.max_document_length)
    accepted = []
    for j, record in enumerate(batch):
        rows = range(j * s.samples, (j + 1) * s.samples)
        rank, margin = score_traces(embeddings[rows.start: rows.stop].cpu(), documents[j], len(record.pos))
        options = [(int(rank[i]), -float(margin[i]), i) for i in range(s.samples) if texts[rows.start + i]]
        if not options or min(options)[0] > s.max_rank:
            continue
        best_rank, neg_margin, i = min(options)
        accepted.append({**record.to_json(), "reasoning": texts[rows.start + i], "reasoning_rank": best_rank,
                         "reasoning_margin": round(-neg_margin, 4)})
    return accepted


def _encode_documents(model, batch: list[Record], negatives: int | None = None,
                      max_length: int | None = None) -> list[torch.Tensor]:
    """Each record's positives + (first `negatives`) negatives, embedded with its document instruction."""
    groups: dict[str, list[int]] = {}
    for j, record in enumerate(batch):
        instruction = instruction_or_default(record.document_instruction, model.config.document_instruction)
        groups.setdefault(instruction, []).append(j)
    out: list[torch.Tensor] = [None] * len(batch)
    for instruction, members in groups.items():
        texts = [t for j in members for t in batch[j].pos + batch[j].neg[:negatives]]
        emb = torch.from_numpy(model.encode_document(texts, instruction=instruction, max_length=max_length,
                                                     show_progress_bar=False))
        offset = 0
        for j in members:
            n = len(batch[j].pos) + len(batch[j].neg[:negatives])
            out[j], offset = emb[offset: offset + n], offset + n
    return out
