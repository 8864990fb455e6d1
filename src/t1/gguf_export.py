"""`t1 export --gguf`: a T1 model as one GGUF file that llama.cpp loads.

The adapter is merged into fp32 weights; the GGUF's metadata (architecture, hyper-parameters,
tokenizer, chat template) comes from the backbone's own GGUF, with `<emb_token>` appended to
the vocabulary as a control token. Only backbones shipped as GGUF (`smollm2-135m-instruct`) have
such a template; for others, llama.cpp's own `convert_hf_to_gguf.py` converts a
`t1 export --merged` folder.

llama.cpp's embedding output is the final hidden state after the output norm, as T1's is, so an
embedding context with last-token pooling over `prompt + trace + <emb_token>` gives T1's query
embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import T1Error

_SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.quantization_version")


def backbone_gguf(backbone: str) -> Path:
    """The GGUF file a backbone alias ships as; a clear error for any other backbone."""
    from .backbones import GGUF_ALIASES, _package_folder

    if backbone not in GGUF_ALIASES:
        raise T1Error(f"t1 export --gguf needs a backbone shipped as GGUF ({', '.join(GGUF_ALIASES)}); for "
                      f"{backbone!r}, export with --merged and convert that folder with llama.cpp's convert_hf_to_gguf.py")
    module, filename, pip_name = GGUF_ALIASES[backbone]
    return _package_folder(module, pip_name) / filename


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary layout of q/k rows to llama.cpp's (as convert_hf_to_gguf does)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_gguf(model, out: str | Path) -> Path:
    """Write `model` (a loaded `T1Model` on a GGUF-shipped backbone, its adapter merged, as
    inference loads it) to the GGUF file `out`, in fp32."""
    import gguf

    out = Path(out)
    if out.exists():
        raise T1Error(f"{out}: exists (choose another file)")
    source = model.name_or_path
    if model.has_adapter:
        raise T1Error(f"{source}: load it with its adapter merged (merge_adapter=True) to write a GGUF")
    reader = gguf.GGUFReader(backbone_gguf(model.config.backbone))
    arch = reader.fields["general.architecture"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    if arch != "llama" or model.emb_token_id != len(tokens):
        raise T1Error(f"{source}: cannot write a GGUF for this backbone (architecture {arch}, <emb_token> id "
                      f"{model.emb_token_id}, template vocabulary {len(tokens)})")
    changed = {"tokenizer.ggml.tokens": [*tokens, model.config.emb_token],
               "tokenizer.ggml.token_type": [*reader.fields["tokenizer.ggml.token_type"].contents(),
                                             int(gguf.TokenType.CONTROL)],
               f"{arch}.vocab_size": len(tokens) + 1, "general.file_type": int(gguf.LlamaFileType.ALL_F32)}
    config = model.backbone.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for key, field in reader.fields.items():
            if key.startswith(_SKIPPED_KEYS):
                continue
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, changed.get(key, field.contents()), field.types[0], sub_type=sub_type)
        for name, tensor in model.backbone.state_dict().items():
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue  # llama.cpp reads the tied head from token_embd
            weight = tensor.float().numpy()
            if name.endswith("q_proj.weight"):
                weight = _permute(weight, config.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                weight = _permute(weight, config.num_key_value_heads)
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(weight))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


QUANTIZATIONS = {"f16": 1, "q8_0": 7}  # llama.cpp's LLAMA_FTYPE_MOSTLY_F16 and _Q8_0


def quantize_gguf(source: str | Path, out: str | Path, kind: str = "q8_0") -> Path:
    """Write `source` (a fp32 GGUF) quantised to `kind` by llama.cpp's own quantiser, atomically."""
    try:
        import llama_cpp
    except ImportError:
        raise T1Error("quantising a GGUF needs llama-cpp-python: pip install 't1[llama-cpp]'") from None
    if kind not in QUANTIZATIONS:
        raise T1Error(f"unknown GGUF quantisation {kind!r} (choose one of {', '.join(QUANTIZATIONS)})")
    out = Path(out)
    with atomic_path(out) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = QUANTIZATIONS[kind]
        if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
            raise T1Error(f"{source}: llama.cpp could not quantise it to {kind}")
    return out
