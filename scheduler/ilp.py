"""Exact peak-memory minimization as a time-indexed integer program (PuLP; HiGHS or CBC).

Model (one step per node, steps ``t = 0..n-1``):

* ``d[v,t]`` binary, "``v`` has run by step ``t``"; non-decreasing in ``t``, and
  ``sum_v d[v,t] = t + 1``, so exactly one node runs per step and
  ``x[v,t] = d[v,t] - d[v,t-1]`` says which;
* precedence in cumulative form, ``d[v,t] <= d[u,t-1]`` for each edge ``u -> v`` of
  the transitive reduction;
* windows: ``v`` cannot run before all its ancestors nor after all its descendants
  could still run, so ``d[v,t]`` is fixed to 0 below ``|anc(v)|`` and to 1 from
  ``n - 1 - |desc(v)|`` on; fixed entries are constants, not variables;
* liveness of each buffer, exactly the graph/1 memory model: a buffer with one
  consumer ``c`` is live at ``t`` iff ``d[p,t] - d[c,t-1] = 1`` (linear, no
  variable); a pinned one iff ``d[p,t]``; a dead output iff ``x[p,t]``; a buffer
  with several consumers gets ``L[b,t] >= d[p,t] - d[c,t-1]`` for each consumer
  (counted once, pushed down by the objective);
* ``M >= memory at t`` for every ``t``, ``M`` integer; minimize ``M``.

Sizes are divided by their greatest common divisor, which is exact and keeps
coefficients small. ``M`` is bounded below by
:func:`scheduler.subproblem.structural_lower_bound` (the trivial bound strengthened by
ancestor/descendant sets). The warm-start order (the one passed, else the best of the
given order when it is topological, the Inductor heuristics and the series-parallel
algorithm: :mod:`scheduler.candidates`) enters as an objective
cutoff, ``M <= peak - 1`` (scaled): the solver searches only for strictly better
orders, "infeasible" proves the warm start optimal, and a time-out still returns a
valid order with ``optimal=False`` and the solver's proven bound (HiGHS'
``mip_dual_bound``; with CBC, whose bound PuLP does not expose, only the structural
bound). The time limit covers building the model and solving it.

:func:`schedule_ilp` first runs an exact presolve (:mod:`scheduler.presolve`): the graph
is cut into independent segments, and each segment holding the peak is proven by the
decision search of :mod:`scheduler.decide` when it can be; only segments left open reach
the integer program. ``details["proof"]`` says which of these proved the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pulp

from scheduler.decide import gcd_step
from scheduler.memory import check_order, order_indices, simulate
from scheduler.milp_solvers import pick_solver, run_cbc, run_highs
from scheduler.result import ScheduleResult, finish_result
from scheduler.subproblem import ancestor_masks, structural_lower_bound, topological_order
from traces.errors import OrderError
from traces.fds import silenced_fd
from traces.graph import Graph, GraphIndex

__all__ = ["MAX_MODEL_NODES", "MAX_MODEL_VARIABLES", "IlpOutcome", "schedule_ilp", "solve_index"]

MAX_MODEL_VARIABLES = 400_000
"""Above this many ``d`` variables the model is not built (it would not solve in time)."""

MAX_MODEL_NODES = 5_000
"""Above this many nodes the model is not even sized (its windows need n^2/8-byte masks)."""


@dataclass(frozen=True, slots=True)
class IlpOutcome:
    """What one solve gives: an order (indices), its peak, and a proven lower bound."""

    order: np.ndarray
    peak_bytes: int
    bound_bytes: int
    optimal: bool
    status: str
    solver: str
    objective_bytes: int | None
    n_variables: int
    n_constraints: int
    build_s: float
    solve_s: float


class _Model:
    """The time-indexed program for one graph, with the bookkeeping to decode it."""

    def __init__(
        self, index: GraphIndex, windows: _Windows, scale: int, lower: int, upper: int
    ) -> None:
        n = index.n_nodes
        self.n = n
        anc, topo = windows.anc, windows.topo
        self.lo = windows.lo
        self.hi = windows.hi
        self.rank = {v: k for k, v in enumerate(topo)}
        self.prob = pulp.LpProblem("peak", pulp.LpMinimize)
        self.d: dict[tuple[int, int], pulp.LpVariable] = {}
        for v in range(n):
            for t in range(self.lo[v], self.hi[v]):
                self.d[v, t] = self._var(f"d_{v}_{t}", 0, 1, pulp.LpBinary)
        self.m = self._var("M", lower, upper, pulp.LpInteger)
        self.prob += self.m
        self.n_l = 0
        self.liveness: list[tuple[pulp.LpVariable, int, list[int], int]] = []
        self._precedence(index, anc)
        self._steps()
        self._memory(index, scale)

    def _var(self, name: str, low: float, high: float, cat: str) -> pulp.LpVariable:
        add = getattr(self.prob, "add_variable", None)  # PuLP >= 3.3
        if add is not None:
            return add(name, low, high, cat=cat)
        return pulp.LpVariable(name, low, high, cat=cat)

    def dval(self, v: int, t: int) -> pulp.LpVariable | int:
        if t < self.lo[v]:
            return 0
        if t >= self.hi[v]:
            return 1
        return self.d[v, t]

    def _add(self, terms: dict[Any, float], const: float, sense: int, rhs: float) -> None:
        expr = pulp.LpAffineExpression([(k, c) for k, c in terms.items() if c != 0])
        self.prob.addConstraint(pulp.LpConstraint(expr, sense, rhs=rhs - const))

    def _precedence(self, index: GraphIndex, anc: list[int]) -> None:
        for v in range(self.n):
            for t in range(self.lo[v] + 1, self.hi[v]):
                self._add({self.d[v, t]: 1, self.d[v, t - 1]: -1}, 0, pulp.LpConstraintGE, 0)
        pred = index.pred_lists
        for v in range(self.n):
            preds = set(pred[v])
            # transitive reduction: drop u when another predecessor descends from u
            direct = [u for u in preds if not any((anc[w] >> u) & 1 for w in preds if w != u)]
            for u in direct:
                for t in range(self.lo[v], self.hi[v]):
                    du = self.dval(u, t - 1)
                    if _is(du, 1):
                        continue
                    terms: dict[Any, float] = {self.d[v, t]: 1}
                    if not _is(du, 0):
                        terms[du] = -1
                    self._add(terms, 0, pulp.LpConstraintLE, 0)

    def _steps(self) -> None:
        for t in range(self.n):
            terms: dict[Any, float] = {}
            const = 0
            for v in range(self.n):
                dv = self.dval(v, t)
                if isinstance(dv, int):
                    const += dv
                else:
                    terms[dv] = 1
            if terms:
                self._add(terms, const, pulp.LpConstraintEQ, t + 1)

    def _acc(self, terms: dict[Any, float], item: pulp.LpVariable | int, coef: float) -> float:
        """Add ``coef * item`` to ``terms``; return the constant part."""
        if isinstance(item, int):
            return coef * item
        terms[item] = terms.get(item, 0) + coef
        return 0.0

    def _memory(self, index: GraphIndex, scale: int) -> None:
        n = self.n
        size = (index.buf_size // scale).tolist()
        ws = (index.workspace // scale).tolist()
        prod = index.buf_producer.tolist()
        pinned = index.buf_pinned.tolist()
        cons = index.consumer_lists
        for t in range(n):
            terms: dict[Any, float] = {}
            const = 0.0
            for v in range(n):
                if ws[v] and self.lo[v] <= t <= self.hi[v]:
                    const += self._acc(terms, self.dval(v, t), ws[v])
                    const += self._acc(terms, self.dval(v, t - 1), -ws[v])
            for b, s in enumerate(size):
                if s == 0:
                    continue
                p = prod[b]
                alive = 1 if p < 0 else self.dval(p, t)
                if _is(alive, 0):
                    continue
                if pinned[b]:
                    const += self._acc(terms, alive, s)
                elif not cons[b]:
                    if p < 0:
                        const += s if t == 0 else 0
                    else:
                        const += self._acc(terms, alive, s)
                        const += self._acc(terms, self.dval(p, t - 1), -s)
                elif len(cons[b]) == 1:
                    const += self._acc(terms, alive, s)
                    const += self._acc(terms, self.dval(cons[b][0], t - 1), -s)
                else:
                    const += self._multi(terms, b, t, alive, cons[b], s)
            terms[self.m] = terms.get(self.m, 0) - 1
            self._add(terms, const, pulp.LpConstraintLE, 0)

    def _multi(
        self,
        terms: dict[Any, float],
        b: int,
        t: int,
        alive: pulp.LpVariable | int,
        consumers: list[int],
        s: int,
    ) -> float:
        """Liveness of a buffer read by several nodes: one variable, counted once."""
        done = [self.dval(c, t - 1) for c in consumers]
        if all(_is(dc, 1) for dc in done):
            return 0.0  # every consumer ran before t
        open_ = [dc for dc in done if not _is(dc, 1)]
        if _is(alive, 1) and any(_is(dc, 0) for dc in open_):
            return float(s)  # produced and a consumer is still to run
        lvar = self._var(f"L_{b}_{t}", 0, 1, pulp.LpContinuous)
        self.n_l += 1
        for dc in open_:
            row: dict[Any, float] = {lvar: 1}
            const = self._acc(row, alive, -1) + self._acc(row, dc, 1)
            self._add(row, const, pulp.LpConstraintGE, 0)
        self.liveness.append((lvar, b, consumers, t))
        terms[lvar] = terms.get(lvar, 0) + s
        return 0.0

    def values_of(self, index: GraphIndex, pos: np.ndarray, peak_scaled: int) -> dict[str, float]:
        """Variable values (by name) that the order with positions ``pos`` gives."""
        out: dict[str, float] = {v.name: float(pos[k[0]] <= k[1]) for k, v in self.d.items()}
        prod = index.buf_producer.tolist()
        for lvar, b, consumers, t in self.liveness:
            p = prod[b]
            made = p < 0 or pos[p] <= t
            out[lvar.name] = float(made and any(pos[c] >= t for c in consumers))
        out[self.m.name] = float(peak_scaled)
        return out

    def decode(self) -> np.ndarray:
        """Order from ``d``: a node's step is the number of steps it has not yet run."""
        step = []
        for v in range(self.n):
            s = self.lo[v]
            for t in range(self.lo[v], self.hi[v]):
                if (self.d[v, t].varValue or 0.0) < 0.5:
                    s = t + 1
            step.append((s, self.rank[v], v))
        step.sort()
        return np.array([v for _, _, v in step], dtype=np.int64)


def _is(item: pulp.LpVariable | int, value: int) -> bool:
    """Is ``item`` the constant ``value``? (``LpVariable == 0`` builds a constraint.)"""
    return isinstance(item, int) and item == value


def solve_index(
    index: GraphIndex,
    incumbent: np.ndarray,
    *,
    time_limit_s: float = 60.0,
    lower_bound_bytes: int = 0,
    solver: str | None = None,
) -> IlpOutcome:
    """Minimize the peak of ``index`` starting from the topological order ``incumbent``.

    Never returns an order worse than ``incumbent``; ``bound_bytes`` is proven.
    """
    t0 = time.perf_counter()
    name = pick_solver(solver)
    incumbent = np.asarray(incumbent, dtype=np.int64)
    check_order(index, incumbent)
    peak0 = simulate(index, incumbent, validate=False).peak_bytes
    lower = max(int(lower_bound_bytes), structural_lower_bound(index))
    scale = gcd_step(index)
    n = index.n_nodes

    def outcome(order: np.ndarray, peak: int, bound: int, status: str, **kw: Any) -> IlpOutcome:
        bound = min(max(bound, lower), peak)
        base = dict(objective_bytes=None, n_variables=0, n_constraints=0, build_s=0.0)
        base.update(kw)
        return IlpOutcome(
            order,
            peak,
            bound,
            bound >= peak,
            status,
            name,
            solve_s=time.perf_counter() - t0,
            **base,
        )

    if n == 0 or peak0 <= lower:
        return outcome(incumbent, peak0, peak0, "incumbent meets the lower bound")
    if n > MAX_MODEL_NODES:
        return outcome(incumbent, peak0, lower, f"model too large ({n} nodes)")
    windows = _Windows.of(index)
    n_vars = sum(h - lo for lo, h in zip(windows.lo, windows.hi, strict=True))
    if n_vars > MAX_MODEL_VARIABLES:
        return outcome(incumbent, peak0, lower, f"model too large ({n_vars} variables)")
    # The incumbent enters as an objective cutoff: only strictly better orders are
    # feasible, so "infeasible" proves the incumbent optimal. (A MIP start through
    # highspy's setSolution is not used: HiGHS 1.16 sometimes hands back the start
    # vector instead of the optimum it reports.)
    lo_scaled, ub_scaled = math.ceil(lower / scale), peak0 // scale - 1
    if lo_scaled > ub_scaled:
        return outcome(incumbent, peak0, peak0, "incumbent meets the lower bound")
    model = _Model(index, windows, scale, lo_scaled, ub_scaled)
    build_s = time.perf_counter() - t0
    remaining = max(0.05, time_limit_s - build_s)
    sizes = dict(
        n_variables=len(model.d) + model.n_l + 1,
        n_constraints=model.prob.numConstraints(),
        build_s=build_s,
    )
    with silenced_fd(1):  # HiGHS prints a banner from C++ on first use
        run = run_highs if name == "highs" else run_cbc
        status, objective, bound, infeasible = run(model.prob, remaining)
    if infeasible:
        return outcome(incumbent, peak0, peak0, "incumbent proven optimal", **sizes)
    order, peak = incumbent, peak0
    if objective is not None:
        try:
            decoded = model.decode()
            check_order(index, decoded)
            p = simulate(index, decoded, validate=False).peak_bytes
            if p < peak:
                order, peak = decoded, p
        except OrderError:  # solver returned garbage; keep the incumbent
            status += " (decoded order invalid)"
    proven = math.ceil(bound - 1e-6) * scale if bound is not None else lower
    objective_bytes = None if objective is None else round(objective) * scale
    return outcome(order, peak, proven, status, objective_bytes=objective_bytes, **sizes)


@dataclass(frozen=True, slots=True)
class _Windows:
    """Steps each node can run at: ``lo[v] <= step <= hi[v]`` (ancestor/descendant counts)."""

    topo: list[int]
    anc: list[int]
    lo: list[int]
    hi: list[int]

    @classmethod
    def of(cls, index: GraphIndex) -> _Windows:
        n = index.n_nodes
        topo = topological_order(index)
        anc = ancestor_masks(index, topo)
        succ = index.succ_lists
        desc = [0] * n
        for v in reversed(topo):
            m = 0
            for w in succ[v]:
                m |= desc[w] | (1 << w)
            desc[v] = m
        return cls(topo, anc, [a.bit_count() for a in anc], [n - 1 - d.bit_count() for d in desc])


def _warm_order(graph: Graph, warm_start: Sequence[str] | None) -> tuple[np.ndarray, str, int]:
    """The warm-start order: the one passed, else the best cheap candidate
    (:func:`scheduler.candidates.candidate_orders`: given, lpmf, bfs, dfs, sp); with its
    name and the best bound a candidate proved (the SP lower mapping's)."""
    if warm_start is not None:
        order = order_indices(graph, warm_start)
        check_order(graph.index, order)
        return order, "given warm start", 0
    from scheduler.candidates import candidate_orders

    cands = candidate_orders(graph)
    return cands.orders[cands.best], cands.best, int(cands.bound_bytes)


def schedule_ilp(
    graph: Graph,
    *,
    time_limit_s: float = 60.0,
    warm_start: Sequence[str] | None = None,
    solver: str | None = None,
    presolve: bool = True,
) -> ScheduleResult:
    """Minimum-peak order by integer programming (strategy ``ilp``).

    ``solver``: ``"highs"`` (default when highspy is installed) or ``"cbc"``.
    ``presolve`` (default): cut the graph into independent segments and prove what the
    decision search (:mod:`scheduler.decide`) can before the ILP sees the rest
    (:mod:`scheduler.presolve`); ``details["proof"]`` says what proved the result. On a
    time-out the best order found is returned with ``optimal=False`` and the best proven
    lower bound.

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c"), Node("d")],
    ...     [Buffer("x", 10, "a", ("d",)), Buffer("y", 1, "b", ("c",)),
    ...      Buffer("z", 1, "c", ("d",))])
    >>> r = schedule_ilp(g)  # given order a, b, c, d peaks at 12
    >>> r.order, r.peak_bytes, r.optimal
    (('b', 'c', 'a', 'd'), 11, True)
    """
    t0 = time.perf_counter()
    name = pick_solver(solver)
    warm, warm_name, warm_bound = _warm_order(graph, warm_start)
    if presolve:
        return _schedule_presolved(graph, warm, warm_name, warm_bound, t0, time_limit_s, name)
    left = max(0.1, time_limit_s - (time.perf_counter() - t0))
    out = solve_index(graph.index, warm, time_limit_s=left, solver=name)
    return finish_result(
        graph,
        "ilp",
        out.order,
        t0,
        optimal=out.optimal,
        lower_bound_bytes=out.bound_bytes,
        details={
            "proof": _ilp_proof(out) if out.optimal else "none",
            **_ilp_details(out),
            "warm_start": warm_name,
        },
    )


def _ilp_proof(out: IlpOutcome) -> str:
    """What proved an ILP outcome optimal, in words."""
    if out.n_variables == 0:
        return "incumbent meets a proven lower bound; no model built"
    if out.status == "incumbent proven optimal":
        return "ILP: no order below the warm start (infeasible with the cutoff)"
    return "ILP: solved to optimality"


def _ilp_details(out: IlpOutcome | None, solver: str | None = None) -> dict[str, Any]:
    if out is None:
        return {
            "solver": solver,
            "status": "not run",
            "objective_bytes": None,
            "variables": 0,
            "constraints": 0,
            "build_s": 0.0,
            "solve_s": 0.0,
        }
    return {
        "solver": out.solver,
        "status": out.status,
        "objective_bytes": out.objective_bytes,
        "variables": out.n_variables,
        "constraints": out.n_constraints,
        "build_s": round(out.build_s, 4),
        "solve_s": round(out.solve_s, 4),
    }


def _schedule_presolved(
    graph: Graph,
    warm: np.ndarray,
    warm_name: str,
    warm_bound: int,
    t0: float,
    time_limit_s: float,
    solver: str,
) -> ScheduleResult:
    """Segments and the decision search first (:func:`scheduler.presolve.presolve`), then
    the ILP on each segment left open, warm-started from what the search found."""
    from scheduler.presolve import presolve

    deadline = t0 + time_limit_s
    index = graph.index
    pre = presolve(index, warm, lower_bound_bytes=warm_bound, deadline_s=deadline)
    ilp_out: IlpOutcome | None = None
    for seg in sorted(pre.segments, key=lambda s: -s.peak_bytes):
        if not seg.open or seg.peak_bytes <= pre.bound_bytes or seg.sub is None:
            continue
        sub = seg.sub
        left = deadline - time.perf_counter()
        local = seg.local if seg.local is not None else np.arange(seg.nodes, dtype=np.int64)
        out = solve_index(
            sub.index,
            local,
            time_limit_s=max(0.1, left),
            lower_bound_bytes=seg.bound_bytes - sub.offset_bytes,
            solver=solver,
        )
        ilp_out = out
        seg.order = sub.nodes[out.order]
        seg.peak_bytes = out.peak_bytes + sub.offset_bytes
        seg.bound_bytes = max(seg.bound_bytes, out.bound_bytes + sub.offset_bytes)
        seg.open = not out.optimal
        seg.how = _ilp_proof(out) if out.optimal else f"ILP: {out.status}"
        pre.bound_bytes = max(pre.bound_bytes, seg.bound_bytes)
    order = pre.order
    peak = simulate(index, order).peak_bytes
    bound = min(pre.bound_bytes, peak)
    return finish_result(
        graph,
        "ilp",
        order,
        t0,
        optimal=bound >= peak,
        lower_bound_bytes=bound,
        details={
            "proof": _presolve_proof(pre, peak, warm_bound),
            **_ilp_details(ilp_out, solver),
            "warm_start": warm_name,
            "segments": len(pre.segments),
            "segment_results": [
                {
                    "nodes": s.nodes,
                    "peak_bytes": s.peak_bytes,
                    "bound_bytes": s.bound_bytes,
                    "how": s.how,
                    "search_states": s.states,
                    "search_s": round(s.seconds_s, 4),
                }
                for s in sorted(pre.segments, key=lambda s: -s.peak_bytes)
                if s.nodes > 1
            ][:20],
        },
    )


def _presolve_proof(pre: Any, peak: int, warm_bound: int) -> str:
    """What proved the presolved result: the segments whose bound reaches the peak."""
    if pre.bound_bytes < peak:
        return "none"
    tight = sorted({s.how for s in pre.segments if s.bound_bytes >= peak})
    if tight:
        return "; ".join(tight)
    if warm_bound >= peak:
        return "series-parallel lower bound met by the warm start"
    return "structural bound met by the incumbent"
