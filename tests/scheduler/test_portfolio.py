"""The ``best`` portfolio: never worse than any member, exact when ilp can prove it,
honest bounds, robust to failing or missing members, returns within its budget."""

from __future__ import annotations

import importlib.util
import random
import time

import pytest

from scheduler import portfolio
from scheduler.errors import SchedulerError
from scheduler.heuristics import schedule_bfs, schedule_dfs, schedule_lpmf
from scheduler.memory import simulate
from scheduler.portfolio import schedule_best
from scheduler.strategies import schedule, schedule_given
from scheduler.synthetic import layered_dag, series_parallel
from tests.scheduler.brute import brute_force_min_peak, random_dag, recount_peak
from traces.graph import Buffer, Graph, Node

HAS_ILP = importlib.util.find_spec("scheduler.ilp") is not None


@pytest.mark.parametrize("seed", range(25))
def test_never_worse_than_given_or_any_heuristic(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_dag(rng, rng.randint(1, 25))
    best = schedule_best(graph, time_limit_s=5)
    assert best.strategy == "best"
    for member in (schedule_given, schedule_lpmf, schedule_bfs, schedule_dfs):
        assert best.peak_bytes <= member(graph).peak_bytes
    # The reported peak is the real one for the returned order.
    assert best.peak_bytes == recount_peak(graph, list(best.order))


@pytest.mark.parametrize("seed", range(25))
def test_bound_is_proven_and_optimal_flag_is_honest(seed: int) -> None:
    rng = random.Random(100 + seed)
    graph = random_dag(rng, rng.randint(1, 10))
    best = schedule_best(graph, time_limit_s=5)
    opt = brute_force_min_peak(graph)
    assert best.lower_bound_bytes is not None and best.lower_bound_bytes <= opt
    assert best.optimal == (best.peak_bytes == best.lower_bound_bytes)
    if best.optimal:
        assert best.peak_bytes == opt
    members = best.details["members"]
    lbs = [m["lower_bound_bytes"] for m in members if m["lower_bound_bytes"] is not None]
    assert best.lower_bound_bytes >= max(lbs)


@pytest.mark.skipif(not HAS_ILP, reason="scheduler/ilp.py (another engineer's module) not present")
@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_optimum_when_ilp_available(seed: int) -> None:
    rng = random.Random(500 + seed)
    graph = random_dag(rng, rng.randint(2, 10))
    best = schedule_best(graph, time_limit_s=30)
    assert best.peak_bytes == brute_force_min_peak(graph)
    assert best.optimal


def test_details_name_the_winner_and_every_member() -> None:
    graph = layered_dag(60, seed=4).to_graph()
    best = schedule_best(graph, time_limit_s=2)
    members = {m["method"]: m for m in best.details["members"]}
    assert {"given", "lpmf", "bfs", "dfs"} <= set(members) or best.details["stopped"]
    winner = members[best.details["winner"]]
    assert winner["peak_bytes"] == best.peak_bytes
    ran = [m for m in members.values() if m["skipped"] is None]
    assert all(m["peak_bytes"] >= best.peak_bytes for m in ran)
    assert all(m["seconds_s"] >= 0 for m in members.values())


def test_stops_early_once_optimal_is_proven() -> None:
    # A chain has a single order whose peak meets the trivial bound: given proves it.
    graph = Graph.build(
        "chain",
        [Node("a"), Node("b"), Node("c")],
        [Buffer("x", 5, "a", ("b",)), Buffer("y", 7, "b", ("c",)), Buffer("z", 1, "c", ())],
    )
    best = schedule_best(graph, time_limit_s=5)
    assert best.optimal and best.details["winner"] == "given"
    assert [m["method"] for m in best.details["members"]] == ["given"]


def test_non_topological_given_order_is_skipped_not_fatal() -> None:
    graph = Graph.build(
        "backwards",
        [Node("c"), Node("b"), Node("a")],
        [
            Buffer("x", 8, "a", ("b", "c")),
            Buffer("y", 3, "b", ("c",)),
            Buffer("w", 20, "a", ()),
        ],
    )
    best = schedule_best(graph, time_limit_s=5)
    assert list(best.order) == ["a", "b", "c"]
    given = next(m for m in best.details["members"] if m["method"] == "given")
    assert given["skipped"] and "topological" in given["skipped"]


def test_failing_and_missing_members_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(graph: Graph, *, time_limit_s: float) -> None:
        raise SchedulerError("deliberately broken member")

    real_load = portfolio._load

    def fake_load(name: str):  # type: ignore[no-untyped-def]
        if name == "lpmf":
            return broken
        if name in ("ilp", "hybrid"):
            raise ModuleNotFoundError(f"No module named 'scheduler.{name}'")
        return real_load(name)

    monkeypatch.setattr(portfolio, "_load", fake_load)
    graph = layered_dag(40, seed=1).to_graph()
    best = schedule_best(graph, time_limit_s=5)
    members = {m["method"]: m for m in best.details["members"]}
    assert "deliberately broken" in members["lpmf"]["skipped"]
    assert best.peak_bytes <= schedule_bfs(graph).peak_bytes
    assert best.peak_bytes == simulate(graph, list(best.order)).peak_bytes
    if not best.optimal:  # the big members were tried and reported missing
        assert "unavailable" in members["hybrid"]["skipped"]
        assert "unavailable" in members["ilp"]["skipped"]


def test_returns_within_a_small_budget() -> None:
    graph = series_parallel(400, seed=2).to_graph()
    t0 = time.perf_counter()
    best = schedule_best(graph, time_limit_s=0.5)
    elapsed = time.perf_counter() - t0
    # Not a speed test: the portfolio must give up on the expensive members and return.
    assert elapsed < 60
    assert best.peak_bytes <= schedule_given(graph).peak_bytes


@pytest.mark.skipif(
    not all(importlib.util.find_spec(f"scheduler.{m}") for m in ("ilp", "hybrid", "sp_order")),
    reason="the strategy registry needs every strategy module (others are still writing some)",
)
def test_registered_as_best() -> None:
    rng = random.Random(3)
    graph = random_dag(rng, 8)
    assert schedule(graph, "best", time_limit_s=5).strategy == "best"
