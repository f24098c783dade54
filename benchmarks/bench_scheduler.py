"""Scheduler benchmarks: every method on every synthetic family and size, plus the targets.

Run from the repository root (see ``benchmarks/README.md``)::

    .venv/bin/python benchmarks/bench_scheduler.py [--quick] [--sizes 50,1000]
        [--families layered,sp] [--methods given,lpmf] [--no-targets] [--out results.json]

For each family a rich table lists, per size and method, the solve time, the peak, its
ratio to ``given`` and to ``lpmf``, and its gap to the best lower bound any method proved
(the trivial bound included). Methods that do not scale are skipped past a size cap and
the table says so. ``--out`` saves every figure as JSON (atomically). The targets:

* the memory simulator replays a 1,000,000-node graph in under 1 s;
* SP recognition plus ordering of a 10,000-node SP graph in under 5 s;
* ``ilp`` proves the optimum of 100-node graphs within 60 s;
* ``hybrid`` finishes 10,000-node transformer-like graphs within 120 s with a peak no
  worse than every heuristic.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from scheduler.memory import simulate, trivial_lower_bound
from scheduler.result import ScheduleResult
from scheduler.strategies import get_strategy
from scheduler.synthetic import FAMILIES, make, series_parallel, transformer_fwbw
from scheduler.synthetic import layered_dag as layered
from traces.atomic import atomic_write_text
from traces.cli_support import cli_errors, parse_int_list
from traces.errors import DeltasimError

__all__ = ["Row", "Target", "main", "run_family", "run_targets"]

METHODS = ("given", "lpmf", "bfs", "dfs", "sp", "ilp", "hybrid", "best")
CAPS = {"ilp": 150, "hybrid": 10_000, "best": 10_000}
"""Largest graph (nodes) each method is run on; others run at every size."""
HEURISTICS = ("lpmf", "bfs", "dfs")
DEFAULT_SIZES = "50,100,1000,10000,100000"
QUICK_SIZES = "50,1000"
DEFAULT_FAMILIES = "layered,sp,transformer,chain,in-tree,out-tree"

out = Console()
if not out.is_terminal:  # piped into a file: wide enough for every column
    out = Console(width=132)
err = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Row:
    """One method on one graph."""

    family: str
    size: int
    nodes: int
    method: str
    seconds_s: float | None
    peak_bytes: int | None
    lower_bound_bytes: int | None
    optimal: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """One of the stated performance targets and what was measured."""

    name: str
    measured: str
    passed: bool
    detail: str


def _strategy(name: str) -> Callable[..., ScheduleResult]:
    return get_strategy(name)


def _is_sp(graph: Any) -> bool:
    from scheduler.sp import recognize

    return bool(recognize(graph).is_sp)


def run_family(
    family: str, sizes: list[int], methods: list[str], time_limit_s: float, seed: int
) -> list[Row]:
    """Every method on one graph of each size of ``family``."""
    rows: list[Row] = []
    for size in sizes:
        with err.status(f"{family} {size}: building"):
            graph = make(family, size, seed=seed).to_graph(validate=size <= 20_000)
        n = len(graph)
        rows.append(
            Row(family, size, n, "trivial LB", None, None, trivial_lower_bound(graph), False)
        )
        sp_ok: bool | None = None
        for method in methods:
            cap = CAPS.get(method)
            if cap is not None and n > cap:
                rows.append(Row(family, size, n, method, None, None, None, False, f"> {cap}"))
                continue
            if method == "sp":
                try:
                    sp_ok = _is_sp(graph) if sp_ok is None else sp_ok
                except ImportError:
                    sp_ok = False
                if not sp_ok:
                    rows.append(Row(family, size, n, method, None, None, None, False, "not SP"))
                    continue
            with err.status(f"{family} {size}: {method}"):
                t0 = time.perf_counter()
                try:
                    r = _strategy(method)(graph, time_limit_s=time_limit_s)
                except ImportError:
                    rows.append(Row(family, size, n, method, None, None, None, False, "missing"))
                    continue
                except DeltasimError as exc:
                    note = f"{type(exc).__name__}: {exc}"[:60]
                    rows.append(Row(family, size, n, method, None, None, None, False, note))
                    continue
                seconds = time.perf_counter() - t0
            rows.append(
                Row(family, size, n, method, seconds, r.peak_bytes, r.lower_bound_bytes, r.optimal)
            )
    return rows


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.2f}"


COLUMNS = ("size", "nodes", "method", "seconds", "peak MiB", "x given", "x lpmf", "gap to LB")
NOTE = (
    "gap = (peak - best lower bound over all methods, trivial bound included) / peak; "
    + ", ".join(f"{m} runs up to {c:,} nodes" for m, c in CAPS.items())
    + "; sp runs only on series-parallel graphs."
)


def family_cells(rows: list[Row]) -> list[list[list[str]]]:
    """Formatted cells per size group: size, nodes, method, seconds, peak, ratios, gap,
    and "opt" or the reason a method was skipped."""
    groups = []
    for size in sorted({r.size for r in rows}):
        group = [r for r in rows if r.size == size]
        bound = max((r.lower_bound_bytes or 0) for r in group)
        ref = {r.method: r.peak_bytes for r in group if r.peak_bytes is not None}
        cells = []
        for r in group:
            if r.method == "trivial LB":
                continue
            head = [str(size), str(r.nodes), r.method]
            if r.peak_bytes is None:
                cells.append([*head, "", "", "", "", "", r.note])
                continue
            ratio = [
                f"{r.peak_bytes / ref[k]:.3f}" if ref.get(k) else "-" for k in ("given", "lpmf")
            ]
            gap = (r.peak_bytes - bound) / r.peak_bytes if r.peak_bytes else 0.0
            cells.append(
                [
                    *head,
                    f"{r.seconds_s:.3f}",
                    _mib(r.peak_bytes),
                    *ratio,
                    f"{100 * gap:.1f}%",
                    "opt" if r.optimal else "",
                ]
            )
        groups.append(cells)
    return groups


def print_family(family: str, rows: list[Row]) -> None:
    """One table: per size and method, time, peak, ratios and gap to the best bound."""
    table = Table(title=f"{family}: peak memory by method", title_justify="left")
    for col in (*COLUMNS, "note"):
        table.add_column(col, justify="left" if col in ("method", "note") else "right")
    for cells in family_cells(rows):
        for row in cells:
            table.add_row(*row)
        table.add_section()
    out.print(table)
    out.print(f"[dim]{NOTE}[/dim]\n")


def markdown(rows: list[Row], targets: list[Target]) -> str:
    """The same figures as Markdown tables (for benchmarks/README.md)."""
    lines: list[str] = []
    for family in dict.fromkeys(r.family for r in rows):
        lines += [f"#### {family}", "", "| " + " | ".join((*COLUMNS, "note")) + " |"]
        lines.append("|" + "---:|" * 2 + ":---|" + "---:|" * 5 + ":---|")
        for cells in family_cells([r for r in rows if r.family == family]):
            lines += ["| " + " | ".join(row) + " |" for row in cells]
        lines.append("")
    if rows:
        lines += [NOTE, ""]
    if targets:
        lines += ["| target | measured | met | detail |", "|---|---:|:-:|---|"]
        for t in targets:
            lines.append(
                f"| {t.name} | {t.measured} | {'yes' if t.passed else 'no'} | {t.detail} |"
            )
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ the targets


def _target_simulator(n: int) -> Target:
    index = layered(n, seed=0).to_index()
    order = np.arange(index.n_nodes, dtype=np.int64)
    ids = list(index.node_ids)
    _ = index.position_of  # the id -> index map is built once per graph, not per replay
    times, str_times = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        simulate(index, order)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        simulate(index, ids)
        str_times.append(time.perf_counter() - t0)
    best = min(times)
    return Target(
        f"simulator replays a {n:,}-node graph (validated order) < 1 s",
        f"{best:.3f} s",
        best < 1.0,
        f"index-array order, best of 3 (runs: {', '.join(f'{t:.3f}' for t in times)}); "
        f"with an order of node-id strings: {min(str_times):.3f} s; "
        f"{index.n_buffers:,} buffers, {len(index.dep_src):,} dependencies",
    )


def _target_sp(n: int) -> Target:
    from scheduler.sp import recognize

    graph = series_parallel(n, seed=0).to_graph()
    t0 = time.perf_counter()
    rec = recognize(graph)
    t1 = time.perf_counter()
    result = _strategy("sp")(graph)
    t2 = time.perf_counter()
    total = t2 - t0
    return Target(
        f"SP recognition + ordering of a {n:,}-node SP graph < 5 s",
        f"{total:.2f} s",
        rec.is_sp and total < 5.0,
        f"recognize {t1 - t0:.2f} s (is_sp={rec.is_sp}), schedule_sp {t2 - t1:.2f} s "
        f"(recognizes again inside); peak {_mib(result.peak_bytes)} MiB, "
        f"optimal={result.optimal}",
    )


def _target_ilp(n: int, time_limit_s: float) -> Target:
    graphs = {
        "layered": layered(n, seed=0).to_graph(),
        "sp": series_parallel(n, seed=0).to_graph(),
        "transformer": transformer_fwbw(
            3, seed=0, batch=2, seq=64, hidden=128, vocab=512, heads=4, checkpoint_every=2
        ).to_graph(),
        "in-tree": make("in-tree", n, seed=0).to_graph(),
        "out-tree": make("out-tree", n, seed=0).to_graph(),
    }
    parts, ok = [], True
    worst = 0.0
    for name, graph in graphs.items():
        t0 = time.perf_counter()
        r = _strategy("ilp")(graph, time_limit_s=time_limit_s)
        dt = time.perf_counter() - t0
        worst = max(worst, dt)
        ok = ok and r.optimal and dt < 60.0
        proof = r.details.get("proof", "?")
        parts.append(f"{name} ({len(graph)} nodes): {dt:.1f} s, optimal={r.optimal} ({proof})")
    return Target(
        f"ilp proves the optimum of ~{n}-node graphs < 60 s",
        f"worst {worst:.1f} s",
        ok,
        "; ".join(parts),
    )


def _target_hybrid(n: int, time_limit_s: float) -> Target:
    from scheduler.synthetic import transformer_layers_for_nodes

    graph = transformer_fwbw(transformer_layers_for_nodes(n), seed=0).to_graph()
    heur = {m: _strategy(m)(graph).peak_bytes for m in (*HEURISTICS, "given")}
    t0 = time.perf_counter()
    r = _strategy("hybrid")(graph, time_limit_s=time_limit_s)
    dt = time.perf_counter() - t0
    worst_ok = all(r.peak_bytes <= p for p in heur.values())
    return Target(
        f"hybrid on a {len(graph):,}-node transformer fw+bw < 120 s, peak <= every heuristic",
        f"{dt:.1f} s",
        dt < 120.0 and worst_ok,
        f"hybrid peak {_mib(r.peak_bytes)} MiB vs "
        + ", ".join(f"{m} {_mib(p)}" for m, p in heur.items())
        + f"; bound {_mib(r.lower_bound_bytes)} MiB",
    )


def run_targets(quick: bool) -> list[Target]:
    """Measure each target; a target whose method is missing or fails is reported so."""
    specs: list[tuple[str, Callable[[], Target]]] = [
        ("simulator", lambda: _target_simulator(1_000_000)),
        ("sp", lambda: _target_sp(10_000)),
        ("ilp", lambda: _target_ilp(100, 20.0 if quick else 60.0)),
        ("hybrid", lambda: _target_hybrid(1_000 if quick else 10_000, 120.0)),
    ]
    results = []
    for name, fn in specs:
        with err.status(f"target: {name}"):
            try:
                results.append(fn())
            except (ImportError, DeltasimError) as exc:
                results.append(Target(name, "n/a", False, f"{type(exc).__name__}: {exc}"))
    return results


def print_targets(targets: list[Target]) -> None:
    table = Table(title="targets", title_justify="left")
    for col in ("target", "measured", "met", "detail"):
        table.add_column(col, overflow="fold")
    for t in targets:
        met = "[green]yes[/green]" if t.passed else "[red]no[/red]"
        table.add_row(t.name, t.measured, met, t.detail)
    out.print(table)


# ------------------------------------------------------------------ CLI

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


def _names(text: str, allowed: Any, what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in allowed:
            raise typer.BadParameter(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
    return names


@app.command()
@cli_errors
def bench(
    quick: Annotated[bool, typer.Option(help="Small sizes and budgets (a smoke run).")] = False,
    sizes: Annotated[str | None, typer.Option(help="Node counts, e.g. 50,1000.")] = None,
    families: Annotated[str, typer.Option(help="Comma-separated families.")] = DEFAULT_FAMILIES,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = ",".join(METHODS),
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Seconds per exact/portfolio run.")
    ] = 30.0,
    seed: Annotated[int, typer.Option(help="Graph generator seed.")] = 0,
    targets: Annotated[bool, typer.Option(help="Also measure the stated targets.")] = True,
    tables: Annotated[bool, typer.Option(help="Run the per-family tables.")] = True,
    out_path: Annotated[Path | None, typer.Option("--out", help="Save figures as JSON.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the figures as Markdown.")
    ] = None,
    from_json: Annotated[
        Path | None,
        typer.Option("--from-json", help="Render a saved --out file instead of running."),
    ] = None,
) -> None:
    """Benchmark the ordering strategies on synthetic graph families."""
    if from_json is not None:
        doc = json.loads(from_json.read_text())
        saved_rows = [Row(**r) for r in doc["rows"]]
        saved_targets = [Target(**t) for t in doc["targets"]]
        for family in dict.fromkeys(r.family for r in saved_rows):
            print_family(family, [r for r in saved_rows if r.family == family])
        if saved_targets:
            print_targets(saved_targets)
        if markdown_path is not None:
            atomic_write_text(markdown_path, markdown(saved_rows, saved_targets))
        return
    size_list = parse_int_list(sizes or (QUICK_SIZES if quick else DEFAULT_SIZES), "--sizes")
    fams = _names(families, FAMILIES, "family")
    meths = _names(methods, METHODS, "method")
    limit = min(time_limit, 5.0) if quick else time_limit
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    all_rows: list[Row] = []
    if tables:
        for family in fams:
            rows = run_family(family, size_list, meths, limit, seed)
            print_family(family, rows)
            all_rows.extend(rows)
    measured = run_targets(quick) if targets else []
    if measured:
        print_targets(measured)
    if out_path is not None:
        doc = {
            "started": started,
            "host": platform.node(),
            "python": platform.python_version(),
            "time_limit_s": limit,
            "rows": [asdict(r) for r in all_rows],
            "targets": [asdict(t) for t in measured],
        }
        atomic_write_text(out_path, json.dumps(doc, indent=1) + "\n")
        err.print(f"figures written to {out_path}")
    if markdown_path is not None:
        atomic_write_text(markdown_path, markdown(all_rows, measured))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
