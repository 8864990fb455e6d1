"""t1: a reasoning-intensive retriever that thinks before it retrieves."""

import logging as _logging

# transformers imports torchao (the int8 engine's package) whenever it is installed, and torchao
# then warns on every start about CUDA kernels a CPU build of torch cannot load and about its
# pytree registrations: noise about the package itself, not about anything t1 does.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

from .data import Document, load_beir, load_corpus, load_qrels, load_queries
from .errors import T1Error
from .model import QueryEmbeddings, T1Config, T1Model
from .settings import QuerySettings

__all__ = [
    "Document", "QueryEmbeddings", "QuerySettings", "T1Config", "T1Error", "T1Model",
    "load_beir", "load_corpus", "load_qrels", "load_queries",
]
__version__ = "0.1.0"
