"""The argparse pieces every `t1` command shares: the parser whose mistakes are `T1Error`s, the
number and device types that check a value while the command line is parsed, and the common
flags. `t1.cli` and the commands of the evaluation, serve and training packages import them
from here, so that nothing below the CLI imports `t1.cli` itself.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

from .errors import T1Error
from .settings import MIN_TEMPERATURE


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes (a missing or unknown flag, a bad value) are `T1Error`s: one line,
    exit 2, like every other user mistake."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, exit_on_error=False, allow_abbrev=False, **kwargs)  # one spelling per flag

    def parse_known_args(self, args=None, namespace=None):
        try:
            return super().parse_known_args(args, namespace)
        except argparse.ArgumentError as e:
            # the types below say what a value must be: "--k must be at least 1, got 0"
            raise T1Error(f"{e.argument_name} {e.message}" if e.message.startswith("must ") else str(e)) from None

    def error(self, message):
        raise T1Error(f"{message} (see {self.prog} --help)")


INT_LIMIT = 2**31 - 1  # a C int: what faiss, torch and pytrec_eval take for a count or a size


def _number(kind, minimum, what, inclusive=True, maximum=None):
    limit = INT_LIMIT if kind is int else math.inf  # past it, the value overflows what uses it

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not (value > minimum or inclusive and value == minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        if not value < limit:
            raise argparse.ArgumentTypeError(f"must be {'at most ' + str(INT_LIMIT) if kind is int else 'finite'}, "
                                             f"got {text}")
        return value

    return parse


# The argparse types of every t1 command: a zero, negative, infinite or overflowing value is
# refused while the command line is parsed, before any file is read or model loaded.
positive_int = _number(int, 1, "at least 1")
non_negative_int = _number(int, 0, "at least 0")
positive_float = _number(float, 0.0, "positive", inclusive=False)
non_negative_float = _number(float, 0.0, "at least 0")
fraction = _number(float, 0.0, "between 0 and 1", maximum=1.0)
top_p = _number(float, 0.0, "above 0 and at most 1", inclusive=False, maximum=1.0)
temperature = _number(float, MIN_TEMPERATURE, f"positive, at least {MIN_TEMPERATURE} (lower overflows; greedy "
                                              "decoding is --traces 1)")


def device_arg(text: str) -> str:
    """cpu, cuda, cuda:N or mps, present on this machine: checked while parsing, before any model
    loads."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or mps, got {text!r}")
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and not count:
        problem = f"{text} needs CUDA, and torch finds no CUDA GPU here (use cpu)"
    elif device.type == "cuda" and device.index is not None and device.index >= count:
        problem = f"{text} does not exist: torch finds {count} CUDA device{'s' if count > 1 else ''} here"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problem = f"{text} needs Apple's MPS, and torch finds none here (use cpu)"
    else:
        return text
    raise argparse.ArgumentTypeError(f"must be a device this machine has: {problem}")


DEVICE_HELP = "cpu, cuda, cuda:1, mps ... (default: cuda if available)"
MODEL_HELP = ("T1 model: 't1-smollm2-135m' (the shipped trained model), a model folder, a hub id, or "
              "'smollm2-135m-instruct' (the untrained offline backbone)")


def add_sampling_args(p: argparse.ArgumentParser, traces_help: str) -> None:
    """--traces, --temperature, --top-p, --trace-fusion (t1 search, eval, bright)."""
    from .settings import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, TRACE_FUSIONS

    p.add_argument("--traces", type=positive_int, default=1, help=traces_help)
    p.add_argument("--temperature", type=temperature, default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature with --traces N (default {DEFAULT_TEMPERATURE:g})")
    p.add_argument("--top-p", type=top_p, default=DEFAULT_TOP_P,
                   help=f"nucleus sampling with --traces N (default {DEFAULT_TOP_P:g})")
    p.add_argument("--trace-fusion", choices=TRACE_FUSIONS, default=TRACE_FUSIONS[0],
                   help="with --traces N: mean of the trace embeddings, or reciprocal-rank fusion of their results")


def add_fusion_args(p: argparse.ArgumentParser, weight_default: str) -> None:
    """--fusion and --fusion-weight of a hybrid ranking (t1 search, eval, bright)."""
    from .index.fusion import METHODS

    p.add_argument("--fusion", choices=METHODS, default=None,
                   help="hybrid: a weighted sum of min-max normalised scores (default), reciprocal rank fusion, "
                        "or adaptive (the weighted sum, its weights tilted per query towards the list whose top "
                        "hit stands out)")
    p.add_argument("--fusion-weight", type=fraction, default=None,
                   help=f"hybrid: weight of the T1 list, BM25 gets 1 - W (default: {weight_default})")


def add_auto_margin_arg(p: argparse.ArgumentParser) -> None:
    from .settings import DEFAULT_AUTO_MARGIN

    p.add_argument("--auto-margin", type=non_negative_float, default=DEFAULT_AUTO_MARGIN,
                   help=f"with --reasoning auto: reason when the plain embedding's top result leads the second by "
                        f"less (cosine; default {DEFAULT_AUTO_MARGIN:g})")


def query_settings(args, **fields):
    """The `QuerySettings` of a command's flags (those above, --max-new-tokens and
    --query-instruction); `fields` set the others (reasoning, hybrid)."""
    from .settings import QuerySettings

    return QuerySettings(max_new_tokens=args.max_new_tokens, instruction=args.query_instruction,
                         num_traces=args.traces, temperature=args.temperature, top_p=args.top_p,
                         trace_fusion=args.trace_fusion, fusion=args.fusion, fusion_weight=args.fusion_weight,
                         auto_margin=args.auto_margin, **fields)


def model_from_args(args):
    """The T1 model of a command's --model, --device, --engine and settings flags."""
    from .model import load_model

    return load_model(args.model, args.device, getattr(args, "engine", None), **model_settings(args))


def model_config(args):
    """The `T1Config` the model of --model will have, read without loading it: its saved
    settings (none for a config-less checkpoint) with the flags' applied. What a search decides
    before the weights load (its ranking) is decided on it, once."""
    from dataclasses import replace

    from .settings import T1Config

    flags = {k: v for k, v in model_settings(args).items() if k in {f.name for f in fields(T1Config)}}
    saved = T1Config.saved(args.model)
    return replace(saved, **flags) if saved is not None else T1Config(**flags)


def add_settings_args(p: argparse.ArgumentParser, query: bool = True, document: bool = True) -> None:
    """--settings FILE and the length flags: T1 settings applied when the model loads."""
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="JSON file of T1 settings (prompt templates, instructions per task, lengths, decoding, "
                        "max_new_tokens) that override the model's; see configs/settings/mre-t1.json")
    if query:
        p.add_argument("--max-query-length", type=positive_int, default=None,
                       help="tokens of a query's whole prompt; a longer query is cut and reported (default: the "
                            "model's; a checkpoint without t1_config.json: 8192 or its position limit, as BRIGHT)")
    if document:
        p.add_argument("--max-document-length", type=positive_int, default=None,
                       help="tokens per document, instruction included (default: the model's; a checkpoint without "
                            "t1_config.json: 8192 or its position limit, as BRIGHT)")


def model_settings(args) -> dict:
    """The T1 settings a command's flags give: those of --settings FILE, then the length and
    reasoner flags."""
    from .settings import load_settings

    settings = load_settings(args.settings) if getattr(args, "settings", None) else {}
    for name in ("max_query_length", "max_document_length"):
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    reasoner = reasoner_settings(args, settings.get("reasoner"))
    if reasoner is not None:
        settings["reasoner"] = reasoner
    if getattr(args, "document_engine", None):
        settings["document_engine"] = args.document_engine  # a loading option beside the T1 settings
    return settings


def add_document_engine_arg(p: argparse.ArgumentParser, flag: str = "--document-engine") -> None:
    """How documents are embedded (`t1.encoders`): `t1 index --engine`, `--document-engine` elsewhere."""
    from .encoders import DOCUMENT_ENGINE_HELP, DOCUMENT_ENGINES

    p.add_argument(flag, dest="document_engine", choices=DOCUMENT_ENGINES, default=None, help=DOCUMENT_ENGINE_HELP)


# --reasoner-X flag -> the reasoner option it sets (`t1.reasoners.make_reasoner`)
REASONER_FLAGS = {"model": "model", "prompt": "prompt", "thinking": "thinking", "max_tokens": "max_tokens",
                  "concurrency": "concurrency", "timeout": "timeout", "retries": "retries", "key_env": "api_key_env"}


def add_reasoner_args(p: argparse.ArgumentParser) -> None:
    """--reasoner and its options: who writes the query traces T1 embeds (search, eval, bright, serve)."""
    from .reasoners import DEFAULT_PROMPT, PROMPTS, THINKING
    from .reasoners.openai import DEFAULT_KEY_ENV

    p.add_argument("--reasoner", default=None, metavar="SOURCE",
                   help="who writes the reasoning: t1 (the model itself, default), an OpenAI-compatible endpoint "
                        "(http://127.0.0.1:11434/v1: Ollama, vLLM, llama.cpp's server, ...), a .gguf file run by "
                        "llama.cpp, or hf:NAME_OR_FOLDER (a Hugging Face causal LM)")
    p.add_argument("--reasoner-model", default=None, help="the endpoint's model (default: the first it lists)")
    p.add_argument("--reasoner-prompt", default=None, metavar="NAME|FILE",
                   help=f"the writer's prompt: {', '.join(PROMPTS)} (default {DEFAULT_PROMPT}; bright: BRIGHT's query "
                        "reasoning prompt), or a JSON/YAML file of system and user ({query}, {instruction})")
    p.add_argument("--reasoner-thinking", choices=THINKING, default=None,
                   help="a reasoning model's output used as the trace: its answer (default), its thinking, or both")
    p.add_argument("--reasoner-max-tokens", type=positive_int, default=None,
                   help="tokens the writer may write (default: the T1 model's max_new_tokens, the most it embeds)")
    p.add_argument("--reasoner-concurrency", type=positive_int, default=None,
                   help="endpoint requests in flight at once (default 4)")
    p.add_argument("--reasoner-timeout", type=positive_float, default=None,
                   help="seconds an endpoint request may take before it is retried (default 120)")
    p.add_argument("--reasoner-retries", type=non_negative_int, default=None,
                   help="retries of a refused connection, a timeout, 429 or 5xx, with backoff (default 3)")
    p.add_argument("--reasoner-key-env", default=None, metavar="VAR",
                   help=f"environment variable holding the endpoint's API key (default {DEFAULT_KEY_ENV})")


def reasoner_settings(args, base: str | dict | None = None) -> dict | None:
    """The reasoner's dict form (`t1.reasoners`) of the --reasoner flags over `base` (a settings
    file's), checked; None when neither names one."""
    from .reasoners import check_spec

    options = {} if base is None else dict(base) if isinstance(base, dict) else {"source": base}
    if getattr(args, "reasoner", None) is not None:
        options["source"] = args.reasoner
    for flag, option in REASONER_FLAGS.items():
        value = getattr(args, f"reasoner_{flag}", None)
        if value is not None:
            options[option] = value
    if not options:
        return None
    kind, _ = check_spec(options)
    return options if kind else None


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    """--engine: how reasoning is generated (t1 search, eval, bright, serve, data reason)."""
    from .generation import ENGINE_HELP, ENGINES

    p.add_argument("--engine", choices=ENGINES, default=None, help=ENGINE_HELP)


def add_config_command(subparsers, name: str, help_text: str, func) -> None:
    """A command whose arguments (`--config FILE`, `--field value`, `--help`) all go to a
    dataclass parser of its own, which lists every field: `+` as argparse's prefix keeps
    `--...` tokens out of this parser's hands."""
    p = subparsers.add_parser(name, help=help_text, add_help=False, prefix_chars="+")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=func)
