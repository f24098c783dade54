"""Memory timelines in the report: files found by their format tag, predicted lines and measured
markers of two orders overlaid, exact bytes in the hover, the note gone when they are present."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from reports.build import sections_for
from reports.chart import MIB
from reports.figures_memory import memory_timelines
from reports.inputs import Inputs, load_inputs
from traces.memory_timeline import timeline_frame, write_memory_timeline

BEST = (["a", "b", "c"], [1 * MIB, 3 * MIB, 2 * MIB], [1 * MIB, 3 * MIB + 512, 2 * MIB])
GIVEN = (["b", "a", "c"], [2 * MIB, 4 * MIB, 2 * MIB], [2 * MIB, 4 * MIB, 2 * MIB])


@pytest.fixture
def run_dir(small_run: Path) -> Path:
    for method, (order, pred, meas) in {"best": BEST, "given": GIVEN}.items():
        frame = timeline_frame("g-bw", "fx", method, order, pred, meas)
        write_memory_timeline(small_run / "orders" / f"{method}.timeline.parquet", frame)
    return small_run


def test_inputs_stack_every_timeline_file(run_dir: Path) -> None:
    inp = load_inputs([run_dir])
    assert inp.timelines is not None and inp.timelines.height == 6
    assert sorted(set(inp.timelines["method"])) == ["best", "given"]
    assert sum(p.endswith(".timeline.parquet") for p in inp.files) == 2


def test_two_orders_predicted_lines_and_measured_markers(run_dir: Path) -> None:
    inp = load_inputs([run_dir])
    chart = memory_timelines(inp.timelines, "g-bw")
    lines = [t for t in chart.figure.data if t.mode == "lines"]
    marks = [t for t in chart.figure.data if t.mode == "markers"]
    assert len(lines) == 2 and len(marks) == 2
    for (order, pred, meas), line, mark in zip((BEST, GIVEN), lines, marks, strict=True):
        assert list(line.x) == [0, 1, 2] and list(mark.x) == [0, 1, 2]
        assert list(line.y) == pytest.approx([b / MIB for b in pred])
        assert list(mark.y) == pytest.approx([b / MIB for b in meas])
        assert [c[1] for c in mark.customdata] == meas  # exact bytes in the hover
        assert [c[0] for c in line.customdata] == order
        assert line.line.color == mark.marker.color
    assert "3,146,240" in marks[0].name  # measured peak of best, exact bytes
    assert "MiB" in chart.figure.layout.yaxis.title.text
    assert chart.figure.layout.xaxis.title.text.startswith("step")
    assert chart.data.height == 6


def test_unmeasured_order_draws_only_its_prediction() -> None:
    df = timeline_frame("g", "fx", "sched-only", ["a", "b"], [10, 20], None)
    chart = memory_timelines(df, "g")
    assert [t.mode for t in chart.figure.data] == ["lines"]


def _memory_section(inp: Inputs) -> object:
    return next(s for s in sections_for(inp) if s.key == "memory")


def test_timeline_chart_replaces_the_note(run_dir: Path) -> None:
    with_tl = _memory_section(load_inputs([run_dir]))
    assert with_tl.note == ""  # type: ignore[attr-defined]
    assert "memory-timeline-g-bw" in [c.key for c in with_tl.charts]  # type: ignore[attr-defined]


def test_without_timelines_the_note_says_how_to_get_them(small_run: Path) -> None:
    section = _memory_section(load_inputs([small_run]))
    assert "--timeline" in section.note  # type: ignore[attr-defined]
    assert not [c for c in section.charts if c.key.startswith("memory-timeline")]  # type: ignore[attr-defined]


def test_timeline_rows_are_kept_exact(run_dir: Path) -> None:
    inp = load_inputs([run_dir])
    best = inp.timelines.filter(pl.col("method") == "best").sort("step")
    assert best["measured_bytes"].to_list() == BEST[2]
