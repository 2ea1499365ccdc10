"""model_server/batching.py: what runs together, what comes back to whom, and the limits.

A numpy model on a real thread pool that records every batch it is given and can be held
mid-call, so a test can pile requests up behind a busy thread and then let them go.
Waiting is always on a condition (an event, or the batcher's own state) with a deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from model_server.batching import Batcher, BatcherClosed, BatchingOptions, QueueFull
from model_server.metrics import ServerMetrics

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10.0


@dataclass
class RecordingModel:
    """Answers row i with [row id, 2 * row id]; remembers the row ids of every batch."""

    hold: threading.Event | None = None
    fail: bool = False
    batches: list[list[int]] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.batches.append(pixels[:, 0].astype(int).tolist())
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(TIMEOUT)
        if self.fail:
            raise RuntimeError("the model broke")
        return np.stack([pixels[:, 0], 2 * pixels[:, 0]], axis=1)


def rows(*ids: int) -> np.ndarray:
    pixels = np.zeros((len(ids), 4), np.float32)
    pixels[:, 0] = ids
    return pixels


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until `condition` holds (a deadline, never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0)


def run(
    model: RecordingModel,
    options: BatchingOptions,
    scenario: Callable[[Batcher], Awaitable[None]],
    *,
    observer: ServerMetrics | None = None,
) -> None:
    async def main() -> None:
        with ThreadPoolExecutor(options.batch_threads) as executor:
            batcher = Batcher(model, options, executor, observer=observer)
            batcher.start()
            try:
                await asyncio.wait_for(scenario(batcher), TIMEOUT)
            finally:
                if model.hold is not None:
                    model.hold.set()
                await batcher.close()

    asyncio.run(main())


def answers_for(*ids: int) -> np.ndarray:
    return np.array([[i, 2 * i] for i in ids], np.float32)


async def started_and_held(batcher: Batcher, model: RecordingModel, ids: tuple[int, ...]):
    """Submit `ids` as one request and wait until the model is running it."""
    task = asyncio.ensure_future(batcher.infer(rows(*ids)))
    await until(model.entered.is_set)
    return task


def test_a_request_that_finds_the_thread_idle_runs_alone_at_once() -> None:
    model = RecordingModel()

    async def scenario(batcher: Batcher) -> None:
        np.testing.assert_array_equal(await batcher.infer(rows(7)), answers_for(7))
        np.testing.assert_array_equal(await batcher.infer(rows(8, 9)), answers_for(8, 9))

    run(model, BatchingOptions(max_batch_size=8), scenario)
    assert model.batches == [[7], [8, 9]]


def test_requests_queued_behind_a_busy_thread_run_together_and_get_their_own_rows() -> None:
    model = RecordingModel(hold=threading.Event())

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (1,))
        queued = [asyncio.ensure_future(batcher.infer(rows(*ids))) for ids in [(2,), (3, 4), (5,)]]
        await until(lambda: batcher.queued_rows == 4)
        model.hold.set()
        results = await asyncio.gather(first, *queued)
        for result, ids in zip(results, [(1,), (2,), (3, 4), (5,)], strict=True):
            np.testing.assert_array_equal(result, answers_for(*ids))

    run(model, BatchingOptions(max_batch_size=8), scenario)
    assert model.batches == [[1], [2, 3, 4, 5]]


def test_a_batch_never_exceeds_max_batch_size_and_keeps_arrival_order() -> None:
    model = RecordingModel(hold=threading.Event())

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (0,))
        queued = [asyncio.ensure_future(batcher.infer(rows(i))) for i in range(1, 11)]
        await until(lambda: batcher.queued_rows == 10)
        model.hold.set()
        await asyncio.gather(first, *queued)

    run(model, BatchingOptions(max_batch_size=4), scenario)
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_a_request_larger_than_max_batch_size_is_split_and_reassembled() -> None:
    model = RecordingModel()

    async def scenario(batcher: Batcher) -> None:
        ids = tuple(range(10))
        np.testing.assert_array_equal(await batcher.infer(rows(*ids)), answers_for(*ids))

    run(model, BatchingOptions(max_batch_size=4), scenario)
    assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_with_batching_off_every_request_runs_on_its_own() -> None:
    model = RecordingModel(hold=threading.Event())

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (1,))
        queued = [asyncio.ensure_future(batcher.infer(rows(*ids))) for ids in [(2,), (3, 4)]]
        await until(lambda: batcher.queued_rows == 3)
        model.hold.set()
        await asyncio.gather(first, *queued)

    run(model, BatchingOptions(max_batch_size=8, enabled=False), scenario)
    assert model.batches == [[1], [2], [3, 4]]


def test_a_full_queue_answers_queue_full_at_once_and_frees_up_after() -> None:
    model = RecordingModel(hold=threading.Event())
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=2)  # 4 rows may wait

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (1,))
        waiting = [asyncio.ensure_future(batcher.infer(rows(i, i))) for i in (2, 3)]
        await until(lambda: batcher.queued_rows == 4)
        with pytest.raises(QueueFull, match=r"4 rows are waiting .* at most 4 may wait"):
            await batcher.infer(rows(9))
        model.hold.set()
        await asyncio.gather(first, *waiting)
        np.testing.assert_array_equal(await batcher.infer(rows(9)), answers_for(9))

    run(model, options, scenario)
    assert [9] not in model.batches[:-1]


def test_a_request_into_an_empty_queue_always_fits_even_beyond_capacity() -> None:
    model = RecordingModel()
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1)

    async def scenario(batcher: Batcher) -> None:
        assert len(await batcher.infer(rows(*range(5)))) == 5

    run(model, options, scenario)
    assert model.batches == [[0, 1], [2, 3], [4]]


def test_a_batch_timeout_waits_for_the_batch_to_fill() -> None:
    model = RecordingModel()
    # A long timeout that is never reached: the batch leaves as soon as it is full.
    options = BatchingOptions(max_batch_size=2, batch_timeout_s=TIMEOUT / 2)

    async def scenario(batcher: Batcher) -> None:
        first = asyncio.ensure_future(batcher.infer(rows(1)))
        await until(lambda: batcher.queued_rows == 1)
        for _ in range(10):  # the dispatcher is free to run, and must keep waiting
            await asyncio.sleep(0)
        assert model.batches == []
        second = asyncio.ensure_future(batcher.infer(rows(2)))
        await asyncio.gather(first, second)

    run(model, options, scenario)
    assert model.batches == [[1, 2]]


def test_a_batch_timeout_that_expires_runs_what_is_there() -> None:
    model = RecordingModel()
    options = BatchingOptions(max_batch_size=64, batch_timeout_s=0.001)

    async def scenario(batcher: Batcher) -> None:
        np.testing.assert_array_equal(await batcher.infer(rows(3)), answers_for(3))

    run(model, options, scenario)
    assert model.batches == [[3]]


def test_a_cancelled_request_is_dropped_before_it_runs() -> None:
    model = RecordingModel(hold=threading.Event())

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (1,))
        gone = asyncio.ensure_future(batcher.infer(rows(2)))
        kept = asyncio.ensure_future(batcher.infer(rows(3)))
        await until(lambda: batcher.queued_rows == 2)
        gone.cancel()
        model.hold.set()
        await asyncio.gather(first, kept)

    run(model, BatchingOptions(), scenario)
    assert model.batches == [[1], [3]]


def test_a_model_error_fails_that_batch_only() -> None:
    model = RecordingModel(fail=True)

    async def scenario(batcher: Batcher) -> None:
        with pytest.raises(RuntimeError, match="the model broke"):
            await batcher.infer(rows(1))
        model.fail = False
        np.testing.assert_array_equal(await batcher.infer(rows(2)), answers_for(2))

    run(model, BatchingOptions(), scenario)


def test_close_fails_queued_requests_with_batcher_closed() -> None:
    model = RecordingModel(hold=threading.Event())

    async def main() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(model, BatchingOptions(), executor)
            batcher.start()
            first = await started_and_held(batcher, model, (1,))
            queued = asyncio.ensure_future(batcher.infer(rows(2)))
            await until(lambda: batcher.queued_rows == 1)
            closing = asyncio.ensure_future(batcher.close())
            with pytest.raises(BatcherClosed):
                await queued
            model.hold.set()
            np.testing.assert_array_equal(await first, answers_for(1))  # the running one ends
            await closing
            with pytest.raises(BatcherClosed):
                await batcher.infer(rows(3))

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_queue_depth_and_batches_are_reported() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, max_batch_size=8)
    model = RecordingModel(hold=threading.Event())

    async def scenario(batcher: Batcher) -> None:
        first = await started_and_held(batcher, model, (1,))
        queued = [asyncio.ensure_future(batcher.infer(rows(i, i))) for i in (2, 3, 4)]
        await until(lambda: batcher.queued_rows == 6)
        assert registry.get_sample_value("model_server_queue_depth") == 3
        model.hold.set()
        await asyncio.gather(first, *queued)
        assert registry.get_sample_value("model_server_queue_depth") == 0

    run(model, BatchingOptions(max_batch_size=8), scenario, observer=metrics)
    assert registry.get_sample_value("model_server_batch_size_count") == 2
    assert registry.get_sample_value("model_server_batch_size_sum") == 7
    assert registry.get_sample_value("model_server_batch_size_bucket", {"le": "1.0"}) == 1
    assert registry.get_sample_value("model_server_batch_size_bucket", {"le": "4.0"}) == 1
    assert registry.get_sample_value("model_server_batch_size_bucket", {"le": "8.0"}) == 2
    assert registry.get_sample_value("model_server_inference_duration_seconds_count") == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"batch_timeout_s": -0.001}, "batch_timeout_s must be 0..10 s"),
        ({"batch_threads": 0}, "batch_threads must be >= 1"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches must be >= 1"),
    ],
)
def test_bad_options_are_refused_at_construction(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchingOptions(**changes)


# --- properties --------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=25),
    max_batch_size=st.integers(1, 9),
    threads=st.integers(1, 3),
    enabled=st.booleans(),
    hold_first=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_every_request_gets_exactly_its_own_answers(
    sizes: list[int], max_batch_size: int, threads: int, enabled: bool, hold_first: bool
) -> None:
    model = RecordingModel(hold=threading.Event() if hold_first else None)
    options = BatchingOptions(
        max_batch_size=max_batch_size,
        batch_threads=threads,
        enabled=enabled,
        max_enqueued_batches=1000,
    )
    requests, next_id = [], 0
    for size in sizes:
        requests.append(tuple(range(next_id, next_id + size)))
        next_id += size

    async def scenario(batcher: Batcher) -> None:
        calls = [asyncio.ensure_future(batcher.infer(rows(*ids))) for ids in requests]
        if model.hold is not None:
            await until(model.entered.is_set)
            model.hold.set()
        for call, ids in zip(calls, requests, strict=True):
            np.testing.assert_array_equal(await call, answers_for(*ids))

    run(model, options, scenario)
    executed = [row for batch in model.batches for row in batch]
    assert sorted(executed) == list(range(next_id))  # every row ran exactly once
    assert all(1 <= len(batch) <= max_batch_size for batch in model.batches)
    if not enabled:  # a batch is one request, or one chunk of one
        for batch in model.batches:
            assert any(set(batch) <= set(ids) for ids in requests)
