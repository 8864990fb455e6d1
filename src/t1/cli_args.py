"""The argparse pieces every `t1` command shares: the parser whose mistakes are `T1Error`s, the
number and device types that check a value while the command line is parsed, and the common
flags. `t1.cli` and the commands of the evaluation, serve and training packages import them
from here, so that nothing below the CLI imports `t1.cli` itself.
"""

from __future__ import annotations

import argparse

from .errors import T1Error


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


def _number(kind, minimum, what, inclusive=True, maximum=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not (value > minimum or inclusive and value == minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


# The argparse types of every t1 command: a zero or negative size is refused while the command
# line is parsed, before any file is read or model loaded.
positive_int = _number(int, 1, "at least 1")
non_negative_int = _number(int, 0, "at least 0")
positive_float = _number(float, 0.0, "positive", inclusive=False)
non_negative_float = _number(float, 0.0, "at least 0")
fraction = _number(float, 0.0, "between 0 and 1", maximum=1.0)
top_p = _number(float, 0.0, "above 0 and at most 1", inclusive=False, maximum=1.0)


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
    p.add_argument("--traces", type=positive_int, default=1, help=traces_help)
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature with --traces N")
    p.add_argument("--top-p", type=top_p, default=0.95, help="nucleus sampling with --traces N")
    p.add_argument("--trace-fusion", choices=["mean", "rrf"], default="mean",
                   help="with --traces N: mean of the trace embeddings, or reciprocal-rank fusion of their results")


def add_settings_args(p: argparse.ArgumentParser, query: bool = True, document: bool = True) -> None:
    """--settings FILE and the length flags: T1 settings applied when the model loads."""
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="JSON file of T1 settings (prompt templates, instructions per task, lengths, decoding, "
                        "max_new_tokens) that override the model's; see settings/mre-t1.json")
    if query:
        p.add_argument("--max-query-length", type=positive_int, default=None,
                       help="tokens of a query's whole prompt; a longer query is cut and reported (default: the "
                            "model's; a checkpoint without t1_config.json: 8192 or its position limit, as BRIGHT)")
    if document:
        p.add_argument("--max-document-length", type=positive_int, default=None,
                       help="tokens per document, instruction included (default: the model's; a checkpoint without "
                            "t1_config.json: 8192 or its position limit, as BRIGHT)")


def model_settings(args) -> dict:
    """The T1 settings a command's flags give: those of --settings FILE, then the length flags."""
    from .settings import load_settings

    settings = load_settings(args.settings) if getattr(args, "settings", None) else {}
    for name in ("max_query_length", "max_document_length"):
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    return settings


def add_engine_arg(p: argparse.ArgumentParser) -> None:
    """--engine: how reasoning is generated (t1 search, eval, bright, serve, data reason)."""
    from .generation import ENGINE_HELP, ENGINES

    p.add_argument("--engine", choices=ENGINES, default=None, help=ENGINE_HELP)
