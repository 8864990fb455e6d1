"""Adapters for other libraries, each an optional extra; import the submodule you need.

- `t1.integrations.mteb.T1Encoder`: an mteb (>= 2.10) encoder (`pip install t1[mteb]`).
- `t1.integrations.langchain.T1Embeddings`: a LangChain `Embeddings` (`pip install t1[langchain]`).
- `t1.integrations.llamaindex.T1Embedding`: a LlamaIndex `BaseEmbedding` (`pip install t1[llamaindex]`).
"""


def load_t1_model(model, device=None, **settings):
    """`model` itself when it is a loaded `T1Model`, else `T1Model.from_pretrained(model, ...)`."""
    from ..model import T1Model

    if isinstance(model, T1Model):
        if device is not None or settings:
            raise TypeError("device and T1 settings apply when loading by name; this model is loaded already")
        return model
    return T1Model.from_pretrained(model, device=device, **settings)

