"""Would llama.cpp embed documents faster than torch? A probe of issue #33: SciFact abstracts
(cut to 256 tokens) prefilled through the llama.cpp generation engine's GGUF with the embedding
read at the last token (`<emb_token>`), against the `bf16` document engine, in one run.

    python3 benchmarks/llamacpp_documents.py [llama.cpp|llama.cpp-f16] [DOCS] [DOCS_PER_DECODE]

Measured: 0.19-0.26 docs/s for llama.cpp fp32 and f16, one document or eight a decode, against
2-4 docs/s for bf16 on shared cores; 1.09 against 16.64 docs/s idle (`llama.cpp 8 8`); cosine 0.9998: llama.cpp was left out as a
document engine (README, "Document engines"). It reads the engine's llama.cpp context directly.
"""

import sys
import time

import numpy as np
import torch
from common import SCIFACT

from t1 import T1Model, load_corpus
from t1.generation.llamacpp import LlamaCppEngine


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "llama.cpp"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    step = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    model = T1Model.from_pretrained("t1-smollm2-135m", device="cpu")
    docs = [d.full_text for d in load_corpus(SCIFACT / "corpus.jsonl")[:n]]
    seqs = [model.prompts.document(t, model.config.document_instruction, 256) for t in docs]
    engine = LlamaCppEngine(model, name, max_rows=step, row_context=300)
    lib = engine.lib

    def embed(rows):
        out = []
        lib.llama_set_embeddings(engine._ctx, True)
        for i in range(0, len(rows), step):
            group = rows[i:i + step]
            lib.llama_memory_clear(engine._memory, True)
            outputs = engine._decode([(r, p, s[p], p == len(s) - 1) for r, s in enumerate(group) for p in range(len(s))])
            out += [np.ctypeslib.as_array(lib.llama_get_embeddings_ith(engine._ctx, outputs[r]),
                                          shape=(engine.n_embd,)).copy() for r in range(len(group))]
        return np.stack(out)

    embed(seqs[:step])  # warm up
    start = time.perf_counter()
    llama = embed(seqs)
    llama_rate = n / (time.perf_counter() - start)
    model.use_document_engine("bf16")
    model.embed_token_sequences(seqs[:8], 32, normalize=False, decoder=model.document_engine.decoder)
    start = time.perf_counter()
    bf16 = model.embed_token_sequences(seqs, 32, normalize=False, decoder=model.document_engine.decoder)
    bf16_rate = n / (time.perf_counter() - start)
    cosine = (llama * bf16).sum(1) / np.linalg.norm(llama, axis=1) / np.linalg.norm(bf16, axis=1)
    print(f"{name}: {llama_rate:.2f} docs/s; bf16: {bf16_rate:.2f} docs/s; cosine min {cosine.min():.5f} "
          f"({n} documents, {step} a decode, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
