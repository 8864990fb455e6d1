"""Streaming and cancellation of reasoning, per query row: what `t1 serve` hooks into the
model's own generation (`T1Model.encode_query(hooks=...)`) instead of generating by itself.

`RowHooks` holds, for each query row, a callback that gets each new piece of the row's trace
(None: not streamed) and a test of whether the row's request went away. An abandoned row is
not started, stops at the next decoding step, and its cut trace is never cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass
class RowHooks:
    on_text: Sequence[Callable[[str], None] | None]
    abandoned: Sequence[Callable[[], bool]]

    def subset(self, rows: Sequence[int]) -> "RowHooks":
        return RowHooks([self.on_text[r] for r in rows], [self.abandoned[r] for r in rows])

    def is_abandoned(self, row: int) -> bool:
        return bool(self.abandoned[row]())

    def send(self, row: int, text: str) -> None:
        """Stream a whole trace at once (one served from the reasoning cache)."""
        if self.on_text[row] is not None and text:
            self.on_text[row](text)

    def rollout_kwargs(self, tokenizer, stop_ids, rows: Sequence[int]) -> dict:
        """The `streamer` and `stop_rows` of one batch's `Engine.rollout`."""
        kwargs = {"stop_rows": lambda: [self.is_abandoned(r) for r in rows]}
        if any(self.on_text[r] is not None for r in rows):
            kwargs["streamer"] = RowStreamer(tokenizer, [self.on_text[r] for r in rows], set(stop_ids),
                                             [self.abandoned[r] for r in rows])
        return kwargs


class RowStreamer:
    """A Hugging Face generation streamer for a batch: each row's new text goes to its callback
    (decoded from the row's whole trace so far, so multi-byte characters arrive whole). A row
    ends at its first stop token; what the batch generates after that is ignored."""

    def __init__(self, tokenizer, callbacks, stop_ids, abandoned):
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.stop_ids = stop_ids
        self.abandoned = abandoned
        self.ids = [[] for _ in callbacks]
        self.sent = [""] * len(callbacks)
        self.done = [cb is None for cb in callbacks]
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate first passes the prompts
            self.prompt_seen = True
            return
        for r, token in enumerate(value.reshape(-1).tolist()):
            if self.done[r]:
                continue
            if token in self.stop_ids or self.abandoned[r]():
                self.done[r] = True
                self._flush(r, final=True)
                continue
            self.ids[r].append(token)
            self._flush(r, final=False)

    def end(self) -> None:
        for r in range(len(self.callbacks)):
            if not self.done[r]:
                self.done[r] = True
                self._flush(r, final=True)

    def _flush(self, r: int, final: bool) -> None:
        text = self.tokenizer.decode(self.ids[r], skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):  # a character cut mid-way: wait for its next byte
            return
        if text.startswith(self.sent[r]) and len(text) > len(self.sent[r]):
            self.callbacks[r](text[len(self.sent[r]):])
            self.sent[r] = text
