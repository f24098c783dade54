"""Errors of profiling and serving; all derive from :class:`traces.errors.DeltasimError`.

The CLI wrapper turns each into one red line and exit code 2.
"""

from hw.moe.errors import CheckpointError
from traces.errors import DeltasimError

__all__ = ["CheckpointError", "ProfilingError", "ServeError", "UnknownExpertError"]


class ProfilingError(DeltasimError):
    """Impossible profiling settings (no batch sizes, unknown dtype or device...)."""


class UnknownExpertError(DeltasimError):
    """An expert index outside the model's 0..M-1."""

    def __init__(self, expert: int, n_experts: int) -> None:
        super().__init__(f"unknown expert {expert}: the model has experts 0..{n_experts - 1}")


class ServeError(DeltasimError):
    """A serving run cannot start (bad routing trace, arrivals, placement...)."""
