"""A writer behind an OpenAI-compatible chat endpoint: Ollama, vLLM, SGLang, llama.cpp's server,
TGI, LM Studio, LiteLLM or a hosted API (`--reasoner http://127.0.0.1:11434/v1`).

Requests run concurrently (`concurrency`), since servers that batch (vLLM, SGLang, Ollama with
parallel slots) answer several at once. Faults are expected: a refused connection, a timeout, 429
and 5xx answers are retried with exponential backoff (`Retry-After` honoured, both bounded); any
other 4xx, a malformed or empty answer ends the run with one line naming the endpoint, after the
requests in flight have finished (what arrived is cached). The API key is read from an
environment variable and sent only as `Authorization: Bearer`; it is never printed or logged.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from ..errors import T1Error
from .base import Job, Reasoner, ReasonerError, Trace

RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)
MAX_BACKOFF = 30.0  # seconds, also the most a Retry-After is honoured
DEFAULT_KEY_ENV = "T1_REASONER_API_KEY"


def chat_url(url: str) -> str:
    """The chat-completions URL of a base URL: `.../v1` or a server root (`/v1` added), or the
    full `.../chat/completions`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise T1Error(f"reasoner {url!r}: not an http(s) URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class OpenAIReasoner(Reasoner):
    kind = "openai"
    thread_safe = True  # its client and thread pool serve concurrent calls (t1 serve's requests)

    def __init__(self, url: str, model: str | None = None, *, concurrency: int = 4, timeout: float = 120.0,
                 retries: int = 3, api_key_env: str = DEFAULT_KEY_ENV, **common):
        super().__init__(**common)
        import httpx

        self.url = chat_url(url)
        self.base = self.url.removesuffix("/chat/completions")
        for name, value, low in (("concurrency", concurrency, 1), ("retries", retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise T1Error(f"reasoner {name} must be an integer of at least {low}, got {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise T1Error(f"reasoner timeout must be a positive number of seconds, got {timeout!r}")
        self.concurrency, self.timeout, self.retries = concurrency, float(timeout), retries
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                                    limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """The model asked for; when none was named, the first the server lists (`GET /models`),
        as a server of one model (llama.cpp's, TGI) has."""
        with self._lock:
            if self._model is None:
                self._model = self._listed_model()
            return self._model

    def _listed_model(self) -> str:
        import httpx

        try:
            answer = self._client.get(self.base + "/models")
            models = answer.json()["data"] if answer.status_code == 200 else None
            if models:
                return str(models[0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError):
            pass
        raise ReasonerError(f"reasoner {self.base}: it lists no model at /models; name one with --reasoner-model")

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.base, "model": self.model}

    def close(self) -> None:
        self._client.close()

    # ---------------------------------------------------------------- requests
    def _write(self, jobs: list[Job]) -> Iterable[tuple[Job, Trace]]:
        if not jobs:
            return
        self.model  # resolved once, before the threads start
        failure: ReasonerError | None = None
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="t1-reasoner") as pool:
            pending = {pool.submit(self._ask, job): job for job in jobs[: self.concurrency]}
            queue = iter(jobs[self.concurrency:])
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    try:
                        trace = future.result()
                    except ReasonerError as e:
                        failure = failure or e
                        continue
                    yield job, trace
                    if failure is None:
                        following = next(queue, None)
                        if following is not None:
                            pending[pool.submit(self._ask, following)] = following
        if failure is not None:
            self.stats.errors.append(str(failure))
            raise failure

    def _ask(self, job: Job) -> Trace:
        body = {"model": self.model, "messages": job.messages, "max_tokens": job.max_tokens, "stream": False,
                **job.sampling}
        answer = self._post(body)
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            content, finish = message.get("content"), choice.get("finish_reason")
            thinking = message.get("reasoning_content") or message.get("reasoning")
            if not isinstance(content, (str, type(None))) or not isinstance(thinking, (str, type(None))):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ReasonerError(f"reasoner {self.url}: malformed answer (no choices[0].message.content): "
                                f"{_clip(json.dumps(answer))}") from None
        text = self.choose(content, thinking)
        if not text.strip():
            raise ReasonerError(f"reasoner {self.url}: empty answer (finish_reason {finish!r}) for "
                                f"{_clip(job.messages[-1]['content'])!r}")
        return Trace(text.strip(), finish == "stop")

    def _post(self, body: dict) -> dict:
        """The JSON answer of one request, retried on what may pass (connection, timeout, 429, 5xx)."""
        import httpx

        problem, after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff(attempt, after))
            after = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as e:
                problem = f"cannot connect ({_reason(e)})"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}: {_server_message(response)}"
                after = _retry_after(response)
                continue
            if response.status_code != 200:
                raise ReasonerError(f"reasoner {self.url}: HTTP {response.status_code}: {_server_message(response)}")
            try:
                data = response.json()
            except ValueError:
                raise ReasonerError(f"reasoner {self.url}: malformed answer (not JSON): {_clip(response.text)}") from None
            if not isinstance(data, dict):
                raise ReasonerError(f"reasoner {self.url}: malformed answer (not a JSON object): {_clip(response.text)}")
            return data
        tries = self.retries + 1
        raise ReasonerError(f"reasoner {self.url}: {problem} after {tries} tr{'y' if tries == 1 else 'ies'}")


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry `attempt` (1, 2, ...): the server's Retry-After, else 0.5 s doubled
    each time with jitter; at most `MAX_BACKOFF`."""
    if retry_after is not None:
        return min(MAX_BACKOFF, retry_after)
    return min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())


def _retry_after(response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _server_message(response) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body."""
    try:
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        if message:
            return _clip(str(message))
    except ValueError:
        pass
    return _clip(response.text) or response.reason_phrase


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return _clip(text.split("] ")[-1])


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
