"""Training records: one JSON object a line, the layout FlagEmbedding and others use.

    {"query": str, "pos": [str, ...], "neg": [str, ...], "instruction"?: str,
     "document_instruction"?: str, "reasoning"?: str, ...}

`pos` holds at least one relevant passage, `neg` hard negatives (may be empty). `instruction`
replaces the model's query instruction for this record; `reasoning` is the trace stage 2 learns
to write. Other keys (ids, scores) are kept as they are when a tool rewrites the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_jsonl
from ..data import read_jsonl
from ..errors import T1Error

KNOWN = ("query", "pos", "neg", "instruction", "document_instruction", "reasoning")


@dataclass
class Record:
    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    instruction: str | None = None
    document_instruction: str | None = None
    reasoning: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        row = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for key in ("instruction", "document_instruction", "reasoning"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        return {**row, **self.extra}


def _text_list(obj: dict, key: str, where: str, min_items: int) -> list[str]:
    value = obj.get(key, [] if min_items == 0 else None)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise T1Error(f"{where}: field {key!r} must be a list of texts")
    if len(value) < min_items:
        raise T1Error(f"{where}: field {key!r} needs at least {min_items} passage(s)")
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise T1Error(f"{where}: {key}[{i}] must be a non-empty text")
    return value


def parse_record(obj: dict, where: str, require_reasoning: bool = False) -> Record:
    """Validate one JSON object; errors name `where` (file:line) and the field."""
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise T1Error(f"{where}: field 'query' must be a non-empty text")
    optional = {}
    for key in ("instruction", "document_instruction", "reasoning"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise T1Error(f"{where}: field {key!r} must be a text")
        optional[key] = value
    if require_reasoning and not (optional["reasoning"] or "").strip():
        raise T1Error(f"{where}: field 'reasoning' is missing or empty (stage 2 needs a trace per record; "
                      "add them with `t1 data reason`)")
    return Record(query, _text_list(obj, "pos", where, 1), _text_list(obj, "neg", where, 0),
                  extra={k: v for k, v in obj.items() if k not in KNOWN}, **optional)


def read_records(path: str | Path, require_reasoning: bool = False) -> list[Record]:
    records = [parse_record(obj, f"{path}:{lineno}", require_reasoning) for lineno, obj in read_jsonl(path)]
    if not records:
        raise T1Error(f"{path}: no training records")
    return records


def write_records(path: str | Path, records) -> None:
    write_jsonl(path, (r.to_json() if isinstance(r, Record) else r for r in records))
