"""Error hierarchy shared by every package: one base, meaningful subclasses.

CLIs catch :class:`DeltasimError` and print its message as one red line with
exit code 2; anything else is a bug and keeps its traceback.
"""

__all__ = [
    "DeltasimError",
    "FormatError",
    "GraphFormatError",
    "OrderError",
]


class DeltasimError(Exception):
    """Base of every error caused by bad input or an impossible request."""


class FormatError(DeltasimError):
    """A file does not follow its contract; the message names the offending field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")


class GraphFormatError(FormatError):
    """A graph/1 file is malformed (bad JSON, unknown ids, cycle, negative size...)."""


class OrderError(DeltasimError):
    """An order is not a topological order of all nodes of its graph."""
