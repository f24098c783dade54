"""Errors of the delta-MoE area; all derive from :class:`traces.errors.DeltasimError`.

The CLI wrapper turns each into one red line and exit code 2.
"""

from traces.errors import DeltasimError

__all__ = ["CheckpointError", "MoEConfigError", "UnknownGateError"]


class MoEConfigError(DeltasimError):
    """A model, gate or experiment setting is out of range (k > M, p outside (0, 1], ...)."""


class UnknownGateError(MoEConfigError):
    """A gate name that is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown gate {name!r}; known gates: {', '.join(known)}")


class CheckpointError(DeltasimError):
    """A model checkpoint is missing, unreadable, or does not match its config."""
