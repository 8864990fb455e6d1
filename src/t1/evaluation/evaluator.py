"""`RetrievalEvaluator`: a model evaluated on queries, a corpus and judgements, in the shape of
sentence-transformers' `InformationRetrievalEvaluator`: built once with the data and the
settings, then called on a model, `evaluator(model, output_path=None) -> {metric: value}`, with
a `primary_metric`. `t1 eval`, `t1 bright` (one evaluator per task), the curriculum's table and
the trainers' `evaluate()` (`t1.training.evaluate_hook.EvaluatorMixin`) all call it.

It wraps the existing machinery: `retrievers.make_retriever` builds what searches, `runs`
retrieves and, given an `output_path`, writes the run folder, and `metrics` scores through
pytrec_eval. `Reasoning.parse` is the one reading of a `--reasoning` value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import Document
from ..errors import T1Error
from ..settings import REASONING_MODES, QuerySettings
from .datasets import EvalData
from .metrics import CUTOFFS, Evaluation, metric_key
from .retrievers import Retriever, make_retriever, parse_retriever
from .runs import retrieve_and_score, run_evaluation


@dataclass(frozen=True)
class Reasoning:
    """What a `--reasoning` value asks for: a T1 query mode (`mode`: generate, none, auto), or
    traces given beside the queries: a BRIGHT reasoning set (`given_set`, e.g. gpt4) or a JSONL
    file (`given_file`), which T1 embeds in mode `given` and other retrievers search with."""

    mode: str = "generate"
    given_set: str | None = None
    given_file: str | None = None

    @property
    def given(self) -> str | None:
        return self.given_set or self.given_file

    @classmethod
    def parse(cls, value: str | None, retriever: str, dataset_is_bright: bool = True,
              files: bool = True) -> Reasoning:
        """`value` of `--reasoning` for the retriever spec `retriever`: a T1 mode; an existing
        file (where `files`); else the name of a BRIGHT reasoning set (on a BRIGHT dataset).
        Only a T1 model generates reasoning."""
        kind, inner = parse_retriever(retriever)
        if kind == "hybrid":  # the dense side decides what a reasoning mode means
            kind = parse_retriever(inner)[0]
        if value in REASONING_MODES:
            if kind != "t1" and value in ("generate", "auto"):
                hint = "--reasoning FILE" if files else "a BRIGHT reasoning set (e.g. gpt4)"
                raise T1Error(f"{retriever} cannot generate reasoning; use a T1 model or {hint}")
            return cls(mode=value)
        if not value:
            return cls()
        if files and Path(value).is_file():
            return cls(given_file=value)
        if not dataset_is_bright:
            raise T1Error(f"--reasoning {value!r}: not 'generate', 'none' or an existing file")
        return cls(given_set=value)


class RetrievalEvaluator:
    """Evaluates a model's retrieval of `queries` ({qid: text}) from `corpus` (documents) against
    `qrels` ({qid: {docid: relevance}}), keeping the top `k` per query and scoring pytrec_eval's
    measures at `cutoffs`.

    `excluded[qid]` ids are removed before the top-k cut (BRIGHT's rule); `reasoning[qid]`, when
    given, is the trace each query is searched with. A T1 model searches as `query` says;
    `retriever_options` go to `make_retriever` (document_instruction, batch_size, device, engine,
    k1, b, reasoning_cache, show_progress, model_settings, index_folder).

    Called on a model, it returns the mean metrics, their names prefixed by `name` when set
    (sentence-transformers' rule); `primary_metric` names the headline one in that dict. The
    call's `Evaluation` (per query too) and retriever stay in `last` and `last_retriever`."""

    def __init__(self, queries: dict[str, str], corpus: Sequence[Document], qrels: dict[str, dict[str, int]],
                 name: str = "", k: int = 1000, cutoffs: Sequence[int] = CUTOFFS, primary_metric: str = "ndcg@10",
                 excluded: dict[str, set[str]] | None = None, reasoning: dict[str, str] | None = None,
                 query: QuerySettings = QuerySettings(), retriever_options: dict | None = None):
        if k < 1:
            raise T1Error(f"k must be at least 1, got {k}")
        self.data = EvalData(name, list(corpus), dict(queries), qrels, dict(excluded or {}), reasoning)
        self.name, self.k, self.cutoffs, self.query = name, k, tuple(cutoffs), query
        self.retriever_options = dict(retriever_options or {})
        self.primary_metric = self._prefixed(metric_key(primary_metric))
        self.last: Evaluation | None = None
        self.last_retriever: Retriever | None = None

    @classmethod
    def from_data(cls, data: EvalData, **kwargs) -> RetrievalEvaluator:
        """The evaluator of an `EvalData` (`datasets.load_eval_data`, `load_bright_task`), named
        after it unless `name` is given."""
        kwargs.setdefault("name", data.name)
        return cls(data.queries, data.corpus, data.qrels, excluded=data.excluded, reasoning=data.reasoning, **kwargs)

    def retriever(self, model, loaded=None) -> Retriever:
        """What searches for `model`: a `Retriever` as it is, a retriever spec (bm25, st:MODEL,
        t1:MODEL, hybrid:...) built over the corpus, or a loaded `T1Model` (searching alone).
        `loaded` is a T1 model a t1 spec shares instead of loading its own (BRIGHT's tasks)."""
        if isinstance(model, Retriever):
            return model
        if not isinstance(model, str):
            model, loaded = f"t1:{getattr(model, 'name_or_path', None) or 'model'}", model
        return make_retriever(model, self.data.corpus, model=loaded, query=self.query, **self.retriever_options)

    def __call__(self, model, output_path: str | Path | None = None, info: dict | None = None) -> dict[str, float]:
        """Mean metrics of `model` (see `retriever`); with `output_path`, the run folder written
        there too (`runs.run_evaluation`, `info` added to its run.json)."""
        retriever = self.retriever(model)
        if output_path is None:
            _, evaluation, _ = retrieve_and_score(self.data, retriever, self.k, self.cutoffs)
        else:
            evaluation = run_evaluation(self.data, retriever, output_path, k=self.k, info=info, cutoffs=self.cutoffs)
        self.last, self.last_retriever = evaluation, retriever
        return {self._prefixed(name): value for name, value in evaluation.mean.items()}

    def _prefixed(self, name: str) -> str:
        return f"{self.name}_{name}" if self.name else name
