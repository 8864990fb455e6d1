"""The one configuration parser of training, in the shape of TRL's `TrlParser`: a YAML file
(`--config x.yaml`), then per-field flags on top (`--learning_rate 1e-4 --lora_r 8`); `--help`
lists every field with its help text. `t1 train contrastive|sft|grpo` and the curriculum (its
own sections and every stage config it chains) go through it.

A YAML file is read as flags (`key: value` → `--key value`), so its values go through the same
type checks as the command line and a wrong type fails at parse time, naming the file and key.
A sectioned config (the curriculum's `eval:`, `traces:`, ...) is typed the same way, section by
section (`ConfigParser.parse_mapping`), its errors naming `section.key`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from ..errors import T1Error

MAX_NODES = 100_000  # values a config may hold once its aliases are expanded (704 bytes named 1.4 GB)
_INVALID = re.compile(r"argument --([\w.]+)(?:/\S+)?: invalid (\w+) value: (.*)")
_NOT_BOOL = re.compile(r"argument --([\w.]+)(?:/\S+)?: Truthy value expected: got (.*) but expected")


class ConfigParser(HfArgumentParser):
    """`HfArgumentParser` over config dataclasses whose argparse errors are `T1Error`s: one
    line, exit status 2, no usage dump. `where` names the file or command line being read;
    `prefix` (a section, e.g. "eval.") words a bad value as `eval.k must be int, got 'ten'`."""

    def __init__(self, types, prog: str | None = None, where: str = "command line", prefix: str | None = None):
        super().__init__(types, prog=prog, allow_abbrev=False)  # --learning_rat is a mistake, not learning_rate
        self.where, self.prefix = where, prefix

    def error(self, message):
        if self.prefix is not None and (bad := _INVALID.match(message)):
            message = f"{self.prefix}{bad[1]} must be {bad[2]}, got {bad[3]}"
        elif self.prefix is not None and (bad := _NOT_BOOL.match(message)):
            message = f"{self.prefix}{bad[1]} must be bool, got {bad[2]!r}"
        raise T1Error(f"{self.where}: {message}")

    # ------------------------------------------------------------------ flat configs (the stages)
    def parse(self, argv: list[str], settings: dict | None = None) -> tuple:
        """Instances of the dataclasses from `--config FILE` and flags in `argv`, flags winning;
        `settings` (a mapping, e.g. a curriculum's chained paths) goes on top of both. Unknown
        keys, wrong types and invalid values are `T1Error`s naming where they came from."""
        argv = list(argv)
        config_flags, where = [], "command line"
        if "--config" in argv:
            i = argv.index("--config")
            if i + 1 >= len(argv):
                raise T1Error("--config needs a YAML file")
            where = argv[i + 1]
            config_flags = settings_to_flags(read_yaml(where), self, where)
            del argv[i: i + 2]
        self.where = where
        _, unknown = self.parse_known_args(config_flags)  # type errors name the file
        _unknown(unknown, where)
        self.where = f"{self.prog} (command line or settings)" if settings else "command line"
        flags = config_flags + argv + settings_to_flags(settings or {}, self, f"{self.prog} settings")
        _unknown(self.parse_known_args(flags)[1], "command line")  # before any value is checked
        try:
            configs = tuple(self.parse_args_into_dataclasses(flags))
        except (ValueError, TypeError) as e:
            raise T1Error(f"{where}: {e}") from None
        _check_outputs(configs, where)
        return configs

    # ------------------------------------------------------------------ sectioned configs (the curriculum)
    @classmethod
    def parse_mapping(cls, kind: type, data: dict, where: str, prefix: str = ""):
        """`kind` from a mapping (YAML values, or texts from flags), typed by the same parser.
        A field argparse cannot type is set as given: a nested dataclass (a section, parsed
        likewise) or a mapping (a text is read as YAML). "null" sets an optional field to None."""
        hints = typing.get_type_hints(kind)
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise T1Error(f"{where}: unknown setting(s) {', '.join(prefix + u for u in unknown)}")
        direct, flat = {}, {}
        for key, value in data.items():
            hint = _without_none(hints[key])
            if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
                if not isinstance(value, dict):
                    raise T1Error(f"{where}: {prefix}{key} must be a section of settings")
                direct[key] = cls.parse_mapping(hint, value, where, f"{prefix}{key}.")
            elif (typing.get_origin(hint) or hint) is dict:
                value = _yaml(value) if isinstance(value, str) else value
                if not isinstance(value, dict):
                    raise T1Error(f"{where}: {prefix}{key} must be dict, got {value!r}")
                direct[key] = value
            elif isinstance(value, str) and value.lower() in ("null", "none") and _optional(hints[key]):
                direct[key] = None  # `--export.folder null` on the command line
            else:
                flat[key] = value
        parser = cls((kind,), where=where, prefix=prefix)
        parser.set_defaults(**direct)
        try:
            (config,) = parser.parse_args_into_dataclasses(settings_to_flags(flat, parser, where))
        except (ValueError, TypeError) as e:
            raise T1Error(f"{where}: {prefix.rstrip('.') or 'config'}: {e}") from None
        return config


def redefault(base: type, name: str, default, help: str | None = None):
    """Field `name` of the dataclass `base` re-declared with another default: the field keeps
    its `--help` text (or takes `help`), which re-declaring it plainly would drop."""
    parent = base.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata={**parent.metadata, **({"help": help} if help else {})})


def describe(kind: type, prefix: str = "") -> list[str]:
    """One line per field of the dataclass `kind` (`--prefix.name`, its help and default), a
    nested dataclass field as its own fields: the `--help` of a sectioned config."""
    lines = []
    for f in dataclasses.fields(kind):
        hint = _without_none(typing.get_type_hints(kind)[f.name])
        if dataclasses.is_dataclass(hint):
            lines += [f"{prefix}{f.name}: {f.metadata.get('help', '')}", *describe(hint, f"{prefix}{f.name}.")]
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  --{prefix}{f.name}  {f.metadata.get('help', '')} (default: {default!r})")
    return lines


def parse_config(types: tuple, argv: list[str], prog: str, settings: dict | None = None) -> tuple:
    """`ConfigParser(types, prog).parse(argv, settings)`: the stages' configs from the command line."""
    return ConfigParser(types, prog=prog).parse(argv, settings)


def _without_none(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if _optional(hint) and len(args) == 1 else hint


def _optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


def _yaml(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _expanded_size(node, sizes: dict) -> int:
    """How many values `node` stands for with every alias expanded, counted on the composed
    graph (where an alias is the node it names, shared), so counting costs what the file does."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts as nothing more
        children = node.value if isinstance(node.value, list) else []
        flat = [n for child in children for n in (child if isinstance(child, tuple) else (child,))]
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(_expanded_size(n, sizes) for n in flat))
    return sizes[id(node)]


class _DuplicateKey(Exception):
    """A key given twice in one YAML mapping (the message starts with its line)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently; YAML 1.2 requires keys to be unique)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(f"{key_node.start_mark.line + 1}: key {key!r} appears twice (YAML keeps only "
                                    "the last; give it once)")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file or malformed YAML is a `T1Error`."""
    path = Path(path)
    if not path.is_file():
        raise T1Error(f"{path}: no such config file")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8-sig"))
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_NODES:  # measured before anything expands
                raise T1Error(f"{path}: its YAML aliases (*name) expand to more than {MAX_NODES:,} values; a config "
                              "is a mapping of settings")
            data = (loader.construct_document(node) if node is not None else None) or {}
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise T1Error(f"{path}: malformed YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise T1Error(f"{path}: malformed YAML (nested too deeply)") from None
    except _DuplicateKey as e:
        raise T1Error(f"{path}:{e}") from None
    if not isinstance(data, dict):
        raise T1Error(f"{path}: expected a mapping of settings")
    return data


def settings_to_flags(settings: dict, parser: HfArgumentParser, where: str) -> list[str]:
    """`{key: value}` as command-line flags, so YAML values meet the same parser as flags."""
    actions = {a.dest: a for a in parser._actions}
    flags = []
    for key, value in settings.items():
        action = actions.get(key)
        if value is None:
            if action is not None and action.default is not None:
                raise T1Error(f"{where}: {key} cannot be null")
            continue
        if isinstance(value, list) and action is not None and action.nargs not in ("+", "*"):
            raise T1Error(f"{where}: {key} takes one value, got a list")
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, list):
            if not value:
                raise T1Error(f"{where}: {key} is an empty list (give at least one value, or leave it out)")
            flags += [f"--{key}", *map(str, value)]
        else:
            flags.append(f"--{key}={value}")  # `=`: a value may start with a dash
    return flags


def _check_outputs(configs: tuple, where: str) -> None:
    """Refuse an output_dir that is, holds or lies inside the starting model or the records:
    saving there would overwrite the weights the run started from."""
    from ..atomic import check_not_input

    found = {k: getattr(c, k) for c in configs for k in ("model_name_or_path", "train_file", "output_dir")
             if getattr(c, k, None)}
    if "output_dir" in found:
        try:
            check_not_input(found["output_dir"], [found.get("model_name_or_path"), found.get("train_file")])
        except T1Error as e:
            raise T1Error(f"{where}: output_dir {e}") from None


def _unknown(strings: list[str], where: str) -> None:
    keys = [s.lstrip("-") for s in strings if s.startswith("--")]
    if strings:
        raise T1Error(f"{where}: unknown setting(s) {', '.join(keys) or ' '.join(strings)} (see --help)")


def to_dict(*configs: Any) -> dict:
    """One JSON-ready mapping of several config objects (for saving next to a run)."""
    out = {}
    for config in configs:
        out.update(config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config))
    return out
