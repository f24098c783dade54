"""From loaded inputs to report sections: which charts the files allow, and the HTML file.

A section appears only for results the inputs hold; what is missing is said in
a note, never drawn empty.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from reports.chart import Chart, Section
from reports.figures_memory import (
    memory_timelines,
    order_peaks_vs_bound,
    predicted_vs_measured,
    step_peaks,
    verified_orders,
)
from reports.figures_moe import (
    accuracy_vs_k,
    delta_pareto,
    delta_points_table,
    k_vs_difficulty,
    samples_per_expert,
)
from reports.figures_queues import (
    batch_histograms,
    expert_utilization,
    points_table,
    sim_vs_measured,
    tradeoff_curve,
    versus_B,
)
from reports.inputs import Inputs, InputsError, load_inputs
from reports.page import render_page
from traces.atomic import atomic_write_text

__all__ = ["build_report", "sections_for"]


def _moe(inp: Inputs) -> Section | None:
    charts: list[Chart] = []
    if inp.moe_results is not None:
        charts.append(accuracy_vs_k(inp.moe_results))
    if inp.moe_load is not None:
        charts.append(samples_per_expert(inp.moe_load))
    if inp.moe_summary is not None and inp.moe_summary.get("delta_points"):
        charts.append(delta_pareto(delta_points_table(inp.moe_summary)))
    if inp.difficulty is not None and inp.difficulty.height:
        charts.append(k_vs_difficulty(inp.difficulty))
    return (
        Section("moe", "Mixture of experts: accuracy and load against k", tuple(charts))
        if charts
        else None
    )


def _queues(inp: Inputs) -> Section | None:
    charts: list[Chart] = []
    if inp.serve:
        points = points_table(inp.serve)
        charts += [versus_B(points), tradeoff_curve(points)]
        measured = points.filter(pl.col("source") == "measured")
        shown = measured if measured.height else points
        charts += [expert_utilization(shown), batch_histograms(shown)]
    if inp.simcheck is not None and inp.simcheck.height:
        charts.append(sim_vs_measured(inp.simcheck))
    if not charts:
        return None
    has_sim = any(r.source == "simulated" for r in inp.serve)
    note = "" if has_sim else "No simulated serve summary among the inputs: only measured curves."
    return Section(
        "queues", "Expert queues: the B trade-off, simulated and measured", tuple(charts), note
    )


def _memory(inp: Inputs) -> Section | None:
    charts: list[Chart] = []
    m = inp.memstudy
    if m is not None and m.filter(pl.col("study") == "step").height:
        charts.append(step_peaks(m))
    if inp.compare is not None and inp.compare.height:
        charts.append(order_peaks_vs_bound(inp.compare))
    if m is not None and m.filter(pl.col("study") == "order").height:
        charts.append(predicted_vs_measured(m))
    if inp.verify is not None and inp.verify.height:
        charts.append(verified_orders(inp.verify))
    t = inp.timelines
    if t is not None and t.height:
        charts += [memory_timelines(t, g) for g in t["graph"].unique(maintain_order=True)]
    if not charts:
        return None
    note = (
        ""
        if t is not None and t.height
        else "Memory timelines of orders are not drawn: no memory-timeline/1 file among the "
        "inputs (write one with hw verify GRAPH --order ORDER --timeline OUT.parquet)."
    )
    return Section(
        "memory", "Peak memory: checkpointing, compile and topological order", tuple(charts), note
    )


def sections_for(inp: Inputs) -> list[Section]:
    """Every section the inputs support, in reading order."""
    return [s for s in (_moe(inp), _queues(inp), _memory(inp)) if s is not None]


def build_report(dirs: list[Path], out: Path, title: str = "deltasim report") -> list[Section]:
    """Load the folders, build every chart, write one self-contained HTML file atomically."""
    inp = load_inputs(dirs)
    sections = sections_for(inp)
    if not sections:
        raise InputsError(
            "no result files found in " + ", ".join(map(str, dirs)) + " (nothing to report)"
        )
    atomic_write_text(out, render_page(title, sections, inp.files))
    return sections
