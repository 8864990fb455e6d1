"""`Reasoner`: who writes a query's reasoning trace when it is not T1 itself.

T1's embedder turns good reasoning into a better embedding, but a small T1 has little knowledge
to reason with. A reasoner asks a writer that knows more (an OpenAI-compatible endpoint, a GGUF
file run by llama.cpp, a Hugging Face causal LM) and hands its trace to T1, which embeds
`prompt + trace + <emb_token>` exactly as it embeds a trace given by a file.

Every trace is cached as soon as it arrives (`ReasoningCache`'s `written` table), keyed by the
writer's identity (kind, model, endpoint, prompt, decoding, thinking mode) and the messages it was
sent, so an interrupted run resumes without asking again and another writer never hits them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from ..errors import T1Error
from .prompts import WriterPrompt, load_prompt

logger = logging.getLogger(__name__)

THINKING = ("answer", "thinking", "both")  # what of a reasoning model's output becomes the trace


class ReasonerError(T1Error):
    """A writer that failed: one line naming the endpoint or file (exit 2, a 502 over HTTP)."""


@dataclass
class Trace:
    text: str
    ended: bool  # the writer ended it itself (not cut by its token limit)


@dataclass
class Job:
    """One trace to write: row `row` of a call, sample `sample` of its query."""

    row: int
    messages: list[dict]
    sample: int
    sampling: dict  # temperature, top_p (and a seed when sampling)
    max_tokens: int


@dataclass
class WriteStats:
    """What the last `write` did: traces asked of the writer, served by the cache, and how long."""

    asked: int = 0
    cached: int = 0
    seconds: float = 0.0
    thinking_fallback: int = 0  # mode "answer": answers that were empty, so the thinking was used
    errors: list[str] = field(default_factory=list)


class Reasoner:
    """Writes traces for queries. Subclasses implement `describe` (the writer's identity) and
    `_write` (the traces of some jobs, yielded as each one arrives, in any order)."""

    kind = "reasoner"
    thread_safe = False  # local writers hold one model: calls from several threads (t1 serve) take turns

    def __init__(self, prompt: str | dict | WriterPrompt | None = None, thinking: str = "answer",
                 max_tokens: int | None = None):
        if thinking not in THINKING:
            raise T1Error(f"reasoner thinking must be one of {', '.join(THINKING)}, got {thinking!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise T1Error(f"reasoner max_tokens must be an integer of at least 1, got {max_tokens!r}")
        self.prompt = load_prompt(prompt)
        self.thinking = thinking
        self.max_tokens = max_tokens  # None: the T1 model's reasoning budget (max_new_tokens)
        self.stats = WriteStats()
        self._turn = threading.Lock()

    # ---------------------------------------------------------------- identity
    def describe(self) -> dict:
        """What decides the writer's text besides the prompt: kind, model, endpoint or file."""
        raise NotImplementedError

    def identity(self) -> dict:
        return {**self.describe(), "prompt": self.prompt.identity(), "thinking": self.thinking}

    @property
    def name(self) -> str:
        d = self.describe()
        return " ".join(str(d[k]) for k in ("kind", "source", "model") if d.get(k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, prompt={self.prompt.name!r})"

    def close(self) -> None:
        """Release connections or weights (the reasoner cannot be used afterwards)."""

    # ---------------------------------------------------------------- writing
    def _write(self, jobs: list[Job]) -> Iterable[tuple[Job, Trace]]:
        raise NotImplementedError

    def write(self, queries: Sequence[str], instruction: str | None, *, max_tokens: int, samples: int = 1,
              temperature: float = 1.0, top_p: float = 1.0, cache=None, query_ids: Sequence[str] | None = None,
              show_progress_bar: bool | None = None) -> list[Trace]:
        """`samples` traces per query (rows query-major), greedy for one, sampled with
        `temperature` and `top_p` for several. Cached traces are served from `cache`; each new
        one is stored there as it arrives. A writer that fails raises `ReasonerError` once every
        request in flight has ended, so what arrived is kept and a rerun asks only for the rest."""
        max_tokens = self.max_tokens or max_tokens
        start = time.perf_counter()
        self.stats = WriteStats()
        jobs = []
        for q, query in enumerate(queries):
            messages = self.prompt.messages(query, instruction)
            for s in range(samples):
                sampling = {"temperature": 0.0, "top_p": 1.0} if samples == 1 else \
                    {"temperature": temperature, "top_p": top_p, "seed": s}
                jobs.append(Job(q * samples + s, messages, s, sampling, max_tokens))
        out: list[Trace | None] = [None] * len(jobs)
        identity = self.identity()  # once: an endpoint's may ask it for its model
        keys = [self._key(job, identity) for job in jobs]
        if cache is not None:
            found = cache.get_written(keys)
            for i, key in enumerate(keys):
                if key in found:
                    out[i] = Trace(*found[key])
        todo = [job for job in jobs if out[job.row] is None]
        self.stats.cached = len(jobs) - len(todo)
        self.stats.asked = len(todo)
        writer = json.dumps(identity, sort_keys=True)
        bar = tqdm(total=len(todo), desc=f"Reasoning ({self.kind})", disable=not _show(show_progress_bar, len(todo)))
        turn = contextlib.nullcontext() if self.thread_safe else self._turn
        try:
            with turn:
                for job, trace in self._write(todo):
                    out[job.row] = trace
                    bar.update(1)
                    if cache is not None:
                        q = job.row // samples
                        cache.put_written([{"key": keys[job.row], "writer": writer, "instruction": instruction,
                                            "query_id": query_ids[q] if query_ids is not None else None,
                                            "query": queries[q], "reasoning": trace.text, "ended": trace.ended,
                                            "settings": {**job.sampling, "max_tokens": job.max_tokens,
                                                         "sample": job.sample}}])
        finally:
            bar.close()
            self.stats.seconds = round(time.perf_counter() - start, 3)
        if self.stats.thinking_fallback:
            logger.warning("%d of %d answers from %s were empty, so their thinking became the trace; raise "
                           "--reasoner-max-tokens to leave room for the answer", self.stats.thinking_fallback,
                           len(todo), self.name)
        return out  # type: ignore[return-value]

    @staticmethod
    def _key(job: Job, identity: dict) -> str:
        blob = json.dumps([identity, job.messages, job.sampling, job.max_tokens, job.sample], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ---------------------------------------------------------------- the text of an answer
    def choose(self, content: str | None, thinking: str | None) -> str:
        """The trace of one answer as `self.thinking` says: a reasoning model's thinking comes as
        a separate field (`reasoning_content`) or as a `<think>` block in the content."""
        answer, inline = split_thinking(content or "")
        thought = (thinking or "").strip() or inline
        if self.thinking == "thinking":
            return thought or answer
        if self.thinking == "both":
            return "\n\n".join(p for p in (thought, answer) if p)
        if not answer and thought:
            self.stats.thinking_fallback += 1
            return thought
        return answer


def split_thinking(content: str) -> tuple[str, str]:
    """(answer, thinking) of a text that may hold a `<think>...</think>` block. A block whose
    opening tag the chat template already wrote (Qwen3, DeepSeek-R1) is taken from the start; an
    unclosed block (cut by the token limit) is all thinking."""
    text = content.strip()
    if "</think>" in text:
        before, _, after = text.partition("</think>")
        return after.strip(), before.replace("<think>", "", 1).strip()
    if text.startswith("<think>"):
        return "", text[len("<think>"):].strip()
    return text, ""


def _show(flag: bool | None, n: int) -> bool:
    return flag if flag is not None else (n > 1 and sys.stderr.isatty())
