"""Data contracts of deltasim: typed records, file formats, validation, bundled data.

Every other package imports from here; this package imports none of them.
"""

from importlib.resources import files
from pathlib import Path

__all__ = ["data_path"]


def data_path(name: str = "") -> Path:
    """Path of a file shipped in ``traces/data`` (works from an installed wheel too)."""
    return Path(str(files("traces") / "data")) / name
