"""SP recognition: SP families are recognized with a tree that rebuilds the task graph;
the Wheatstone bridge and graphs with one embedded are rejected with a witness that is a
real bridge; on tiny random DAGs the answer agrees with an exhaustive bridge search; the
irreducible core partitions the graph as documented; ``sched sp`` prints the verdict."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.sp import (
    SINK_NAME,
    SOURCE_NAME,
    SPTree,
    TaskGraph,
    find_bridge,
    recognize,
    reduce_sp,
    task_graph,
)
from scheduler.synthetic import chain, in_tree, out_tree, series_parallel
from tests.scheduler.brute import random_dag
from tests.scheduler.sp_gen import has_bridge, is_bridge, random_sp_graph, task_digraph
from traces.graph import Buffer, Graph, Node, write_graph


def wheatstone() -> Graph:
    """a -> b, a -> c, b -> c, b -> d, c -> d: the smallest non-SP DAG."""
    return Graph.build(
        "wheatstone",
        [Node(v) for v in "abcd"],
        [
            Buffer("ab", 3, "a", ("b", "c")),
            Buffer("bc", 5, "b", ("c", "d")),
            Buffer("cd", 7, "c", ("d",)),
        ],
    )


def tree_edges(tree: SPTree, task: TaskGraph) -> list[tuple[int, int]]:
    """Rebuild the (source, sink) of every leaf from the tree's structure alone and
    check each leaf's recorded edge has those ends."""
    out: list[tuple[int, int]] = []
    stack = [(tree, tree.source, tree.sink)]
    while stack:
        t, s, d = stack.pop()
        assert (t.source, t.sink) == (s, d)
        if t.kind == "edge":
            assert (int(task.edge_src[t.edge]), int(task.edge_dst[t.edge])) == (s, d)
            out.append((s, d))
        elif t.kind == "series":
            ends = [s, *t.mids, d]
            assert len(t.mids) == len(t.children) - 1 >= 1
            for k, c in enumerate(t.children):
                assert c.kind != "series"
                stack.append((c, ends[k], ends[k + 1]))
        else:
            assert t.kind == "parallel" and len(t.children) >= 2
            for c in t.children:
                assert c.kind != "parallel"
                stack.append((c, s, d))
    return out


def assert_valid_tree(graph: Graph) -> None:
    rec = recognize(graph)
    assert rec.is_sp and rec.witness is None and rec.tree is not None
    task = rec.task
    leaves = tree_edges(rec.tree, task)
    assert sorted(leaves) == sorted(
        zip(task.edge_src.tolist(), task.edge_dst.tolist(), strict=True)
    )
    assert (rec.tree.source, rec.tree.sink) == (task.source, task.sink)
    assert sorted(rec.tree.internal_vertices()) == list(range(len(graph)))


FAMILIES = {
    "chain": lambda s: chain(30, seed=s).to_graph(),
    "in_tree": lambda s: in_tree(40, seed=s).to_graph(),
    "out_tree": lambda s: out_tree(40, seed=s).to_graph(),
    "sp_dl": lambda s: series_parallel(60, seed=s).to_graph(),
    "sp_single": lambda s: series_parallel(60, seed=s, single_consumer=True).to_graph(),
    "sp_random": lambda s: random_sp_graph(random.Random(s), 40),
    "sp_multi": lambda s: random_sp_graph(random.Random(s), 40, multi_consumer=True),
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sp_families_are_recognized_with_a_tree_that_rebuilds_the_graph(
    family: str, seed: int
) -> None:
    assert_valid_tree(FAMILIES[family](seed))


def test_single_node_and_empty_graph_are_sp() -> None:
    assert recognize(Graph.build("one", [Node("a")], [])).is_sp
    empty = recognize(Graph.build("empty", [], []))
    assert empty.is_sp and empty.tree is not None and empty.tree.kind == "edge"


def test_long_chain_does_not_recurse() -> None:
    n = 20000
    nodes = [Node(f"n{i}") for i in range(n)]
    bufs = [Buffer(f"b{i}", 1, f"n{i}", (f"n{i + 1}",)) for i in range(n - 1)]
    assert_valid_tree(Graph.build("chain", nodes, bufs))


def test_wheatstone_bridge_is_rejected_with_its_four_nodes() -> None:
    graph = wheatstone()
    rec = recognize(graph)
    assert not rec.is_sp and rec.tree is None and rec.bridge
    assert rec.witness == ("a", "b", "c", "d")
    assert is_bridge(task_digraph(graph), *rec.witness)


@pytest.mark.parametrize("seed", range(12))
def test_embedded_bridge_is_found_and_is_a_real_bridge(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_sp_graph(rng, rng.randint(2, 10), bridge=True, p_control=0.0)
    rec = recognize(graph)
    assert not rec.is_sp
    assert rec.witness is not None
    if rec.bridge:
        assert is_bridge(task_digraph(graph), *rec.witness)
    else:  # the fallback witness names the core's nodes, which include the gadget
        assert len(rec.witness) >= 2


@pytest.mark.parametrize("seed", range(40))
def test_recognition_agrees_with_exhaustive_bridge_search(seed: int) -> None:
    rng = random.Random(1000 + seed)
    graph = random_dag(rng, rng.randint(1, 6), p_pinned=0.1, max_consumers=2)
    g = task_digraph(graph)
    rec = recognize(graph)
    assert rec.is_sp == (not has_bridge(g))
    if rec.is_sp:
        assert_valid_tree(graph)
    elif rec.bridge:
        assert is_bridge(g, *rec.witness)


def test_task_graph_matches_the_documented_construction() -> None:
    for seed in range(10):
        rng = random.Random(seed)
        graph = random_dag(rng, rng.randint(1, 12))
        task = task_graph(graph)
        names = [task.name(v) for v in range(task.n_nodes + 2)]
        mine = {
            (names[u], names[v])
            for u, v in zip(task.edge_src.tolist(), task.edge_dst.tolist(), strict=True)
        }
        assert mine == set(task_digraph(graph).edges)
        assert len(mine) == task.n_edges


@pytest.mark.parametrize("seed", range(15))
def test_core_partitions_edges_and_nodes(seed: int) -> None:
    rng = random.Random(500 + seed)
    graph = random_dag(rng, rng.randint(4, 30))
    task = task_graph(graph)
    core = reduce_sp(task)
    # Every task edge is a leaf of exactly one core edge's tree, with the right ends.
    leaves = Counter(e for ce in core.edges for e in ce.tree.edges())
    assert sorted(leaves) == list(range(task.n_edges)) and set(leaves.values()) == {1}
    for ce in core.edges:
        assert (ce.tree.source, ce.tree.sink) == (ce.source, ce.sink)
        tree_edges(ce.tree, task)
    # Every node is a core vertex or internal to exactly one core edge.
    inner = Counter(v for ce in core.edges for v in ce.tree.internal_vertices())
    assert set(inner.values()) <= {1}
    assert sorted([*inner, *(v for v in core.vertices if v < task.n_nodes)]) == list(
        range(len(graph))
    )
    assert task.source in core.vertices and task.sink in core.vertices
    # Vertices are topological and no reduction applies any more.
    at = {v: k for k, v in enumerate(core.vertices)}
    pairs = [(ce.source, ce.sink) for ce in core.edges]
    assert all(at[u] < at[v] for u, v in pairs) and len(set(pairs)) == len(pairs)
    if not core.is_single_edge:
        indeg = Counter(v for _, v in pairs)
        outdeg = Counter(u for u, _ in pairs)
        for v in core.vertices:
            if v < task.n_nodes:
                assert (indeg[v], outdeg[v]) != (1, 1)
        bridge = find_bridge(core)
        if bridge is not None:
            names = tuple(task.name(v) for v in bridge)
            assert is_bridge(task_digraph(graph), *names) if len(graph) <= 12 else True


def test_terminal_names_are_reserved_strings() -> None:
    task = task_graph(wheatstone())
    assert task.name(task.source) == SOURCE_NAME and task.name(task.sink) == SINK_NAME


def test_cli_sp_prints_verdict_and_witness(tmp_path: Path) -> None:
    runner = CliRunner()
    sp_path, w_path = tmp_path / "sp.json", tmp_path / "w.json"
    write_graph(random_sp_graph(random.Random(3), 12), sp_path)
    write_graph(wheatstone(), w_path)
    res = runner.invoke(app, ["sp", str(sp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"series_parallel": True, "witness": None}
    res = runner.invoke(app, ["sp", str(w_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"series_parallel": False, "witness": ["a", "b", "c", "d"]}
    res = runner.invoke(app, ["sp", str(tmp_path / "missing.json")])
    assert res.exit_code == 2
