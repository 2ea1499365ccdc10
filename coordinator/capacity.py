"""Capacity search, pure: from the trials so far to the next rate, or to a verdict.

The question: the highest open-loop rate a deployment sustains with its latency SLO met
(e.g. p99 under 50 ms), errors under a limit and accuracy over a minimum.

A trial at a rate is judged by `judge`: it passes only if the merged percentile meets
the SLO, the early-stopping binomial check (`coordinator.capacity_stats`) says the sample
shows it at the chosen confidence, the error rate is under the limit, accuracy over its
minimum, nothing was dropped at the in-flight cap, and the load generator kept up (send
lag p99 within its limit, the scheduled number of requests sent, no agent lost). A
trial whose generator fell behind is not the server's failure: it is `limited` and
retried once, and when the retry falls behind too the search ends asking for more
agents. Two judgements differ from the run summary's `generator.kept_up`: arrivals
dropped at the in-flight cap are requests the server left unanswered, so they count
against the server; and a late generator does not excuse a server whose errors, or
whose percentile less the largest send lag, miss the SLO anyway.

`next_step` is the search. Grow the rate geometrically from the start rate until a trial
fails (shrink instead if the first one does); bisect between the highest passing rate
and the lowest failing one until they are within the stated precision; then confirm the
highest passing rate with a longer run. Before that, the lowest failing rate is tried
once more if its failure came from a single short trial: on a shared machine one stall
fails a trial, and one such failure would otherwise cap the answer; a recheck that
passes discounts it and the search goes on above. A confirmation that fails makes that
rate the lowest failing one and the bisection goes on below it. Otherwise noise is
resolved conservatively: a rate that failed is failing, a pass above it is ignored.

The search is a pure function of the trials, so it is tested with tables and with a
simulated server (`coordinator.capacity_model`); `search` drives it with any trial
function, and `coordinator.capacity_run` with real runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from coordinator.capacity_stats import confidence_of, default_min_requests, max_over
from coordinator.errors import PlanError
from coordinator.thresholds import LATENCY, parse_threshold

if TYPE_CHECKING:
    from coordinator.plan import CapacityPlan

Phase = Literal["grow", "shrink", "bisect", "recheck", "confirm"]
Outcome = Literal["pass", "fail", "limited"]
Status = Literal[
    "found",
    "max_rate",
    "generator_limited",
    "no_passing_rate",
    "trial_budget",
    "interrupted",
    "error",
]


@dataclass(frozen=True)
class Slo:
    """A latency percentile under a bound: 'p99<50ms' is quantile 0.99, bound 0.05 s."""

    rule: str
    metric: str  # p50, p90, p95, p99, p999
    quantile: float
    bound_s: float
    inclusive: bool  # '<=': a latency equal to the bound meets it

    def met_by(self, latency_s: float) -> bool:
        return latency_s <= self.bound_s if self.inclusive else latency_s < self.bound_s


def parse_slo(text: Any, field_name: str = "capacity.slo") -> Slo:
    """'p99<50ms', 'p99.9 <= 0.2s' → Slo; PlanError naming the field otherwise."""
    if not isinstance(text, str):
        raise PlanError(field_name, f"must be a rule such as 'p99<50ms', got {text!r}")
    threshold = parse_threshold(text, field_name)
    quantile = LATENCY.get(threshold.metric)
    if quantile is None or threshold.op not in ("<", "<="):
        raise PlanError(
            field_name,
            f"{text!r}: an SLO is a latency percentile under a bound, e.g. 'p99<50ms' "
            "(p50, p90, p95, p99, p999)",
        )
    if not threshold.limit > 0:
        raise PlanError(field_name, f"{text!r}: the bound must be positive")
    return Slo(
        rule=threshold.rule,
        metric=threshold.metric,
        quantile=round(quantile / 100, 6),
        bound_s=threshold.limit,
        inclusive=threshold.op == "<=",
    )


@dataclass(frozen=True)
class Settings:
    """What the search is asked: the SLO and limits, and how to search."""

    slo: Slo
    max_error_rate: float = 0.001
    min_accuracy: float | None = None
    confidence: float = 0.95
    precision: float = 0.05  # stop bisecting when lowest failing / highest passing <= 1 + this
    start_rate: float = 50.0
    max_rate: float | None = None
    growth: float = 2.0
    trial_duration_s: float = 10.0
    confirm_duration_s: float | None = None  # None: three trial durations
    min_requests: int | None = None  # None: capacity_stats.default_min_requests
    rate_tolerance: float = 0.05  # sent may fall short of the schedule by this much
    max_trials: int = 25
    # Give up below start / growth**shrink_limit: an SLO missed at an eighth of the start
    # rate is usually a latency floor, not a capacity, and low rates make long trials.
    shrink_limit: int = 3

    def validate(self) -> Settings:
        def bad(name: str, problem: str) -> PlanError:
            return PlanError(f"capacity.{name}", problem)

        if not 0 <= self.max_error_rate <= 1:
            raise bad("max_error_rate", f"must be in [0, 1], got {self.max_error_rate}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise bad("min_accuracy", f"must be in [0, 1], got {self.min_accuracy}")
        if not 0.5 <= self.confidence < 1:
            raise bad("confidence", f"must be in [0.5, 1), e.g. 0.95, got {self.confidence}")
        if not 0.005 <= self.precision <= 1:
            raise bad("precision", f"must be in [0.5%, 100%], got {self.precision}")
        for name in ("start_rate", "trial_duration_s", "confirm_duration_s"):
            value = getattr(self, name)
            if value is None and name == "confirm_duration_s":
                continue
            if not (value > 0 and math.isfinite(value)):
                raise bad(name.removesuffix("_s"), f"must be positive, got {value}")
        if self.max_rate is not None and not self.max_rate >= self.start_rate:
            raise bad(
                "max_rate", f"must be >= the start rate {self.start_rate}, got {self.max_rate}"
            )
        if not (self.growth > 1 and math.isfinite(self.growth)):
            raise bad("growth", f"must be > 1, got {self.growth}")
        if self.min_requests is not None and self.min_requests < 1:
            raise bad("min_requests", f"must be >= 1, got {self.min_requests}")
        if not 0 < self.rate_tolerance < 1:
            raise bad("rate_tolerance", f"must be in (0, 1), got {self.rate_tolerance}")
        if self.max_trials < 1:
            raise bad("max_trials", f"must be >= 1, got {self.max_trials}")
        return self

    @property
    def confirm_s(self) -> float:
        return self.confirm_duration_s or 3 * self.trial_duration_s

    @property
    def requests_per_trial(self) -> int:
        if self.min_requests is not None:
            return self.min_requests
        return default_min_requests(self.slo.quantile, self.confidence)

    def duration_for(self, rate: float, phase: Phase) -> float:
        """A trial's measured duration: the trial (or confirmation) duration, longer when
        the rate is too low to reach the minimum request count in it (the confirmation
        asks for proportionally more requests). Arrivals are Poisson, so the count is
        aimed four standard deviations above the minimum."""
        base = self.confirm_s if phase == "confirm" else self.trial_duration_s
        requests = self.requests_per_trial * base / self.trial_duration_s
        return max(base, (requests + 4 * math.sqrt(requests)) / rate)


def settings_for(
    capacity: CapacityPlan, *, slo_required: bool = True, **overrides: Any
) -> Settings:
    """Settings from a plan's `capacity:` section with overrides (flags, keyword
    arguments) laid over it; None leaves a setting to the section, then to the default."""
    values = {k: v for k, v in asdict(capacity).items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    slo = values.pop("slo", None)
    if slo is None:
        if slo_required:
            raise PlanError("capacity.slo", "give an SLO such as 'p99<50ms' (--slo, capacity.slo)")
        slo = "p99<1s"  # checking the other settings of a plan that only `start`s
    unknown = sorted(set(values) - {f.name for f in fields(Settings)})
    if unknown:
        raise PlanError(f"capacity.{unknown[0]}", "unknown setting")
    return Settings(slo=slo if isinstance(slo, Slo) else parse_slo(slo), **values).validate()


@dataclass(frozen=True)
class Measurement:
    """What one trial measured (from its run summary, or from a simulated server)."""

    rate: float  # scheduled, fleet total, requests/s
    duration_s: float  # scheduled measured duration (after the warm-up)
    requests: int  # completed in the measured window
    over_bound: int  # ... of which slower than the SLO's bound
    percentile_s: float  # the SLO's percentile over the merged window
    errors: int = 0
    sent: int | None = None  # None: as scheduled
    dropped: int = 0
    throughput_rps: float | None = None  # completed per second of the window (None: unknown)
    send_lag_p99_s: float = 0.0
    send_lag_max_s: float | None = None  # None: unknown
    max_send_lag_s: float = 0.050
    accuracy: float | None = None
    agents_lost: int = 0
    latency_s: dict[str, float] = field(default_factory=dict)  # p50 ... max, for the curve
    percentile_upper_s: float | None = None  # upper confidence bound of the percentile
    out_dir: str | None = None

    @property
    def achieved_rps(self) -> float:
        """Completed requests per second of the window, or the scheduled rate if unknown."""
        return self.rate if self.throughput_rps is None else self.throughput_rps


@dataclass(frozen=True)
class Trial:
    index: int
    phase: Phase
    measurement: Measurement
    outcome: Outcome
    reasons: tuple[str, ...]  # why it failed or was limited (empty when it passed)
    max_over: int  # requests over the bound the binomial check allows (-1: none)
    confidence: float  # with which the sample shows the SLO's percentile under the bound

    @property
    def rate(self) -> float:
        return self.measurement.rate

    def to_dict(self) -> dict[str, Any]:
        m = asdict(self.measurement)
        return {
            "index": self.index,
            "phase": self.phase,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "max_over": self.max_over,
            "confidence": self.confidence,
            **m,
        }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def judge(settings: Settings, index: int, phase: Phase, m: Measurement) -> Trial:
    """Pass, fail (the server's doing) or limited (the generator's), with the reasons."""
    slo = settings.slo
    allowed = max_over(m.requests, slo.quantile, settings.confidence)
    confidence = confidence_of(m.over_bound, m.requests, slo.quantile)
    server: list[str] = []
    if m.requests == 0:
        server.append("no request completed")
    if not slo.met_by(m.percentile_s):
        server.append(f"{slo.metric} {_ms(m.percentile_s)} misses {slo.rule}")
    if m.requests and m.over_bound > allowed:
        server.append(
            f"{m.over_bound} of {m.requests} requests over {_ms(slo.bound_s)}; at most "
            f"{max(allowed, 0)} may be to show {slo.metric} under it at "
            f"{settings.confidence:.0%} confidence" + (" (too few requests)" if allowed < 0 else "")
        )
    error_rate = m.errors / m.requests if m.requests else 0.0
    if error_rate > settings.max_error_rate:
        server.append(f"error rate {error_rate:.3%} over {settings.max_error_rate:.3%}")
    if settings.min_accuracy is not None:
        if m.accuracy is None:
            server.append("no prediction was checked, so accuracy is unknown")
        elif m.accuracy < settings.min_accuracy:
            server.append(f"accuracy {m.accuracy:.2%} under {settings.min_accuracy:.2%}")
    if m.dropped:
        server.append(f"{m.dropped} arrivals dropped at the in-flight cap (an unanswered backlog)")

    generator: list[str] = []
    if m.send_lag_p99_s > m.max_send_lag_s:
        generator.append(
            f"send lag p99 {_ms(m.send_lag_p99_s)} over its limit {_ms(m.max_send_lag_s)}"
        )
    expected = m.rate * m.duration_s
    # Poisson counts vary by sqrt(expected): allow four of those as well as the tolerance.
    tolerance = max(settings.rate_tolerance, 4 / math.sqrt(expected)) if expected > 0 else 1.0
    if m.sent is not None and m.sent < (1 - tolerance) * expected:
        generator.append(f"sent {m.sent} of the {expected:.0f} scheduled")
    if not server and m.throughput_rps is not None and m.duration_s > 0:
        # The window runs on until the last response, so the achieved rate may fall short
        # of the schedule by the drain as well. Short beyond that with the server meeting
        # its SLO: the requests went out slower than scheduled.
        drain = m.latency_s.get("max", m.percentile_s)
        floor = (1 - tolerance) * m.rate * m.duration_s / (m.duration_s + drain)
        if m.throughput_rps < floor:
            generator.append(
                f"achieved {m.throughput_rps:.4g} requests/s of the {m.rate:g} scheduled"
            )
    if m.agents_lost:
        generator.append(f"{m.agents_lost} agent(s) lost")

    outcome: Outcome
    if generator:
        # A generator that fell behind inflates every latency by its send lag, at most by
        # the largest lag: a percentile that misses the SLO even less that is the server's
        # (and so are errors over the limit).
        clearly_server = error_rate > settings.max_error_rate or (
            m.send_lag_max_s is not None and not slo.met_by(m.percentile_s - m.send_lag_max_s)
        )
        outcome = "fail" if clearly_server else "limited"
        reasons = server + generator if clearly_server else generator
    else:
        outcome = "fail" if server else "pass"
        reasons = server
    return Trial(
        index=index,
        phase=phase,
        measurement=m,
        outcome=outcome,
        reasons=tuple(reasons),
        max_over=allowed,
        confidence=confidence,
    )


# -- the search ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """Run a trial at `rate` for `duration_s` (measured, after the warm-up)."""

    rate: float
    phase: Phase
    duration_s: float


@dataclass(frozen=True)
class Finished:
    status: Status
    max_rate_rps: float | None  # the highest passing rate (confirmed unless the budget ran out)
    message: str
    failing_rate_rps: float | None = None  # the lowest failing rate
    limited_at_rps: float | None = None  # where the generator fell behind (twice)


def _round(rate: float) -> float:
    """Four significant figures: readable trial names, and no rate creeps by 1e-13."""
    return float(f"{rate:.4g}")


@dataclass(frozen=True)
class _Standing:
    """The trials folded per rate."""

    failing: float | None  # lowest rate that failed (and was not passed on a recheck)
    passing: float | None  # highest rate that passed, is not failing, below `failing`
    limited: float | None  # lowest rate whose trial and retry were both limited
    confirmed: frozenset[float]  # rates whose confirmation passed

    @classmethod
    def of(cls, trials: Sequence[Trial]) -> _Standing:
        failed = {t.rate for t in trials if t.outcome == "fail" and not _overturned(t, trials)}
        failing = min(failed, default=None)
        passed = {
            t.rate
            for t in trials
            if t.outcome == "pass"
            and t.rate not in failed
            and (failing is None or t.rate < failing)
        }
        # A trial and its retry both limited: the generator cannot do that rate.
        limited = min(
            (
                b.rate
                for a, b in itertools.pairwise(trials)
                if a.outcome == b.outcome == "limited" and a.rate == b.rate
            ),
            default=None,
        )
        confirmed = frozenset(
            t.rate for t in trials if t.phase == "confirm" and t.outcome == "pass"
        )
        return cls(failing, max(passed, default=None), limited, confirmed)


def _overturned(fail: Trial, trials: Sequence[Trial]) -> bool:
    """A short trial's failure that a later recheck of its rate passed: noise."""
    return fail.phase != "confirm" and any(
        t.rate == fail.rate
        and t.phase == "recheck"
        and t.outcome == "pass"
        and t.index > fail.index
        for t in trials
    )


def _needs_recheck(rate: float, trials: Sequence[Trial]) -> bool:
    """The rate has failed once, in a short trial, and was never rechecked."""
    at = [t for t in trials if t.rate == rate and t.outcome != "limited"]
    return len(at) == 1 and at[0].outcome == "fail" and at[0].phase != "confirm"


def next_step(settings: Settings, trials: Sequence[Trial]) -> Probe | Finished:
    """The next trial to run, or the verdict, from the trials so far (in order)."""
    s = settings

    def probe(rate: float, phase: Phase) -> Probe:
        return Probe(rate=rate, phase=phase, duration_s=s.duration_for(rate, phase))

    if trials and trials[-1].outcome == "limited":
        last = trials[-1]
        before = trials[-2] if len(trials) > 1 else None
        if not (before and before.outcome == "limited" and before.rate == last.rate):
            return Probe(last.rate, last.phase, last.measurement.duration_s)  # retry once

    st = _Standing.of(trials)
    lo, hi = st.passing, st.failing
    if st.limited is not None and (hi is None or st.limited < hi):
        # Every failing rate is above st.limited, so no pass below it is contradicted.
        sustained = max(
            (t.rate for t in trials if t.outcome == "pass" and t.rate < st.limited), default=None
        )
        return Finished(
            "generator_limited",
            sustained,
            f"the load generator fell behind at {st.limited:g} requests/s (twice), before the "
            "server failed: add agents (or agent CPUs) and search again"
            + (f"; the server sustained {sustained:g} requests/s" if sustained else ""),
            failing_rate_rps=hi,
            limited_at_rps=st.limited,
        )
    if len(trials) >= s.max_trials:
        return Finished(
            "trial_budget",
            lo,
            f"no answer within {s.max_trials} trials"
            + (f"; the highest passing rate was {lo:g} requests/s (not confirmed)" if lo else ""),
            failing_rate_rps=hi,
        )
    if not trials:
        return probe(_round(s.start_rate), "grow")

    if hi is None:  # everything so far passed: grow
        if lo is None:  # only limited trials, each retried into a pass or a fail
            return probe(_round(s.start_rate), "grow")
        if s.max_rate is not None and lo >= s.max_rate:
            if lo in st.confirmed:
                return Finished(
                    "max_rate",
                    lo,
                    f"the server met the SLO up to the highest rate allowed, {lo:g} requests/s",
                )
            return probe(lo, "confirm")
        nxt = lo * s.growth
        return probe(_round(min(nxt, s.max_rate) if s.max_rate else nxt), "grow")

    if lo is None:  # everything so far failed: shrink
        nxt = _round(hi / s.growth)
        if nxt < s.start_rate / s.growth**s.shrink_limit:
            return Finished(
                "no_passing_rate",
                None,
                f"no rate down to {hi:g} requests/s met the SLO",
                failing_rate_rps=hi,
            )
        return probe(nxt, "shrink")

    if hi / lo - 1 > s.precision:
        mid = _round(math.sqrt(lo * hi))
        if not lo < mid < hi:
            mid = math.sqrt(lo * hi)
        return probe(mid, "bisect")
    if _needs_recheck(hi, trials):
        return probe(hi, "recheck")
    if lo in st.confirmed:
        return Finished(
            "found",
            lo,
            f"{lo:g} requests/s meets {s.slo.rule} at {s.confidence:.0%} confidence; "
            f"{hi:g} requests/s does not",
            failing_rate_rps=hi,
        )
    return probe(lo, "confirm")


def search(
    settings: Settings, measure: Callable[[Probe], Measurement]
) -> tuple[Finished, list[Trial]]:
    """Run the search with `measure` doing the trials (a simulated server in tests)."""
    trials: list[Trial] = []
    while True:
        step = next_step(settings, trials)
        if isinstance(step, Finished):
            return step, trials
        trials.append(judge(settings, len(trials), step.phase, measure(step)))


# -- the result ------------------------------------------------------------------------------

EXIT_CODES: dict[str, int] = {
    "found": 0,
    "max_rate": 0,
    "generator_limited": 3,
    "no_passing_rate": 1,
    "trial_budget": 1,
    "interrupted": 130,
    "error": 3,  # the target or the cluster failed mid-search (the CLI exits with its code)
}


@dataclass
class CapacityResult:
    """The answer (`max_rate_rps`), how sure it is, and every trial that led there."""

    settings: Settings
    finished: Finished
    trials: list[Trial]
    out_dir: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # target, fleet, server figures

    @property
    def status(self) -> Status:
        return self.finished.status

    @property
    def max_rate_rps(self) -> float | None:
        return self.finished.max_rate_rps

    @property
    def found(self) -> bool:
        return self.status in ("found", "max_rate")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def answer(self) -> Trial | None:
        """The trial that stands for the answer: its passing confirmation (or, without
        one, its last passing trial)."""
        rate = self.max_rate_rps
        at = [t for t in self.trials if t.rate == rate and t.outcome == "pass"]
        confirms = [t for t in at if t.phase == "confirm"]
        return (confirms or at or [None])[-1]

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer
        s = self.settings
        return {
            "status": self.status,
            "max_rate_rps": self.max_rate_rps,
            "message": self.finished.message,
            "slo": asdict(s.slo),
            "confidence_required": s.confidence,
            "answer": None
            if answer is None
            else {
                "trial": answer.index,
                "phase": answer.phase,
                "requests": answer.measurement.requests,
                "over_bound": answer.measurement.over_bound,
                "max_over": answer.max_over,
                "confidence": answer.confidence,
                "percentile_s": answer.measurement.percentile_s,
                "percentile_upper_s": answer.measurement.percentile_upper_s,
                "latency_s": answer.measurement.latency_s,
                "throughput_rps": answer.measurement.throughput_rps,
                "error_rate": answer.measurement.errors / answer.measurement.requests
                if answer.measurement.requests
                else 0.0,
                "accuracy": answer.measurement.accuracy,
            },
            "failing_rate_rps": self.finished.failing_rate_rps,
            "limited_at_rps": self.finished.limited_at_rps,
            "settings": {**asdict(s), "slo": s.slo.rule},
            "requests_per_trial": s.requests_per_trial,
            "trials": [t.to_dict() for t in self.trials],
            **self.facts,
        }


TRIAL_COLUMNS = (
    "index",
    "phase",
    "rate",
    "outcome",
    "requests",
    "over_bound",
    "max_over",
    "confidence",
    "percentile_s",
    "p50_s",
    "p99_s",
    "max_s",
    "throughput_rps",
    "errors",
    "dropped",
    "send_lag_p99_s",
    "send_lag_max_s",
    "accuracy",
    "duration_s",
    "reasons",
)


def trial_row(trial: Trial) -> dict[str, Any]:
    """One line of trials.csv."""
    m = trial.measurement
    return {
        "index": trial.index,
        "phase": trial.phase,
        "rate": m.rate,
        "outcome": trial.outcome,
        "requests": m.requests,
        "over_bound": m.over_bound,
        "max_over": trial.max_over,
        "confidence": round(trial.confidence, 6),
        "percentile_s": m.percentile_s,
        "p50_s": m.latency_s.get("p50"),
        "p99_s": m.latency_s.get("p99"),
        "max_s": m.latency_s.get("max"),
        "throughput_rps": None if m.throughput_rps is None else round(m.throughput_rps, 3),
        "errors": m.errors,
        "dropped": m.dropped,
        "send_lag_p99_s": m.send_lag_p99_s,
        "send_lag_max_s": m.send_lag_max_s,
        "accuracy": m.accuracy,
        "duration_s": m.duration_s,
        "reasons": "; ".join(trial.reasons),
    }


def format_result(result: CapacityResult) -> str:
    """A short human-readable verdict (the full one is capacity.json)."""
    s = result.settings
    slo = s.slo
    rate = result.max_rate_rps
    if result.status == "found":
        head = f"capacity: {rate:g} requests/s meet {slo.rule}"
    elif result.status == "max_rate":
        head = f"capacity: at least {rate:g} requests/s (the highest allowed)"
    else:
        head = {
            "generator_limited": "capacity: not found, the load generator limited the search",
            "no_passing_rate": "capacity: no rate tried met the SLO",
            "trial_budget": "capacity: not found within the trial budget",
            "interrupted": "capacity: interrupted",
            "error": "capacity: the search stopped on an error",
        }[result.status]
    lines = [head, f"  verdict    {result.finished.message}"]
    answer = result.answer
    if answer is not None:
        m = answer.measurement
        upper = (
            f" (upper {s.confidence:.0%} bound {m.percentile_upper_s * 1e3:.2f} ms)"
            if m.percentile_upper_s is not None
            else ""
        )
        error_rate = m.errors / m.requests if m.requests else 0.0
        lines.append(
            f"  answer     trial {answer.index} ({answer.phase}, {m.duration_s:.1f} s): "
            f"{slo.metric} {m.percentile_s * 1e3:.2f} ms{upper}; {m.over_bound} of "
            f"{m.requests} over {slo.bound_s * 1e3:g} ms (at most {answer.max_over}); "
            f"confidence {answer.confidence:.1%}; errors {error_rate:.3%}; "
            f"{m.achieved_rps:.1f} requests/s completed"
        )
    phases: dict[str, int] = {}
    for t in result.trials:
        phases[t.phase] = phases.get(t.phase, 0) + 1
    counted = ", ".join(f"{n} {phase}" for phase, n in phases.items())
    elapsed = result.facts.get("elapsed_s")
    took = f" in {elapsed:.0f} s" if isinstance(elapsed, int | float) else ""
    lines.append(f"  trials     {len(result.trials)} ({counted}){took}")
    return "\n".join(lines)
