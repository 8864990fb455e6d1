"""Adapters for other libraries, each an optional extra; import the submodule you need.

- `t1.integrations.mteb.T1Encoder`: an mteb (>= 2.10) encoder (`pip install t1[mteb]`).
- `t1.integrations.langchain.T1Embeddings`: a LangChain `Embeddings` (`pip install t1[langchain]`);
  `T1VectorStore`, a LangChain `VectorStore` over a t1 index folder (add, delete, search).
- `t1.integrations.llamaindex.T1Embedding`: a LlamaIndex `BaseEmbedding` (`pip install t1[llamaindex]`);
  `T1VectorStore`, a LlamaIndex vector store over a t1 index folder (add, delete, query).
"""

