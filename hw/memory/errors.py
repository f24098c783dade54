"""Errors of graph capture, order application and measurement (all DeltasimErrors)."""

from traces.errors import DeltasimError

__all__ = ["CaptureError", "ModelSpecError", "ReplayError", "VerifyError"]


class ModelSpecError(DeltasimError):
    """A model spec names no built-in, no loadable file, or a factory that fails."""


class CaptureError(DeltasimError):
    """torch.compile could not give one forward/backward graph pair for the model."""


class ReplayError(DeltasimError):
    """A captured graph cannot be rebuilt from its meta (model changed, wrong level...)."""


class VerifyError(DeltasimError):
    """An order cannot be applied: not a topological order of the graph, or not honoured."""
