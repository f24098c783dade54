"""Per-step measured timelines: every step's measured memory equals the graph/1 prediction to
the byte, their maximum is the measured peak, and ``hw verify --timeline`` writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hw.memory.verify as verify_mod
from hw.cli import app
from hw.memory.errors import VerifyError
from hw.memory.fx_graph import fx_to_graph
from hw.memory.fx_replay import reordered_module, run_measured, run_timeline, step_maxima
from hw.memory.methods import random_topological_order, run_method
from hw.memory.models import ModelSpec
from hw.memory.verify import verify_order
from scheduler.memory import simulate
from tests.hw.test_verify import _hand_built
from traces.graph import Graph, graph_from_dict, graph_to_dict
from traces.memory_timeline import read_memory_timeline


@pytest.mark.parametrize(
    ("order", "known"),
    [  # x = 4000 B input, a = cat(x, x) 8000 B, d = sum(a) 4 B, b = sin(x) 4000 B, e = b + d
        (["a", "d", "b", "e"], [12000, 12004, 8004, 8004]),
        (["b", "a", "d", "e"], [8000, 16000, 12004, 8004]),
        (["a", "b", "d", "e"], [12000, 16000, 12004, 8004]),
    ],
)
def test_hand_built_timeline_is_the_closed_form(order: list[str], known: list[int]) -> None:
    gm, args = _hand_built()
    graph = fx_to_graph(gm, "hand", input_pinned=lambda p: False)
    assert simulate(graph, order).timeline_bytes.tolist() == known
    steps, peak = run_timeline(reordered_module(gm, order), order, args, [False])
    assert steps == known and peak == max(known)


def test_step_maxima_counts_the_live_total_at_a_step_start_and_ignores_between_steps() -> None:
    # 100 B live before step 0; step 0 allocates 50 then frees 100 (transient 150);
    # a 1000 B block allocated and freed between the steps belongs to no step.
    events = [(0, 1, 100), (11, 2, 50), (12, 1, -100), (25, 3, 1000), (26, 3, -1000)]
    scopes = [(10, 20, 0), (30, 40, 1)]
    assert step_maxima(events, scopes, 2) == ([150, 50], 1050)
    with pytest.raises(VerifyError, match="step 1"):
        step_maxima(events, scopes[:1], 2)


def test_measured_timeline_equals_prediction_step_by_step(backward: Graph) -> None:
    from hw.memory.fx_capture import capture_step
    from hw.memory.verify import FxRunner

    runner = FxRunner(capture_step(ModelSpec.from_meta(dict(backward.meta))), "backward")
    orders = {
        "given": backward.node_ids,
        "random1": list(random_topological_order(backward, 1).order),
        "lpmf": list(run_method(backward, "lpmf", time_limit_s=2).order),
    }
    shapes = set()
    for method, order in orders.items():
        r = verify_order(backward, order, method=method, runner=runner, timeline=True)
        tl = r.timeline
        assert tl is not None and tl.order == tuple(order)
        assert tl.measured_bytes == tl.predicted_bytes, method
        # the per-step maxima reach the peak of the unmarked measured run, to the byte
        assert max(tl.measured_bytes) == tl.measured_peak_bytes == r.measured_peak_bytes, method
        _, plain = run_measured(reordered_module(runner.gm, order), runner.args, runner.pinned)
        assert plain.peak_bytes == r.measured_peak_bytes
        shapes.add(tl.measured_bytes)
    assert len(shapes) == len(orders), "orders gave the same timeline: the test shows nothing"


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("level", "inductor", "FX level only")],  # a cuda graph needs CUDA to even load
)
def test_timeline_outside_fx_on_cpu_is_refused_before_anything_runs(
    backward: Graph, monkeypatch: pytest.MonkeyPatch, key: str, value: str, match: str
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the model was rebuilt for a refused timeline")

    monkeypatch.setattr(verify_mod, "capture_step", boom)
    doc = graph_to_dict(backward)
    doc["meta"][key] = value
    with pytest.raises(VerifyError, match=match):
        verify_order(graph_from_dict(doc), backward.node_ids, timeline=True)


def test_cli_writes_the_timeline_and_refuses_to_overwrite(
    captured_dir: Path, backward: Graph, tmp_path: Path
) -> None:
    runner = CliRunner()
    order = list(random_topological_order(backward, 4).order)
    order_path = tmp_path / "o.json"
    order_path.write_text(json.dumps({"method": "random4", "order": order}))
    out = tmp_path / "tl.parquet"
    argv = ["verify", str(captured_dir / "backward.fx.json"), "--order", str(order_path)]
    result = runner.invoke(app, [*argv, "--timeline", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    df = read_memory_timeline(out)
    assert df["node"].to_list() == order and df["step"].to_list() == list(range(len(order)))
    assert set(df["method"]) == {"random4"} and set(df["level"]) == {"fx"}
    assert df["predicted_bytes"].to_list() == df["measured_bytes"].to_list()
    assert df["measured_bytes"].max() == doc["measured_peak_bytes"]
    before = out.read_bytes()
    again = runner.invoke(app, [*argv, "--timeline", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert out.read_bytes() == before
    forced = runner.invoke(app, [*argv, "--timeline", str(out), "--force", "--json"])
    assert forced.exit_code == 0, forced.output
