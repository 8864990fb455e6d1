"""t1: a reasoning-intensive retriever that thinks before it retrieves."""

from .data import Document, load_beir, load_corpus, load_qrels, load_queries
from .errors import T1Error
from .model import QueryEmbeddings, T1Config, T1Model

__all__ = [
    "Document", "QueryEmbeddings", "T1Config", "T1Error", "T1Model",
    "load_beir", "load_corpus", "load_qrels", "load_queries",
]
__version__ = "0.1.0"
