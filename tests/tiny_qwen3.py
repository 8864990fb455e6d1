"""A tiny random Qwen3ForCausalLM whose tokenizer already holds `<emb_token>`, laid out like a
published T1 checkpoint (ForwardAILabs/MRE-T1: Qwen3 backbone, the token in the tokenizer, an
embedding matrix padded past the tokenizer's length). No network, fast on CPU."""

from __future__ import annotations

from pathlib import Path

from tiny_model import build_tiny_tokenizer

EMB_TOKEN = "<emb_token>"
PADDED_ROWS = 8  # Qwen pads its embedding matrix past len(tokenizer) (151,936 rows for 151,670 tokens)


def build_tiny_qwen3(folder: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import AddedToken, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([AddedToken(EMB_TOKEN, special=True, normalized=False)], special_tokens=True)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer) + PADDED_ROWS, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
