"""Answers of the delta-MoE experiments, computed from the published tables and traces only.

Reads ``moe-results/1``, ``moe-load/1`` and the routing traces as typed
records, and returns a JSON-able dict: k vs accuracy (with a linear fit), load
balance per k, the accuracy/compute points of every gate with their Pareto
front, the plain answer to "does dynamic k reach the best fixed-k accuracy
with fewer expert evaluations", and chosen k against known difficulty.
Intervals are 95% Student-t intervals over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hw.moe.stats import (
    Interval,
    coefficient_of_variation,
    correlation_ci,
    linear_fit,
    mean_ci,
    pareto_front,
    spearman,
)
from traces.moe_load import LoadRow, read_load_rows
from traces.moe_results import ResultRow, read_result_rows
from traces.routing import read_routing

__all__ = ["PUBLISHED_MLP_ACCURACY", "summarize", "summarize_dir", "to_markdown"]

PUBLISHED_MLP_ACCURACY = 0.68
FIXED_K_EXPERIMENTS = {"softmax": "k_vs_accuracy", "probs": "k_vs_accuracy_probs"}
NON_INFERIORITY_MARGIN = 0.01


def _ci(values: Iterable[float]) -> dict[str, float]:
    iv: Interval = mean_ci(list(values))
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}


def _corr_ci(values: Iterable[float]) -> dict[str, float]:
    iv: Interval = correlation_ci(list(values))
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}


def _fit(x: list[int], y: list[float]) -> dict[str, float]:
    slope, intercept, r2 = linear_fit(x, y)
    return {"slope": slope, "intercept": intercept, "r2": r2}


def _setting(r: ResultRow) -> str:
    if r.gate == "topk":
        probs = "(probs)" if r.experiment == FIXED_K_EXPERIMENTS["probs"] else ""
        return f"topk{probs} k={r.train_k}"
    if r.gate == "topp":
        return f"topp p={r.train_p}"
    return f"budget penalty={r.penalty}"


def summarize(
    results: list[ResultRow], loads: list[LoadRow], routing_dir: Path | None = None
) -> dict[str, Any]:
    """Every number the documentation reports, from records (see the module docstring)."""
    out: dict[str, Any] = {}
    base = [r.accuracy for r in results if r.experiment == "baseline"]
    out["baseline_mlp"] = _ci(base) if base else None

    out["fixed_k"] = {
        name: _fixed_k(results, loads, experiment)
        for name, experiment in FIXED_K_EXPERIMENTS.items()
        if any(r.experiment == experiment for r in results)
    }

    # delta-MoE: accuracy against average k and FLOPs
    points: dict[str, list[ResultRow]] = defaultdict(list)
    for r in results:
        mnist = r.experiment in (*FIXED_K_EXPERIMENTS.values(), "delta")
        if r.model == "moe" and r.eval_k is None and mnist:
            points[_setting(r)].append(r)
    table = []
    for name, rows in points.items():
        table.append(
            {
                "setting": name,
                "gate": rows[0].gate,
                "accuracy": _ci(r.accuracy for r in rows),
                "mean_k": _ci(r.mean_k for r in rows),
                "flops_per_sample": float(np.mean([r.flops_per_sample for r in rows])),
            }
        )
    table.sort(key=lambda d: d["mean_k"]["mean"])
    front = pareto_front(
        [d["mean_k"]["mean"] for d in table], [d["accuracy"]["mean"] for d in table]
    )
    for i, d in enumerate(table):
        d["pareto"] = i in front
    out["delta_points"] = table
    out["answer"] = _answer(points)

    out["difficulty"] = _difficulty(results, routing_dir) if routing_dir else {}
    best_moe = max(table, key=lambda d: d["accuracy"]["mean"]) if table else None
    out["best_moe"] = best_moe and {"setting": best_moe["setting"], **best_moe["accuracy"]}
    out["moe_beats_published_mlp"] = bool(
        best_moe and best_moe["accuracy"]["low"] > PUBLISHED_MLP_ACCURACY
    )
    return out


def _fixed_k(results: list[ResultRow], loads: list[LoadRow], experiment: str) -> dict[str, Any]:
    """k vs accuracy (trained at k; trained at k1 evaluated at k2) and load balance per k."""
    out: dict[str, Any] = {}
    kva = [r for r in results if r.experiment == experiment]
    own = [r for r in kva if r.eval_k is None]
    by_k: dict[int, list[ResultRow]] = defaultdict(list)
    for r in own:
        by_k[int(r.train_k or 0)].append(r)
    per_k = {k: _ci(r.accuracy for r in rows) for k, rows in sorted(by_k.items())}
    out["trained"] = per_k
    if len(per_k) >= 2:
        ks = list(per_k)
        out["trained_fit"] = _fit(ks, [per_k[k]["mean"] for k in ks])
    k_big = max(by_k) if by_k else None
    matrix: dict[str, dict[str, dict[str, float]]] = {}
    for tk in sorted(by_k):
        cells: dict[int, list[float]] = defaultdict(list)
        for r in kva:
            if r.train_k == tk and r.eval_k is not None:
                cells[r.eval_k].append(r.accuracy)
        matrix[str(tk)] = {str(ek): _ci(v) for ek, v in sorted(cells.items())}
    out["eval"] = matrix
    if k_big is not None and matrix.get(str(k_big)):
        row = matrix[str(k_big)]
        ks = [int(k) for k in row]
        if len(ks) >= 2:
            out["eval_fit"] = _fit(ks, [row[str(k)]["mean"] for k in ks])

    # load balance per k, for the models trained at that k (own rule) and the K model
    run_gate = {r.run: r for r in kva}
    groups: dict[tuple[str, int | None], list[LoadRow]] = defaultdict(list)
    for lr in loads:
        groups[(lr.run, lr.eval_k)].append(lr)
    own_cv: dict[int, list[float]] = defaultdict(list)
    own_max_share: dict[int, list[float]] = defaultdict(list)
    own_window_cv: dict[int, list[float]] = defaultdict(list)
    big_cv: dict[int, list[float]] = defaultdict(list)
    for (run, eval_k), rows in groups.items():
        meta = run_gate.get(run)
        if meta is None or meta.gate != "topk":
            continue
        counts = np.array([x.samples for x in sorted(rows, key=lambda x: x.expert)])
        cv = coefficient_of_variation(counts)
        if eval_k is None:
            k = int(meta.train_k or 0)
            own_cv[k].append(cv)
            own_max_share[k].append(max(x.share for x in rows))
            own_window_cv[k].append(
                float(
                    np.mean([x.load_std_rps / x.load_mean_rps for x in rows if x.load_mean_rps > 0])
                )
            )
        elif meta.train_k == k_big:
            big_cv[eval_k].append(cv)
    out["load_trained"] = {
        k: {
            "cv": _ci(own_cv[k]),
            "max_share": _ci(own_max_share[k]),
            "window_cv": _ci(own_window_cv[k]),
        }
        for k in sorted(own_cv)
    }
    out["load_k_model_eval"] = {k: _ci(v) for k, v in sorted(big_cv.items())}

    return out


def _answer(points: dict[str, list[ResultRow]]) -> dict[str, Any]:
    """Paired (same seed) accuracy differences of each dynamic setting against the best fixed k."""
    fixed = {n: rows for n, rows in points.items() if rows[0].gate == "topk"}
    if not fixed:
        return {"verdict": "no fixed-k models"}
    best_name = max(fixed, key=lambda n: np.mean([r.accuracy for r in fixed[n]]))
    best = {r.seed: r for r in fixed[best_name]}
    best_k = float(np.mean([r.mean_k for r in best.values()]))
    rows_out = []
    for name, rows in points.items():
        if rows[0].gate == "topk":
            continue
        paired = [(r, best[r.seed]) for r in rows if r.seed in best]
        diff = _ci(r.accuracy - b.accuracy for r, b in paired)
        ratio = _ci(r.expert_evals / b.expert_evals for r, b in paired)
        if diff["n"] >= 2:
            reaches = diff["high"] >= 0.0
            strict = diff["low"] >= -NON_INFERIORITY_MARGIN
            fewer = ratio["high"] < 1.0
        else:  # one seed: point estimates only, never "strict"
            reaches, strict, fewer = diff["mean"] >= 0.0, False, ratio["mean"] < 1.0
        rows_out.append(
            {
                "setting": name,
                "accuracy_diff": diff,
                "expert_evals_ratio": ratio,
                "fewer_evals": fewer,
                "not_significantly_worse": reaches,
                "non_inferior_1pp": strict,
            }
        )
    yes_weak = [d["setting"] for d in rows_out if d["fewer_evals"] and d["not_significantly_worse"]]
    yes_strict = [d["setting"] for d in rows_out if d["fewer_evals"] and d["non_inferior_1pp"]]
    if yes_strict:
        verdict = (
            "yes: " + ", ".join(yes_strict) + f" reach the best fixed-k accuracy ({best_name}) "
            f"within {NON_INFERIORITY_MARGIN:.0%} (95% CI lower bound) "
            "with fewer expert evaluations"
        )
    elif yes_weak:
        verdict = (
            "inconclusive: " + ", ".join(yes_weak) + f" use fewer expert evaluations than "
            f"{best_name} and are not significantly worse, but the interval does not exclude "
            f"a loss of more than {NON_INFERIORITY_MARGIN:.0%}"
        )
    else:
        verdict = (
            f"no: no dynamic-k setting uses fewer expert evaluations than {best_name} "
            "without being significantly less accurate"
        )
    return {
        "best_fixed": best_name,
        "best_fixed_k": best_k,
        "settings": rows_out,
        "verdict": verdict,
    }


def _difficulty(results: list[ResultRow], routing_dir: Path) -> dict[str, Any]:
    """Per setting: Spearman(k, difficulty) and mean k / accuracy per difficulty level."""
    by_setting: dict[str, list[ResultRow]] = defaultdict(list)
    for r in results:
        if r.experiment == "difficulty" and r.routing_trace and r.eval_k is None:
            by_setting[_setting(r)].append(r)
    out: dict[str, Any] = {}
    for name, rows in sorted(by_setting.items()):
        rhos, level_k, level_acc = [], defaultdict(list), defaultdict(list)
        for r in rows:
            path = routing_dir / str(r.routing_trace)
            if not path.exists():
                continue
            trace = read_routing(path)
            diff, k, correct = trace.difficulty, trace.k, trace.correct
            if diff is None:
                continue
            rhos.append(spearman(k, diff))
            for lvl in np.unique(diff):
                level_k[int(lvl)].append(float(k[diff == lvl].mean()))
                if correct is not None:
                    level_acc[int(lvl)].append(float(correct[diff == lvl].mean()))
        out[name] = {
            "spearman_k_difficulty": _corr_ci(x for x in rhos if not math.isnan(x)),
            "mean_k_by_level": {lvl: _ci(v) for lvl, v in sorted(level_k.items())},
            "accuracy_by_level": {lvl: _ci(v) for lvl, v in sorted(level_acc.items())},
        }
    return out


def summarize_dir(results_dir: Path) -> dict[str, Any]:
    """:func:`summarize` on ``moe_results.parquet``, ``moe_load.parquet`` and ``routing/``."""
    from hw.moe.experiments import LOAD_FILE, RESULTS_FILE, ROUTING_DIR

    return summarize(
        read_result_rows(results_dir / RESULTS_FILE),
        read_load_rows(results_dir / LOAD_FILE),
        results_dir / ROUTING_DIR,
    )


def _fmt(ci: dict[str, float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not ci or ci.get("n", 0) == 0:
        return "-"
    m = ci["mean"] * scale
    if ci["n"] < 2 or math.isnan(ci["low"]):
        return f"{m:.{digits}f}"
    half = (ci["high"] - ci["low"]) / 2 * scale
    return f"{m:.{digits}f} ± {half:.{digits}f}"


def _fmt_interval(ci: dict[str, float] | None, digits: int = 2) -> str:
    """Mean [low, high]: for intervals that are not symmetric (correlations)."""
    if not ci or ci.get("n", 0) < 2 or math.isnan(ci["low"]):
        return _fmt(ci, 1, digits)
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def to_markdown(s: dict[str, Any]) -> str:
    """The summary as Markdown tables (accuracies in %, ± half-width of the 95% CI)."""
    lines: list[str] = []
    if s.get("baseline_mlp"):
        lines.append(f"MLP baseline (ours): {_fmt(s['baseline_mlp'])} % (published 68 %)")
    if s.get("best_moe"):
        beats = "yes" if s["moe_beats_published_mlp"] else "no"
        lines.append(
            f"Best MoE: {s['best_moe']['setting']} {_fmt(s['best_moe'])} %; "
            f"beats 68 % (CI lower bound above it): {beats}"
        )
    for family, fk in s["fixed_k"].items():
        lines += _fixed_k_markdown(family, fk)
    lines += [
        "",
        "| setting | accuracy % | mean k | MFLOPs/sample | Pareto |",
        "|---|---|---|---|---|",
    ]
    for d in s["delta_points"]:
        lines.append(
            f"| {d['setting']} | {_fmt(d['accuracy'])} | {_fmt(d['mean_k'], 1, 2)} | "
            f"{d['flops_per_sample'] / 1e6:.3f} | {'yes' if d['pareto'] else ''} |"
        )
    ans = s["answer"]
    if "settings" in ans:
        lines += [
            "",
            f"Against the best fixed k ({ans['best_fixed']}), paired by seed:",
            "",
            "| setting | accuracy diff pp | expert evals ratio |",
            "|---|---|---|",
        ]
        for d in ans["settings"]:
            lines.append(
                f"| {d['setting']} | {_fmt(d['accuracy_diff'])} | "
                f"{_fmt(d['expert_evals_ratio'], 1, 2)} |"
            )
    lines += ["", f"**Answer:** {ans['verdict']}."]
    if s.get("difficulty"):
        lines += [
            "",
            "| setting | Spearman(k, difficulty) | mean k by level | accuracy % by level |",
        ]
        lines.append("|---|---|---|---|")
        for name, d in s["difficulty"].items():
            ks = ", ".join(_fmt(v, 1, 2) for v in d["mean_k_by_level"].values())
            accs = ", ".join(_fmt(v) for v in d["accuracy_by_level"].values())
            rho = _fmt_interval(d["spearman_k_difficulty"])
            lines.append(f"| {name} | {rho} | {ks} | {accs} |")
    return "\n".join(lines) + "\n"


def _fixed_k_markdown(family: str, fk: dict[str, Any]) -> list[str]:
    lines = ["", f"Fixed k, weights = {family}:", ""]
    lines += ["| train k | accuracy % (own k) | CV of expert load | max expert share |"]
    lines.append("|---|---|---|---|")
    for k, acc in fk["trained"].items():
        ld = fk["load_trained"].get(k, {})
        cv, share = _fmt(ld.get("cv"), 1, 3), _fmt(ld.get("max_share"), 1, 3)
        lines.append(f"| {k} | {_fmt(acc)} | {cv} | {share} |")
    if "trained_fit" in fk:
        f = fk["trained_fit"]
        lines.append(
            f"\nLinear fit over trained k: slope {f['slope'] * 100:.2f} pp per expert, "
            f"R² {f['r2']:.2f}"
        )
    matrix = fk["eval"]
    if matrix:
        eval_ks = sorted({int(k) for row in matrix.values() for k in row})
        lines += ["", "| train k \\ eval k | " + " | ".join(map(str, eval_ks)) + " |"]
        lines.append("|---" * (len(eval_ks) + 1) + "|")
        for tk, row in matrix.items():
            cells = [_fmt(row.get(str(k))) for k in eval_ks]
            lines.append(f"| {tk} | " + " | ".join(cells) + " |")
    if fk.get("load_k_model_eval"):
        lines += ["", "CV of expert load, largest-k model evaluated at each k: "]
        lines.append(
            ", ".join(f"k={k}: {_fmt(v, 1, 3)}" for k, v in fk["load_k_model_eval"].items())
        )
    return lines
