"""Inductor's LPMF/BFS/DFS baselines: validity, hand-derived orders, and agreement with
torch Inductor's own functions run on the same graphs."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable

import pytest

from scheduler.errors import SchedulerError
from scheduler.heuristics import schedule_bfs, schedule_dfs, schedule_lpmf
from scheduler.result import ScheduleResult
from scheduler.strategies import schedule_given
from tests.scheduler.brute import brute_force_min_peak, random_dag, recount_peak
from traces.graph import Buffer, Graph, Node

HEURISTICS: dict[str, Callable[..., ScheduleResult]] = {
    "lpmf": schedule_lpmf,
    "bfs": schedule_bfs,
    "dfs": schedule_dfs,
}


def _is_topological(graph: Graph, order: tuple[str, ...]) -> bool:
    pos = {v: i for i, v in enumerate(order)}
    deps = [(b.producer, c) for b in graph.buffers if b.producer is not None for c in b.consumers]
    return all(pos[u] < pos[v] for u, v in [*deps, *graph.edges])


def _tied_shuffled(rng: random.Random, n: int) -> Graph:
    """A random DAG whose node list is NOT in topological order and whose sizes tie a lot
    (including zero), to exercise every tie-break."""
    base = random_dag(
        rng, n, n_inputs=rng.randint(0, 4), max_consumers=4, p_pinned=0.2, p_extra_edge=0.1
    )
    nodes = list(base.nodes)
    rng.shuffle(nodes)
    buffers = [
        Buffer(b.id, rng.choice([0, 1, 2, 2, 4, 8]), b.producer, b.consumers, b.pinned)
        for b in base.buffers
    ]
    return Graph.build(base.name, nodes, buffers, base.edges)


def _layered(rng: random.Random, n: int, width: int = 64) -> Graph:
    """A layered DAG: each node's outputs are read by up to 3 nodes of the next two layers."""
    names = [f"n{i}" for i in range(n)]
    buffers = [
        Buffer(f"in{j}", rng.randint(1, 1 << 16), None, (names[j],), j % 2 == 0)
        for j in range(min(4, n))
    ]
    for i in range(n):
        lo, hi = (i // width + 1) * width, min(n, (i // width + 3) * width)
        for o in range(rng.randint(1, 2)):
            readers = sorted(rng.sample(range(lo, hi), min(rng.randint(0, 3), max(hi - lo, 0))))
            buffers.append(
                Buffer(
                    f"b{i}_{o}",
                    rng.randint(1, 1 << 20),
                    names[i],
                    tuple(names[r] for r in readers),
                    rng.random() < 0.02,
                )
            )
    return Graph.build(f"layered{n}", [Node(v) for v in names], buffers)


# ------------------------------------------------------------------ validity


@pytest.mark.parametrize("name", sorted(HEURISTICS))
@pytest.mark.parametrize("seed", range(40))
def test_order_is_topological_and_peak_is_the_recount(name: str, seed: int) -> None:
    rng = random.Random(seed)
    graph = random_dag(rng, rng.randint(1, 12))
    result = HEURISTICS[name](graph)
    assert result.strategy == name
    assert sorted(result.order) == sorted(graph.node_ids)
    assert _is_topological(graph, result.order)
    assert result.peak_bytes == recount_peak(graph, list(result.order))
    assert result.lower_bound_bytes is not None
    assert result.lower_bound_bytes <= result.peak_bytes


@pytest.mark.parametrize("seed", range(15))
def test_no_heuristic_beats_the_exact_optimum(seed: int) -> None:
    rng = random.Random(500 + seed)
    graph = random_dag(rng, rng.randint(2, 9))
    best = brute_force_min_peak(graph)
    for name, run in HEURISTICS.items():
        result = run(graph)
        assert result.peak_bytes >= best, name
        assert result.optimal == (result.peak_bytes == result.lower_bound_bytes)


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_decisions_ignore_workspace_like_inductor(name: str) -> None:
    for seed in range(30):
        rng = random.Random(900 + seed)
        graph = _tied_shuffled(rng, rng.randint(2, 20))
        heavy = Graph.build(
            graph.name,
            [Node(v.id, v.op, rng.randint(0, 10**6)) for v in graph.nodes],
            graph.buffers,
            graph.edges,
        )
        assert HEURISTICS[name](graph).order == HEURISTICS[name](heavy).order


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_empty_and_single_node_graphs(name: str) -> None:
    empty = Graph.build("empty", [], [])
    assert HEURISTICS[name](empty).order == ()
    one = Graph.build("one", [Node("a", workspace_bytes=3)], [Buffer("x", 5, "a", (), True)])
    result = HEURISTICS[name](one)
    assert result.order == ("a",) and result.peak_bytes == 8


# --------------------------------------------------- hand-derived exact orders
#
# Each expected order is derived by hand from Inductor's rules; the derivation is in
# the comment above each graph.


def _gap_graph() -> Graph:
    """g0 -> g1 -> {p, q} -> z.

    LPMF: live 0, output memory 1 (pinned K), so max 1 and gap 1. g0 (only ready) brings
    max to 100 (gap 0); g1 allocates 1 and frees G (100): live 1, max 101, gap 100. Now p
    (size 20, frees 0) and q (size 30, frees its dead output: 30) both fit under the
    gap, so the key is size - freed: q (0) beats p (20) although p is smaller. After q,
    H has one reader left, so p is credited H (1): key 19. Then z.
    BFS: g0, g1; p and q both have predecessor positions [1]: index order, p then q; z.
    DFS weights (outputs + freeable reads): g0 100, g1 101, p 21, q 31, z 21; roots by
    (weight, index): p, z, q, g0, g1. Visiting p pulls in g1 -> g0 first.
    """
    return Graph.build(
        "gap",
        [Node("g0"), Node("g1"), Node("p"), Node("q"), Node("z")],
        [
            Buffer("G", 100, "g0", ("g1",)),
            Buffer("H", 1, "g1", ("p", "q")),
            Buffer("E", 20, "p", ("z",)),
            Buffer("D", 30, "q", ()),
            Buffer("K", 1, "z", (), pinned=True),
        ],
    )


def _inputs_graph() -> Graph:
    """A freeable input I read by s; the pinned output O sets the initial gap.

    LPMF: live starts at I's 50, output memory is 80, so max 80 and gap 30. Ready r
    (size 20 <= 30: key (0, 20)) and s (size 40 > 30: key (40, -10)): r first, although s
    would win if I were left out of live memory (gap 80: key (0, -10)). Then s, then o.
    BFS: r, s (index order of two roots), o.
    DFS weights: r 20, s 40 + 50 (reads I) = 90, o 80 + 60 = 140: r, s, o.
    """
    return Graph.build(
        "inputs",
        [Node("r"), Node("s"), Node("o")],
        [
            Buffer("I", 50, None, ("s",)),
            Buffer("R", 20, "r", ("o",)),
            Buffer("S", 40, "s", ("o",)),
            Buffer("O", 80, "o", (), pinned=True),
        ],
    )


def _pinned_input_graph(reader: str = "b") -> Graph:
    """A pinned graph input W (a parameter) read by one node only.

    Inductor treats it as non-freeable and leaves it out entirely. Read by b, for LPMF:
    gap 1; a and b tie on size 10 and on size - freed 10 (W earns b no credit), so index
    order: a, b, j. Were W freeable, b would free 1000 and go first. BFS: a, b, j.
    Read by a, for DFS: weights a 10 (W not counted), b 10, j 1 + 20: a, b, j; were W
    counted, a would weigh 1010 and b would come first.
    """
    return Graph.build(
        "pinned-input",
        [Node("a"), Node("b"), Node("j")],
        [
            Buffer("W", 1000, None, (reader,), pinned=True),
            Buffer("A", 10, "a", ("j",)),
            Buffer("B", 10, "b", ("j",)),
            Buffer("J", 1, "j", (), pinned=True),
        ],
    )


def _pinned_input_read_by_a() -> Graph:
    return _pinned_input_graph("a")


def _two_reader_graph() -> Graph:
    """M (60) is read by y and x; memory for M is credited only to its last reader.

    LPMF: gap 1 (pinned K). m; then y (5) and x (30) are ready, gap 0: smallest size, y.
    M now has one reader left, so x is credited 60. Ready x (30, key (30, -30)) and z
    (30, frees Y: key (30, 25)) tie on size; x wins on size - freed despite its larger
    index. Then z (fits under gap 60), k.
    BFS: m; y [0] and x [0] tie: index, y; x [0] beats z [1]; z; k.
    DFS weights: m 60, y 65, z 35, x 90, k 61: z first pulls y, m; then k pulls x.
    """
    return Graph.build(
        "two-readers",
        [Node("m"), Node("y"), Node("z"), Node("x"), Node("k")],
        [
            Buffer("M", 60, "m", ("y", "x")),
            Buffer("Y", 5, "y", ("z",)),
            Buffer("Z", 30, "z", ("k",)),
            Buffer("X", 30, "x", ("k",)),
            Buffer("K", 1, "k", (), pinned=True),
        ],
    )


def _bfs_prefix_graph() -> Graph:
    """BFS priorities compare as lists: [] < [0] < [0, 1] < [1].

    a and b are roots ([]): a. Then b [] beats q [0]: b. Then q [0], p [0, 1] and s [1]:
    q, then p, then s, although s and p come before q in the node list.
    """
    return Graph.build(
        "bfs-prefix",
        [Node("a"), Node("b"), Node("s"), Node("p"), Node("q")],
        [
            Buffer("A", 1, "a", ("p", "q")),
            Buffer("B", 1, "b", ("p", "s")),
            Buffer("P", 1, "p", (), pinned=True),
            Buffer("Q", 1, "q", (), pinned=True),
            Buffer("S", 1, "s", (), pinned=True),
        ],
    )


HAND_CASES = [
    (_gap_graph, "lpmf", "g0 g1 q p z"),
    (_gap_graph, "bfs", "g0 g1 p q z"),
    (_gap_graph, "dfs", "g0 g1 p z q"),
    (_inputs_graph, "lpmf", "r s o"),
    (_inputs_graph, "bfs", "r s o"),
    (_inputs_graph, "dfs", "r s o"),
    (_pinned_input_graph, "lpmf", "a b j"),
    (_pinned_input_graph, "bfs", "a b j"),
    (_pinned_input_graph, "dfs", "a b j"),
    (_pinned_input_read_by_a, "dfs", "a b j"),
    (_two_reader_graph, "lpmf", "m y x z k"),
    (_two_reader_graph, "bfs", "m y x z k"),
    (_two_reader_graph, "dfs", "m y z x k"),
    (_bfs_prefix_graph, "bfs", "a b q p s"),
]


@pytest.mark.parametrize(
    ("make", "name", "expected"),
    HAND_CASES,
    ids=[f"{m.__name__.strip('_')}-{n}" for m, n, _ in HAND_CASES],
)
def test_hand_derived_order(make: Callable[[], Graph], name: str, expected: str) -> None:
    assert HEURISTICS[name](make()).order == tuple(expected.split())


def test_dfs_does_not_recurse_on_a_long_chain() -> None:
    n = 5000  # far beyond Python's default recursion limit
    names = [f"c{i}" for i in range(n)]
    buffers = [Buffer(f"x{i}", 1, names[i], (names[i + 1],)) for i in range(n - 1)]
    graph = Graph.build("chain", [Node(v) for v in reversed(names)], buffers)
    for run in HEURISTICS.values():
        assert run(graph).order == tuple(names)


# --------------------------------------------- agreement with Inductor itself


@pytest.fixture(scope="module")
def inductor_orders() -> Callable[[Graph], dict[str, list[int]]]:
    pytest.importorskip("torch._inductor.memory")
    from tests.scheduler.inductor_ref import inductor_orders

    return inductor_orders


@pytest.mark.parametrize(
    ("family", "seeds", "sizes"),
    [
        ("random_dag", range(120), (1, 12)),
        ("tied_shuffled", range(120), (1, 40)),
        ("tied_shuffled", range(1000, 1004), (300, 500)),
    ],
)
def test_same_orders_as_torch_inductor(
    inductor_orders: Callable[[Graph], dict[str, list[int]]],
    family: str,
    seeds: range,
    sizes: tuple[int, int],
) -> None:
    """Inductor's own topological_sort_lpmf/bfs/dfs, on stand-ins built from the same graph
    by Inductor's own prepare_planning_info, give exactly our orders."""
    differs_from_given = 0
    for seed in seeds:
        rng = random.Random(seed)
        n = rng.randint(*sizes)
        graph = random_dag(rng, n) if family == "random_dag" else _tied_shuffled(rng, n)
        ids = graph.index.node_ids
        theirs = inductor_orders(graph)
        for name, run in HEURISTICS.items():
            ours = run(graph).order
            assert ours == tuple(ids[i] for i in theirs[name]), (family, seed, name)
            differs_from_given += ours != tuple(ids)
    # The comparison is not vacuous: most orders are not simply the given one.
    assert differs_from_given > len(seeds)


# ------------------------------------------------------------ scale and wiring


def test_twenty_thousand_node_layered_graph_completes() -> None:
    graph = _layered(random.Random(7), 20_000)
    for name, run in HEURISTICS.items():
        result = run(graph)
        assert len(result.order) == len(graph), name
        assert result.peak_bytes >= result.lower_bound_bytes  # replayed and validated


def test_given_order_that_is_not_topological_is_a_scheduler_error() -> None:
    graph = Graph.build(
        "backwards", [Node("b"), Node("a")], [Buffer("x", 1, "a", ("b",))], edges=()
    )
    with pytest.raises(SchedulerError, match=r"node order is not topological: 'b' .* 'a'"):
        schedule_given(graph)
    assert schedule_lpmf(graph).order == ("a", "b")


def test_scheduler_never_imports_torch() -> None:
    code = (
        "import sys, scheduler.heuristics, scheduler.strategies;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
