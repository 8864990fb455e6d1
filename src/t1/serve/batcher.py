"""Request batching: concurrent requests are gathered for a few milliseconds and run together.

Every request becomes a `Job` with a grouping key (the settings that must be equal to share one
batched encode/generate and one search) and a size (the rows it adds: its queries times traces).
One asyncio task collects jobs: when the oldest pending job has waited `max_wait_ms`, or jobs of
its key add up to `max_batch` rows, or (adaptive wait) every request the server is handling is
already queued, so nobody else could join, the jobs of that key (oldest first, up to `max_batch` rows;
a single larger request still runs whole) are handed to `run_batch` on the one worker thread
that does all model and index work. While that thread is busy, new requests queue up and form
the next batch, so under load batches fill without any extra wait, and a lone client never waits.

A job whose client went away, or whose request timed out, is `abandoned`: it is dropped if its
batch has not started, and a running generation stops its row early (see `engine`). The others
in the batch are unaffected. When a batch fails, its jobs are retried one by one, so one
request that breaks the model cannot fail the requests batched with it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

logger = logging.getLogger("t1.serve")


class Busy(Exception):
    """The queue is full; the request is refused (HTTP 503) instead of waiting unboundedly."""


@dataclass(eq=False)
class Job:
    key: Hashable
    size: int
    payload: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when its batch began on the worker thread
    batch_rows: int = 0  # rows (queries x traces) in the batch it ran in
    batch_jobs: int = 0  # requests in that batch
    _abandoned: threading.Event = field(default_factory=threading.Event)

    @property
    def abandoned(self) -> bool:
        """Read from the worker thread too (a generation checks it every step)."""
        return self._abandoned.is_set()

    def abandon(self) -> None:
        self._abandoned.set()
        if not self.future.done():
            self.future.cancel()


class Batcher:
    """Gathers jobs by key and runs `run_batch(key, jobs) -> [result per job]` on one thread."""

    def __init__(self, run_batch: Callable[[Hashable, list[Job]], list], max_batch: int = 16,
                 max_wait_ms: float = 5.0, max_queue: int = 256, in_flight: Callable[[], int] | None = None):
        """`in_flight()`: how many requests that may submit a job the server is handling now
        (queued ones included); with it, gathering stops as soon as all of them are queued."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.in_flight = in_flight
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="t1-model")
        self._pending: deque[Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # batches run (for /info and tests)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="t1-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the collector and the worker thread."""
        while self._pending and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def call(self, fn: Callable, *args):
        """Run `fn(*args)` on the worker thread (outside any batch), e.g. to open a resource
        that must live on that thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---------------------------------------------------------------- submitting
    def submit(self, key: Hashable, size: int, payload: Any) -> Job:
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        live = sum(1 for j in self._pending if not j.abandoned)
        if live >= self.max_queue:
            raise Busy(f"server busy: {live} requests queued")
        job = Job(key, max(1, size), payload, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wakeup.set()
        return job

    def poke(self) -> None:
        """Re-check the gathering conditions now (a request in flight has finished)."""
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        return sum(1 for j in self._pending if not j.abandoned)

    # ---------------------------------------------------------------- collecting
    def _drop_abandoned(self) -> None:
        if any(j.abandoned for j in self._pending):
            self._pending = deque(j for j in self._pending if not j.abandoned)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            while True:  # gather until the oldest job has waited max_wait, or the batch is full
                rows = sum(j.size for j in self._pending if j.key == first.key and not j.abandoned)
                left = first.arrived + self.max_wait - time.perf_counter()
                if rows >= self.max_batch or left <= 0 or first.abandoned:
                    break
                if self.in_flight is not None and self.in_flight() <= self.queued:
                    break  # every request in the server is queued already: nobody else is coming
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            if first.abandoned:
                continue
            batch = self._take(first.key)
            started = time.perf_counter()
            rows = sum(j.size for j in batch)
            for job in batch:
                job.started, job.batch_rows, job.batch_jobs = started, rows, len(batch)
            results = await loop.run_in_executor(self._executor, self._run, first.key, batch)
            self.batches += 1
            for job, (ok, value) in zip(batch, results):
                if job.future.done():  # abandoned while it ran
                    continue
                if ok:
                    job.future.set_result(value)
                elif isinstance(value, asyncio.CancelledError):
                    job.future.cancel()
                else:
                    job.future.set_exception(value)

    def _take(self, key: Hashable) -> list[Job]:
        """The oldest jobs of `key`, up to max_batch rows (at least one job); the rest stay."""
        batch, rows, rest = [], 0, deque()
        for job in self._pending:
            if job.abandoned:
                continue
            if job.key == key and (not batch or rows + job.size <= self.max_batch):
                batch.append(job)
                rows += job.size
            else:
                rest.append(job)
        self._pending = rest
        return batch

    def _run(self, key: Hashable, batch: list[Job]) -> list[tuple[bool, Any]]:
        """On the worker thread: the batch's results as (ok, value) per job. A failed batch of
        several jobs is retried job by job, so only the job that fails gets the error."""
        live = [j for j in batch if not j.abandoned]
        out: dict[int, tuple[bool, Any]] = {id(j): (False, asyncio.CancelledError()) for j in batch}
        if not live:
            return [out[id(j)] for j in batch]
        try:
            results = self.run_batch(key, live)
            out.update({id(j): (True, r) for j, r in zip(live, results)})
        except Exception as e:  # noqa: BLE001 - handed to the requests
            if len(live) == 1:
                out[id(live[0])] = (False, e)
            else:
                logger.warning("a batch of %d requests failed (%s: %s); running them one by one",
                               len(live), type(e).__name__, e)
                for job in live:
                    try:
                        out[id(job)] = (True, self.run_batch(key, [job])[0])
                    except Exception as e1:  # noqa: BLE001
                        out[id(job)] = (False, e1)
        return [out[id(j)] for j in batch]
