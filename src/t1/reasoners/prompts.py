"""What a writer is asked: the system and user messages that turn a query into a trace.

The trace a writer returns replaces T1's own reasoning: T1 embeds `prompt + trace +
<emb_token>`, exactly as it embeds a trace given by a file (mode "given"). The prompt is a
setting of the reasoner (`--reasoner-prompt`): a name below, or a JSON/YAML file holding
`system` and `user` (the user template takes `{query}` and `{instruction}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

from ..errors import T1Error

FIELDS = ("query", "instruction")


@dataclass(frozen=True)
class WriterPrompt:
    name: str
    system: str
    user: str

    def __post_init__(self) -> None:
        for part, text in (("system", self.system), ("user", self.user)):
            if not isinstance(text, str):
                raise T1Error(f"reasoner prompt {self.name!r}: {part} must be a string")
            try:
                names = {f for _, f, _, _ in Formatter().parse(text) if f is not None}
            except ValueError as e:
                raise T1Error(f"reasoner prompt {self.name!r}: {part} is not a valid template ({e})") from None
            unknown = sorted(names - set(FIELDS))
            if unknown:
                raise T1Error(f"reasoner prompt {self.name!r}: unknown field {{{unknown[0]}}} in {part} "
                              f"(known: {', '.join('{' + f + '}' for f in FIELDS)})")
        if "{query}" not in self.user:
            raise T1Error(f"reasoner prompt {self.name!r}: the user template needs {{query}}")

    def messages(self, query: str, instruction: str | None) -> list[dict]:
        values = {"query": query, "instruction": instruction or ""}
        out = [{"role": "system", "content": self.system.format(**values)}] if self.system else []
        return out + [{"role": "user", "content": self.user.format(**values)}]

    def identity(self) -> dict:
        return {"system": self.system, "user": self.user}


PROMPTS = {
    # The default: a short account of what a relevant document says, the length T1 embeds well.
    "t1": WriterPrompt(
        "t1",
        "You help a search engine. Given a search task and a query, reason briefly about what the query is "
        "really asking and what a relevant document would contain: the key facts, concepts, terms and likely "
        "answer. Write one short paragraph of plain text, no lists, no preamble.",
        "Task: {instruction}\nQuery: {query}"),
    # BRIGHT's query-reasoning prompt (Su et al., 2024), as used for its GPT-4 reasoning queries.
    "bright": WriterPrompt(
        "bright",
        "",
        "{query}\n\nInstructions:\n1. Identify the essential problem.\n2. Think step by step to reason and describe "
        "what information could be relevant and helpful to address the questions in detail.\n3. Draft an answer."),
    # The answer alone, as HyDE writes a hypothetical document.
    "hyde": WriterPrompt(
        "hyde",
        "",
        "Write a short passage that answers the question.\nQuestion: {query}\nPassage:"),
}
DEFAULT_PROMPT = "t1"


def load_prompt(spec: str | dict | WriterPrompt | None) -> WriterPrompt:
    """A prompt by name (`PROMPTS`), a dict of `system` and `user`, or a JSON/YAML file of them."""
    if spec is None:
        return PROMPTS[DEFAULT_PROMPT]
    if isinstance(spec, WriterPrompt):
        return spec
    if isinstance(spec, dict):
        return _from_dict(spec, "prompt")
    if spec in PROMPTS:
        return PROMPTS[spec]
    path = Path(spec)
    if not path.is_file():
        raise T1Error(f"reasoner prompt {spec!r}: not one of {', '.join(PROMPTS)} and no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError and YAMLError's parse errors
        raise T1Error(f"{path}: cannot read the reasoner prompt ({str(e).splitlines()[0]})") from None
    except Exception as e:  # yaml.YAMLError
        raise T1Error(f"{path}: cannot read the reasoner prompt ({str(e).splitlines()[0]})") from None
    return _from_dict(data, str(path))


def _from_dict(data, where: str) -> WriterPrompt:
    if not isinstance(data, dict) or "user" not in data or set(data) - {"system", "user", "name"}:
        raise T1Error(f"{where}: a reasoner prompt is an object with 'user' (and optionally 'system')")
    return WriterPrompt(str(data.get("name", where)), data.get("system", ""), data["user"])
