"""`T1Model`: one decoder LLM that embeds documents in one pass and queries after reasoning.

The embedding is the final-layer hidden state (after the final norm) at the special token
`<emb_token>`, L2-normalised. The token is added to the backbone's vocabulary when missing, its
embedding row initialised as the mean of the existing rows; a checkpoint whose tokenizer already
holds it (a published T1 such as ForwardAILabs/MRE-T1) keeps its own trained row.

The model embeds token sequences and runs its generation engine; how a query's trace is obtained
(cached, sampled, streamed, written by another model) is `t1.query_encoding`'s, and
sentence-transformers' argument names are read by `t1.st_compat`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .backbones import DEFAULT_MODEL, has_adapter, resolve_backbone, saved_adapter, shipped_model
from .batching import MAX_BATCH_TOKENS, pad, plan_batches
from .data import as_texts
from .errors import T1Error
from .generation import Engine, make_engine
from .prompts import DOCUMENT_TEMPLATE, PromptBuilder, instruction_or_default
from .query_encoding import QueryEmbeddings, RunOptions, encode_queries, show_bar
from .settings import CONFIG_NAME, QuerySettings, T1Config, check, checkpoint_defaults
from .st_compat import document_call, query_call

logger = logging.getLogger(__name__)

def load_model(model, device: str | None = None, engine: str | None = None, **settings) -> "T1Model":
    """`model` itself when it is a loaded `T1Model`, else `T1Model.from_pretrained(model, ...)`
    with `settings` (T1Config fields) applied: the one loader of the commands, the evaluation and
    the integrations."""
    if isinstance(model, T1Model):
        if device is not None or engine is not None or settings:
            raise TypeError("device, engine and T1 settings apply when loading by name; this model is loaded already")
        return model
    return T1Model.from_pretrained(model, device=device, engine=engine, **settings)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 matmul on CPU is two orders of magnitude slower than fp32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _load_causal_lm(source: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with unreadable_weights(source):
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return model, tokenizer


@contextlib.contextmanager
def unreadable_weights(source):
    """A model folder that cannot be read (missing, truncated or corrupt weights, a malformed
    config) as one line naming it: safetensors raises its own error type, torch a RuntimeError."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not isinstance(e, SafetensorError) and "PytorchStreamReader" not in str(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise T1Error(f"cannot load model {str(source)!r}: {first}") from None


FINGERPRINTS = "fingerprints.json"  # under $T1_CACHE: weight-file key -> weights digest


def _remembered_digests() -> dict:
    from .backbones import cache_dir

    try:
        found = json.loads((cache_dir() / FINGERPRINTS).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _remember_digest(key: str, digest: str) -> None:
    """Keep a weights digest for the next load; a cache that cannot be written is only slower."""
    from .atomic import write_json
    from .backbones import cache_dir

    known = _remembered_digests()
    known[key] = digest
    try:
        write_json(cache_dir() / FINGERPRINTS, dict(list(known.items())[-256:]))
    except (T1Error, OSError):
        pass


def _version(state) -> tuple:
    """What changes when a tensor is replaced or edited in place (torch's version counter)."""
    return tuple((name, p.data_ptr(), p._version, str(p.dtype), str(p.device)) for name, p in state)


def _weight_files(folder: Path) -> list[Path]:
    return [f for f in folder.glob("*") if f.suffix in (".safetensors", ".bin")] if folder.is_dir() else []


class T1Model(torch.nn.Module):
    def __init__(self, backbone, tokenizer, config: T1Config):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.name_or_path = config.backbone  # where this model was loaded from (set by from_pretrained)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.emb_token_id = self._ensure_emb_token()
        self._engine: Engine | None = None
        self.reasoner = None  # who writes query traces (`t1.reasoners`); None: this model's engine
        self._document_engine = None

    @property
    def engine(self) -> Engine:
        """The generation engine that writes reasoning (`t1.generation`); the device's default
        until `use_engine` chooses one."""
        if self._engine is None:
            self._engine = make_engine(self)
        return self._engine

    def use_engine(self, name: str | None = None) -> "T1Model":
        """Generate reasoning with engine `name` ("hf", "compile", "int8", "llama.cpp", ...; None: the
        fastest exact one here, `t1.generation.default_engine`). The query embedding stays T1's whichever runs."""
        self._engine = make_engine(self, name)
        return self

    @property
    def document_engine(self):
        """How documents are embedded (`t1.encoders`): the host's measured default until
        `use_document_engine` chooses one."""
        if self._document_engine is None:
            from .encoders import make_document_engine

            self._document_engine = make_document_engine(self)
        return self._document_engine

    def use_document_engine(self, name: str | None = None) -> "T1Model":
        """Embed documents with engine `name` ("hf", "bf16"; None: the fastest exact one
        here, `t1.encoders.default_document_engine`)."""
        from .encoders import make_document_engine

        self._document_engine = make_document_engine(self, name)
        return self

    def use_reasoner(self, source=None, **options) -> "T1Model":
        """Have another writer reason for the queries (`t1.reasoners.make_reasoner`: an
        OpenAI-compatible URL, a .gguf file, hf:NAME, or a `Reasoner`; None or "t1": this model
        itself). T1 then embeds that writer's traces, as it embeds traces given by a file."""
        from .reasoners import make_reasoner

        self.reasoner = make_reasoner(source, **options)
        return self

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        merge_adapter: bool = True,
        engine: str | None = None,
        document_engine: str | None = None,
        **config_overrides,
    ) -> "T1Model":
        """Load a saved T1 model (full or LoRA adapter; the shipped `t1-smollm2-135m` by default)
        or start one from any causal LM (hub id, local folder, or the untrained offline backbone
        `smollm2-135m-instruct`). A causal LM whose tokenizer already holds `<emb_token>` (a
        published T1 such as `ForwardAILabs/MRE-T1`) keeps that token and its trained row. The
        dtype defaults to bf16 on a GPU, fp32 on CPU. Settings such as `max_new_tokens=` or
        `prompts={name: instruction}` override the saved ones.

        A LoRA adapter is merged into the weights on load (`merge_adapter=True`): the same
        embeddings and traces, several times faster, since an unmerged adapter adds two small
        matmuls to every linear layer at every decoding step. Training passes
        `merge_adapter=False` to keep the adapter trainable and savable on its own.

        `engine` chooses how reasoning is generated (see `use_engine`), `document_engine` how
        documents are embedded (see `use_document_engine`)."""
        device = torch.device(device) if device is not None else default_device()
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or default_dtype(device)
        folder = shipped_model(name_or_path) or Path(name_or_path)
        if shipped_model(name_or_path) and not (folder / CONFIG_NAME).exists():
            raise T1Error(f"the shipped model {name_or_path!r} is missing from the installed package ({folder}); "
                          "reinstall t1")
        files = _weight_files(folder)
        if (folder / CONFIG_NAME).exists():
            config = T1Config.load(folder)
            if saved_adapter(folder):
                from peft import PeftModel

                files += _weight_files(Path(resolve_backbone(config.backbone)))
                base, _ = _load_causal_lm(resolve_backbone(config.backbone), dtype)
                tokenizer = _load_causal_lm_tokenizer(folder)
                model = cls(base, tokenizer, config)  # adds <emb_token> to the base as at training
                with quiet_peft(), unreadable_weights(folder):
                    model.backbone = PeftModel.from_pretrained(model.backbone, folder)
                if merge_adapter:
                    model.backbone = model.backbone.merge_and_unload()
            else:
                backbone, tokenizer = _load_causal_lm(str(folder), dtype)
                model = cls(backbone, tokenizer, config)
        else:
            if not folder.exists() and _looks_like_path(name_or_path):
                raise T1Error(f"{name_or_path}: no such model folder")
            backbone, tokenizer = _load_causal_lm(resolve_backbone(name_or_path), dtype)
            model = cls(backbone, tokenizer, checkpoint_defaults(name_or_path, backbone.config))
        model.name_or_path = name_or_path
        for key, value in config_overrides.items():
            if not hasattr(model.config, key):
                raise T1Error(f"unknown T1 setting {key!r}")
            setattr(model.config, key, value)
        check(model.config)
        model = model.to(device).eval()
        if files:  # a hub id's files live in the hub's cache: hashed at first use
            model._note_weight_files(files, dtype, merge_adapter)
        if model.config.reasoner:
            model.use_reasoner(model.config.reasoner)
        if document_engine:
            model.use_document_engine(document_engine)
        return model.use_engine(engine) if engine else model  # None: the default, made at first use

    def save_pretrained(self, folder: str | Path) -> None:
        """Save weights (or the LoRA adapter), tokenizer and T1 settings to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        kwargs = {}
        if self.has_adapter:
            # The <emb_token> row is saved by trainable_token_indices; loading re-adds the token to
            # the base deterministically, so the whole resized embedding need not be copied.
            token_rows = any(getattr(c, "trainable_token_indices", None) for c in self.backbone.peft_config.values())
            kwargs["save_embedding_layers"] = not token_rows
        self.backbone.save_pretrained(folder, **kwargs)
        self.tokenizer.save_pretrained(folder)
        self.config.save(folder)

    def _ensure_emb_token(self) -> int:
        from transformers import AddedToken

        token = self.config.emb_token
        if token not in self.tokenizer.get_vocab():
            self.tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        # A saved tokenizer may know the token while a fresh base model lacks its row.
        embeddings = self.backbone.get_input_embeddings()
        if token_id >= embeddings.weight.shape[0]:
            old = embeddings.weight.shape[0]
            self.backbone.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            with torch.no_grad():
                weight = self.backbone.get_input_embeddings().weight
                weight[old:] = weight[:old].mean(dim=0)
                output = self.backbone.get_output_embeddings()
                if output is not None and output.weight.data_ptr() != weight.data_ptr():
                    output.weight[old:] = output.weight[:old].mean(dim=0)
        return token_id

    # ---------------------------------------------------------------- properties
    @property
    def prompts(self) -> PromptBuilder:
        """Token ids of documents and query prompts, with the templates of `config`."""
        c = self.config
        return PromptBuilder(self.tokenizer, self.emb_token_id, c.query_template, c.document_template, c.chat_template)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def decoder(self):
        """The transformer body (no LM head): its last_hidden_state is after the final norm."""
        base = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        return base.get_decoder()

    @property
    def has_adapter(self) -> bool:
        """Whether a peft adapter runs beside the weights (training, or loaded unmerged)."""
        return has_adapter(self.backbone)

    @property
    def dim(self) -> int:
        return self.backbone.config.get_text_config().hidden_size

    def fingerprint(self) -> str:
        """A short hash of every weight as used (an adapter's included: merged, or its own
        tensors when unmerged) and the settings that shape a document embedding: two models that
        embed documents differently get different fingerprints, however small the edit. Query-side
        settings and the document instruction and length (recorded by an index on their own) are
        left out, so changing them keeps cached indexes valid.

        The weights are hashed once (about 1.5 s for the 135M model's 538 MB in fp32 on 2 CPU
        cores) and the digest kept while no tensor changes (torch's version counters see in-place
        edits); a model loaded from files also finds it in `$T1_CACHE/fingerprints.json`, keyed by
        the weight files' paths, sizes and modification times, so a second load costs nothing."""
        h = self._shaping_hash()
        h.update(self._weights_digest().encode())
        return h.hexdigest()[:16]

    def sampled_fingerprint(self) -> str:
        """The fingerprint of t1 before issue #32 (every tensor's strided sample of about 4,096
        elements): kept only to tell an index built by this model then from one of another."""
        h = self._shaping_hash()
        with torch.no_grad():
            for name, p in sorted(self.backbone.state_dict().items()):
                flat = p.detach().reshape(-1)
                h.update(name.encode())
                h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def _shaping_hash(self):
        """sha256 started with the settings that shape a document embedding."""
        shaping = {k: getattr(self.config, k) for k in ("emb_token", "pooling", "normalize")}
        if self.config.document_template != DOCUMENT_TEMPLATE:  # the default leaves older fingerprints as they were
            shaping["document_template"] = self.config.document_template
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())

    def _weights_digest(self) -> str:
        """sha256 of every tensor's name, dtype, shape and bytes (a tensor shared by two names,
        as tied embeddings are, is read once)."""
        state = sorted(self.backbone.state_dict().items())
        version = _version(state)
        cached = self.__dict__.get("_digest")
        if cached is not None and cached[0] == version:
            return cached[1]
        h, seen = hashlib.sha256(), {}
        with torch.no_grad():
            for name, p in state:
                h.update(f"{name}:{p.dtype}:{tuple(p.shape)}:{seen.get(p.data_ptr(), '')}".encode())
                if p.data_ptr() in seen:
                    continue
                seen[p.data_ptr()] = name
                h.update(memoryview(p.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))
        digest = h.hexdigest()
        self.__dict__["_digest"] = (version, digest)
        loaded = self.__dict__.get("_loaded")
        if loaded is not None and loaded[1] == version:  # unchanged since loaded from these files
            _remember_digest(loaded[0], digest)
        return digest

    def _note_weight_files(self, files: list[Path], dtype: torch.dtype, merged: bool) -> None:
        """Key the weights by the files they came from; a digest remembered for them is used."""
        try:
            stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(files)]
        except OSError:
            return
        key = hashlib.sha256(json.dumps([stats, str(dtype), merged]).encode()).hexdigest()
        version = _version(sorted(self.backbone.state_dict().items()))
        self.__dict__["_loaded"] = (key, version)
        digest = _remembered_digests().get(key)
        if digest is not None:
            self.__dict__["_digest"] = (version, digest)

    # ---------------------------------------------------------------- embedding
    def hidden_states(self, input_ids: torch.Tensor, decoder=None) -> torch.Tensor:
        """Final-layer hidden states of right-padded rows. Differentiable.

        No attention mask is passed to the decoder: with right padding, the causal mask alone
        keeps every real token from seeing the pads that follow it, and leaving the mask out
        lets SDPA take its fused causal path instead of materialising a padding mask. No KV
        cache either: it would only hold memory."""
        return (decoder or self.decoder)(input_ids=input_ids, use_cache=False).last_hidden_state

    @staticmethod
    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The hidden state at the last real token of each row (the <emb_token>), as float32."""
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder=None) -> torch.Tensor:
        """Embedding (not normalised) of each right-padded row ending in <emb_token>.
        Differentiable; training calls this directly. `decoder`: another copy of the weights (a
        document engine's, `t1.encoders`); None: the model's own."""
        return self.pool(self.hidden_states(input_ids, decoder), attention_mask)

    def embed_sequences(
        self,
        sequences: Sequence[Sequence[int]],
        batch_size: int,
        max_tokens: int | None = None,
        normalize: bool = True,
        desc: str = "Encoding",
        show_progress_bar: bool | None = False,
        decoder=None,
    ) -> torch.Tensor:
        """Embeddings [n, dim] of token id sequences ending in <emb_token>, in input order,
        batched by length. Differentiable unless called under no_grad / inference_mode."""
        out: list[torch.Tensor | None] = [None] * len(sequences)
        batches = plan_batches([len(s) for s in sequences], batch_size, max_tokens)
        for idx in tqdm(batches, desc=desc, disable=not show_bar(show_progress_bar, len(batches))):
            ids, mask = pad([sequences[i] for i in idx], self.tokenizer.pad_token_id, "right")
            emb = self.embed(ids.to(self.device), mask.to(self.device), decoder)
            if normalize:
                emb = F.normalize(emb, dim=-1)
            for row, i in enumerate(idx):
                out[i] = emb[row]
        return torch.stack(out)

    def embed_token_sequences(self, sequences, batch_size: int, max_tokens: int | None = MAX_BATCH_TOKENS,
                              normalize: bool = True, desc: str = "Encoding", show_progress_bar: bool | None = None,
                              decoder=None) -> np.ndarray:
        """`embed_sequences` without gradients, as a float32 array [n, dim]."""
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.embed_sequences(sequences, batch_size, max_tokens, normalize, desc, show_progress_bar,
                                       decoder)
        return emb.cpu().numpy()

    def encode_document(self, texts: str | Sequence[str], instruction: str | None = None, batch_size: int = 32,
                        max_length: int | None = None, normalize: bool | None = None,
                        show_progress_bar: bool | None = None, max_tokens_per_batch: int | None = MAX_BATCH_TOKENS,
                        **st_options) -> np.ndarray:
        """Embed documents: one forward pass of ``instruction + text + <emb_token>`` each, on the
        model's document engine. `instruction=None` uses the model's document instruction, ""
        none. Returns float32 [n, dim] in input order (a single string gives [dim]).
        `st_options`: sentence-transformers' names (`prompt`, `prompt_name`,
        `normalize_embeddings`, `convert_to_numpy`, `convert_to_tensor`, `device`; `t1.st_compat`)."""
        instruction, normalize, output = document_call(self, instruction, normalize, st_options)
        texts, single = as_texts(texts, "texts")
        instruction = instruction_or_default(instruction, self.config.document_instruction)
        max_length = max_length or self.config.max_document_length
        seqs = [self.prompts.document(t, instruction, max_length) for t in texts]
        normalize = self.config.normalize if normalize is None else normalize
        emb = self.embed_token_sequences(seqs, batch_size, max_tokens_per_batch, normalize, "Encoding documents",
                                         show_progress_bar, self.document_engine.decoder)
        return output.apply(emb[0] if single else emb, self.device)

    def encode_query(self, queries: str | Sequence[str], settings: QuerySettings | None = None, *,
                     batch_size: int = 8, show_progress_bar: bool | None = None, cache=None,
                     query_ids: Sequence[str] | None = None, hooks=None, **options) -> QueryEmbeddings:
        """Embed queries after reasoning, as `settings` (a `QuerySettings`) and `options` (its
        fields by name) say: `reasoning` "generate" (the default: the model, or its reasoner,
        writes a trace), "none" (instruction + query + <emb_token>), or a list of traces, one
        per query; `max_new_tokens`, `instruction`, `num_traces` (> 1: the mean of that many
        sampled traces' embeddings, each in `traces` / `trace_embeddings`), `temperature`,
        `top_p`, `top_k`, `do_sample` (one trace; default as the model's settings say),
        `max_length`, `normalize`. Returns `QueryEmbeddings` (embeddings, reasoning texts, ...).

        `cache` (a `ReasoningCache`) serves traces generated earlier with the same model, prompt
        and decoding and stores new ones, with `query_ids`. `hooks`
        (`t1.generation.streaming.RowHooks`) streams each trace and stops abandoned rows.
        sentence-transformers' names work with their meaning (`t1.st_compat`); passing
        `convert_to_numpy` or `convert_to_tensor` returns the embeddings alone, as it does."""
        settings, given, output = query_call(self, settings, options)
        run = RunOptions(batch_size, show_progress_bar, cache, query_ids, hooks)
        result = encode_queries(self, queries, settings, given, run)
        return result if output.plain else output.apply(result.embeddings, self.device)

    # ---------------------------------------------------------------- sentence-transformers names
    def instruction_for(self, prompt_name: str, side: str = "query") -> str:
        """The instruction that a sentence-transformers `prompt_name` names, on the `side`
        ("query" or "document") being encoded: the side's instruction in `config.tasks` first;
        then a key of `config.prompts`; then "query" (the model's query instruction), "document",
        "passage" or "corpus" (its document instruction); then a BRIGHT task ("biology", ...,
        "theoremqa_theorems"; "biology_long" for the long documents), whose queries take
        BRIGHT's task instruction and whose documents take the model's document instruction, as
        `t1 bright` does."""
        configured = self.config.task_instruction(prompt_name, side)
        if configured is not None:
            return configured
        if prompt_name in self.config.prompts:
            return self.config.prompts[prompt_name]
        if prompt_name == "query":
            return self.config.query_instruction
        if prompt_name in ("document", "passage", "corpus"):
            return self.config.document_instruction
        from .bright_tasks import BRIGHT_TASKS, bright_instruction

        task = prompt_name.removesuffix("_long")
        if task in BRIGHT_TASKS:
            if side == "document":
                return self.config.document_instruction
            return bright_instruction(task, long=prompt_name.endswith("_long"))
        known = [*self.config.tasks, *self.config.prompts, "query", "document", "passage", "corpus", *BRIGHT_TASKS]
        raise T1Error(f"unknown prompt_name {prompt_name!r} (known: {', '.join(known)}; "
                      "add your own with T1Model.from_pretrained(..., prompts={name: instruction}))")


@contextlib.contextmanager
def quiet_peft():
    """peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: a
    FutureWarning users can do nothing about, so it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing`", category=FutureWarning)
        yield


def _load_causal_lm_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _looks_like_path(name: str) -> bool:
    """A missing local folder, not a hub id ("org/name"): absolute or dotted, more than two
    parts, or under a folder that exists here (e.g. runs/model)."""
    parts = Path(name).parts
    return name.startswith((".", "/", "~")) or len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())
