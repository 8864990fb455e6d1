"""An OpenAI-compatible chat endpoint on loopback whose answers a test scripts, to drive a
reasoner through every fault: the user message decides the answer.

- "[stall]" sleeps past the client's timeout; "[fail-once]" answers 500, then 200; "[limit-once]"
  429 with Retry-After 0, then 200; "[garbage]" is not JSON (while `broken`); "[no-choices]" JSON
  without choices; "[empty]" an empty content; "[think-inline]" a <think> block; "[think-field]" a
  reasoning_content field; "[long]" a trace of 300 words; "[slow]" takes 0.3 s, "[slower]" 1.5 s; "[key-needed]"
  answers 401 without `Bearer sekrit-key`; anything else answers "trace for: <query>".
A refused connection needs no server: the tests name a closed port.
Every request is recorded (path, headers, body), and the most requests ever in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WriterServer:
    def __init__(self, model: str = "writer-1"):
        self.model = model
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        self.in_flight = self.most_in_flight = 0
        self.broken = True  # "garbage" answers garbage while broken
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner._send(self, 200, {"object": "list", "data": [{"id": owner.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with owner._lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                try:
                    owner._answer(self, body)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def asked(self) -> list[str]:
        """The user message of every chat request, in order."""
        return [r["body"]["messages"][-1]["content"] for r in self.requests]

    @staticmethod
    def _send(handler, status: int, payload, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            handler.send_response(status)
        except (BrokenPipeError, ConnectionResetError):
            return
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass

    def _answer(self, handler, body: dict) -> None:
        message = body["messages"][-1]["content"]
        with self._lock:
            count = self.seen[message] = self.seen.get(message, 0) + 1
        query = message.rsplit("Query: ", 1)[-1]
        content, extra, finish = f"trace for: {query}", {}, "stop"
        if "[stall]" in query:
            time.sleep(3)
        elif "[fail-once]" in query and count == 1:
            return self._send(handler, 500, {"error": {"message": "the model crashed", "type": "server_error"}})
        elif "[limit-once]" in query and count == 1:
            return self._send(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        elif "[garbage]" in query and self.broken:
            return self._send(handler, 200, b"<html>not json</html>")
        elif "[no-choices]" in query:
            return self._send(handler, 200, {"id": "x", "object": "chat.completion"})
        elif "[empty]" in query:
            content = ""
        elif "[think-inline]" in query:
            content = "<think>inline thoughts</think>\n\ninline answer"
        elif "[think-field]" in query:
            content, extra = "field answer", {"reasoning_content": "field thoughts"}
        elif "[long]" in query:
            content, finish = " ".join(f"word{i}" for i in range(300)), "length"
        elif "[slow]" in query:
            time.sleep(0.3)
        elif "[slower]" in query:
            time.sleep(1.5)
        if "[key-needed]" in query and handler.headers.get("authorization") != "Bearer sekrit-key":
            return self._send(handler, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        choice = {"index": 0, "message": {"role": "assistant", "content": content, **extra}, "finish_reason": finish}
        self._send(handler, 200, {"id": "c", "object": "chat.completion", "model": body.get("model"),
                                  "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
