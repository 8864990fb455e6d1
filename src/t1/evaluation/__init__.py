"""Evaluation harness: metrics, baselines, BEIR and BRIGHT runs, reports."""

from ..bright_tasks import BRIGHT_TASKS, bright_instruction
from .datasets import EvalData, load_bright_task, load_eval_data
from .metrics import Evaluation, evaluate
from .retrievers import BM25Retriever, Retriever, SentenceTransformerRetriever, T1Retriever, make_retriever
from .runs import read_trec_run, run_evaluation, write_trec_run

__all__ = [
    "BRIGHT_TASKS", "BM25Retriever", "EvalData", "Evaluation", "Retriever", "SentenceTransformerRetriever",
    "T1Retriever", "bright_instruction", "evaluate", "load_bright_task", "load_eval_data", "make_retriever",
    "read_trec_run", "run_evaluation", "write_trec_run",
]
