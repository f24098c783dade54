"""The structural (must-live) lower bound: never above the exact optimum, never below the
per-node bound, and strictly better than it on a skip connection."""

from __future__ import annotations

import random

import pytest

from scheduler.memory import trivial_lower_bound
from scheduler.subproblem import structural_lower_bound
from tests.scheduler.brute import brute_force_min_peak, random_dag
from traces.graph import Buffer, Graph, Node


@pytest.mark.parametrize("seed", range(60))
def test_bound_is_below_the_exact_optimum_and_above_the_trivial_bound(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_dag(rng, rng.randint(1, 10))
    bound = structural_lower_bound(graph.index)
    assert trivial_lower_bound(graph) <= bound <= brute_force_min_peak(graph)


def test_skip_connection_is_counted_where_every_order_holds_it() -> None:
    """a -> S (1000 B, read by e at the end); a -> b -> c -> d -> e, each 10 B. Every order
    holds S while b, c and d run: the optimum is 1020 B, the per-node bound 1010 B."""
    nodes = [Node(n) for n in "abcde"]
    buffers = [
        Buffer("S", 1000, "a", ("e",)),
        Buffer("x", 10, "a", ("b",)),
        Buffer("y", 10, "b", ("c",)),
        Buffer("z", 10, "c", ("d",)),
        Buffer("w", 10, "d", ("e",)),
    ]
    g = Graph.build("skip", nodes, buffers)
    assert trivial_lower_bound(g) == 1010
    assert structural_lower_bound(g.index) == brute_force_min_peak(g) == 1020
