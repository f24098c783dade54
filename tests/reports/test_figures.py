"""Each figure builder on small tables: the right traces, the values drawn, axes with units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from reports.chart import MIB
from reports.figures_memory import order_peaks_vs_bound, predicted_vs_measured, step_peaks
from reports.figures_moe import (
    PUBLISHED_MNIST1D,
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
from reports.inputs import Inputs, load_inputs
from tests.reports.conftest import ACCURACY


@pytest.fixture
def inp(small_run: Path) -> Inputs:
    return load_inputs([small_run])


def test_inputs_recognize_every_kind(inp: Inputs) -> None:
    assert inp.moe_results is not None and inp.moe_load is not None
    assert inp.moe_summary is not None and inp.memstudy is not None
    assert inp.compare is not None and inp.compare.height == 2
    assert inp.simcheck is not None and inp.simcheck.height == 4  # 2 B x 2 metrics
    assert sorted((r.name, r.source) for r in inp.serve) == [
        ("measured", "measured"),
        ("sim-s0", "simulated"),
        ("sim-s1", "simulated"),
    ]
    assert inp.simcheck["tolerance_pct"].to_list() == [5.0] * 4
    assert inp.difficulty is not None and inp.difficulty.height == 60  # 2 traces x 30 samples
    assert inp.verify is not None and inp.verify["measured_peak_bytes"].to_list() == [2048]


def test_accuracy_vs_k_means_and_std_over_seeds(inp: Inputs) -> None:
    chart = accuracy_vs_k(inp.moe_results)
    [trace] = chart.figure.data
    assert list(trace.x) == [1, 2]
    for k, y, e in zip(trace.x, trace.y, trace.error_y.array, strict=True):
        accs = [a * 100 for (kk, _), a in ACCURACY.items() if kk == k]
        assert y == pytest.approx(np.mean(accs))
        assert e == pytest.approx(np.std(accs, ddof=1))
    lines = [a.text for a in chart.figure.layout.annotations]
    assert len(lines) == 1 + len(PUBLISHED_MNIST1D)
    assert any("published MLP: 68.0 %" in t for t in lines)
    assert any("our MLP" in t and "50.0 %" in t for t in lines)
    assert chart.figure.layout.yaxis.title.text == "test accuracy (%)"
    assert "k" in chart.figure.layout.xaxis.title.text


def test_samples_per_expert_one_bar_group_per_k(inp: Inputs) -> None:
    chart = samples_per_expert(inp.moe_load)
    names = [t.name for t in chart.figure.data]
    assert names == ["k=1", "k=2"]
    assert list(chart.figure.data[0].y) == [40, 30, 20, 10]
    assert list(chart.figure.data[1].y) == pytest.approx([61, 59, 40, 40])
    assert chart.figure.data[1].error_y.array[0] == pytest.approx(np.std([60, 62], ddof=1))
    assert "count" in chart.figure.layout.yaxis.title.text


def test_delta_pareto_front_joins_marked_points(inp: Inputs) -> None:
    chart = delta_pareto(delta_points_table(inp.moe_summary))
    fronts = [t for t in chart.figure.data if t.name == "Pareto front"]
    assert len(fronts) == 2  # against k and against FLOPs
    assert list(fronts[0].x) == [1.0, 2.0] and list(fronts[1].x) == [1000.0, 2000.0]
    assert list(fronts[0].y) == pytest.approx([62.0, 72.0])
    topp = next(t for t in chart.figure.data if t.name == "topp")
    assert list(topp.error_y.array) == pytest.approx([5.0])  # 95 % CI half-width in points
    assert chart.figure.layout.xaxis2.title.text == "forward FLOPs per sample"
    assert chart.figure.layout.yaxis.title.text == "test accuracy (%)"


def test_k_vs_difficulty_averages_per_seed_first(inp: Inputs) -> None:
    chart = k_vs_difficulty(inp.difficulty)
    [trace] = chart.figure.data
    # seed 0 uses k=2 from level 1, seed 1 from level 2: per-level means 1, 1.5, 2
    assert list(trace.x) == [0, 1, 2]
    assert list(trace.y) == pytest.approx([1.0, 1.5, 2.0])
    assert list(trace.error_y.array) == pytest.approx([0.0, np.std([1, 2], ddof=1), 0.0])
    assert "difficulty" in chart.figure.layout.xaxis.title.text


def test_versus_B_overlays_sim_and_measured_with_seed_spread(inp: Inputs) -> None:
    chart = versus_B(points_table(inp.serve))
    p50 = [t for t in chart.figure.data if t.xaxis == "x2"]
    assert sorted(t.name for t in p50) == ["measured, 100 req/s", "simulated, 100 req/s"]
    sim = next(t for t in p50 if t.name.startswith("simulated"))
    assert list(sim.y) == pytest.approx([2.0, 21.0])  # ms, mean of the two seeds
    assert list(sim.error_y.array) == pytest.approx([1.0, 1.0])
    assert sim.line.dash == "dash"
    meas = next(t for t in p50 if t.name.startswith("measured"))
    assert list(meas.error_y.array) == pytest.approx([0.0, 0.0])
    assert chart.figure.layout.xaxis.type == "log"
    assert chart.figure.layout.xaxis.title.text == "queue size B (samples)"
    assert chart.figure.layout.yaxis2.title.text == "p50 latency (ms)"


def test_tradeoff_labels_points_with_B(inp: Inputs) -> None:
    chart = tradeoff_curve(points_table(inp.serve))
    meas = next(t for t in chart.figure.data if t.name.startswith("measured"))
    assert list(meas.text) == ["B=1", "B=4"]
    assert list(meas.x) == [99.0, 98.0] and list(meas.y) == pytest.approx([3.0, 60.0])
    assert chart.figure.layout.xaxis.title.text == "throughput (requests/s)"


def test_utilization_and_batch_histograms(inp: Inputs) -> None:
    pts = points_table(inp.serve).filter(pl.col("source") == "measured")
    util = expert_utilization(pts)
    assert [t.name for t in util.figure.data] == ["measured B=1", "measured B=4"]
    assert list(util.figure.data[0].y) == pytest.approx([10.0, 20.0])
    assert "%" in util.figure.layout.yaxis.title.text
    hist = batch_histograms(pts)
    b4 = hist.figure.data[1]
    assert list(b4.x) == [1, 2, 3, 4] and list(b4.y) == [0, 0, 0, 5]
    assert hist.figure.layout.xaxis.title.text == "batch size (samples)"


def test_sim_vs_measured_draws_errors_inside_the_tolerance_band(inp: Inputs) -> None:
    chart = sim_vs_measured(inp.simcheck)
    bands = [s for s in chart.figure.layout.shapes if s.type == "rect"]
    assert [(b.y0, b.y1) for b in bands] == [(-5.0, 5.0), (-5.0, 5.0)]
    p50 = next(t for t in chart.figure.data if t.xaxis == "x2")
    assert list(p50.y) == pytest.approx([10.0, 0.5])
    assert chart.table and "(%)" in chart.figure.layout.yaxis.title.text


def test_step_peaks_split_by_checkpointing(inp: Inputs) -> None:
    chart = step_peaks(inp.memstudy)
    titles = [a.text for a in chart.figure.layout.annotations]
    assert titles == ["checkpointing: none", "checkpointing: full"]
    eager = [t for t in chart.figure.data if t.name == "eager"]
    assert [list(t.y) for t in eager] == [[4.0], [2.0]]  # MiB
    assert "(MiB)" in chart.figure.layout.yaxis.title.text


def test_order_peaks_against_the_bound(inp: Inputs) -> None:
    chart = order_peaks_vs_bound(inp.compare)
    bars = {t.name: list(t.y) for t in chart.figure.data if t.type == "bar"}
    assert bars == {"lpmf": [300 / MIB], "ilp": [200 / MIB]}
    bound = next(t for t in chart.figure.data if t.type == "scatter")
    assert list(bound.y) == [200 / MIB] and list(bound.x) == ["g/backward.fx"]
    assert chart.figure.layout.yaxis.type == "log"


def test_predicted_vs_measured_has_identity_line(inp: Inputs) -> None:
    chart = predicted_vs_measured(inp.memstudy)
    ident, pts, inductor = chart.figure.data
    assert list(ident.x) == list(ident.y)
    assert list(pts.x) == pytest.approx([3.0, 2.0])
    assert list(pts.y) == pytest.approx([3.0, 2.0 + 1024 / MIB])
    # Inductor level: the prediction with the compiled wrapper's reuse folded in (3 MiB), not
    # graph/1 as captured (4 MiB); the plain one stays in the data table
    assert inductor.name == "inductor level"
    assert list(inductor.x) == pytest.approx([3.0]) and list(inductor.y) == pytest.approx([3.0])
    assert chart.data["graph_predicted_peak_bytes"].to_list()[-1] == 4 << 20
    assert chart.figure.layout.xaxis.title.text == "predicted peak (MiB)"


def test_tables_repeated_in_a_work_folder_count_once(small_run: Path) -> None:
    import shutil

    before = load_inputs([small_run])
    shutil.copytree(small_run / "moe", small_run / "moe-work" / "run-0")
    after = load_inputs([small_run])
    assert after.moe_results.height == before.moe_results.height
    assert after.moe_load.height == before.moe_load.height
    assert after.difficulty.height == before.difficulty.height
