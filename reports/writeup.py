"""The experimental write-up (``docs/results.md``), generated from the report's result files.

One section per research question: setup, the report's figures, numbers with
their uncertainty, and a plain conclusion that the numbers decide (so a re-run
with different outcomes rewrites the conclusion too). Spreads over seeds and
intervals are read from the tables or ``hw moe``'s summary; nothing is re-run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from reports.chart import MIB
from reports.figures_queues import points_table
from reports.inputs import Inputs
from traces.profile import NOISY_PROFILE

__all__ = ["render_writeup"]


def _md_table(df: pl.DataFrame, floats: str = "{:.4g}") -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return floats.format(v)
        return "" if v is None else str(v)

    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = "".join("| " + " | ".join(cell(v) for v in r) + " |\n" for r in df.iter_rows())
    return head + rows


def _ci(d: dict, scale: float = 100.0, unit: str = " %") -> str:
    return f"{d['mean'] * scale:.1f}{unit} [{d['low'] * scale:.1f}, {d['high'] * scale:.1f}]"


def _ci2(d: dict) -> str:
    return f"{d['mean']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def _rho(d: dict) -> str:
    if d["mean"] != d["mean"]:  # NaN: k never varied, so no rank correlation exists
        return "undefined (k constant)"
    if any(v != v for v in (d["low"], d["high"])):  # NaN: too few seeds for an interval
        return f"{d['mean']:+.2f} (no interval)"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _missing(what: str) -> str:
    return f"_No {what} among the inputs; run the step that writes it (see the demo)._\n"


def _accuracy_vs_k(inp: Inputs, report: str) -> str:
    out = ["## 1. Accuracy against k\n"]
    r = inp.moe_results
    if r is None:
        return "\n".join([*out, _missing("moe-results/1 table")])
    rows = r.filter(pl.col("experiment") == "k_vs_accuracy", pl.col("eval_k").is_null())
    ds = ", ".join(sorted(set(rows["dataset"].to_list())))
    out.append(
        f"**Setup.** MoE classifiers ({rows['n_experts'].max()} experts) on {ds}, trained and "
        f"evaluated with a fixed top-k gate, k = {sorted(set(rows['train_k'].to_list()))}, "
        f"{rows['seed'].n_unique()} seeds each; baseline MLP of the MNIST-1D paper "
        f"(published 68 %). Figure: [accuracy against k]({report}#moe-accuracy-k).\n"
    )
    table = (
        rows.group_by("train_k")
        .agg(
            (pl.col("accuracy").mean() * 100).alias("accuracy_mean_pct"),
            (pl.col("accuracy").std() * 100).alias("accuracy_std_pct"),
            pl.len().alias("seeds"),
        )
        .sort("train_k")
    )
    out.append("**Numbers** (mean and standard deviation over seeds):\n")
    out.append(_md_table(table, "{:.2f}"))
    s = inp.moe_summary or {}
    trained = s.get("fixed_k", {}).get("softmax", {}).get("trained", {})
    base = s.get("baseline_mlp")
    if trained:
        cis = "; ".join(f"k={k}: {_ci(v)}" for k, v in trained.items())
        mlp = f" Our MLP baseline: {_ci(base)}." if base else ""
        out.append(f"\n95 % confidence intervals (from `summary.json`): {cis}.{mlp}\n")
        ks = sorted(trained, key=int)
        lo, hi = trained[ks[0]], max(trained.values(), key=lambda v: v["mean"])
        best_k = next(k for k in ks if trained[k] is hi)
        if hi["low"] > lo["high"]:
            concl = (
                f"more experts per sample help: k={best_k} beats k={ks[0]} with "
                "non-overlapping 95 % intervals"
            )
        else:
            concl = (
                f"no significant effect of k: the best k ({best_k}, {hi['mean'] * 100:.1f} %) "
                f"and k={ks[0]} ({lo['mean'] * 100:.1f} %) have overlapping 95 % intervals"
            )
        beats = s.get("moe_beats_published_mlp")
        extra = (
            " The best MoE setting beats the published MLP (68 %) with its whole interval."
            if beats
            else " No MoE setting beats the published MLP (68 %) with its whole interval."
        )
        out.append(f"\n**Conclusion.** On this data, {concl}.{extra}\n")
    return "\n".join(out)


def _load_vs_k(inp: Inputs, report: str) -> str:
    out = ["## 2. Expert load against k\n"]
    ld = inp.moe_load
    if ld is None:
        return "\n".join([*out, _missing("moe-load/1 table")])
    rows = ld.filter((pl.col("gate") == "topk") & pl.col("eval_k").is_null()).with_columns(
        pl.col("mean_k").round(0).cast(pl.Int64).alias("k")
    )
    cv = rows.group_by("run", "k").agg(
        (pl.col("samples").std(ddof=0) / pl.col("samples").mean()).alias("cv")
    )
    table = (
        cv.group_by("k")
        .agg(
            pl.col("cv").mean().alias("load_cv_mean"),
            pl.col("cv").std().alias("load_cv_std"),
            pl.len().alias("models"),
        )
        .sort("k")
    )
    out.append(
        "**Setup.** Test samples routed to each expert by the top-k models of question 1; "
        "balance is the coefficient of variation (CV) of the per-expert counts (0 = perfectly "
        f"even), as `moe-load/1` defines it. Figure: [samples per expert]({report}#moe-load-k).\n"
    )
    out.append("**Numbers** (CV, mean and standard deviation over trained models):\n")
    out.append(_md_table(table, "{:.3f}"))
    first, last = table.row(0, named=True), table.row(-1, named=True)
    trend = "more even" if last["load_cv_mean"] < first["load_cv_mean"] else "less even"
    out.append(
        f"\n**Conclusion.** Load becomes {trend} as k grows (CV {first['load_cv_mean']:.2f} at "
        f"k={first['k']} vs {last['load_cv_mean']:.2f} at k={last['k']}).\n"
    )
    return "\n".join(out)


def _delta(inp: Inputs, report: str) -> str:
    out = ["## 3. delta-MoE: a per-sample k\n"]
    s = inp.moe_summary
    if not s or "answer" not in s:
        return "\n".join([*out, _missing("hw moe summary.json")])
    ans = s["answer"]
    out.append(
        "**Setup.** Dynamic gates (top-p: smallest set of experts holding mass p; budget: a "
        "learned k with a compute penalty) against the best fixed k "
        f"(`{ans['best_fixed']}`), same data and seeds. Figures: [Pareto front]"
        f"({report}#moe-delta-pareto), [k against difficulty]({report}#moe-k-difficulty).\n"
    )
    rows = [
        {
            "setting": a["setting"],
            "accuracy diff (pp, 95 % CI)": _ci(a["accuracy_diff"], unit=""),
            "expert evals ratio": _ci2(a["expert_evals_ratio"]),
            "fewer evals": a["fewer_evals"],
            "not significantly worse": a["not_significantly_worse"],
        }
        for a in ans["settings"]
    ]
    out.append("**Numbers** (difference to the best fixed k; ratio of expert evaluations):\n")
    out.append(_md_table(pl.DataFrame(rows)))
    good = [
        a["setting"] for a in ans["settings"] if a["fewer_evals"] and a["not_significantly_worse"]
    ]
    diff = s.get("difficulty", {})
    rho = "; ".join(
        f"{k}: Spearman ρ(k, difficulty) = {_rho(v['spearman_k_difficulty'])}"
        for k, v in diff.items()
        if v.get("spearman_k_difficulty")
    )
    concl = (
        f"{len(good)} dynamic setting(s) use fewer expert evaluations without being "
        f"significantly less accurate: {', '.join(good)}."
        if good
        else "no dynamic setting saves compute without a significant loss of accuracy."
    )
    out.append(f"\n**Conclusion.** {concl} k against known difficulty: {rho or 'not measured'}.\n")
    return "\n".join(out)


def _tradeoff(inp: Inputs, report: str) -> str:
    out = ["## 4. The B trade-off\n"]
    if not inp.serve:
        return "\n".join([*out, _missing("serve-summary/1 file")])
    pts = points_table(inp.serve)
    out.append(
        "**Setup.** Each expert runs a batch when B samples wait (or after the max wait); "
        "Poisson arrivals at the listed rates. Measured by `hw serve`, simulated by `sim run`. "
        f"Figures: [against B]({report}#queues-vs-B), [trade-off]({report}#queues-tradeoff), "
        f"[batch sizes]({report}#queues-batches).\n"
    )
    table = (
        pts.group_by("series", "B")
        .agg(
            pl.col("offered_rps").mean(),
            pl.col("throughput_rps").mean(),
            (pl.col("latency_p50_s").mean() * 1e3).alias("p50_ms"),
            (pl.col("latency_p99_s").mean() * 1e3).alias("p99_ms"),
            pl.col("mean_batch_size").mean(),
            pl.len().alias("runs"),
        )
        .sort("series", "B")
    )
    out.append(
        "**Numbers** (mean over runs of a series, e.g. simulator seeds; offered = counted "
        "arrivals over their span, so a short measured run's offered rate differs from the "
        "nominal one):\n"
    )
    out.append(_md_table(table))
    lines = []
    for (series,), d in table.group_by(["series"], maintain_order=True):
        a, b = d.row(0, named=True), d.row(-1, named=True)
        thr = d["throughput_rps"]
        spread = float((thr.max() - thr.min()) / thr.mean() * 100)  # type: ignore[operator]
        verdict = (
            f"throughput flat in B (within {spread:.1f} %), so larger B only adds latency"
            if spread < 2
            else f"throughput varies by {spread:.1f} % across B"
        )
        lines.append(
            f"{series}: B {a['B']}→{b['B']} moves p99 {a['p99_ms']:.2f}→{b['p99_ms']:.2f} ms and "
            f"throughput {a['throughput_rps']:.1f}→{b['throughput_rps']:.1f} req/s; {verdict}"
        )
    out.append("\n**Conclusion.** " + "; ".join(lines) + ".\n")
    return "\n".join(out)


def _fidelity(inp: Inputs, report: str) -> str:
    out = ["## 5. Simulator fidelity\n"]
    c = inp.simcheck
    if c is None or not c.height:
        return "\n".join([*out, _missing("saved `sim check --json` output")])
    out.append(
        "**Setup.** `sim check` replays each measured run (same arrivals, routing, B, costs "
        "from the latency profile) in the SimPy model and compares throughput, p50 and p99. "
        f"Figure: [error per point]({report}#sim-vs-measured)."
        + _probed_state(c)
        + _pooled_profiles(c)
        + _whole_lock(c)
        + "\n"
    )
    per = (
        c.group_by("metric")
        .agg(
            pl.col("error_pct").abs().max().alias("worst_abs_error_pct"),
            pl.col("error_pct").abs().median().alias("median_abs_error_pct"),
            pl.col("tolerance_pct").first(),
            (pl.col("error_pct").abs() <= pl.col("tolerance_pct")).sum().alias("points_within"),
            pl.len().alias("points"),
        )
        .sort("metric")
    )
    out.append("**Numbers:**\n")
    out.append(_md_table(per, "{:.2f}"))
    within = per["points_within"].sum()
    total = per["points"].sum()
    bad = c.filter(pl.col("error_pct").abs() > pl.col("tolerance_pct"))
    misses = ", ".join(
        f"{r['run']} B={r['B']} {r['metric']} {r['error_pct']:+.1f} %"
        for r in bad.iter_rows(named=True)
    )
    out.append(
        f"\n**Conclusion.** {within} of {total} (point, metric) pairs are within tolerance. "
        + ("The model is faithful at every point checked." if not misses else f"Outside: {misses}.")
        + _noisy_profile(c)
        + "\n"
    )
    return "\n".join(out)


def _probed_state(check: pl.DataFrame) -> str:
    """Say where the host model took each run's host speed from: the run's own alone gates,
    the speed probes, or (nothing said) the profile; and its machine state, where from the
    run's alone gates."""
    said: list[str] = []  # each sentence without its subject, added below
    scales = _range_of(check, "run_speed")
    if scales is not None:
        said.append(
            "took the host's speed during each run from the run's own "
            f"gates that ran alone: {_span(*scales)} the profile's "
            "(`docs/system-model.md` §8)."
        )
    experts = _range_of(check, "run_expert_factor")
    if experts is not None:
        said.append(
            f"took the expert calls' time from the run's calls with no gate running: "
            f"{_span(*experts)} the profile's."
        )
    combines = _range_of(check, "run_combine_factor")
    if combines is not None:
        said.append(
            f"took the worker's combine time from the run's combines with no gate "
            f"running: {_span(*combines)} the profile's."
        )
    wakes = _range_of(check, "run_handoff_factor")
    if wakes is not None:
        said.append(
            f"took the worker's wake (its hand-off and first gather after a wait) from the "
            f"run's ways from a gate to the batch it formed: {_span(*wakes)} the profile's."
        )
    if "worker_join" in check.columns and check["worker_join"].fill_null(False).any():
        said.append(
            "let a worker woken while the gate went on run during the next gate, "
            "as often as the profile measured."
        )
    met = _range_of(check, "run_stalls_hz")
    if met is not None and met[1] > 0:
        said.append(
            f"replayed the machine's stalls (a few ms in which every step runs "
            "several times slower) that each run's own gates showed, where they were: "
            f"{met[0]:.2f}–{met[1]:.2f} per second."
        )
    elif met is not None:
        said.append(
            "looked for the machine's stalls (a few ms in which every step runs "
            "several times slower) in each run's own gates and found none."
        )
    elif "stalls" in check.columns and check["stalls"].fill_null(False).any():
        said.append(
            "ran the machine's stalls (a few ms in which every step runs several "
            "times slower) as often and as long as the profile found them."
        )
    if "state_from_run" in check.columns and check["state_from_run"].fill_null(False).any():
        said.append(
            "read how the host's speed moved within each run (the machine's state: "
            "its slow and fast spells) from the same gates where a run had enough of them."
        )
    out = "".join(f" {'It' if i else 'The shared-host model'} {s}" for i, s in enumerate(said))
    factors = _range_of(check, "speed_factor")
    if factors is not None:
        lo, hi = factors
        where = " Elsewhere it" if out else " The shared-host model"
        out += (
            f"{where} took each run's machine state from the host speed probe "
            f"that `hw serve` and `hw profile` both take: the host idled ×{lo:.2f}–×{hi:.2f} as "
            "slowly as while profiled (`docs/system-model.md` §8)."
        )
    return out


def _range_of(check: pl.DataFrame, column: str) -> tuple[float, float] | None:
    """(min, max) of a column's values, None where it is absent or all null."""
    if column not in check.columns:
        return None
    values = check[column].drop_nulls()
    if not len(values):
        return None
    return float(values.min()), float(values.max())  # type: ignore[arg-type]


def _span(lo: float, hi: float) -> str:
    """×lo–×hi, or ×lo when the two print alike."""
    return f"×{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"×{lo:.2f}–×{hi:.2f}"


def _pooled_profiles(check: pl.DataFrame) -> str:
    """Say so when predictions are the mean of several profiles' (``sim check --profile``
    given more than once)."""
    most = check["profiles"].max() if "profiles" in check.columns else None
    if not isinstance(most, int) or most < 2:
        return ""
    return (
        f" Where more than one profile was given (up to {most}), each run was predicted as "
        "the mean of every profile's prediction: a profile holds the machine's state while "
        "it was taken, as a run holds its own (`docs/system-model.md`)."
    )


def _whole_lock(check: pl.DataFrame) -> str:
    """Say so when the host model's lock was won or lost whole (``sim check``'s default
    since session 12) rather than shared evenly (``--host-lock even``, and older outputs)."""
    if "host_lock" not in check.columns or "whole" not in check["host_lock"].to_list():
        return ""
    return (
        " The shared-host model let the interpreter lock be won or lost whole at each step "
        "(`--host-lock whole`), so that a request's worker steps can wait out several gates "
        "in a row, instead of sharing it evenly (`docs/system-model.md` §8)."
    )


def _noisy_profile(check: pl.DataFrame) -> str:
    """A caveat when the profile behind the predictions was measured on a moving machine."""
    worst = check["profile_variation"].max() if "profile_variation" in check.columns else None
    if not isinstance(worst, float) or worst <= NOISY_PROFILE:
        return ""
    return (
        f" Caveat: the latency profile behind these predictions varied by {worst:.0%} between "
        "hw profile's passes: the machine changed speed while it was measured, and the "
        "errors above carry that; profile again on a quiet machine before reading them as "
        "the model's."
    )


def _steps(inp: Inputs, report: str) -> str:
    out = ["## 6. Eager vs torch.compile peak under activation checkpointing\n"]
    m = inp.memstudy
    if m is None or not m.filter(pl.col("study") == "step").height:
        return "\n".join([*out, _missing("memstudy/1 step rows")])
    rows = m.filter(pl.col("study") == "step")
    out.append(
        "**Setup.** One forward+backward step per model, measured peak above parameters "
        f"(`hw memstudy`, torch {rows['torch'][0]}, {rows['dtype'][0]}); eager vs "
        "torch.compile (Inductor `reorder_for_peak_memory` on/off), checkpointing none/full. "
        f"Figure: [step peaks]({report}#memory-steps).\n"
    )
    wide = (
        rows.with_columns(
            pl.concat_str(
                [
                    pl.col("mode"),
                    pl.lit("/ac="),
                    pl.col("ac"),
                    pl.when(pl.col("reorder_for_peak_memory") == False)  # noqa: E712
                    .then(pl.lit("/no-reorder"))
                    .otherwise(pl.lit("")),
                ]
            ).alias("variant"),
            (pl.col("measured_peak_bytes") / MIB).alias("MiB"),
        )
        .pivot(on="variant", index=["model", "batch"], values="MiB")
        .sort("model")
    )
    out.append("**Numbers** (measured peak, MiB; one measurement each, the allocator is exact):\n")
    out.append(_md_table(wide, "{:.3f}"))
    lines, worse = [], []
    for r in wide.iter_rows(named=True):
        e0, e1 = r.get("eager/ac=none"), r.get("eager/ac=full")
        c0, c1 = r.get("compile/ac=none"), r.get("compile/ac=full")
        if None in (e0, e1, c0, c1):
            continue
        lines.append(
            f"{r['model']}: checkpointing saves {100 * (1 - e1 / e0):.0f} % eager, "
            f"{100 * (1 - c1 / c0):.0f} % compiled"
        )
        if c1 > e1:
            worse.append(f"{r['model']} (+{100 * (c1 / e1 - 1):.0f} %)")
    tail = (
        "With checkpointing, the compiled step peaks above eager for " + ", ".join(worse) + "."
        if worse
        else "With checkpointing, the compiled step never peaks above eager."
    )
    out.append("\n**Conclusion.** " + "; ".join(lines) + ". " + tail + "\n")
    return "\n".join(out)


def _orders(inp: Inputs, report: str) -> str:
    out = ["## 7. SP vs ILP vs heuristics\n"]
    c = inp.compare
    m = inp.memstudy
    if c is not None and c.height:
        out.append(
            "**Setup.** `sched compare`: each method's order replayed by the one memory "
            "simulator; gap = (peak − best proven lower bound) / peak. Figure: "
            f"[orders vs bound]({report}#memory-orders).\n"
        )
        t = c.with_columns(
            (
                (pl.col("peak_bytes") - pl.col("best_lower_bound_bytes"))
                / pl.col("peak_bytes")
                * 100
            ).alias("gap_pct")
        )
        wide = t.pivot(on="method", index="graph", values="gap_pct").sort("graph")
        out.append("**Numbers** (gap to the best lower bound, %; 0 = proven optimal):\n")
        out.append(_md_table(wide, "{:.2f}"))
        hits = (
            t.group_by("method")
            .agg((pl.col("gap_pct") <= 1e-9).sum().alias("at_bound"), pl.len().alias("graphs"))
            .sort(["at_bound", "method"], descending=[True, False])  # ties by name: stable
        )
        summary = ", ".join(f"{r[0]} {r[1]}/{r[2]}" for r in hits.iter_rows())
        worst = t.group_by("method").agg(pl.col("gap_pct").max()).sort(["gap_pct", "method"])
        gaps = ", ".join(f"{m} {g:.1f} %" for m, g in worst.iter_rows())
        out.append(
            f"\n**Conclusion.** Graphs on which each method reaches the best proven bound: "
            f"{summary}. Worst gap per method: {gaps}.\n"
        )
    elif m is not None and m.filter(pl.col("study") == "order").height:
        rows = m.filter((pl.col("study") == "order") & (pl.col("mode") == "fx"))
        wide = (
            rows.with_columns((pl.col("predicted_peak_bytes") / MIB).alias("MiB"))
            .pivot(on="method", index=["model", "graph"], values="MiB")
            .sort("model", "graph")
        )
        out.append(
            "**Setup.** Predicted peak (MiB) of each method's order of each captured graph "
            "(memstudy/1); no saved `sched compare` output, so no lower bound column.\n"
        )
        out.append(_md_table(wide, "{:.3f}"))
        best = rows.group_by("model", "graph").agg(pl.col("predicted_peak_bytes").min().alias("m"))
        hits = (
            rows.join(best, on=["model", "graph"])
            .group_by("method")
            .agg((pl.col("predicted_peak_bytes") == pl.col("m")).sum().alias("n"), pl.len())
            .sort("n", descending=True)
        )
        summary = ", ".join(f"{m} {n}/{k}" for m, n, k in hits.iter_rows())
        out.append(
            f"\n**Conclusion.** Graphs on which each method finds the lowest peak of all "
            f"methods: {summary}.\n"
        )
    else:
        out.append(_missing("`sched compare --json` output or memstudy/1 order rows"))
    return "\n".join(out)


def _verified(inp: Inputs) -> str:
    v = inp.verify
    if v is None or not v.height:
        return ""
    lines = [
        f"`hw verify` ran the chosen `{r['method']}` order of `{r['graph']}`: predicted "
        f"{r['predicted_peak_bytes']:,} bytes, measured {r['measured_peak_bytes']:,} bytes"
        + (
            f" (the captured order measured {r['default_measured_peak_bytes']:,} bytes)"
            if r["default_measured_peak_bytes"] is not None
            else ""
        )
        for r in v.iter_rows(named=True)
    ]
    return "\n" + ". ".join(lines) + ".\n"


def _predicted(inp: Inputs, report: str) -> str:
    out = ["## 8. Predicted vs measured peak\n"]
    m = inp.memstudy
    if m is None or not m.filter(pl.col("study") == "order").height:
        return "\n".join([*out, _missing("memstudy/1 order rows"), _verified(inp)])
    rows = m.filter((pl.col("study") == "order") & pl.col("predicted_peak_bytes").is_not_null())
    out.append(
        "**Setup.** Each method's order of each captured graph run exactly in that order "
        "(`hw verify` / `hw memstudy`), measured peak vs the simulator's prediction. At the "
        "Inductor level the prediction is graph/1 with the compiled wrapper's decisions for "
        "that order folded in (buffer reuse, aliases, CPU kernel groups; "
        "`predicted_with_reuse_bytes`, see docs/memory-capture.md); `plain` columns are graph/1 "
        f"as captured. Figure: [predicted vs measured]({report}#memory-predicted-measured).\n"
    )
    predicted = pl.coalesce("predicted_with_reuse_bytes", "predicted_peak_bytes")

    def error_pct(pred: pl.Expr) -> pl.Expr:
        return (pl.col("measured_peak_bytes") - pred) / pred * 100

    err = rows.with_columns(
        error_pct(predicted).abs().alias("error_pct"),
        error_pct(pl.col("predicted_peak_bytes")).abs().alias("plain_error_pct"),
    )
    per = (
        err.group_by("mode")
        .agg(
            pl.len().alias("orders"),
            pl.col("error_pct").max().alias("worst_abs_error_pct"),
            pl.col("error_pct").mean().alias("mean_abs_error_pct"),
            pl.col("plain_error_pct").max().alias("plain_worst_abs_error_pct"),
            pl.col("order_applied").sum().alias("applied"),
        )
        .sort("mode")
    )
    out.append("**Numbers:**\n")
    out.append(_md_table(per, "{:.3f}"))
    worst = {r["mode"]: r["worst_abs_error_pct"] for r in per.iter_rows(named=True)}
    parts = [f"{k} level worst {v:.2f} %" for k, v in worst.items()]
    out.append(
        "\n**Conclusion.** "
        + "; ".join(parts)
        + ". The graph-level model predicts the FX-level peak of a given order "
        + ("exactly." if worst.get("fx", 1.0) < 0.01 else "closely but not exactly.")
        + "\n"
    )
    out.append(_verified(inp))
    return "\n".join(out)


def render_writeup(inp: Inputs, report: str = "report.html", command: str = "") -> str:
    """The whole ``results.md``: a header naming its inputs, then one section per question."""
    head = [
        "# Results\n",
        "_Generated by `report writeup` from the result files listed at the end; do not edit "
        "by hand: re-run the experiments and this command to regenerate._\n",
    ]
    if command:
        head.append(f"Regenerate with:\n\n```bash\n{command}\n```\n")
    head.append(
        f"Figures live in the interactive report (`{report}`; built by `report build` from the "
        "same files); the links below point at its sections.\n"
    )
    body = [
        f(inp, report)
        for f in (
            _accuracy_vs_k,
            _load_vs_k,
            _delta,
            _tradeoff,
            _fidelity,
            _steps,
            _orders,
            _predicted,
        )
    ]
    files = "\n".join(f"- `{Path(p).as_posix()}`" for p in inp.files)
    return "\n".join(head + body) + f"\n## Input files\n\n{files}\n"
