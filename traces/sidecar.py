"""Where a tool records how it made a file: ``NAME.EXT.meta.json`` beside it (``hw
profile``'s settings and run-to-run variation beside a profile, a saved ``sim check
--json`` output's run name and tolerances beside it). One naming rule for every such
record, so writers and readers cannot drift apart. The records are not part of any file's
contract: readers treat a missing one as unrecorded.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["meta_path"]


def meta_path(path: str | Path) -> Path:
    """The record beside ``path``: ``prof.parquet`` → ``prof.parquet.meta.json``."""
    path = Path(path)
    return path.with_name(f"{path.name}.meta.json")
