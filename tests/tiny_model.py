"""A tiny random Llama and a byte-level BPE tokenizer built locally: no network, fast on CPU."""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = (
    "cell protein gene brain water river rock climate market price robot sensor code array "
    "theorem proof integer prime graph tree energy solar carbon plant animal virus vaccine "
    "query document retrieve reason answer question because therefore model learn data"
).split()


def training_text(n_lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "." for _ in range(n_lines)]


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on local text, with ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(folder: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0,
                     positions: int = 2048) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class GenerationCounter:
    """Counts the traces any `T1Model` really generates (patched on the class, not the shared
    instance: monkeypatch would leave a bound method behind on the session model, and the CLI
    loads a model of its own)."""

    def __init__(self, model, monkeypatch):
        from t1.query_encoding import QueryEncoder

        self.rows = 0
        original = QueryEncoder.rollouts

        def counted(this, prompts, *args, **kwargs):
            self.rows += len(prompts)
            return original(this, prompts, *args, **kwargs)

        monkeypatch.setattr(QueryEncoder, "rollouts", counted)
