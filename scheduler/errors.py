"""Scheduler errors: each says what kind of failure it is, not just that one happened."""

from traces.errors import DeltasimError, OrderError

__all__ = [
    "InfeasibleError",
    "NotSeriesParallelError",
    "OrderError",
    "SchedulerError",
    "SolverUnavailableError",
    "TimeLimitError",
]


class SchedulerError(DeltasimError):
    """Base of scheduler failures."""


class NotSeriesParallelError(SchedulerError):
    """The graph is not two-terminal series-parallel; ``witness`` names the offending nodes."""

    def __init__(self, message: str, witness: list[str] | None = None) -> None:
        super().__init__(message)
        self.witness = witness or []


class InfeasibleError(SchedulerError):
    """A model has no solution (e.g. a memory cap below the lower bound)."""


class TimeLimitError(SchedulerError):
    """A solver ran out of time before it found any feasible order."""


class SolverUnavailableError(SchedulerError):
    """No usable MILP solver (HiGHS or CBC) is installed."""
