"""The load loop: sends requests as a pacer says, records every outcome, reports intervals.

`LoadEngine` knows nothing of Ray or sockets: the call that sends one serialized request,
the clocks, the sleep and the payloads are passed in, so a fake call with a controlled
latency tests the accounting exactly. It yields one `IntervalReport` per interval while
it runs and a final one (`final=True`) after the last in-flight request has completed or
timed out.

The load loop watches itself: each report carries the interval's send lag (actual minus
intended send time), the arrivals dropped at the in-flight cap, the largest event-loop
lag and the CPU time used, and says whether the agent fell `behind` its schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import grpc

from agents.histogram import Recorder
from agents.pacing import Closed, ConstantProfile, OpenLoop, StagesProfile, target_at
from agents.payload import Payload, TensorSpec, predicted_classes
from agents.spec import AgentSpec
from agents.timer import PreciseWaker
from model_server.api import report_pb2

log = logging.getLogger(__name__)

# Sends one serialized ModelInferRequest with a deadline (seconds) and returns the
# serialized response; raises grpc.aio.AioRpcError (or TimeoutError) on failure.
Call = Callable[[bytes, float], Awaitable[bytes]]

# Waits at least this long use the precise timer thread (agents/timer.py): below it, the
# rate is high enough (> 500/s per agent) that its CPU would cost more than it buys.
PRECISE_WAIT_MIN_S = 0.002


@dataclass
class _Interval:
    """What happened in one interval; swapped out whole at each report."""

    latency: Recorder = field(default_factory=Recorder)
    send_lag: Recorder = field(default_factory=Recorder)
    status: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    dropped: int = 0
    checked: int = 0
    correct: int = 0
    loop_lag_max_s: float = 0.0


def status_name(error: BaseException) -> str:
    """The gRPC status code name an exception stands for; a bounded set of labels."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    if isinstance(error, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED.name
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


def boundaries(interval_s: float, warmup_s: float) -> Iterator[float]:
    """Report times after the start: every interval, plus the end of the warm-up."""
    k = 1
    while True:
        tick = k * interval_s
        if (k - 1) * interval_s < warmup_s < tick:
            yield warmup_s
        yield tick
        k += 1


class LoadEngine:
    def __init__(
        self,
        spec: AgentSpec,
        call: Call,
        payloads: list[Payload],
        tensor_spec: TensorSpec,
        *,
        agent_id: str = "",
        node_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cpu: Callable[[], float] = time.process_time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not payloads:
            raise ValueError("the engine needs at least one payload")
        self.spec = spec
        self._call = call
        self._payloads = payloads
        self._tensor_spec = tensor_spec
        self._agent_id = agent_id
        self._node_id = node_id
        self._clock = clock
        self._wall = wall
        self._cpu = cpu
        self._sleep = sleep
        self._pacer = spec.pacer()
        fraction = spec.check_fraction
        self._check_every = 0 if fraction <= 0 else max(1, round(1 / fraction))
        self._cur = _Interval()
        # The recorders of the interval before, emptied by its report: the next interval
        # records into them. Two new HdrHistograms a second (two ~100 KiB arrays each)
        # fragmented the heap: an agent's RSS grew about 1 MiB a minute in a soak.
        self._spare = (Recorder(), Recorder())
        self._in_flight = 0
        self._sent_total = 0
        self._completed = 0
        self._start = 0.0
        self._waker: PreciseWaker | None = None

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> AsyncIterator[report_pb2.IntervalReport]:
        """Drive the load; yield a report every `interval_s` and a final one at the end.

        With a warm-up, one report ends exactly where the warm-up does, and the reports
        up to there carry `warmup=True`.
        """
        self._start = self._clock()
        if (
            self.spec.precise_timer
            and self._clock is time.monotonic
            and self._sleep is asyncio.sleep
        ):
            self._waker = PreciseWaker(asyncio.get_running_loop())
        cpu_mark = self._cpu()
        seq = 0
        interval_start = self._wall()
        drive = asyncio.ensure_future(self._drive())
        monitor = asyncio.ensure_future(self._watch_loop())
        try:
            for offset in boundaries(self.spec.interval_s, self.spec.warmup_s):
                await self._until_done_or(drive, self._start + offset)
                if drive.done():
                    break
                now, cpu_now = self._wall(), self._cpu()
                warmup = offset <= self.spec.warmup_s
                yield self._report(seq, interval_start, now, cpu_now - cpu_mark, False, warmup)
                seq += 1
                interval_start, cpu_mark = now, cpu_now
            drive.result()  # re-raise a failure of the load loop itself
            warmup = self._clock() - self._start <= self.spec.warmup_s
            cpu_s = self._cpu() - cpu_mark
            yield self._report(seq, interval_start, self._wall(), cpu_s, True, warmup)
        finally:
            monitor.cancel()
            if not drive.done():
                drive.cancel()
            if self._waker is not None:
                self._waker.close()
                self._waker = None

    async def _until_done_or(self, drive: asyncio.Future[None], due: float) -> None:
        """Return when `drive` is done or the clock reaches `due` (through the injected
        sleep, so a virtual clock drives the reports too)."""
        delay = due - self._clock()
        if delay <= 0:
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({drive, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    async def _watch_loop(self, period_s: float = 0.05) -> None:
        """Event-loop lag: how late a timer fires; the largest goes in each report."""
        while True:
            before = self._clock()
            await self._sleep(period_s)
            lag = self._clock() - before - period_s
            if lag > self._cur.loop_lag_max_s:
                self._cur.loop_lag_max_s = lag

    def _target_now(self) -> float:
        """What the schedule asks for now: a rate (open loop) or a concurrency (closed)."""
        elapsed = self._clock() - self._start
        pacer = self._pacer
        if isinstance(pacer, Closed):
            return float(pacer.concurrency_at(elapsed))
        profile = pacer.profile
        if isinstance(profile, ConstantProfile):
            return profile.rate
        if isinstance(profile, StagesProfile):
            return target_at(profile.stages, profile.start, elapsed)
        return 0.0

    def _report(
        self, seq: int, start: float, end: float, cpu_s: float, final: bool, warmup: bool
    ) -> report_pb2.IntervalReport:
        latency, send_lag = self._spare
        cur, self._cur = self._cur, _Interval(latency=latency, send_lag=send_lag)
        spec = self.spec
        late = cur.send_lag.count > 0 and cur.send_lag.percentile_s(99.0) > spec.max_send_lag_s
        is_open = spec.load_model == "open"
        report = report_pb2.IntervalReport(
            run_id=spec.run_id,
            agent_index=spec.agent_index,
            agent_id=self._agent_id,
            node_id=self._node_id,
            seq=seq,
            start_unix_s=start,
            end_unix_s=end,
            status_counts=dict(cur.status),
            latency_hdr=cur.latency.take(),
            send_lag_hdr=cur.send_lag.take(),
            in_flight=self._in_flight,
            dropped=cur.dropped,
            checked=cur.checked,
            correct=cur.correct,
            cpu_s=cpu_s,
            load_model=spec.load_model,
            final=final,
            target_rate=(spec.rate or 0.0) if is_open else 0.0,
            sent=cur.sent,
            warmup=warmup,
            behind=late or cur.dropped > 0,
            loop_lag_max_s=max(0.0, cur.loop_lag_max_s),
            arrival=spec.arrival if is_open else "",
            target=self._target_now(),
        )
        self._spare = (cur.latency, cur.send_lag)  # empty again: take() reset them
        return report

    # -- the load ----------------------------------------------------------------------

    async def _drive(self) -> None:
        pacer = self._pacer
        if isinstance(pacer, OpenLoop):
            await self._open_loop(pacer)
        else:
            await self._closed_loop(pacer)

    async def _open_loop(self, pacer: OpenLoop) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        cap = self.spec.max_in_flight
        sent = 0
        while True:
            pace = pacer.pace(self._clock() - self._start, sent)
            if pace.stop:
                break
            if pace.wait_s > 0:
                await self._wait(pace.wait_s)
                continue
            intended = self._start + pacer.intended_s(sent)
            sent += 1
            if self._in_flight >= cap:
                # Sending later would hide the server's backlog; the arrival is counted lost.
                self._cur.dropped += 1
                continue
            task = asyncio.ensure_future(self._one(intended))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _wait(self, seconds: float) -> None:
        """Wait for the next arrival. asyncio's timers fire up to 1 ms late, which would
        add to every open-loop latency, so waits of PRECISE_WAIT_MIN_S or more go through
        the precise timer thread; shorter ones (high rates, where its CPU would matter)
        use the loop's timer and the lateness shows as send lag."""
        if self._waker is not None and seconds >= PRECISE_WAIT_MIN_S:
            await self._waker.wait_until(self._clock() + seconds)
        else:
            await self._sleep(seconds)

    async def _closed_loop(self, pacer: Closed, idle_s: float = 0.02) -> None:
        async def worker(k: int) -> None:
            while True:
                elapsed = self._clock() - self._start
                if pacer.pace(elapsed, self._sent_total).stop:
                    return
                if k >= pacer.concurrency_at(elapsed):  # ramping: not this worker's turn yet
                    await self._sleep(idle_s)
                    continue
                await self._one(self._clock())

        await asyncio.gather(*(worker(k) for k in range(pacer.max_concurrency)))

    async def _one(self, intended: float) -> None:
        """Send one request intended to leave at `intended`; record its outcome."""
        payload = self._payloads[self._sent_total % len(self._payloads)]
        self._sent_total += 1
        self._in_flight += 1
        sent_at = self._clock()
        cur = self._cur
        cur.sent += 1
        cur.send_lag.record_s(sent_at - intended)
        response = None
        try:
            response = await self._call(payload.request, self.spec.timeout_s)
            code = "OK"
        except Exception as error:  # every outcome is data; the run goes on
            code = status_name(error)
            if code == "UNKNOWN" and not isinstance(error, grpc.aio.AioRpcError):
                log.warning("request failed outside gRPC: %r", error)
        done_at = self._clock()
        self._in_flight -= 1
        cur = self._cur  # the interval the request completed in
        cur.latency.record_s(done_at - intended)
        cur.status[code] += 1
        self._completed += 1
        if response is not None and self._check_every and self._completed % self._check_every == 0:
            self._check(response, payload, cur)

    def _check(self, response: bytes, payload: Payload, cur: _Interval) -> None:
        try:
            predicted = predicted_classes(response, self._tensor_spec)
        except ValueError as error:
            log.warning("response could not be checked: %s", error)
            return
        cur.checked += len(payload.labels)
        cur.correct += int((predicted == payload.labels).sum())
