"""Live progress: a refreshing table on a terminal, one plain line per interval otherwise."""

from __future__ import annotations

import sys
from typing import IO, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from coordinator.merge import FleetState


class Progress(Protocol):
    def start(self) -> None: ...
    def update(self, state: FleetState, elapsed_s: float, phase: str) -> None: ...
    def stop(self) -> None: ...


class _Rates:
    """Requests per second between two updates, from the cumulative count."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def rate(self, elapsed_s: float, requests: int) -> float:
        last, self._last = self._last, (elapsed_s, requests)
        if last is None or elapsed_s <= last[0]:
            return 0.0
        return (requests - last[1]) / (elapsed_s - last[0])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


class PlainProgress:
    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self._stream = stream
        self._rates = _Rates()

    def start(self) -> None:
        pass

    def update(self, state: FleetState, elapsed_s: float, phase: str) -> None:
        lat = state.latency_s()
        agents = sum(not a.lost for a in state.agents.values())
        print(
            f"[{elapsed_s:6.1f}s] {phase:8} requests={state.requests} "
            f"rps={self._rates.rate(elapsed_s, state.requests):.1f} errors={state.errors} "
            f"p50={_ms(lat['p50'])}ms p99={_ms(lat['p99'])}ms max={_ms(lat['max'])}ms "
            f"in_flight={state.in_flight} dropped={state.dropped} agents={agents}",
            file=self._stream,
            flush=True,
        )

    def stop(self) -> None:
        pass


class LiveProgress:
    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._rates = _Rates()

    def start(self) -> None:
        self._live.start()

    def update(self, state: FleetState, elapsed_s: float, phase: str) -> None:
        lat = state.latency_s()
        table = Table(title=f"raysiege — {phase}, {elapsed_s:.0f} s", title_justify="left")
        for column in ("agent", "node", "requests", "errors", "in flight"):
            table.add_column(column, justify="right")
        for index, agent in sorted(state.agents.items()):
            errors = agent.requests - agent.status_counts.get("OK", 0)
            status = " (lost)" if agent.lost else ""
            table.add_row(
                f"{index}{status}",
                agent.node_ip or agent.node_id[:8],
                str(agent.requests),
                str(errors),
                str(agent.in_flight),
            )
        table.caption = (
            f"total {state.requests} req, {self._rates.rate(elapsed_s, state.requests):.0f} req/s, "
            f"errors {state.errors} | p50 {_ms(lat['p50'])} p90 {_ms(lat['p90'])} "
            f"p99 {_ms(lat['p99'])} max {_ms(lat['max'])} ms | dropped {state.dropped}"
        )
        self._live.update(table, refresh=True)

    def stop(self) -> None:
        self._live.stop()


def make_progress(stream: IO[str] = sys.stderr) -> Progress:
    return LiveProgress() if stream.isatty() else PlainProgress(stream)
