"""The gate in front of every route of `t1 serve`: the API key (header, bearer, cookie or a
`?key=` link that sets the cookie), the request-body limit however the body is sent (413),
the count of requests in flight, and the one access-log line per request with its reason.
Its refusals take the error shape of the route's API family (`error_shapes`)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import HTTPException
from fastapi.responses import Response

from .error_shapes import error_response

logger = logging.getLogger("t1.serve")
NOTE = "t1.note"  # scope entry: the one-line reason logged with a request's status
PUBLIC_PATHS = frozenset({"/health"})
MODEL_PATHS = frozenset({"/search", "/search/stream", "/encode", "/v1/embeddings", "/api/embed"})  # may join a batch
KEY_COOKIE = "t1_key"
LOG_CHARS = 200  # of a request path in the log: a 64 KB path is one short line, not 64 KB
BODY_TIMEOUT_S = 30.0  # the longest wait for the next part of a request body
HEADER_TIMEOUT_S = 10.0  # the longest a connection may take to send a request's headers


def clip(text: str, limit: int = LOG_CHARS) -> str:
    """`text` for a log line: at most `limit` characters, and none that could start a new line."""
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def same_host(path: str) -> str:
    """A redirect target that stays on this server: `//evil.example/` (or `/\\evil.example`) would
    send a browser to another host, so the path keeps one leading slash, and is quoted."""
    return "/" + quote(path.lstrip("/\\"), safe="/:@!$&'()*+,;=-._~")


class Gate:
    """Pure ASGI middleware: body size limit, API key, and one log line per request."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, counter: list[int], poke=None,
                 body_timeout_s: float = BODY_TIMEOUT_S):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
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
            logger.info('%s "%s %s" %d %.1fms%s', who, scope["method"], clip(scope["path"]), status["code"],
                        (time.perf_counter() - start) * 1000, f" - {clip(note)}" if note else "")

    def _limited(self, receive):
        """`receive` that counts the body as it arrives: a body sent without a length (chunked)
        past the limit is refused with 413 once it crosses it, not read whole first; a body whose
        next part takes longer than the body timeout is refused with 408 (a client that never
        finishes its body would otherwise hold the connection and a task forever)."""
        seen, complete = 0, False

        async def limited():
            nonlocal seen, complete
            if complete:  # after the body: waiting for a disconnect is not a body read
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.body_timeout_s:g}s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
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
            response = Response(status_code=303, headers={"Location": same_host(scope["path"]) + (f"?{rest}" if rest
                                                                                                   else "")})
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


def timed_protocol(header_timeout_s: float = HEADER_TIMEOUT_S):
    """uvicorn's h11 protocol with a header timeout: a connection that has not finished a
    request's headers within `header_timeout_s` of opening (or of its last response) is closed.
    uvicorn has none, so 50 connections sending a byte now and then could hold the server."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        timer = None
        timed_cycle = None

        def _arm(self) -> None:
            self._disarm()
            self.timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def _too_slow(self) -> None:
            if not self.transport.is_closing() and (self.cycle is None or self.cycle is self.timed_cycle):
                logger.info("%s closed: no complete request headers within %gs",
                            "%s:%d" % self.client if self.client else "-", header_timeout_s)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self.cycle is not self.timed_cycle:  # a request's headers arrived
                self.timed_cycle = self.cycle
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # the next request's headers (a pipelined one found below disarms it)
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedH11Protocol
