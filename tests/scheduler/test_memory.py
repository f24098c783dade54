"""The memory simulator against an independent recount, and its refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scheduler.memory import check_order, order_indices, simulate, trivial_lower_bound
from tests.scheduler.brute import (
    brute_force_min_peak,
    random_dag,
    random_topological_order,
    recount_peak,
)
from traces.errors import OrderError
from traces.graph import Buffer, Graph, Node


@pytest.mark.parametrize("seed", range(60))
def test_simulated_peak_equals_naive_recount(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_dag(rng, rng.randint(1, 12))
    for _ in range(5):
        order = random_topological_order(graph, rng)
        assert simulate(graph, order).peak_bytes == recount_peak(graph, order)


@pytest.mark.parametrize("seed", range(30))
def test_trivial_lower_bound_never_exceeds_optimum(seed: int) -> None:
    rng = random.Random(1000 + seed)
    graph = random_dag(rng, rng.randint(1, 8))
    assert trivial_lower_bound(graph) <= brute_force_min_peak(graph)


def test_hand_counted_diamond() -> None:
    graph = Graph.build(
        "diamond",
        [Node("a"), Node("b", workspace_bytes=10), Node("c"), Node("d")],
        [
            Buffer("in", 100, None, ("a",), pinned=True),
            Buffer("ab", 50, "a", ("b", "c")),
            Buffer("bd", 20, "b", ("d",)),
            Buffer("cd", 30, "c", ("d",)),
            Buffer("out", 5, "d", (), pinned=True),
        ],
    )
    prof = simulate(graph, ["a", "b", "c", "d"])
    assert prof.timeline_bytes.tolist() == [150, 180, 200, 155]
    assert prof.peak_bytes == 200 and prof.peak_step == 2
    assert simulate(graph, ["a", "c", "b", "d"]).peak_bytes == 210


def test_dead_output_lives_only_while_its_producer_runs() -> None:
    graph = Graph.build(
        "dead",
        [Node("a"), Node("b")],
        [Buffer("x", 7, "a", ()), Buffer("y", 3, "a", ("b",))],
    )
    assert simulate(graph, ["a", "b"]).timeline_bytes.tolist() == [10, 3]


def test_unconsumed_unpinned_input_lives_only_at_step_zero() -> None:
    graph = Graph.build(
        "in", [Node("a"), Node("b")], [Buffer("i", 9, None, ())], edges=[("a", "b")]
    )
    assert simulate(graph, ["a", "b"]).timeline_bytes.tolist() == [9, 0]


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["a", "b"], "misses"),
        (["a", "b", "c", "c"], "more than once"),
        (["b", "a", "c"], "not topological"),
        (["a", "b", "zz"], "not a node"),
    ],
)
def test_bad_orders_are_refused(order: list[str], message: str) -> None:
    graph = Graph.build(
        "chain",
        [Node("a"), Node("b"), Node("c")],
        [Buffer("x", 1, "a", ("b",)), Buffer("y", 1, "b", ("c",))],
    )
    with pytest.raises(OrderError, match=message):
        check_order(graph, order_indices(graph, order))


def test_index_array_orders_are_accepted() -> None:
    graph = Graph.build("one", [Node("a")], [Buffer("x", 4, "a", (), pinned=True)])
    assert simulate(graph, np.array([0])).peak_bytes == 4
