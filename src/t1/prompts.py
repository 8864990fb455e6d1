"""How texts become token ids: the document format and the chat-formatted query prompt.

Documents: ``instruction + "\\n" + text + <emb_token>`` in one pass. Queries: the backbone's chat
template, user turn = instruction + query, assistant turn = reasoning, then ``<emb_token>``.
Truncation always cuts the document or query text, never the instruction or the final token.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import T1Error

DEFAULT_QUERY_INSTRUCTION = "Given a query, retrieve relevant passages that help answer the query"
QUERY_TEMPLATE = "{instruction}\nQuery: {query}"
DOCUMENT_TEMPLATE = "{instruction}\n"


def instruction_or_default(instruction: str | None, default: str | None) -> str | None:
    """The one fallback rule for instructions: `None` means "not given" and takes the default
    (the model's, or the dataset's); any text, the empty one included, is used as given."""
    return default if instruction is None else instruction


class NoRoom(T1Error, ValueError):
    """A length limit that leaves no room for the text after the instruction: a user mistake (a
    `T1Error`: one line, a 4xx over HTTP) and, for callers that expect it, a `ValueError`."""


@dataclass
class PromptBuilder:
    tokenizer: object
    emb_token_id: int

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def document(self, text: str, instruction: str | None, max_length: int) -> list[int]:
        """Token ids of ``instruction + text + <emb_token>``, the text cut to fit `max_length`."""
        prefix = self._ids(DOCUMENT_TEMPLATE.format(instruction=instruction)) if instruction else []
        room = max_length - len(prefix) - 1
        if room < 1:
            raise NoRoom(f"a document length of {max_length} tokens leaves no room for the text (the instruction "
                         f"and <emb_token> take {len(prefix) + 1}); raise the length or shorten the instruction")
        return prefix + self._ids(text)[:room] + [self.emb_token_id]

    def query_prompt(self, query: str, instruction: str | None, max_length: int) -> list[int]:
        """Chat-formatted prompt ending where the assistant starts reasoning, the query cut
        (token-wise) until the whole prompt fits `max_length`."""
        return self._render(self.fit_query(query, instruction, max_length), instruction)

    def fit_query(self, query: str, instruction: str | None, max_length: int) -> str:
        """The query text, cut so that its chat prompt fits `max_length` tokens."""
        query_ids = self._ids(query)
        text, keep = query, len(query_ids)
        length = len(self._render(text, instruction))
        while length > max_length:  # decode/re-encode can shift a token at the cut: repeat
            keep -= length - max_length
            if keep < 1:
                raise NoRoom(f"a query length of {max_length} tokens leaves no room for the query after the "
                             "instruction and chat template; raise the length or shorten the instruction")
            text = self.tokenizer.decode(query_ids[:keep])
            length = len(self._render(text, instruction))
        return text

    @staticmethod
    def messages(query: str, instruction: str | None) -> list[dict]:
        """The conversation of a query: one user turn (instruction + query)."""
        content = QUERY_TEMPLATE.format(instruction=instruction, query=query) if instruction else query
        return [{"role": "user", "content": content}]

    def _render(self, query: str, instruction: str | None) -> list[int]:
        messages = self.messages(query, instruction)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self._ids(text)
        return self._ids(messages[0]["content"] + "\n")

    def reasoning(self, reasoning: str, max_tokens: int) -> list[int]:
        return self._ids(reasoning)[:max_tokens]
