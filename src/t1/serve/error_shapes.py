"""The error body of each API family `t1 serve` speaks, chosen by the path of the request.

t1's own routes answer `{"detail": "one line"}`; the OpenAI-compatible routes (`/v1/...`)
answer OpenAI's `{"error": {"message", "type", "param", "code"}}` and the Ollama ones
(`/api/...`) Ollama's `{"error": "one line"}`, so that each family's clients raise their usual
exceptions. The message is the same one line everywhere (one validation for all); only the
shape changes, and the status where a family has no such status: neither API uses 422, so a
request t1 refuses as invalid is a 400 there.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

OPENAI_PREFIX = "/v1/"
OLLAMA_PREFIX = "/api/"
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
OPENAI_CODES = {401: "invalid_api_key", 413: "request_too_large", 503: "overloaded", 504: "timeout"}
# "input[2] is empty", "dimensions: ...", "max_new_tokens must be ...", "unknown field 'x'": the field named
_PARAM = re.compile(r"^(?:(?:unknown|missing) field '(\w+)'|([a-z_]+)(?:\[\d+\])?(?::| is | must ))")


def family(path: str) -> str:
    """'openai', 'ollama' or 't1': whose conventions the route at `path` follows."""
    if path.startswith(OPENAI_PREFIX):
        return "openai"
    return "ollama" if path.startswith(OLLAMA_PREFIX) else "t1"


def error_body(path: str, status: int, message: str, code: str | None = None) -> tuple[int, dict]:
    """(status, body) of an error on the route at `path`; `code` overrides OpenAI's code."""
    kind = family(path)
    if kind == "t1":
        return status, {"detail": message}
    if status == 422:
        status = 400
    if kind == "ollama":
        return status, {"error": message}
    param = _PARAM.match(message)
    return status, {"error": {
        "message": message,
        "type": "server_error" if status >= 500 else OPENAI_TYPES.get(status, "invalid_request_error"),
        "param": (param.group(1) or param.group(2)) if param else None,
        "code": code or OPENAI_CODES.get(status)}}


def error_response(path: str, status: int, message: str, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    status, body = error_body(path, status, message, code)
    return JSONResponse(body, status_code=status, headers=headers)
