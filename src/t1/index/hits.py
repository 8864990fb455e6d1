"""What a search returns (`Hit`) and how it ranked (`SearchRanking`): shared by the collections
(`t1.index.searchable`) and the query pipeline (`t1.query`), below both."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SearchRanking:
    """How a search ranks: by T1 alone, or fused with BM25 (`fusion` "weighted", "rrf" or
    "adaptive", with `weight` on the T1 list). `note` says why a default search is not hybrid."""

    fusion: str | None = None
    weight: float | None = None
    note: str | None = field(default=None, compare=False)

    @property
    def hybrid(self) -> bool:
        return self.fusion is not None

    def __str__(self) -> str:  # what --json and the HTTP response call it
        return f"hybrid-{self.fusion}({self.weight:g})" if self.hybrid else "dense"


@dataclass
class Hit:
    id: str
    score: float
    title: str = ""
    snippet: str = ""
