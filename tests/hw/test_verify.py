"""FX-level verify: measured peaks equal predictions to the byte, orders replay bit-identically,
bad orders are refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from typer.testing import CliRunner

import hw.memory.verify as verify_mod
from hw.cli import app
from hw.memory.capture import Level, capture_graphs
from hw.memory.errors import ReplayError
from hw.memory.fx_graph import fx_to_graph
from hw.memory.fx_replay import outputs_equal, reordered_module, run_measured
from hw.memory.methods import random_topological_order, run_method
from hw.memory.models import AcMode, ModelSpec
from hw.memory.verify import verify_order
from scheduler.memory import simulate
from traces.errors import OrderError
from traces.graph import Graph, graph_from_dict, graph_to_dict, read_graph

aten = torch.ops.aten


def _hand_built() -> tuple[fx.GraphModule, list[torch.Tensor]]:
    """x (4000 B, freed after its last reader) -> a = cat(x, x) (8000 B) -> d = sum(a) (4 B);
    b = sin(x) (4000 B); e = b + d (4000 B, the output)."""
    g = fx.Graph()
    x = g.placeholder("x")
    a = g.call_function(aten.cat.default, ([x, x],))
    a.name = "a"
    d = g.call_function(aten.sum.default, (a,))
    d.name = "d"
    b = g.call_function(aten.sin.default, (x,))
    b.name = "b"
    e = g.call_function(aten.add.Tensor, (b, d))
    e.name = "e"
    g.output((e,))
    gm = fx.GraphModule(torch.nn.Module(), g)
    args = [torch.randn(1000)]
    FakeTensorProp(gm).propagate(*args)
    return gm, args


@pytest.mark.parametrize(
    ("order", "known_peak"),
    [
        (["a", "d", "b", "e"], 4000 + 8000 + 4),  # x, a, d live at d
        (["b", "a", "d", "e"], 4000 + 4000 + 8000),  # x, b, a live at a
        (["a", "b", "d", "e"], 4000 + 8000 + 4000),  # x, a, b live at b; x dies after b
    ],
)
def test_hand_built_graph_measures_its_known_peak_to_the_byte(
    order: list[str], known_peak: int
) -> None:
    gm, args = _hand_built()
    graph = fx_to_graph(gm, "hand", input_pinned=lambda p: False)
    assert simulate(graph, order).peak_bytes == known_peak
    _, peak = run_measured(reordered_module(gm, order), args, [False])
    assert peak.peak_bytes == known_peak


def _orders(graph: Graph) -> dict[str, list[str]]:
    orders = {"given": graph.node_ids}
    for seed in (1, 2):
        orders[f"random{seed}"] = list(random_topological_order(graph, seed).order)
    for method in ("lpmf", "dfs"):  # fast heuristics
        orders[method] = list(run_method(graph, method, time_limit_s=2).order)
    return orders


def test_every_order_measures_exactly_its_prediction_and_same_result(backward: Graph) -> None:
    from hw.memory.fx_capture import capture_step
    from hw.memory.verify import FxRunner

    spec = ModelSpec.from_meta(dict(backward.meta))
    runner = FxRunner(capture_step(spec), "backward")
    peaks = set()
    for method, order in _orders(backward).items():
        r = verify_order(backward, order, method=method, runner=runner)
        assert r.measured_peak_bytes == r.predicted_peak_bytes, method
        assert r.order_applied and r.matches_default_result, method
        peaks.add(r.measured_peak_bytes)
    assert len(peaks) > 1, "all orders had the same peak: the test shows nothing"


def test_forward_replay_is_bit_identical_and_exact(captured_dir: Path) -> None:
    fw = read_graph(captured_dir / "forward.fx.json")
    order = list(random_topological_order(fw, 5).order)
    r = verify_order(fw, order)
    assert r.error_bytes == 0 and r.order_applied and r.matches_default_result


def test_bad_order_is_refused_before_anything_runs(
    backward: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the model was rebuilt for a bad order")

    monkeypatch.setattr(verify_mod, "capture_step", boom)
    ids = backward.node_ids
    with pytest.raises(OrderError, match="not topological"):
        verify_order(backward, list(reversed(ids)))
    with pytest.raises(OrderError, match="misses"):
        verify_order(backward, ids[:-1])
    with pytest.raises(OrderError, match="not a node"):
        verify_order(backward, [*ids[:-1], "nope"])


def test_changed_model_is_detected(backward: Graph) -> None:
    doc = graph_to_dict(backward)
    doc["meta"]["fx_fingerprint"] = "0" * 16
    with pytest.raises(ReplayError, match="different backward graph"):
        verify_order(graph_from_dict(doc), backward.node_ids)


def test_outputs_equal_sees_one_bit() -> None:
    a = torch.randn(10)
    b = a.clone()
    b[3] = torch.nextafter(b[3], torch.tensor(float("inf")))
    assert outputs_equal((a,), (a.clone(),)) and not outputs_equal((a,), (b,))


def test_cli_verify_json_and_bad_order_exit_2(captured_dir: Path, backward: Graph) -> None:
    runner = CliRunner()
    good = captured_dir / "order.json"
    good.write_text(json.dumps({"method": "random3", "order": list(
        random_topological_order(backward, 3).order)}))  # fmt: skip
    result = runner.invoke(
        app, ["verify", str(captured_dir / "backward.fx.json"), "--order", str(good), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["predicted_peak_bytes"] == doc["measured_peak_bytes"]
    assert doc["order_applied"] is True and doc["matches_default_result"] is True
    bad = captured_dir / "bad.json"
    bad.write_text(json.dumps(list(reversed(backward.node_ids))))
    result = runner.invoke(
        app, ["verify", str(captured_dir / "backward.fx.json"), "--order", str(bad)]
    )
    assert result.exit_code == 2 and "not topological" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fx_verify_within_allocator_rounding(tmp_path: Path) -> None:
    spec = ModelSpec("mlp:blocks=2,dim=16,hidden=32", 2, AcMode.FULL, "float32", 0, "cuda")
    graphs = capture_graphs(spec, Level.FX)
    bw = graphs[("backward", "fx")]
    r = verify_order(bw, list(random_topological_order(bw, 1).order))
    assert r.order_applied and r.matches_default_result
    # the caching allocator rounds each block up to 512 B
    assert 0 <= r.measured_peak_bytes - r.predicted_peak_bytes <= 512 * len(bw.buffers)
