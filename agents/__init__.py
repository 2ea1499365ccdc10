"""Agents: the load engine (pacing, gRPC calls, HdrHistograms, interval reports) and the
Ray actor that runs it. Importing this package does not import Ray (`agents.actor` does).
"""

from agents.pacing import Closed, Limits, OpenLoop, Pace, constant_rate
from agents.spec import AgentSpec

__all__ = ["AgentSpec", "Closed", "Limits", "OpenLoop", "Pace", "constant_rate"]
