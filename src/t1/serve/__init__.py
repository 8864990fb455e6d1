"""`t1 serve`: an HTTP search service over a t1 index (FastAPI + uvicorn).

- `engine.Engine`: the model and the read-only index; runs batches on the worker thread.
- `batcher.Batcher`: gathers concurrent requests into batches, one worker thread for all model work.
- `app.create_app(engine, settings)`: the FastAPI app (routes, auth, validation, streaming).
- `openai_api`: the embedding APIs RAG tools call (OpenAI's `/v1/embeddings`, Ollama's `/api/embed`),
  planned as `/encode` is; `error_shapes`: each API family's error body.
- `commands.register(subparsers)`: the `t1 serve` command.

This package imports FastAPI only in `app`, so `t1` works without the service's dependencies.
"""
