"""FX-level capture: valid graph/1 for every built-in, sizes, views, pinning, user factories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hw.cli import app
from hw.memory.capture import Level, capture_graphs, fx_graph_of, step_graph
from hw.memory.errors import ModelSpecError
from hw.memory.fx_capture import CapturedStep, capture_step
from hw.memory.fx_graph import FxLayout, is_view_node
from hw.memory.models import AcMode, ModelSpec, build_model, split_model_list
from scheduler.memory import simulate
from traces.graph import Graph, graph_from_dict, graph_to_dict, read_graph

TINY = {
    "mlp": "mlp:blocks=2,dim=16,hidden=32",
    "transformer": "transformer:blocks=1,dim=16,heads=2,seq=8,vocab=32",
    "cnn": "cnn:blocks=1,ch=8,hw=8",
    "densenet": "densenet:layers=3,ch=4,growth=4",
    "moe": "moe:experts=3,k=2,dim=8,hidden=16",
}


@pytest.fixture(scope="module")
def captured() -> dict[str, tuple[CapturedStep, dict[str, Graph]]]:
    out = {}
    for name, spec in TINY.items():
        step = capture_step(ModelSpec(spec, 2, AcMode.FULL, "float32", 0))
        out[name] = (step, {k: fx_graph_of(step, k) for k in ("forward", "backward")})
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_builtin_capture_is_valid_graph1_with_rebuild_meta(name: str, captured: dict) -> None:
    _, graphs = captured[name]
    for kind, graph in graphs.items():
        again = graph_from_dict(json.loads(json.dumps(graph_to_dict(graph))))
        assert again.node_ids == graph.node_ids and len(graph) > 0
        meta = graph.meta
        assert meta["model"] == TINY[name] and meta["batch"] == 2 and meta["ac"] == "full"
        assert meta["dtype"] == "float32" and meta["seed"] == 0 and meta["graph"] == kind
        assert meta["level"] == "fx" and len(meta["fx_fingerprint"]) == 16
        assert simulate(graph, graph.node_ids).peak_bytes > 0


@pytest.mark.parametrize("name", list(TINY))
def test_buffer_sizes_are_numel_times_element_size(name: str, captured: dict) -> None:
    step, graphs = captured[name]
    for kind, graph in graphs.items():
        gm, _ = step_graph(step, kind)
        vals = {n.name: n.meta.get("val") for n in gm.graph.nodes}
        checked = 0
        for buf in graph.buffers:
            base, _, item = buf.id.partition(".")
            val = vals[base] if not item else vals[base][int(item)]
            assert buf.size_bytes == val.numel() * val.element_size(), buf.id
            checked += 1
        assert checked == len(graph.buffers)


@pytest.mark.parametrize("name", list(TINY))
def test_views_fold_into_their_base_buffer(name: str, captured: dict) -> None:
    step, graphs = captured[name]
    for kind, graph in graphs.items():
        gm, _ = step_graph(step, kind)
        lay = FxLayout(gm)
        node_ids = set(graph.node_ids)
        consumers = {b.id: set(b.consumers) for b in graph.buffers}
        views = [n for n in gm.graph.nodes if is_view_node(n)]
        assert not node_ids & {v.name for v in views}, "a view became a node"
        assert not any(b.id in {v.name for v in views} for b in graph.buffers)
        for view in views:
            base = lay.buffer_of.get(view)
            if base is None:
                continue
            for user in view.users:
                if user.name in node_ids and graph_producer(graph, base) != user.name:
                    assert user.name in consumers[base], (view.name, user.name, base)
    if name == "transformer":
        assert any(is_view_node(n) for n in step.backward.graph.nodes)


def graph_producer(graph: Graph, buf_id: str) -> str | None:
    return next(b.producer for b in graph.buffers if b.id == buf_id)


@pytest.mark.parametrize("name", list(TINY))
def test_saved_activations_and_outputs_are_pinned(name: str, captured: dict) -> None:
    step, graphs = captured[name]
    for kind, graph in graphs.items():
        gm, _ = step_graph(step, kind)
        outs = FxLayout(gm).output_buffers()
        pinned = {b.id for b in graph.buffers if b.pinned}
        assert outs <= pinned
        inputs = {b.id for b in graph.buffers if b.producer is None}
        if kind == "forward":
            assert inputs <= pinned  # parameters and the batch stay alive
        else:  # saved activations and tangents are freed; the forward's inputs are not
            assert {i for i in inputs if i.startswith("primals")} <= pinned
            assert any(i not in pinned for i in inputs)


def test_checkpointing_moves_memory_from_forward_to_backward(captured: dict) -> None:
    """Full AC saves fewer activations: the forward hands fewer bytes to the backward."""
    step_ac, graphs_ac = captured["transformer"]
    plain = capture_step(ModelSpec(TINY["transformer"], 2, AcMode.NONE, "float32", 0))
    saved = {}
    for label, step in (("ac", step_ac), ("none", plain)):
        gm = step.forward
        lay = FxLayout(gm)
        saved[label] = sum(lay.sizes[b] for b in lay.output_buffers() if lay.producer[b])
    assert saved["ac"] < saved["none"]
    assert graphs_ac["backward"].meta["ac"] == "full"


def test_user_factory_file_is_captured(tmp_path: Path) -> None:
    src = tmp_path / "mymodel.py"
    src.write_text(
        "import torch\n"
        "def make(batch=3):\n"
        "    nn = torch.nn\n"
        "    m = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))\n"
        "    return m, (torch.randn(batch, 8),)\n"
    )
    spec = f"{src}:make"
    graphs = capture_graphs(ModelSpec(spec, 5, AcMode.NONE, "float32", 1), Level.FX)
    fw = graphs[("forward", "fx")]
    assert fw.meta["model"] == spec and fw.meta["batch"] == 5
    batch_input = [b for b in fw.buffers if b.producer is None and b.size_bytes == 5 * 8 * 4]
    assert batch_input, "the factory did not receive batch=5"


def test_factory_that_raises_is_reported_clearly(tmp_path: Path) -> None:
    src = tmp_path / "broken.py"
    src.write_text("def make(batch):\n    raise RuntimeError('weights file missing')\n")
    with pytest.raises(ModelSpecError, match="RuntimeError: weights file missing"):
        build_model(ModelSpec(f"{src}:make", 2, AcMode.NONE, "float32", 0))
    result = CliRunner().invoke(app, ["capture", f"{src}:make", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "weights file missing" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet999", "unknown model"),
        ("nofile.py:make", "does not exist"),
        ("mlp:blocks", "not key=value"),
        ("mlp:nonsense=3", "TypeError"),
        ("mlp:dropout=1.5", r"dropout must be in \[0, 1\)"),
        ("transformer:dropout=-0.1", "dropout must be in"),
    ],
)
def test_bad_model_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        build_model(ModelSpec(spec, 2, AcMode.NONE, "float32", 0))


def test_model_lists_keep_options_together() -> None:
    text = "mlp,transformer:blocks=4,dim=64,cnn,x.py:make"
    assert split_model_list(text) == ["mlp", "transformer:blocks=4,dim=64", "cnn", "x.py:make"]


def test_seed_rebuilds_identical_model_and_inputs() -> None:
    spec = ModelSpec(TINY["mlp"], 2, AcMode.NONE, "float32", 3)
    (m1, x1), (m2, x2) = build_model(spec), build_model(spec)
    assert torch.equal(x1[0], x2[0])
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_cli_capture_writes_files_and_refuses_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["capture", TINY["mlp"], "--out", str(tmp_path), "--ac", "none", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {Path(g["path"]).name for g in doc["graphs"]} == {"forward.fx.json", "backward.fx.json"}
    bw = read_graph(tmp_path / "backward.fx.json")
    assert bw.meta["ac"] == "none"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    bad = runner.invoke(app, ["capture", "mlp", "--out", str(tmp_path), "--ac", "sometimes"])
    assert bad.exit_code == 2


def test_moe_orders_measure_exactly_their_prediction(captured: dict) -> None:
    """The delta-MoE built-in (fixed-capacity dispatch) replays any order byte-exactly."""
    from hw.memory.methods import random_topological_order
    from hw.memory.verify import FxRunner, verify_order

    step, graphs = captured["moe"]
    runner = FxRunner(step, "backward")
    backward = graphs["backward"]
    for seed in (1, 2):
        order = list(random_topological_order(backward, seed).order)
        r = verify_order(backward, order, method=f"random{seed}", runner=runner)
        assert r.measured_peak_bytes == r.predicted_peak_bytes
        assert r.order_applied and r.matches_default_result
