"""agents/engine.py with a fake call: exact accounting, no sockets.

The closed-loop tests drive the engine on a virtual clock that only moves when the fake
call "takes" time, so every latency and count is known exactly.
"""

import asyncio

import grpc
import pytest

from agents.engine import LoadEngine, status_name
from agents.histogram import decode
from agents.payload import TensorSpec, build_payloads
from agents.spec import AgentSpec
from model_server.data import load_sample

SPEC = TensorSpec(model_name="mnist")


@pytest.fixture(scope="module")
def payloads():
    return build_payloads(load_sample(), SPEC, count=16)


class VirtualClock:
    """Time moves only when the fake call says so; `sleep` waits for it to get there."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        due = self.now + seconds
        await asyncio.sleep(0)
        while self.now < due:
            await asyncio.sleep(0)


def _aio_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


def _run(engine: LoadEngine) -> list:
    async def collect():
        return [r async for r in engine.run()]

    return asyncio.run(collect())


def test_closed_loop_records_every_request_with_its_exact_latency(payloads):
    clock = VirtualClock()
    calls = 0

    async def call(request: bytes, timeout: float) -> bytes:
        nonlocal calls
        calls += 1
        clock.now += 0.010  # the server takes exactly 10 ms
        await asyncio.sleep(0)
        if calls % 10 == 0:
            raise _aio_error(grpc.StatusCode.UNAVAILABLE)
        return b""

    spec = AgentSpec(
        run_id="r",
        agent_index=3,
        target="t",
        load_model="closed",
        concurrency=1,
        duration_s=1.0,
        check_fraction=0,
    )
    reports = _run(
        LoadEngine(spec, call, payloads, SPEC, clock=clock, wall=clock, sleep=clock.sleep)
    )
    assert calls == 100  # 1 s / 10 ms, one at a time
    assert reports[-1].final and not any(r.final for r in reports[:-1])
    assert [r.seq for r in reports] == list(range(len(reports)))
    assert all(r.agent_index == 3 and r.load_model == "closed" for r in reports)
    ok = sum(r.status_counts.get("OK", 0) for r in reports)
    unavailable = sum(r.status_counts.get("UNAVAILABLE", 0) for r in reports)
    assert (ok, unavailable) == (90, 10)
    assert sum(r.sent for r in reports) == 100
    latencies = [decode(r.latency_hdr) for r in reports]
    assert sum(h.get_total_count() for h in latencies) == 100
    for h in latencies:
        if h.get_total_count():
            assert h.values_are_equivalent(h.get_min_value(), 10_000)
            assert h.values_are_equivalent(h.get_max_value(), 10_000)


def test_closed_loop_stops_at_the_request_count(payloads):
    clock = VirtualClock()

    async def call(request: bytes, timeout: float) -> bytes:
        clock.now += 0.001
        await asyncio.sleep(0)
        return b""

    spec = AgentSpec(
        run_id="r",
        agent_index=0,
        target="t",
        load_model="closed",
        concurrency=4,
        duration_s=60.0,
        max_requests=37,
        check_fraction=0,
    )
    reports = _run(
        LoadEngine(spec, call, payloads, SPEC, clock=clock, wall=clock, sleep=clock.sleep)
    )
    assert sum(sum(r.status_counts.values()) for r in reports) == 37


def test_open_loop_sends_exactly_the_scheduled_arrivals_and_counts_drops(payloads):
    """At 200/s for 0.5 s the schedule holds 100 arrivals; a cap of 5 in flight against a
    server that never answers within the run drops the rest, counted, never delayed."""
    release = asyncio.Event()

    async def call(request: bytes, timeout: float) -> bytes:
        await release.wait()
        return b""

    spec = AgentSpec(
        run_id="r",
        agent_index=0,
        target="t",
        load_model="open",
        rate=200.0,
        duration_s=0.5,
        max_in_flight=5,
        check_fraction=0,
        interval_s=0.1,
    )

    async def scenario():
        engine = LoadEngine(spec, call, payloads, SPEC)
        reports = []
        async for report in engine.run():
            reports.append(report)
            if sum(r.dropped for r in reports) == 95:
                release.set()
        return reports

    reports = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sum(r.sent for r in reports) == 5
    assert sum(r.dropped for r in reports) == 95
    assert sum(sum(r.status_counts.values()) for r in reports) == 5
    assert reports[-1].final and reports[-1].in_flight == 0


def test_accuracy_is_checked_on_the_configured_fraction(payloads):
    import numpy as np

    from model_server.api import grpc_predict_v2_pb2 as pb

    def answer(label: int) -> bytes:
        response = pb.ModelInferResponse()
        out = response.outputs.add()
        out.name, out.datatype = "probabilities", "FP32"
        out.shape.extend([1, 10])
        response.raw_output_contents.append(np.eye(10, dtype="<f4")[label].tobytes())
        return response.SerializeToString()

    by_request = {p.request: int(p.labels[0]) for p in payloads}
    clock = VirtualClock()

    async def call(request: bytes, timeout: float) -> bytes:
        clock.now += 0.001
        await asyncio.sleep(0)
        label = by_request[request]
        return answer(label if label % 2 == 0 else (label + 1) % 10)  # wrong on odd digits

    spec = AgentSpec(
        run_id="r",
        agent_index=0,
        target="t",
        load_model="closed",
        concurrency=1,
        max_requests=200,
        duration_s=100,
        check_fraction=0.5,
    )
    reports = _run(
        LoadEngine(spec, call, payloads, SPEC, clock=clock, wall=clock, sleep=clock.sleep)
    )
    checked = sum(r.checked for r in reports)
    correct = sum(r.correct for r in reports)
    assert checked == 100
    expected = sum(
        1 for i in range(1, 201) if i % 2 == 0 and int(payloads[(i - 1) % 16].labels[0]) % 2 == 0
    )
    assert correct == expected


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (_aio_error(grpc.StatusCode.DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED"),
        (_aio_error(grpc.StatusCode.RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED"),
        (TimeoutError(), "DEADLINE_EXCEEDED"),
        (RuntimeError("bug"), "UNKNOWN"),
    ],
)
def test_status_names_are_grpc_code_names(error, name):
    assert status_name(error) == name


@pytest.mark.parametrize(
    ("interval", "warmup", "first"),
    [
        (1.0, 0.0, [1.0, 2.0, 3.0]),
        (1.0, 2.5, [1.0, 2.0, 2.5, 3.0, 4.0]),
        (1.0, 2.0, [1.0, 2.0, 3.0]),  # the warm-up ends on a tick: no extra boundary
        (1.0, 0.3, [0.3, 1.0, 2.0]),
    ],
)
def test_report_boundaries_include_the_end_of_the_warm_up(interval, warmup, first):
    from itertools import islice

    from agents.engine import boundaries

    assert list(islice(boundaries(interval, warmup), len(first))) == first


def test_warm_up_intervals_are_flagged_and_end_exactly_at_the_warm_up(payloads):
    clock = VirtualClock()

    async def call(request: bytes, timeout: float) -> bytes:
        clock.now += 0.010
        await asyncio.sleep(0)
        return b""

    spec = AgentSpec(
        run_id="r",
        agent_index=0,
        target="t",
        load_model="closed",
        concurrency=1,
        warmup_s=2.5,
        duration_s=2.0,
        interval_s=1.0,
        check_fraction=0,
    )
    reports = _run(
        LoadEngine(spec, call, payloads, SPEC, clock=clock, wall=clock, sleep=clock.sleep)
    )
    warm = [r for r in reports if r.warmup]
    measured = [r for r in reports if not r.warmup]
    assert warm and measured and reports.index(measured[0]) == len(warm)  # warm-up first, then not
    # the report after 2 s ends at the warm-up (2.5 s), not at the next tick (3 s); a
    # virtual-clock report can notice its time a few 10-ms calls late
    assert [round(r.end_unix_s - 100.0, 1) for r in warm] == [1.0, 2.0, 2.5]
    assert sum(sum(r.status_counts.values()) for r in reports) == 450  # (2.5 + 2) s / 10 ms
    assert sum(sum(r.status_counts.values()) for r in warm) == pytest.approx(250, abs=5)


def test_an_interval_that_drops_arrivals_is_flagged_behind(payloads):
    release = asyncio.Event()

    async def call(request: bytes, timeout: float) -> bytes:
        await release.wait()
        return b""

    spec = AgentSpec(
        run_id="r",
        agent_index=0,
        target="t",
        load_model="open",
        rate=100.0,
        duration_s=0.3,
        max_in_flight=1,
        check_fraction=0,
        interval_s=0.1,
    )

    async def scenario():
        reports = []
        async for report in LoadEngine(spec, call, payloads, SPEC).run():
            reports.append(report)
            if sum(r.dropped for r in reports) == 29:
                release.set()
        return reports

    reports = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert all(r.behind for r in reports if r.dropped)
    assert any(r.behind for r in reports)
    assert all(r.arrival == "constant" and r.target == 100.0 for r in reports)
