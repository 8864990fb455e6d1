"""The gate in front of every route of `t1 serve`: the API key (header, bearer, cookie or a
`?key=` link that sets the cookie), the request-body limit however the body is sent (413),
the count of requests in flight, and the one access-log line per request with its reason.
Its refusals take the error shape of the route's API family (`error_shapes`)."""

from __future__ import annotations

import hmac
import logging
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from fastapi import HTTPException
from fastapi.responses import Response

from .error_shapes import error_response

logger = logging.getLogger("t1.serve")
NOTE = "t1.note"  # scope entry: the one-line reason logged with a request's status
PUBLIC_PATHS = frozenset({"/health"})
MODEL_PATHS = frozenset({"/search", "/search/stream", "/encode", "/v1/embeddings", "/api/embed"})  # may join a batch
KEY_COOKIE = "t1_key"


class Gate:
    """Pure ASGI middleware: body size limit, API key, and one log line per request."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, counter: list[int], poke=None):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.counter = counter  # [requests to MODEL_PATHS in flight], for the batcher's adaptive wait
        self.poke = poke

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}
        counted = scope["path"] in MODEL_PATHS
        self.counter[0] += counted

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                scope[NOTE], refusal = refusal
                await refusal(scope, receive, send_logged)
            else:
                await self.app(scope, self._limited(receive), send_logged)
        finally:
            self.counter[0] -= counted
            if counted and self.poke is not None:
                self.poke()
            client = scope.get("client")
            who = f"{client[0]}:{client[1]}" if client else "-"
            note = scope.get(NOTE)
            logger.info('%s "%s %s" %d %.1fms%s', who, scope["method"], scope["path"], status["code"],
                        (time.perf_counter() - start) * 1000, f" - {note}" if note else "")

    def _limited(self, receive):
        """`receive` that counts the body as it arrives: a body sent without a length (chunked)
        past the limit is refused with 413 once it crosses it, not read whole first."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise HTTPException(413, f"request body is more than the limit of {self.max_body_bytes} bytes")
            return message

        return limited

    def _refusal(self, scope) -> tuple[str, Response] | None:
        """(the reason to log, the response) for a request refused here; None to let it in."""
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return self._refuse(scope, 413, f"request body is {int(length)} bytes, more than the limit of "
                                            f"{self.max_body_bytes}")
        if self.api_key is None or scope["path"] in PUBLIC_PATHS:
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_url = next((v for k, v in query if k == "key"), None)
        if from_url is not None and scope["method"] == "GET" and self._matches(from_url.encode()):
            rest = urlencode([(k, v) for k, v in query if k != "key"])
            response = Response(status_code=303, headers={"Location": scope["path"] + (f"?{rest}" if rest else "")})
            response.set_cookie(KEY_COOKIE, from_url, httponly=True, samesite="strict", path="/")
            return "key accepted", response
        if self._matches(headers.get("x-api-key")):
            return None
        auth = headers.get("authorization", b"")
        if auth[:7].lower() == b"bearer " and self._matches(auth[7:].strip()):
            return None
        cookie = headers.get("cookie")
        if cookie:
            jar = SimpleCookie()
            try:
                jar.load(cookie.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is just no key
                jar = {}
            if KEY_COOKIE in jar and self._matches(jar[KEY_COOKIE].value.encode("latin-1")):
                return None
        given = any(headers.get(h) for h in ("x-api-key", "authorization")) or from_url is not None
        return self._refuse(scope, 401, "wrong API key" if given else
                            "missing API key: send X-API-Key or Authorization: Bearer (browsers: open /?key=KEY)",
                            headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _refuse(scope, status: int, message: str, headers: dict | None = None) -> tuple[str, Response]:
        return message, error_response(scope["path"], status, message, headers=headers)

    def _matches(self, candidate: bytes | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.api_key)
