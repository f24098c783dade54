"""Errors of the ``sim`` package: bad model inputs, each a :class:`DeltasimError` (exit 2)."""

from __future__ import annotations

from traces.errors import DeltasimError

__all__ = ["CheckError", "SimConfigError", "SimError", "SweepSpecError", "WorkloadError"]


class SimError(DeltasimError):
    """Base of every error the simulator raises for bad input."""


class SimConfigError(SimError):
    """A configuration value is out of its domain (B = 0, negative rate, k > M...)."""


class WorkloadError(SimError):
    """A routing trace cannot drive this configuration (unknown expert, empty trace...)."""


class SweepSpecError(SimError):
    """A sweep specification (TOML) is malformed."""


class CheckError(SimError):
    """A measured run cannot be replayed (missing configuration, unknown schema...)."""
