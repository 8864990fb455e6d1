"""How texts become token ids: the document format and the chat-formatted query prompt.

Documents: ``instruction + "\\n" + text + <emb_token>`` in one pass. Queries: the backbone's chat
template, user turn = instruction + query, assistant turn = reasoning, then ``<emb_token>``.
Truncation always cuts the document or query text, never the instruction or the final token.
The templates are settings of the model (`t1.settings.T1Config`); these are their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import T1Error

DEFAULT_QUERY_INSTRUCTION = "Given a query, retrieve relevant passages that help answer the query"
QUERY_TEMPLATE = "{instruction}\nQuery: {query}"
DOCUMENT_TEMPLATE = "{instruction}\n{text}"


def instruction_or_default(instruction: str | None, default: str | None) -> str | None:
    """The one fallback rule for instructions: `None` means "not given" and takes the default
    (the model's, or the dataset's); any text, the empty one included, is used as given."""
    return default if instruction is None else instruction


class NoRoom(T1Error, ValueError):
    """A length limit that leaves no room for the text after the instruction: a user mistake (a
    `T1Error`: one line, a 4xx over HTTP) and, for callers that expect it, a `ValueError`."""


@dataclass
class QueryCuts:
    """How many of `total` query prompts were cut to `limit` tokens, and the longest uncut one."""

    count: int
    total: int
    longest: int
    limit: int

    def __str__(self) -> str:
        return (f"{self.count} of {self.total} queries cut to fit max_query_length={self.limit} (longest prompt "
                f"{self.longest} tokens); raise --max-query-length to keep them whole")


@dataclass
class PromptBuilder:
    tokenizer: object
    emb_token_id: int
    query_template: str = QUERY_TEMPLATE
    document_template: str = DOCUMENT_TEMPLATE
    chat_template: str | None = None  # None: the tokenizer's; "": none (plain text)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def document(self, text: str, instruction: str | None, max_length: int) -> list[int]:
        """Token ids of ``instruction + text + <emb_token>``, the text cut to fit `max_length`."""
        before, after = self.document_template.split("{text}", 1) if instruction else ("", "")
        prefix = self._ids(before.format(instruction=instruction)) if before else []
        suffix = self._ids(after.format(instruction=instruction)) if after else []
        room = max_length - len(prefix) - len(suffix) - 1
        if room < 1:
            raise NoRoom(f"max_document_length={max_length} leaves no room for text after the instruction and "
                         "template; raise --max-document-length")
        return prefix + self._ids(text)[:room] + suffix + [self.emb_token_id]

    def query_prompt(self, query: str, instruction: str | None, max_length: int) -> list[int]:
        """Chat-formatted prompt ending where the assistant starts reasoning, the query cut
        (token-wise) until the whole prompt fits `max_length`."""
        return self._render(self.fit_query(query, instruction, max_length), instruction)

    def query_prompts(self, queries, instruction: str | None, max_length: int) -> tuple[list[list[int]], QueryCuts]:
        """`query_prompt` of each query, and how many were cut (`QueryCuts`)."""
        prompts, longest, count = [], 0, 0
        for query in queries:
            text, length = self._fit_query(query, instruction, max_length)
            prompts.append(self._render(text, instruction))
            longest, count = max(longest, length), count + (length > max_length)
        return prompts, QueryCuts(count, len(prompts), longest, max_length)

    def fit_query(self, query: str, instruction: str | None, max_length: int) -> str:
        """The query text, cut so that its chat prompt fits `max_length` tokens."""
        return self._fit_query(query, instruction, max_length)[0]

    def _fit_query(self, query: str, instruction: str | None, max_length: int) -> tuple[str, int]:
        """(the query text cut to fit, the length of its whole prompt before the cut)."""
        query_ids = self._ids(query)
        text, keep = query, len(query_ids)
        length = full = len(self._render(text, instruction))
        while length > max_length:  # decode/re-encode can shift a token at the cut: repeat
            keep -= length - max_length
            if keep < 1:
                raise NoRoom(f"max_query_length={max_length} leaves no room for the query after the instruction "
                             "and prompt template; raise --max-query-length")
            text = self.tokenizer.decode(query_ids[:keep])
            length = len(self._render(text, instruction))
        return text, full

    @staticmethod
    def messages(query: str, instruction: str | None, template: str = QUERY_TEMPLATE) -> list[dict]:
        """The conversation of a query: one user turn (instruction + query)."""
        content = template.format(instruction=instruction, query=query) if instruction else query
        return [{"role": "user", "content": content}]

    def _render(self, query: str, instruction: str | None) -> list[int]:
        messages = self.messages(query, instruction, self.query_template)
        template = getattr(self.tokenizer, "chat_template", None) if self.chat_template is None else self.chat_template
        if template:
            text = self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                      add_generation_prompt=True)
            return self._ids(text)
        return self._ids(messages[0]["content"] + "\n")

    def reasoning(self, reasoning: str, max_tokens: int | None) -> list[int]:
        """Token ids of a trace, the first `max_tokens` (None: all)."""
        return self._ids(reasoning)[:max_tokens]
