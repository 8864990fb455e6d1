"""`T1Config`: every setting that decides how a model turns text into embeddings, in one place;
`QuerySettings`: how a search embeds its queries and ranks (the defaults of every entry point).

A t1 model saves them next to its weights as `t1_config.json`. A checkpoint without that file
(a hub T1 such as ForwardAILabs/MRE-T1, or a plain causal LM) gets `checkpoint_defaults`: the
lengths BRIGHT's own code gives LLM embedders. A settings file (`t1 bright --settings FILE`,
`load_settings`) holds any subset of the same fields and overrides them at load time, so the
guesses made for a published checkpoint (prompt template, instructions, lengths, decoding,
`max_new_tokens`) are visible and changeable without touching code.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .backbones import DEFAULT_BACKBONE, shipped_model
from .errors import T1Error
from .prompts import DEFAULT_QUERY_INSTRUCTION, DOCUMENT_TEMPLATE, QUERY_TEMPLATE

CONFIG_NAME = "t1_config.json"
# BRIGHT's retrievers.py reads documents (and queries) of its LLM embedders up to 8,192 tokens
# (gte-Qwen; 4,096 for SFR and e5-mistral).
BRIGHT_LLM_LENGTH = 8192
SIDES = ("query", "document")


@dataclass(frozen=True)
class Decoding:
    """How a trace is decoded: greedy (the default), or sampled with these settings. What every
    engine (`t1.generation`), the reasoning cache's key and the GRPO policy take, resolved once per search
    (`QuerySettings.decoding`)."""

    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None

    def kwargs(self) -> dict:
        """`generate`'s keywords (greedy leaves the checkpoint's sampling settings unset), which
        are also what a cached trace's settings record."""
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


GREEDY = Decoding()


@dataclass
class T1Config:
    """Settings saved next to the weights, so a saved model embeds exactly as it did."""

    backbone: str = DEFAULT_BACKBONE  # base weights (what a LoRA adapter applies to)
    emb_token: str = "<emb_token>"
    pooling: str = "emb_token"
    normalize: bool = True
    query_instruction: str = DEFAULT_QUERY_INSTRUCTION
    document_instruction: str = ""
    max_query_length: int = 512  # the whole chat prompt, in tokens; the query text is what is cut
    max_document_length: int = 512  # instruction + text + <emb_token>; the text is what is cut
    max_new_tokens: int = 256
    format_version: int = 1
    # Named instructions for `prompt_name` (sentence-transformers' `prompts`), e.g. {"scifact": "..."}.
    prompts: dict[str, str] = field(default_factory=dict)
    # T1's weight in a weighted-sum fusion with BM25, the default search when set: measured on
    # judged queries (`t1.evaluation.fusion_weight.choose_weight`). None: not measured, search with T1 alone.
    fusion_weight: float | None = None
    # The fusion method of that default search (`t1.index.fusion.METHODS`): None is the fixed weighted
    # sum; "adaptive" tilts the weight per query (measured in README, "Adaptive fusion").
    fusion: str | None = None
    # Prompt templates. The user turn of a query ({instruction}, {query}; a query without an
    # instruction is the query alone), and a document ({instruction}, {text}; a document without
    # an instruction is its text alone). `chat_template`: None uses the tokenizer's own, a Jinja
    # string replaces it, "" renders the user turn as plain text.
    query_template: str = QUERY_TEMPLATE
    document_template: str = DOCUMENT_TEMPLATE
    chat_template: str | None = None
    # Instructions per task (a BRIGHT task, "<task>_long" for its long documents, or any name
    # passed as `prompt_name`): {"biology": {"query": "...", "document": "..."}}. A side left out
    # falls back to the task's own (BRIGHT's for BRIGHT tasks) or the model's instruction.
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)
    # Decoding of a reasoning trace: greedy, or sampling with these settings (None: the value in
    # the checkpoint's generation_config.json). Test-time scaling (`num_traces` > 1) samples
    # with its own temperature and top_p.
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    # Who writes query traces when not this model (`t1.reasoners`): None, or a writer's source
    # (an OpenAI-compatible URL, a .gguf file, hf:NAME) or a dict of it and its options.
    reasoner: str | dict | None = None

    def __post_init__(self) -> None:
        check(self)

    def save(self, folder: str | Path) -> None:
        from .atomic import write_json

        write_json(Path(folder) / CONFIG_NAME, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> "T1Config":
        from .data import parse_json

        path = Path(folder) / CONFIG_NAME
        try:
            data = parse_json(path.read_text(encoding="utf-8-sig"), str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise T1Error(f"{path}: cannot read the model's settings ({e})") from None
        if not isinstance(data, dict):
            raise T1Error(f"{path}: expected a JSON object of T1 settings")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except T1Error as e:
            raise T1Error(f"{path}: {e}") from None

    @classmethod
    def saved(cls, name_or_path: str) -> "T1Config | None":
        """The settings saved with a model folder or a shipped model, read without loading it;
        None where there are none (`T1Model.from_pretrained` then uses `checkpoint_defaults`)."""
        folder = shipped_model(name_or_path) or Path(name_or_path)
        return cls.load(folder) if (folder / CONFIG_NAME).is_file() else None

    def task_instruction(self, task: str, side: str) -> str | None:
        """The instruction this config gives `task` on `side` ("query" or "document"); None
        when it names none."""
        return self.tasks.get(task, {}).get(side)

    def decoding(self, generation_config=None) -> Decoding:
        """How this model decodes one trace: greedy, or sampled with the settings here, each None
        read from the checkpoint's `generation_config`."""
        if not self.do_sample:
            return GREEDY

        def pick(name, fallback):
            value = getattr(self, name)
            return value if value is not None else getattr(generation_config, name, None) or fallback

        return Decoding(True, pick("temperature", 1.0), pick("top_p", 1.0), pick("top_k", None))


MIN_TEMPERATURE = 0.01  # below it, logits / temperature overflow float32 and sampling fails
# setting -> (the types it may have, what it must be): a settings file's values meet these before
# anything runs ("do_sample": "false" is no bool, a list is no instruction)
SCHEMA = {
    "backbone": ((str,), "a string"), "emb_token": ((str,), "a string"), "pooling": ((str,), "a string"),
    "normalize": ((bool,), "true or false"), "do_sample": ((bool,), "true or false"),
    "query_instruction": ((str,), "a string"), "document_instruction": ((str,), "a string"),
    "format_version": ((int,), "an integer"), "prompts": ((dict,), "an object of names and instructions"),
    "fusion_weight": ((float, int, type(None)), "a number between 0 and 1, or null"),
    "chat_template": ((str, type(None)), "a Jinja string, or null"),
    "temperature": ((float, int, type(None)), f"a number of at least {MIN_TEMPERATURE}, or null"),
    "top_p": ((float, int, type(None)), "a number above 0 and at most 1, or null"),
    "top_k": ((int, type(None)), "an integer of at least 0, or null"),
    "fusion": ((str, type(None)), "the name of a fusion method, or null"),
    "reasoner": ((str, dict, type(None)), "a writer's source (URL, .gguf file, hf:NAME) or an object of it and "
                                          "its options, or null"),
}
TEMPLATE_FIELDS = {"query_template": ("query", ("instruction", "query")),
                   "document_template": ("text", ("instruction", "text"))}


def check(config: T1Config) -> None:
    """Refuse settings that cannot work, naming the setting."""
    for name in ("max_query_length", "max_document_length"):
        value = getattr(config, name)
        if not _is_int(value) or value < 2:
            raise T1Error(f"{name} must be an integer of at least 2, got {value!r}")
    if not _is_int(config.max_new_tokens) or config.max_new_tokens < 0:
        raise T1Error(f"max_new_tokens must be an integer of at least 0, got {config.max_new_tokens!r}")
    for name, (kinds, what) in SCHEMA.items():
        value = getattr(config, name)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds) or _out_of_range(name, value):
            raise T1Error(f"{name} must be {what}, got {json.dumps(value) if _jsonable(value) else repr(value)}")
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in config.prompts.items()):
        raise T1Error("prompts must map a name to an instruction (strings)")
    for name, (needed, known) in TEMPLATE_FIELDS.items():
        check_template(name, getattr(config, name), needed, known)
    if config.chat_template:
        check_chat_template(config.chat_template)
    if config.reasoner is not None:
        from .reasoners import check_spec

        check_spec(config.reasoner)
    if config.fusion is not None:
        from .index.fusion import METHODS

        if config.fusion not in METHODS:
            raise T1Error(f"fusion must be one of {', '.join(METHODS)}, got {config.fusion!r}")
    if not isinstance(config.tasks, dict) or any(
            not isinstance(v, dict) or set(v) - set(SIDES) or not all(isinstance(t, str) for t in v.values())
            for v in config.tasks.values()):
        raise T1Error('tasks must map a task name to {"query": ..., "document": ...} (strings)')


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _out_of_range(name: str, value) -> bool:
    if value is None or isinstance(value, (str, bool, dict)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return {"fusion_weight": not 0 <= value <= 1, "temperature": value < MIN_TEMPERATURE,
            "top_p": not 0 < value <= 1, "top_k": value < 0}.get(name, False)


def check_template(name: str, template, needed: str, known: tuple[str, ...]) -> None:
    """A prompt template as `str.format` reads it: only the `known` fields, by name, `needed`
    exactly once, braces paired (`{{` and `}}` are literal braces)."""
    if not isinstance(template, str):
        raise T1Error(f"{name} must be a string holding {{{needed}}}, got {template!r}")
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as e:
        raise T1Error(f"{name}: malformed template ({e}; write a literal brace as {{{{ or }}}}): {template!r}") from None
    bad = next((f for f in names if f not in known), None)
    if bad is not None:
        raise T1Error(f"{name}: unknown field {{{bad}}} (known: {', '.join('{' + k + '}' for k in known)}; write a "
                      f"literal brace as {{{{ or }}}}): {template!r}")
    if needed not in names:
        raise T1Error(f"{name} must be a string holding {{{needed}}}, got {template!r}")
    if names.count(needed) > 1:
        raise T1Error(f"{name} holds {{{needed}}} {names.count(needed)} times; it must hold it once: {template!r}")


def check_chat_template(template: str) -> None:
    """Compile a Jinja chat template now, as transformers will (a syntax error found at the first
    query would come after the model has loaded)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=["jinja2.ext.loopcontrols"]).from_string(template)
    except TemplateError as e:
        line = f"line {e.lineno}: " if getattr(e, "lineno", None) else ""
        raise T1Error(f"chat_template is not a valid Jinja template ({line}{e.message or e})") from None


def checkpoint_defaults(name: str, model_config) -> T1Config:
    """Settings of a checkpoint without `t1_config.json`: the defaults, with BRIGHT's lengths for
    LLM embedders (8,192 tokens, or the model's position limit if lower) for queries and
    documents."""
    limit = getattr(model_config.get_text_config(), "max_position_embeddings", None) or BRIGHT_LLM_LENGTH
    length = min(BRIGHT_LLM_LENGTH, limit)
    return T1Config(backbone=name, max_query_length=length, max_document_length=length)


# Fields a settings file may not change: they say what the weights are, not how to use them.
FIXED = ("backbone", "emb_token", "pooling", "format_version")


def load_settings(path: str | Path) -> dict:
    """The settings in a JSON file (any subset of `T1Config`'s fields), checked; pass them to
    `T1Model.from_pretrained(name, **settings)`. A full `t1_config.json` may be given: its
    fields that describe the weights (backbone, emb_token, pooling, format_version) are ignored."""
    from .data import parse_json

    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8-sig"), str(path))  # a byte-order mark is dropped
    except FileNotFoundError:
        raise T1Error(f"{path}: no such settings file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: cannot read the settings file ({e})") from None
    if not isinstance(data, dict):
        raise T1Error(f"{path}: expected a JSON object of T1 settings")
    known = {f.name for f in fields(T1Config)}
    unknown = sorted(k for k in data if k not in known and not k.startswith("_"))
    if unknown:
        raise T1Error(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known - set(FIXED)))})")
    settings = {k: v for k, v in data.items() if k in known and k not in FIXED}
    try:
        T1Config(**settings)
    except TypeError as e:
        raise T1Error(f"{path}: {e}") from None
    except T1Error as e:
        raise T1Error(f"{path}: {e}") from None
    return settings


def write_settings(config: T1Config, path: str | Path) -> None:
    """Write the settings of `config` a settings file can change (the inverse of `load_settings`)."""
    from .atomic import write_json

    write_json(path, {k: v for k, v in asdict(config).items() if k not in FIXED})


# ---------------------------------------------------------------- how a search uses the model
REASONING_MODES = ("generate", "none", "auto")  # reason first, never, or only where the plain embedding is unsure
GIVEN = "given"  # reasoning written by the caller, one trace per query (HTTP, `t1 eval --reasoning FILE`)
TRACE_FUSIONS = ("mean", "rrf")  # several traces: mean of their embeddings, or reciprocal rank of their lists
DEFAULT_TEMPERATURE = 1.0  # sampling of several traces (test-time scaling)
DEFAULT_TOP_P = 0.95
DEFAULT_AUTO_MARGIN = 0.02  # reasoning "auto": reason when the top hit leads the second by less (cosine)


@dataclass(frozen=True)
class QuerySettings:
    """How queries are embedded and ranked: the one set of defaults of `t1 search`, `t1 eval`,
    `t1 bright`, `t1 serve`, `t1.query.search` and `T1Model.encode_query`. Fields left None take
    the model's (`T1Config`: `max_new_tokens`, `query_instruction`, `max_query_length`,
    `normalize`, its decoding; `fusion_weight` for a hybrid ranking).

    `hybrid` None ranks by the default rule (`t1.query.choose_ranking`: fused with BM25 when the
    model has a saved fusion weight and the index BM25), False by T1 alone, True (or a fusion
    method's name) fused with BM25. `num_traces` > 1 samples that many traces per query with
    `temperature`, `top_p` and `top_k`, fused as `trace_fusion` says; `do_sample` decides for one
    trace (None: as the model's settings say). `auto_margin` applies to reasoning "auto". Frozen,
    so it can key a cache or a batch (`t1 serve` groups requests by it)."""

    reasoning: str = "generate"
    max_new_tokens: int | None = None
    instruction: str | None = None
    num_traces: int = 1
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    trace_fusion: str = "mean"
    hybrid: bool | None = None
    fusion: str | None = None
    fusion_weight: float | None = None
    auto_margin: float = DEFAULT_AUTO_MARGIN
    do_sample: bool | None = None
    top_k: int | None = None
    max_length: int | None = None  # the whole chat prompt, in tokens (None: the model's max_query_length)
    normalize: bool | None = None

    def __post_init__(self) -> None:
        from .index.fusion import METHODS

        if isinstance(self.hybrid, str):  # hybrid="rrf": fused, by that method
            object.__setattr__(self, "fusion", self.fusion or self.hybrid)
            object.__setattr__(self, "hybrid", True)
        if self.reasoning not in (*REASONING_MODES, GIVEN):
            raise T1Error(f"reasoning must be one of {', '.join(REASONING_MODES)}, got {self.reasoning!r}")
        if self.max_new_tokens is not None and (not _is_int(self.max_new_tokens) or self.max_new_tokens < 0):
            raise T1Error(f"max_new_tokens must be an integer of at least 0, got {self.max_new_tokens!r}")
        if not _is_int(self.num_traces) or self.num_traces < 1:
            raise T1Error(f"num_traces must be at least 1, got {self.num_traces!r}")
        if self.trace_fusion not in TRACE_FUSIONS:
            raise T1Error(f"trace fusion must be one of {', '.join(TRACE_FUSIONS)}, got {self.trace_fusion!r}")
        if not (MIN_TEMPERATURE <= self.temperature < math.inf) or not 0 < self.top_p <= 1:
            raise T1Error(f"sampling needs temperature >= {MIN_TEMPERATURE} and 0 < top_p <= 1, got "
                          f"{self.temperature}, {self.top_p}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise T1Error(f"top_k must be an integer of at least 0, got {self.top_k!r}")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 2):
            raise T1Error(f"max_length must be an integer of at least 2, got {self.max_length!r}")
        for name in ("do_sample", "normalize"):
            if getattr(self, name) not in (None, True, False):
                raise T1Error(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.fusion is not None and self.fusion not in METHODS:
            raise T1Error(f"fusion method must be one of {', '.join(METHODS)}, got {self.fusion!r}")
        if not math.isfinite(self.auto_margin):  # negative is allowed: "auto" then never reasons
            raise T1Error(f"auto margin must be a finite number, got {self.auto_margin}")
        if self.fusion_weight is not None and not 0.0 <= self.fusion_weight <= 1.0:
            raise T1Error(f"fusion_weight must be between 0 and 1, got {self.fusion_weight}")
        if self.hybrid is False and (self.fusion is not None or self.fusion_weight is not None):
            raise T1Error("a dense-only search takes no fusion method or weight")

    @property
    def traces(self) -> int:
        """Traces sampled per query: `num_traces` where the model reasons, else one."""
        return self.num_traces if self.reasoning in ("generate", "auto") else 1

    def decoding(self, config: T1Config, generation_config=None) -> Decoding:
        """How each trace is decoded: sampled with these settings for several traces or where
        `do_sample` says so; greedy where it says not; else as the model's `config` says."""
        if self.do_sample is None and self.num_traces == 1:
            return config.decoding(generation_config)
        if self.do_sample or self.num_traces > 1:
            return Decoding(True, self.temperature, self.top_p, self.top_k)
        return GREEDY
