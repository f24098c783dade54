"""graph/1 on disk: round-trip, bundled samples, one clear error per bad input, and the
``sched`` CLI's behaviour on good and bad files (exit 2, one line, nothing half-written)."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.memory import simulate
from tests.scheduler.brute import recount_peak
from traces.errors import GraphFormatError
from traces.graph import graph_from_dict, graph_to_dict, read_graph, write_graph

GRAPHS = Path(__file__).resolve().parents[2] / "traces" / "data" / "graphs"
BUNDLED = sorted(GRAPHS.glob("*.json"))
ALL_STRATEGIES = all(
    importlib.util.find_spec(f"scheduler.{m}") for m in ("heuristics", "sp_order", "ilp", "hybrid")
)
needs_registry = pytest.mark.skipif(
    not ALL_STRATEGIES, reason="the strategy registry needs every strategy module"
)

runner = CliRunner()


def _good() -> dict[str, Any]:
    return {
        "format": "graph/1",
        "name": "tiny",
        "nodes": [{"id": "a"}, {"id": "b", "workspace_bytes": 4}, {"id": "c"}],
        "buffers": [
            {"id": "in", "size_bytes": 10, "producer": None, "consumers": ["a"], "pinned": True},
            {"id": "x", "size_bytes": 6, "producer": "a", "consumers": ["b", "c"]},
            {"id": "y", "size_bytes": 3, "producer": "b", "consumers": ["c"]},
            {"id": "z", "size_bytes": 1, "producer": "c", "consumers": [], "pinned": True},
        ],
        "edges": [["a", "c"]],
        "meta": {"source": "test"},
    }


# ------------------------------------------------------------------ round trip and samples


def test_write_read_round_trip(tmp_path: Path) -> None:
    graph = graph_from_dict(_good())
    path = tmp_path / "g.json"
    write_graph(graph, path)
    again = read_graph(path)
    assert again == graph
    assert graph_to_dict(again) == graph_to_dict(graph)
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temporary left behind


def test_defaults_are_filled_in() -> None:
    graph = graph_from_dict(_good())
    assert graph.nodes[0].workspace_bytes == 0 and graph.nodes[0].op == ""
    assert graph.buffers[1].pinned is False


def test_there_are_bundled_graphs() -> None:
    names = {p.name for p in BUNDLED}
    assert {"diamond.json", "wheatstone.json", "sp-small.json"} <= names
    assert "transformer-fwbw-small.json" in names


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_graph_validates(path: Path) -> None:
    graph = read_graph(path)
    assert len(graph) > 0
    assert graph_to_dict(graph_from_dict(json.loads(path.read_text()))) == graph_to_dict(graph)
    # Each bundled graph's own node order is topological; its peak is the contract's.
    assert simulate(graph, graph.node_ids).peak_bytes == recount_peak(graph, graph.node_ids)


def test_generated_samples_are_up_to_date() -> None:
    import benchmarks.make_sample_graphs as samples

    for name, build in samples.SAMPLES.items():
        assert json.loads((GRAPHS / name).read_text()) == graph_to_dict(build()), name


# ------------------------------------------------------------------ one error per bad input


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(_good())
    fn(doc)
    return doc


BAD: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "wrong format string": (lambda d: d.update(format="graph/2"), "format"),
    "missing format": (lambda d: d.pop("format"), "format"),
    "unknown producer": (lambda d: d["buffers"][1].update(producer="q"), "buffers[1].producer"),
    "unknown consumer": (
        lambda d: d["buffers"][1]["consumers"].append("q"),
        "buffers[1].consumers[2]",
    ),
    "unknown edge end": (lambda d: d["edges"].append(["a", "q"]), "edges[1][1]"),
    "duplicate node id": (lambda d: d["nodes"].append({"id": "b"}), "nodes[3].id"),
    "duplicate buffer id": (
        lambda d: d["buffers"].append({"id": "x", "size_bytes": 1, "producer": "a"}),
        "buffers[4].id",
    ),
    "cycle through an edge": (lambda d: d["edges"].append(["c", "a"]), "edges/buffers"),
    "self consumption": (
        lambda d: d["buffers"][2]["consumers"].append("b"),
        "buffers[2].consumers",
    ),
    "negative size": (lambda d: d["buffers"][1].update(size_bytes=-1), "buffers[1].size_bytes"),
    "float size": (lambda d: d["buffers"][1].update(size_bytes=1.5), "buffers[1].size_bytes"),
    "string size": (lambda d: d["buffers"][1].update(size_bytes="6"), "buffers[1].size_bytes"),
    "boolean size": (lambda d: d["buffers"][1].update(size_bytes=True), "buffers[1].size_bytes"),
    "missing size": (lambda d: d["buffers"][1].pop("size_bytes"), "buffers[1].size_bytes"),
    "duplicate consumer": (
        lambda d: d["buffers"][1].update(consumers=["b", "b"]),
        "buffers[1].consumers",
    ),
    "negative workspace": (
        lambda d: d["nodes"][1].update(workspace_bytes=-4),
        "nodes[1].workspace_bytes",
    ),
    "nodes not a list": (lambda d: d.update(nodes={"a": 1}), "nodes"),
    "pinned not a bool": (lambda d: d["buffers"][1].update(pinned="yes"), "buffers[1].pinned"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_error_naming_the_field(case: str, tmp_path: Path) -> None:
    mutate, field = BAD[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_mutate(mutate)))
    with pytest.raises(GraphFormatError) as info:
        read_graph(path)
    assert info.value.field == field
    message = str(info.value)
    assert "\n" not in message and field in message and str(path) in message


def test_malformed_json_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "graph/1", "nodes": [,]}')
    with pytest.raises(GraphFormatError) as info:
        read_graph(path)
    assert info.value.field == "(json)" and "line 1" in str(info.value)


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(GraphFormatError, match="no such file"):
        read_graph(tmp_path / "absent.json")


def test_cycle_message_names_the_loop() -> None:
    doc = _mutate(lambda d: d["edges"].append(["c", "a"]))
    with pytest.raises(GraphFormatError, match=r"a -> .*c -> a|c -> a"):
        graph_from_dict(doc)


# ------------------------------------------------------------------ the sched CLI


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:")
    return lines[0]


@pytest.fixture
def diamond(tmp_path: Path) -> Path:
    path = tmp_path / "diamond.json"
    path.write_text((GRAPHS / "diamond.json").read_text())
    return path


def _write(path: Path, obj: Any) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_peak_prints_the_simulated_peak(diamond: Path, tmp_path: Path) -> None:
    graph = read_graph(diamond)
    order = _write(tmp_path / "o.json", graph.node_ids)
    result = runner.invoke(app, ["peak", str(diamond), str(order), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"peak_bytes": recount_peak(graph, graph.node_ids)}


def test_peak_on_bad_graph_exits_2(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", _mutate(lambda d: d["buffers"][1].update(size_bytes=-1)))
    order = _write(tmp_path / "o.json", ["a", "b", "c"])
    line = _one_error_line(runner.invoke(app, ["peak", str(bad), str(order)]))
    assert "buffers[1].size_bytes" in line


def test_peak_order_missing_a_node_exits_2(diamond: Path, tmp_path: Path) -> None:
    ids = read_graph(diamond).node_ids
    order = _write(tmp_path / "o.json", {"order": ids[:-1]})
    line = _one_error_line(runner.invoke(app, ["peak", str(diamond), str(order)]))
    assert ids[-1] in line


def test_peak_non_topological_order_exits_2(diamond: Path, tmp_path: Path) -> None:
    ids = read_graph(diamond).node_ids
    order = _write(tmp_path / "o.json", list(reversed(ids)))
    line = _one_error_line(runner.invoke(app, ["peak", str(diamond), str(order)]))
    assert "topological" in line


def test_peak_unknown_node_in_order_exits_2(diamond: Path, tmp_path: Path) -> None:
    order = _write(tmp_path / "o.json", ["embed", "nope"])
    assert "nope" in _one_error_line(runner.invoke(app, ["peak", str(diamond), str(order)]))


def test_peak_malformed_order_json_exits_2(diamond: Path, tmp_path: Path) -> None:
    order = _write(tmp_path / "o.json", '{"order": ["embed",')
    line = _one_error_line(runner.invoke(app, ["peak", str(diamond), str(order)]))
    assert "JSON" in line


@needs_registry
def test_order_json_prints_exactly_the_contract_object(diamond: Path) -> None:
    result = runner.invoke(app, ["order", str(diamond), "--method", "lpmf", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"method", "order", "peak_bytes", "optimal", "lower_bound_bytes", "seconds"}
    graph = read_graph(diamond)
    assert doc["method"] == "lpmf" and sorted(doc["order"]) == sorted(graph.node_ids)
    assert doc["peak_bytes"] == recount_peak(graph, doc["order"])
    assert doc["lower_bound_bytes"] <= doc["peak_bytes"]


@needs_registry
def test_order_out_writes_atomically_and_refuses_overwrite(diamond: Path, tmp_path: Path) -> None:
    out = tmp_path / "orders" / "o.json"
    args = ["order", str(diamond), "--method", "dfs", "--out", str(out), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(out.read_text()) == json.loads(first.stdout)
    assert [p.name for p in out.parent.iterdir()] == ["o.json"]

    out.write_text("sentinel")
    _one_error_line(runner.invoke(app, args))
    assert out.read_text() == "sentinel"  # refused, untouched

    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(out.read_text())["method"] == "dfs"


@needs_registry
def test_order_bad_graph_writes_nothing(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", _mutate(lambda d: d["edges"].append(["c", "a"])))
    out = tmp_path / "o.json"
    line = _one_error_line(runner.invoke(app, ["order", str(bad), "--out", str(out)]))
    assert "cycle" in line
    assert not out.exists()


@pytest.mark.skipif(not importlib.util.find_spec("scheduler.sp"), reason="scheduler/sp.py absent")
def test_sp_json_says_whether_series_parallel() -> None:
    yes = runner.invoke(app, ["sp", str(GRAPHS / "sp-small.json"), "--json"])
    assert yes.exit_code == 0, yes.output
    assert json.loads(yes.stdout) == {"series_parallel": True, "witness": None}
    no = runner.invoke(app, ["sp", str(GRAPHS / "wheatstone.json"), "--json"])
    assert no.exit_code == 0, no.output
    doc = json.loads(no.stdout)
    assert doc["series_parallel"] is False
    assert set(doc["witness"]) <= {"s", "a", "b", "t"} and len(doc["witness"]) >= 4


@needs_registry
def test_compare_lists_every_method_for_every_graph() -> None:
    graphs = [str(GRAPHS / "diamond.json"), str(GRAPHS / "sp-small.json")]
    methods = "given,lpmf,bfs,dfs"
    result = runner.invoke(app, ["compare", *graphs, "--methods", methods, "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 * 4
    for row in rows:
        assert row["gap"] >= 0 and row["peak_bytes"] >= row["best_lower_bound_bytes"]
    table = runner.invoke(app, ["compare", *graphs, "--methods", methods])
    assert table.exit_code == 0, table.output
    assert "diamond.json" in table.stdout and "lpmf" in table.stdout


def test_compare_unknown_method_is_rejected(diamond: Path) -> None:
    result = runner.invoke(app, ["compare", str(diamond), "--methods", "given,magic"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "magic" in result.output
