"""`t1 serve`: `register(subparsers)` adds it to the t1 CLI.

Imports nothing heavy until the command runs, so the rest of the CLI starts as fast without it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..cli_args import (
    DEVICE_HELP,
    add_document_engine_arg,
    add_engine_arg,
    add_reasoner_args,
    add_settings_args,
    device_arg,
    model_from_args,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from ..errors import T1Error

API_KEY_ENV = "T1_API_KEY"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP: search API, streaming reasoning, search page",
                       description="Serve a t1 index over HTTP (FastAPI + uvicorn): POST /search, "
                                   "POST /search/stream (server-sent events), POST /encode, GET /health, GET /info, "
                                   "POST /documents and DELETE /documents/{id} (updating the index), "
                                   "the search page at /, API docs at /docs; and the embedding APIs of OpenAI "
                                   "(POST /v1/embeddings, GET /v1/models) and Ollama (POST /api/embed, GET /api/tags).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="index folder built by `t1 index` (written only by POST /documents and "
                                       "DELETE /documents/{id})")
    where.add_argument("--store", help="Qdrant store built by `t1 index --store`: qdrant://HOST:PORT/COLLECTION or a "
                                       "local Qdrant folder PATH[#COLLECTION] (only queried)")
    p.add_argument("--model", default=None, help="T1 model (default: the one the index was built with)")
    p.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    add_settings_args(p, document=False)  # documents added later take the index's length
    add_engine_arg(p)
    add_document_engine_arg(p)
    add_reasoner_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=None,
                   help=f"require this key on every route but /health (default: ${API_KEY_ENV} if set; the "
                        "variable keeps the key out of the process list)")
    p.add_argument("--max-batch", type=positive_int, default=16,
                   help="most queries (times traces) run as one batch (default 16; 1 turns batching off)")
    p.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                   help="how long a request waits for others to join its batch (default 5)")
    p.add_argument("--fixed-wait", action="store_true",
                   help="always wait --max-wait-ms (default: not when every request in the server is queued already)")
    p.add_argument("--no-batching", action="store_true", help="run every request alone (--max-batch 1 --max-wait-ms 0)")
    p.add_argument("--max-queue", type=positive_int, default=256, help="requests waiting beyond this get 503 (default 256)")
    p.add_argument("--timeout", type=positive_float, default=120.0,
                   help="seconds a request may take, queueing included, before it gets 504 (default 120)")
    p.add_argument("--max-k", type=positive_int, default=100, help="largest k a request may ask for (default 100)")
    p.add_argument("--max-queries", type=positive_int, default=32, help="most queries in one request (default 32)")
    p.add_argument("--max-query-chars", type=positive_int, default=8192, help="longest query in characters (default 8192)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help="reasoning length: the default and the most a request may ask for (default: the model's)")
    p.add_argument("--served-model-name", default=None,
                   help="the model's id on /v1/embeddings and /api/embed (NAME for documents, NAME-query for queries; "
                        "default: the model's folder name or hub id)")
    p.add_argument("--reasoning-cache", default=None,
                   help="folder of a reasoning cache to reuse and fill (default: none; never inside the index)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--drain-timeout", type=non_negative_float, default=60.0,
                   help="on SIGTERM or Ctrl-C, seconds to let requests in flight finish (default 60)")
    p.set_defaults(func=cmd_serve)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before the (slow) model load, so a taken port fails at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise T1Error(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise T1Error(f"t1 serve needs {e.name}: pip install fastapi uvicorn") from None
    from ..index import Index
    from .app import ServeSettings, create_app
    from .engine import Engine
    from .gate import timed_protocol

    if args.port > 65535:
        raise T1Error(f"--port must be between 0 and 65535, got {args.port}")
    if args.no_batching:
        args.max_batch, args.max_wait_ms = 1, 0.0
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not api_key.strip():
        raise T1Error("--api-key is empty")
    if args.store:
        from ..stores import open_store

        index = open_store(args.store)
    else:
        index = Index.open(args.index)
    if args.reasoning_cache is not None and not args.store:
        cache = Path(args.reasoning_cache).resolve()
        if cache == index.folder.resolve() or index.folder.resolve() in cache.parents:
            raise T1Error(f"--reasoning-cache {args.reasoning_cache}: inside the index folder, which t1 serve "
                          "never writes; name another folder")
    sock = _bind(args.host, args.port)
    if args.host not in LOOPBACK and api_key is None:
        print(f"t1 serve: warning: listening on {args.host} without an API key: anyone who can reach this "
              f"machine can use it (set ${API_KEY_ENV} or --api-key)", file=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = index.manifest["model"]["name"]
    model = model_from_args(args)
    # refuses an index of another model
    index = index.check(model) if args.store else Index.open(args.index, model=model)
    settings = ServeSettings(api_key=api_key, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             adaptive_wait=not args.fixed_wait,
                             max_queue=args.max_queue, timeout_s=args.timeout, max_k=args.max_k,
                             max_queries=args.max_queries, max_query_chars=args.max_query_chars,
                             max_new_tokens=args.max_new_tokens, model_name=args.served_model_name)
    engine = Engine(model, index, reasoning_cache=args.reasoning_cache, batch_size=max(args.max_batch, 8))
    if engine.ranking.note:
        print(f"t1 serve: note: {engine.ranking.note}", file=sys.stderr)
    app = create_app(engine, settings)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger("t1.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    url = _url(sock)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(f"t1 serve: listening on {url} (model {args.model}, {len(index)} documents, ranking "
                      f"{engine.ranking}; docs at {url}/docs){'; API key required' if api_key else ''}", flush=True)

    config = uvicorn.Config(app, log_level="info" if args.verbose else "warning", access_log=False,
                            timeout_graceful_shutdown=args.drain_timeout, lifespan="on", http=timed_protocol(),
                            timeout_keep_alive=5)  # header, body (the Gate) and idle timeouts
    # uvicorn handles SIGTERM/SIGINT (stop accepting, drain, shut down) and then re-raises the
    # signal to whatever handler was there before; these make that a clean exit 0.
    stopped = []
    previous = {sig: signal.signal(sig, lambda s, f: stopped.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        Server(config).run(sockets=[sock])
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sock.close()
        if args.store:
            index.close()
    print("t1 serve: stopped", file=sys.stderr, flush=True)
    return 0
