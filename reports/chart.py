"""A chart: a Plotly figure together with the exact table drawn in it (its CSV).

Figure builders return charts; the page assembler turns them into HTML. Keeping
the table beside the figure is what lets every figure offer its data.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import polars as pl

__all__ = ["MIB", "Chart", "Section", "error_bars"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Chart:
    """``key`` is a slug used for anchors and CSV names; ``table`` also shows the data inline."""

    key: str
    title: str
    caption: str
    figure: go.Figure | None
    data: pl.DataFrame
    table: bool = False


@dataclass(frozen=True)
class Section:
    """A titled group of charts; ``note`` says what is missing or how to read it."""

    key: str
    title: str
    charts: tuple[Chart, ...]
    note: str = ""


def error_bars(df: pl.DataFrame, mean: str, low: str, high: str) -> dict:
    """Asymmetric Plotly error bars from interval columns already in a table."""
    return {
        "type": "data",
        "symmetric": False,
        "array": (df[high] - df[mean]).to_list(),
        "arrayminus": (df[mean] - df[low]).to_list(),
    }
