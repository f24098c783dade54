"""The MILP solvers behind ``scheduler.ilp``: HiGHS through highspy (default) and PuLP's
bundled CBC (fallback), each with a wall-clock deadline and the proven
bound when the solver exposes one. Kept apart from the model so the model reads alone."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import pulp

from scheduler.errors import SolverUnavailableError

__all__ = ["pick_solver", "run_cbc", "run_highs"]

_THREADS = 2


def _highs_available() -> bool:
    return bool(pulp.HiGHS().available())


def _cbc_available() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(pulp.PULP_CBC_CMD(msg=False).available())


def pick_solver(solver: str | None) -> str:
    name = (solver or "").lower()
    if name in ("", "highs"):
        if _highs_available():
            return "highs"
        if name == "highs":
            raise SolverUnavailableError("HiGHS was asked for but highspy is not installed")
    if name in ("", "cbc"):
        if _cbc_available():
            return "cbc"
        raise SolverUnavailableError("no MILP solver: install highspy, or PuLP's bundled CBC")
    raise SolverUnavailableError(f"unknown solver {solver!r}; choose highs or cbc")


class _DeadlineHiGHS(pulp.HiGHS):  # type: ignore[misc,valid-type]
    """PuLP's highspy interface with the time limit set just before ``run()``, so the
    time PuLP spends handing the model to HiGHS (seconds on a loaded box) counts."""

    def __init__(self, deadline_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deadline_s = deadline_s

    def callSolver(self, lp: pulp.LpProblem) -> None:
        left = max(0.05, self._deadline_s - time.perf_counter())
        lp.solverModel.setOptionValue("time_limit", float(left))
        lp.solverModel.run()


def run_highs(prob: pulp.LpProblem, limit_s: float) -> tuple[str, float | None, float | None, bool]:
    """Solve with HiGHS; (status, objective or None, proven bound or None, infeasible)."""
    import highspy

    solver = _DeadlineHiGHS(
        time.perf_counter() + limit_s, msg=False, threads=_THREADS, gapRel=0.0, gapAbs=0.999
    )
    prob.solve(solver)
    h = prob.solverModel
    status = h.getModelStatus()
    text = h.modelStatusToString(status)
    if status == highspy.HighsModelStatus.kInfeasible:
        return text, None, None, True
    info = h.getInfo()
    objective = float(info.objective_function_value) if info.primal_solution_status >= 2 else None
    if status == highspy.HighsModelStatus.kOptimal and objective is not None:
        return "optimal", objective, objective, False
    bound = float(info.mip_dual_bound)
    return text, objective, bound if math.isfinite(bound) else None, False


def run_cbc(prob: pulp.LpProblem, limit_s: float) -> tuple[str, float | None, float | None, bool]:
    """Solve with CBC; PuLP does not expose CBC's bound, so only optimality is reported."""
    with warnings.catch_warnings():  # PuLP 3.3 deprecates the bundled CBC for 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(
            msg=False, timeLimit=limit_s, threads=_THREADS, gapRel=0.0, gapAbs=0.999
        )
    prob.solve(solver)
    if prob.status == pulp.LpStatusInfeasible:
        return "infeasible", None, None, True
    objective = pulp.value(prob.objective)
    status = pulp.LpStatus.get(prob.status, "unknown")
    if objective is None or prob.sol_status not in (
        pulp.LpSolutionOptimal,
        pulp.LpSolutionIntegerFeasible,
    ):
        return status, None, None, False
    if prob.sol_status == pulp.LpSolutionOptimal:
        return "optimal", float(objective), float(objective), False
    return status, float(objective), None, False
