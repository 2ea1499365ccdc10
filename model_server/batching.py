"""Dynamic batching: concurrent inference requests are queued and run together.

In the spirit of TF Serving's batching and Triton's dynamic batcher. A dispatcher task on
the event loop waits until one of `batch_threads` is free, then takes what is queued (up
to `max_batch_size` rows; with a `batch_timeout_s` above 0 it first waits that long after
the oldest request arrived for the batch to fill) and runs it in the executor, off the
event loop. While every thread is busy requests pile up, so batches grow with the load
by themselves, and a request that finds a thread idle runs at once: at low load batching
adds no latency. A request of more rows than `max_batch_size` is split into chunks that
each fit a batch. When more than `max_enqueued_batches * max_batch_size` rows would be
waiting, `infer` raises `QueueFull` at once instead of letting latency grow without bound.

No TensorFlow and no gRPC here: the model is a function passed in, and so is the executor.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]


class QueueFull(RuntimeError):
    """The batch queue holds as many rows as it may; the caller should retry later."""


class BatcherClosed(RuntimeError):
    """The batcher stopped before the request could run."""


@dataclass(frozen=True)
class BatchingOptions:
    """How requests are batched. The defaults were chosen by measurement (bench/)."""

    max_batch_size: int = 256
    batch_timeout_s: float = 0.0
    batch_threads: int = 1
    max_enqueued_batches: int = 8
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0.0 <= self.batch_timeout_s <= 10.0:
            raise ValueError(f"batch_timeout_s must be 0..10 s, got {self.batch_timeout_s}")
        if self.batch_threads < 1:
            raise ValueError(f"batch_threads must be >= 1, got {self.batch_threads}")
        if self.max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be >= 1, got {self.max_enqueued_batches}")

    @property
    def queue_capacity_rows(self) -> int:
        """Rows that may wait for a batch; a request that finds the queue empty always fits."""
        return self.max_enqueued_batches * self.max_batch_size


class BatchObserver(Protocol):
    """Where the batcher reports what it does (the server's Prometheus metrics)."""

    def set_queue_depth(self, requests: int) -> None: ...

    def observe_batch(self, rows: int, seconds: float) -> None: ...


class _Silent:
    def set_queue_depth(self, requests: int) -> None:
        pass

    def observe_batch(self, rows: int, seconds: float) -> None:
        pass


@dataclass(eq=False)
class _Request:
    """One caller's rows; done when every chunk has come back."""

    future: asyncio.Future[np.ndarray]
    rows: int
    chunks_left: int
    chunks_queued: int
    output: np.ndarray | None = None  # assembled here when the request was split


@dataclass(eq=False)
class _Chunk:
    request: _Request
    start: int  # first row of the request that this chunk carries
    pixels: np.ndarray
    enqueued_at: float


@dataclass
class _Batch:
    chunks: list[_Chunk] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """Queues `infer` calls and runs them through `model` in batches on `executor`.

    `model` maps float32 [N, ...] to [N, ...] row by row (row i of the answer belongs to
    row i of the input), so one batch can carry the rows of many requests. Call `start`
    from the event loop before `infer`, and `close` at the end.
    """

    def __init__(
        self,
        model: Model,
        options: BatchingOptions,
        executor: Executor,
        *,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._model = model
        self._options = options
        self._executor = executor
        self._observer = observer or _Silent()
        self._clock = clock
        self._queue: deque[_Chunk] = deque()
        self._queued_rows = 0
        self._waiting_requests = 0
        self._arrived: asyncio.Event | None = None
        self._threads: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[np.ndarray]] = set()
        self._closed = False

    @property
    def options(self) -> BatchingOptions:
        return self._options

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if self._dispatcher is not None:
            raise RuntimeError("the batcher is already started")
        self._arrived = asyncio.Event()
        self._threads = asyncio.Semaphore(self._options.batch_threads)
        self._dispatcher = asyncio.get_running_loop().create_task(
            self._dispatch(), name="batch-dispatcher"
        )

    async def infer(self, pixels: np.ndarray) -> np.ndarray:
        """The model's answer for `pixels` [N, ...], computed in some batch."""
        if self._dispatcher is None or self._arrived is None or self._closed:
            raise BatcherClosed("the batcher is not running")
        rows = len(pixels)
        if rows < 1:
            raise ValueError("a request needs at least one row")
        capacity = self._options.queue_capacity_rows
        if self._queued_rows and self._queued_rows + rows > capacity:
            raise QueueFull(
                f"the batch queue is full: {self._queued_rows} rows are waiting and this "
                f"request has {rows}; at most {capacity} may wait "
                f"(max_enqueued_batches {self._options.max_enqueued_batches} x "
                f"max_batch_size {self._options.max_batch_size}); retry later"
            )
        size = self._options.max_batch_size
        starts = range(0, rows, size)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        request = _Request(future, rows, chunks_left=len(starts), chunks_queued=len(starts))
        now = self._clock()
        for start in starts:
            self._queue.append(_Chunk(request, start, pixels[start : start + size], now))
        self._queued_rows += rows
        self._waiting_requests += 1
        self._observer.set_queue_depth(self._waiting_requests)
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stop dispatching; requests still queued fail with BatcherClosed."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                pass
        while self._queue:
            chunk = self._queue.popleft()
            self._dequeued(chunk)
            if not chunk.request.future.done():
                chunk.request.future.set_exception(BatcherClosed("the server is shutting down"))
        if self._running:
            await asyncio.wait(self._running)

    async def _dispatch(self) -> None:
        assert self._arrived is not None and self._threads is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._threads.acquire()
            try:
                while not self._queue:
                    self._arrived.clear()
                    await self._arrived.wait()
                await self._fill()
                batch = self._take()
            except BaseException:
                self._threads.release()
                raise
            if not batch.chunks:  # every queued request was cancelled meanwhile
                self._threads.release()
                continue
            pixels = [chunk.pixels for chunk in batch.chunks]
            running = loop.run_in_executor(self._executor, self._execute, pixels, batch.rows)
            self._running.add(running)
            running.add_done_callback(lambda done, batch=batch: self._finish(batch, done))

    async def _fill(self) -> None:
        """With a batch timeout, wait for more rows until the batch is full or it expires."""
        assert self._arrived is not None
        timeout = self._options.batch_timeout_s
        if timeout <= 0 or not self._options.enabled:
            return
        deadline = self._queue[0].enqueued_at + timeout
        while self._queued_rows < self._options.max_batch_size:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> _Batch:
        """Queued chunks, oldest first, up to max_batch_size rows (one chunk if disabled)."""
        batch = _Batch()
        limit = self._options.max_batch_size
        while self._queue:
            chunk = self._queue[0]
            if chunk.request.future.done():  # cancelled by its caller: drop it
                self._queue.popleft()
                self._dequeued(chunk)
                continue
            if batch.chunks and (
                not self._options.enabled or batch.rows + len(chunk.pixels) > limit
            ):
                break
            self._queue.popleft()
            self._dequeued(chunk)
            batch.chunks.append(chunk)
            batch.rows += len(chunk.pixels)
        return batch

    def _dequeued(self, chunk: _Chunk) -> None:
        self._queued_rows -= len(chunk.pixels)
        chunk.request.chunks_queued -= 1
        if chunk.request.chunks_queued == 0:
            self._waiting_requests -= 1
            self._observer.set_queue_depth(self._waiting_requests)

    def _execute(self, pixels: list[np.ndarray], rows: int) -> np.ndarray:
        """In an executor thread: one model call over the batch's rows."""
        batch = pixels[0] if len(pixels) == 1 else np.concatenate(pixels)
        started = self._clock()
        answer = np.asarray(self._model(batch))
        self._observer.observe_batch(rows, self._clock() - started)
        if len(answer) != rows:
            raise RuntimeError(f"the model answered {len(answer)} rows for a batch of {rows}")
        return answer

    def _finish(self, batch: _Batch, done: asyncio.Future[np.ndarray]) -> None:
        self._running.discard(done)
        assert self._threads is not None
        self._threads.release()
        error = done.exception()
        offset = 0
        for chunk in batch.chunks:
            request, rows = chunk.request, len(chunk.pixels)
            if request.future.done():
                offset += rows
                continue
            if error is not None:
                request.future.set_exception(error)
                continue
            answer = done.result()[offset : offset + rows]
            offset += rows
            request.chunks_left -= 1
            if request.chunks_left == 0 and request.output is None:
                request.future.set_result(answer)  # the whole request in one chunk
                continue
            if request.output is None:
                request.output = np.empty((request.rows, *answer.shape[1:]), answer.dtype)
            request.output[chunk.start : chunk.start + rows] = answer
            if request.chunks_left == 0:
                request.future.set_result(request.output)
