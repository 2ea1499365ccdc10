"""Agents: the load engine (pacing, gRPC calls, HdrHistograms, interval reports) and the
Ray actor that runs it. Importing this package does not import Ray (`agents.actor` does).
"""

from agents.pacing import Closed, ConstantRate, Limits, Pace
from agents.spec import AgentSpec

__all__ = ["AgentSpec", "Closed", "ConstantRate", "Limits", "Pace"]
