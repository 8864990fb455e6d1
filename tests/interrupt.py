"""Interrupting a build in tests: the encoder dies on a chosen call."""

from __future__ import annotations


class Killed(Exception):
    """Stands in for a process killed in the middle of a build."""


def encode_counting(monkeypatch, die_at: int | None = None) -> list[int]:
    """Patch `T1Model.encode_document` to record the size of every call (the list returned) and,
    with `die_at`, to raise `Killed` on that call: a build interrupted after `die_at - 1` shards.
    Undo an earlier patch (`monkeypatch.undo()`) before patching again."""
    from t1 import T1Model

    original = T1Model.encode_document
    calls: list[int] = []

    def counted(self, texts, **kw):
        calls.append(len(texts))
        if die_at is not None and len(calls) == die_at:
            raise Killed
        return original(self, texts, **kw)

    monkeypatch.setattr(T1Model, "encode_document", counted)
    return calls


# ---------------------------------------------------------------- a real process, really killed
# `sitecustomize` runs at start-up of every Python process that finds it on its path. This one
# reads T1_TEST_KILL="module:attribute:N:when" and wraps `attribute` of `module` (a function, or
# Class.method) so that its N-th call SIGKILLs the process itself: `when` "before" the call runs,
# or "after" it returned. T1_TEST_SLOW="module:attribute:seconds" instead sleeps before every call
# (for a kill sent from outside, mid-job). Nothing else changes: the CLI runs as users run it.
_SITECUSTOMIZE = '''
import os

def _wrap(spec, make):
    import importlib
    module_name, attribute = spec.split(":")[:2]
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, make(getattr(owner, name)))

if os.environ.get("T1_TEST_KILL"):
    def _killer(original):
        import functools, signal
        _, _, at, when = os.environ["T1_TEST_KILL"].split(":")
        calls = []

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(at) and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if len(calls) == int(at) and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper
    _wrap(os.environ["T1_TEST_KILL"], _killer)

if os.environ.get("T1_TEST_SLOW"):
    def _sleeper(original):
        import functools, time
        seconds = float(os.environ["T1_TEST_SLOW"].split(":")[2])

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            time.sleep(seconds)
            return original(*args, **kwargs)
        return wrapper
    _wrap(os.environ["T1_TEST_SLOW"], _sleeper)
'''


def killing_env(folder, kill: str | None = None, slow: str | None = None) -> dict:
    """Environment for a subprocess (`python -m t1 ...`) that SIGKILLs itself at `kill`
    ("module:attribute:N:before|after") or sleeps before each call of `slow`
    ("module:attribute:seconds"); the hook file is written into `folder`. One OpenMP thread,
    so that the runs compared are computed the same way."""
    import os
    from pathlib import Path

    hook = Path(folder) / "kill-hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k not in ("T1_TEST_KILL", "T1_TEST_SLOW")}
    env["PYTHONPATH"] = os.pathsep.join([str(hook)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if kill:
        env["T1_TEST_KILL"] = kill
    if slow:
        env["T1_TEST_SLOW"] = slow
    return env
