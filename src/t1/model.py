"""`T1Model`: one decoder LLM that embeds documents in one pass and queries after reasoning.

The embedding is the final-layer hidden state (after the final norm) at the special token
`<emb_token>`, L2-normalised. The token is added to the backbone's vocabulary when missing, its
embedding row initialised as the mean of the existing rows; a checkpoint whose tokenizer already
holds it (a published T1 such as ForwardAILabs/MRE-T1) keeps its own trained row.

`encode_query` / `encode_document` also take sentence-transformers' argument names (`prompt`,
`prompt_name`, `normalize_embeddings`, `convert_to_numpy`, `convert_to_tensor`, `device`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .backbones import DEFAULT_MODEL, resolve_backbone, shipped_model
from .batching import MAX_BATCH_TOKENS, pad, plan_batches
from .data import as_texts
from .errors import T1Error
from .generation import Engine, make_engine, trace_settings
from .prompts import DOCUMENT_TEMPLATE, PromptBuilder, instruction_or_default
from .reasoning import sampling_kwargs, stop_token_ids
from .settings import CONFIG_NAME, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, T1Config, check, checkpoint_defaults
from .settings import REASONING_MODES as SEARCH_MODES

logger = logging.getLogger(__name__)

# What `encode_query` does itself; reasoning "auto" decides by searching (`t1.query`).
REASONING_MODES = tuple(m for m in SEARCH_MODES if m != "auto")


class QueryEmbeddings(NamedTuple):
    embeddings: np.ndarray
    reasoning: list[str]
    # Per query: the model ended its own trace with <emb_token> (mode generate only; a trace cut
    # by max_new_tokens or ended by EOS is False). How adaptive the reasoning length is.
    ended: list[bool] | bool | None = None
    # Test-time scaling (num_traces > 1): every sampled trace per query, and their normalised
    # embeddings [queries, traces, dim]; `embeddings` is then their mean (embedding fusion).
    traces: list[list[str]] | None = None
    trace_embeddings: np.ndarray | None = None


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
            if (folder / "adapter_config.json").exists():
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
        return hasattr(self.backbone, "peft_config")

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
        for idx in tqdm(batches, desc=desc, disable=not _show(show_progress_bar, len(batches))):
            ids, mask = pad([sequences[i] for i in idx], self.tokenizer.pad_token_id, "right")
            emb = self.embed(ids.to(self.device), mask.to(self.device), decoder)
            if normalize:
                emb = F.normalize(emb, dim=-1)
            for row, i in enumerate(idx):
                out[i] = emb[row]
        return torch.stack(out)

    def _embed_ids(self, sequences, batch_size, max_tokens, normalize, desc, show_progress_bar,
                   decoder=None) -> np.ndarray:
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.embed_sequences(sequences, batch_size, max_tokens, normalize, desc, show_progress_bar,
                                       decoder)
        return emb.cpu().numpy()

    def encode_document(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        max_tokens_per_batch: int | None = MAX_BATCH_TOKENS,
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        normalize_embeddings: bool | None = None,
        convert_to_numpy: bool | None = None,
        convert_to_tensor: bool | None = None,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """Embed documents: one forward pass of ``instruction + text + <emb_token>`` each.
        `instruction=None` uses the model's document instruction, "" none. Returns
        float32 [n, dim] in input order (a single string gives [dim]).

        sentence-transformers' names work with their meaning: `prompt` is the instruction,
        `prompt_name` names one (see `instruction_for`), `normalize_embeddings` is `normalize`,
        `device` moves the model, `convert_to_tensor=True` returns a tensor on the model's device
        and `convert_to_numpy=False` a list of tensors."""
        instruction = self._st_instruction("document", instruction, prompt, prompt_name)
        normalize = _same("normalize", normalize, "normalize_embeddings", normalize_embeddings)
        self._st_device(device)
        texts, single = as_texts(texts, "texts")
        instruction = instruction_or_default(instruction, self.config.document_instruction)
        max_length = max_length or self.config.max_document_length
        seqs = [self.prompts.document(t, instruction, max_length) for t in texts]
        emb = self._embed_ids(seqs, batch_size, max_tokens_per_batch, self._norm(normalize), "Encoding documents",
                              show_progress_bar, self.document_engine.decoder)
        return self._st_output(emb[0] if single else emb, convert_to_numpy, convert_to_tensor)

    def encode_query(
        self,
        queries: str | Sequence[str],
        instruction: str | None = None,
        reasoning: str | Sequence[str] = "generate",
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        normalize: bool | None = None,
        do_sample: bool | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int | None = None,
        show_progress_bar: bool | None = None,
        cache=None,
        query_ids: Sequence[str] | None = None,
        num_traces: int = 1,
        *,
        hooks=None,
        prompt: str | None = None,
        prompt_name: str | None = None,
        normalize_embeddings: bool | None = None,
        convert_to_numpy: bool | None = None,
        convert_to_tensor: bool | None = None,
        device: str | torch.device | None = None,
    ) -> QueryEmbeddings:
        """Embed queries after reasoning. `reasoning` is "generate" (the model writes a trace,
        decoded as the model's settings say (greedy by default) unless `do_sample` is given,
        with `temperature`, `top_p`, `top_k`), "none" (instruction + query + <emb_token>), or a list of
        traces supplied by the caller (one per query). Returns (embeddings, reasoning texts).

        `cache` (a `ReasoningCache`) serves traces generated earlier with the same model, prompt
        and decoding settings and stores new ones; `query_ids` are recorded with them.
        `num_traces` > 1 samples that many traces per query (sampling is then on) and returns
        the mean of their normalised embeddings, with each trace in `traces`/`trace_embeddings`.
        `hooks` (a `t1.generation.streaming.RowHooks`, one trace per query) streams each trace
        as it is generated and stops the rows whose request went away (`t1 serve`).

        sentence-transformers' names work with their meaning: `prompt` is the instruction,
        `prompt_name` names one (see `instruction_for`; a BRIGHT task such as "biology" gives
        BRIGHT's instruction), `normalize_embeddings` is `normalize`, `device` moves the model.
        Passing `convert_to_numpy` or `convert_to_tensor` returns the embeddings alone, as
        sentence-transformers does: an array, a tensor on the model's device, or (with
        `convert_to_numpy=False`) a list of tensors; the traces then are not returned."""
        instruction = self._st_instruction("query", instruction, prompt, prompt_name)
        normalize = _same("normalize", normalize, "normalize_embeddings", normalize_embeddings)
        self._st_device(device)
        result = self._encode_query(queries, instruction, reasoning, max_new_tokens, batch_size, max_length,
                                    normalize, do_sample, temperature, top_p, top_k, show_progress_bar, cache,
                                    query_ids, num_traces, hooks)
        if convert_to_numpy is None and convert_to_tensor is None:
            return result
        return self._st_output(result.embeddings, convert_to_numpy, convert_to_tensor)

    def _encode_query(self, queries, instruction, reasoning, max_new_tokens, batch_size, max_length, normalize,
                      do_sample, temperature, top_p, top_k, show_progress_bar, cache, query_ids,
                      num_traces, hooks=None) -> QueryEmbeddings:
        queries, single = as_texts(queries, "queries")
        if not queries:
            return QueryEmbeddings(np.zeros((0, self.dim), dtype=np.float32), [], [])
        for i, q in enumerate(queries):
            if not q or not q.strip():
                raise T1Error(f"query {i} is empty")
        instruction = instruction_or_default(instruction, self.config.query_instruction)
        max_length = max_length or self.config.max_query_length
        max_new_tokens = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        prompts, cuts = self.prompts.query_prompts(queries, instruction, max_length)
        if cuts.count:
            logger.warning("%s", cuts)
        normalize = self._norm(normalize)

        if isinstance(reasoning, str) and reasoning not in REASONING_MODES:
            raise T1Error(f"reasoning must be one of {REASONING_MODES} or a list of texts, got {reasoning!r}")
        if reasoning == "none" or (reasoning == "generate" and max_new_tokens == 0):
            texts = [""] * len(queries)
        elif not isinstance(reasoning, str):
            texts = list(reasoning)
            if len(texts) != len(queries):
                raise T1Error(f"got {len(texts)} reasoning texts for {len(queries)} queries")
        else:
            if num_traces < 1:
                raise T1Error(f"num_traces must be at least 1, got {num_traces}")
            if hooks is not None and num_traces > 1:
                raise ValueError("hooks stream one trace per query")
            if self.reasoner is not None:
                emb, texts, ended = self._written(prompts, queries, instruction, max_new_tokens, batch_size,
                                                  show_progress_bar, temperature, top_p, cache, query_ids,
                                                  num_traces, hooks)
            else:
                if do_sample is None and num_traces == 1:
                    sampling = sampling_kwargs(**self.config.sampling(self.backbone.generation_config))
                else:
                    sampling = sampling_kwargs(bool(do_sample) or num_traces > 1, temperature, top_p, top_k)
                emb, texts, ended = self._generate_cached(prompts, queries, instruction, max_new_tokens, batch_size,
                                                          show_progress_bar, sampling, cache, query_ids, num_traces,
                                                          hooks)
            if num_traces == 1:
                return _query_result(single, _normalized(emb) if normalize else emb, texts, ended)
            per_trace = _normalized(emb).reshape(len(queries), num_traces, -1)
            fused = per_trace.mean(axis=1)
            traces = [texts[i * num_traces:(i + 1) * num_traces] for i in range(len(queries))]
            result = QueryEmbeddings(_normalized(fused) if normalize else fused, [t[0] for t in traces],
                                     ended[::num_traces], traces, per_trace)
            return QueryEmbeddings(*(None if x is None else x[0] for x in result)) if single else result
        emb = self._embed_traces(prompts, texts, max_new_tokens, batch_size, normalize, show_progress_bar)
        return _query_result(single, emb, texts, [False] * len(queries))

    def _embed_traces(self, prompts, texts, max_new_tokens, batch_size, normalize, show_progress_bar) -> np.ndarray:
        """Embeddings of prompt + a given trace + <emb_token>: the trace cut to `max_new_tokens`
        tokens, as generation would have stopped it; cuts are counted in one warning."""
        traces = [self.prompts.reasoning(t, None) for t in texts]
        cut = [len(t) for t in traces if len(t) > max_new_tokens]
        if cut:
            logger.warning("%d of %d reasoning traces cut to max_new_tokens=%d (longest %d tokens); raise "
                           "--max-new-tokens to keep them whole", len(cut), len(traces), max_new_tokens, max(cut))
        seqs = [p + t[:max_new_tokens] + [self.emb_token_id] for p, t in zip(prompts, traces)]
        return self._embed_ids(seqs, batch_size, MAX_BATCH_TOKENS, normalize, "Encoding queries", show_progress_bar)

    def _written(self, prompts, queries, instruction, max_new_tokens, batch_size, show_progress_bar, temperature,
                 top_p, cache, query_ids, samples, hooks):
        """Raw embeddings, traces and ended flags of `samples` traces per query written by
        `self.reasoner` (rows query-major), as `_generate_cached` gives T1's own."""
        traces = self.reasoner.write(queries, instruction, max_tokens=max(1, max_new_tokens), samples=samples,
                                     temperature=temperature, top_p=top_p, cache=cache, query_ids=query_ids,
                                     show_progress_bar=show_progress_bar)
        texts, ended = [t.text for t in traces], [t.ended for t in traces]
        if hooks is not None:
            for row, text in enumerate(texts):
                hooks.send(row, text)
        rows = [p for p in prompts for _ in range(samples)]
        emb = self._embed_traces(rows, texts, max_new_tokens, batch_size, False, show_progress_bar)
        return emb, texts, ended

    def _generate(self, prompts, max_new_tokens, batch_size, normalize, show_progress_bar, on_batch=None,
                  hooks=None, **sampling):
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        texts = [""] * len(prompts)
        ended = [False] * len(prompts)
        batches = plan_batches([len(p) for p in prompts], batch_size)
        stop_ids = stop_token_ids(self) if hooks is not None else None
        for idx in tqdm(batches, desc="Reasoning", disable=not _show(show_progress_bar, len(batches))):
            if hooks is not None:  # rows whose request went away are not started
                idx = [i for i in idx if not hooks.is_abandoned(i)]
                if not idx:
                    continue
            extra = {} if hooks is None else hooks.rollout_kwargs(self.tokenizer, stop_ids, idx)
            rollout = self.engine.rollout([prompts[i] for i in idx], max_new_tokens, **extra, **sampling)
            emb = F.normalize(rollout.embeddings, dim=-1) if normalize else rollout.embeddings
            out[idx] = emb.cpu().numpy()
            for i, ids, emitted in zip(idx, rollout.reasoning_ids, rollout.emitted_emb_token):
                texts[i] = self.tokenizer.decode(ids, skip_special_tokens=True)
                ended[i] = emitted
            if on_batch is not None:
                on_batch(idx, out, texts, ended)
        return out, texts, ended

    def _generate_cached(self, prompts, queries, instruction, max_new_tokens, batch_size, show_progress_bar,
                         sampling: dict, cache, query_ids, samples: int = 1, hooks=None):
        """Raw (unnormalised) embeddings, traces and ended flags of `samples` traces per prompt
        (rows prompt-major); with a cache, only the traces it lacks are generated, and each
        finished batch is stored at once (but a row that `hooks` says was abandoned: it is cut)."""
        prompts = [p for p in prompts for _ in range(samples)]
        queries = [q for q in queries for _ in range(samples)]
        query_ids = None if query_ids is None else [i for i in query_ids for _ in range(samples)]
        if cache is None:
            return self._generate(prompts, max_new_tokens, batch_size, False, show_progress_bar, hooks=hooks,
                                  **sampling)
        settings = trace_settings(self.engine, max_new_tokens, sampling)
        fingerprint = self.fingerprint()
        keys = [cache.key(fingerprint, p, settings, row % samples) for row, p in enumerate(prompts)]
        found = cache.get(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        texts, ended = [""] * len(prompts), [False] * len(prompts)
        for i, key in enumerate(keys):
            if key in found:
                texts[i], ended[i], out[i] = found[key]
                if hooks is not None:
                    hooks.send(i, texts[i])
        todo = None if hooks is None else hooks.subset(missing)

        def store(idx, emb, new_texts, new_ended):
            cache.put({"key": keys[missing[j]], "model": self.name_or_path, "instruction": instruction,
                       "query_id": query_ids[missing[j]] if query_ids is not None else None,
                       "query": queries[missing[j]], "reasoning": new_texts[j], "ended": new_ended[j],
                       "embedding": emb[j], "settings": settings}
                      for j in idx if todo is None or not todo.is_abandoned(j))

        if missing:
            emb, new_texts, new_ended = self._generate([prompts[i] for i in missing], max_new_tokens, batch_size, False,
                                                       show_progress_bar, on_batch=store, hooks=todo, **sampling)
            for j, i in enumerate(missing):
                out[i], texts[i], ended[i] = emb[j], new_texts[j], new_ended[j]
        return out, texts, ended

    def _norm(self, normalize: bool | None) -> bool:
        return self.config.normalize if normalize is None else normalize

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

    def _st_instruction(self, side: str, instruction, prompt, prompt_name) -> str | None:
        """`instruction`, or sentence-transformers' `prompt` (the same thing), or the
        instruction `prompt_name` names; as in sentence-transformers, a prompt given outright
        wins over `prompt_name`."""
        if prompt is not None and instruction is not None and prompt != instruction:
            raise T1Error("pass the instruction as `instruction` or as `prompt`, not both")
        if prompt is not None:
            return prompt
        if instruction is None and prompt_name is not None:
            return self.instruction_for(prompt_name, side)
        return instruction

    def _st_device(self, device) -> None:
        """sentence-transformers' `device`: encode there, moving the model."""
        if device is None:
            return
        if isinstance(device, (list, tuple)):
            raise T1Error("multi-process encoding over a list of devices is not supported; pass one device")
        device = torch.device(device)
        current = self.device
        if device.type != current.type or (device.index is not None and device.index != current.index):
            self.to(device)
            self.use_engine(self.engine.name)  # an engine may hold weights of its own on the old device

    def _st_output(self, emb: np.ndarray, convert_to_numpy: bool | None, convert_to_tensor: bool | None):
        """sentence-transformers' output forms: `convert_to_tensor` wins; `convert_to_numpy=False`
        gives a list of tensors (one tensor for a single input); else the float32 array."""
        if convert_to_tensor:
            return torch.from_numpy(emb).to(self.device)
        if convert_to_numpy is False:
            tensor = torch.from_numpy(emb).to(self.device)
            return list(tensor) if tensor.ndim == 2 else tensor
        return emb


def _same(name: str, value, alias: str, alias_value):
    """One setting passed under its t1 name or its sentence-transformers alias."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise T1Error(f"{name}={value!r} and {alias}={alias_value!r} disagree; pass one")
    return alias_value


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _query_result(single: bool, embeddings: np.ndarray, texts: list[str], ended: list[bool]) -> QueryEmbeddings:
    """All queries' results, or the one query's when a single string was passed."""
    parts = (embeddings, texts, ended)
    return QueryEmbeddings(*(p[0] for p in parts)) if single else QueryEmbeddings(*parts)


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


def _show(flag: bool | None, n_batches: int) -> bool:
    return flag if flag is not None else (n_batches > 1 and sys.stderr.isatty())
