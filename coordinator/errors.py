"""raysiege's errors: each says what went wrong and what to do.

Only `cli.main` maps them to exit codes.
"""

from __future__ import annotations


class RaysiegeError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class PlanError(RaysiegeError):
    """The plan or the command line asks for something invalid; nothing was started."""

    exit_code = 2

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class TargetUnavailable(RaysiegeError):
    """The model server could not be started, reached, or does not serve the model."""

    exit_code = 3


class ClusterError(RaysiegeError):
    """Ray could not be started or joined, or the fleet could not be placed."""

    exit_code = 3


class ResultsUnwritable(RaysiegeError):
    """The results folder stopped taking writes during the run; the run was stopped."""

    exit_code = 3


class AgentLost(RaysiegeError):
    """An agent died during the run (its intervals received so far are kept)."""

    exit_code = 1
