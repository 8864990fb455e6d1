"""Interrupting a build in tests: the encoder dies on a chosen call."""

from __future__ import annotations


class Killed(Exception):
    """Stands in for a process killed in the middle of a build."""


def encode_counting(monkeypatch, die_at: int | None = None) -> list[int]:
    """Patch `T1Model.encode_document` to record the size of every call (the list returned) and,
    with `die_at`, to raise `Killed` on that call: a build interrupted after `die_at - 1` shards.
    Undo an earlier patch (`monkeypatch.undo()`) before patching again."""
    from t1 import T1Model

    original = T1Model.encode_document
    calls: list[int] = []

    def counted(self, texts, **kw):
        calls.append(len(texts))
        if die_at is not None and len(calls) == die_at:
            raise Killed
        return original(self, texts, **kw)

    monkeypatch.setattr(T1Model, "encode_document", counted)
    return calls
