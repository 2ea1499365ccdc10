"""The coordinator: plans, Ray scheduling of agents, exact merging, /metrics, results.

Importing it is cheap: Ray is imported only when a run connects to a cluster.
"""

from coordinator.errors import AgentLost, ClusterError, PlanError, RaysiegeError, TargetUnavailable
from coordinator.plan import Plan

__all__ = ["AgentLost", "ClusterError", "Plan", "PlanError", "RaysiegeError", "TargetUnavailable"]
