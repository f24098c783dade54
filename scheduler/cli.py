"""``sched``: order compute graphs to minimize peak memory, and check orders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from scheduler.memory import order_indices, simulate
from scheduler.strategies import Method, schedule
from traces.cli_support import (
    JsonOpt,
    cli_errors,
    err_console,
    out_console,
    print_json,
    refuse_overwrite,
)
from traces.graph import read_graph
from traces.orders import read_order, write_order

__all__ = ["app", "main"]

app = typer.Typer(
    help="Find topological orders of graph/1 compute graphs that minimize peak memory.",
    no_args_is_help=True,
    add_completion=False,
)

GraphArg = Annotated[Path, typer.Argument(help="graph/1 JSON file.", show_default=False)]


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


@app.command("order")
@cli_errors
def order_cmd(
    graph_path: GraphArg,
    method: Annotated[Method, typer.Option(help="Ordering strategy.")] = Method.BEST,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.01, help="Seconds for exact solvers.")
    ] = 60.0,
    out: Annotated[Path | None, typer.Option(help="Write the order object here.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Order GRAPH with one method; print (or write) the order object."""
    refuse_overwrite(out, force)
    graph = read_graph(graph_path)
    result = schedule(graph, method, time_limit_s=time_limit)
    doc = result.to_json()
    if out is not None:
        write_order(out, doc)
    if json_:
        print_json(doc)
        return
    table = Table(title=f"{graph.name or graph_path.name}: {len(graph)} nodes")
    for col in ("method", "peak", "optimal", "lower bound", "seconds"):
        table.add_column(col)
    table.add_row(
        result.strategy,
        _fmt_bytes(result.peak_bytes),
        "yes" if result.optimal else "no",
        _fmt_bytes(result.lower_bound_bytes),
        f"{result.solve_time_s:.3f}",
    )
    out_console.print(table)
    if out is not None:
        err_console.print(f"order written to {out}")


@app.command("peak")
@cli_errors
def peak_cmd(
    graph_path: GraphArg,
    order_path: Annotated[Path, typer.Argument(help="Order JSON (list or object).")],
    json_: JsonOpt = False,
) -> None:
    """Replay ORDER on GRAPH and print its peak memory."""
    graph = read_graph(graph_path)
    order = read_order(order_path)["order"]
    profile = simulate(graph, order_indices(graph, order))
    if json_:
        print_json({"peak_bytes": profile.peak_bytes})
    else:
        out_console.print(
            f"peak {profile.peak_bytes} bytes ({_fmt_bytes(profile.peak_bytes)}) "
            f"at step {profile.peak_step} ({order[profile.peak_step]})"
        )


@app.command("sp")
@cli_errors
def sp_cmd(graph_path: GraphArg, json_: JsonOpt = False) -> None:
    """Is GRAPH two-terminal series-parallel? If not, print a witness."""
    from scheduler.sp import recognize

    graph = read_graph(graph_path)
    rec = recognize(graph)
    doc = {
        "series_parallel": rec.is_sp,
        "witness": None if rec.witness is None else list(rec.witness),
    }
    if json_:
        print_json(doc)
    elif rec.is_sp:
        out_console.print(f"{graph_path}: series-parallel")
    else:
        out_console.print(f"{graph_path}: not series-parallel; witness {list(rec.witness or [])}")


@app.command("compare")
@cli_errors
def compare_cmd(
    graph_paths: Annotated[list[Path], typer.Argument(help="graph/1 JSON files.")],
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods to run.")
    ] = "given,lpmf,bfs,dfs,sp,ilp,hybrid,best",
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.01, help="Seconds per exact solver.")
    ] = 30.0,
    json_: JsonOpt = False,
) -> None:
    """Every method's peak, gap to the best lower bound, and time, per graph."""
    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:
        if name not in {m.value for m in Method}:
            raise typer.BadParameter(f"unknown method {name!r}", param_hint="--methods")
    rows = []
    for path in graph_paths:
        graph = read_graph(path)
        results = []
        for name in names:
            t0 = time.perf_counter()
            err_console.print(f"[dim]{path.name}: {name}...[/dim]", end="\r")
            results.append(schedule(graph, name, time_limit_s=time_limit))
            _ = t0
        bound = max(r.lower_bound_bytes or 0 for r in results)
        for r in results:
            gap = (r.peak_bytes - bound) / r.peak_bytes if r.peak_bytes else 0.0
            rows.append((path, graph, r, bound, gap))
    if json_:
        for path, _graph, r, bound, gap in rows:
            doc = r.to_json()
            doc.pop("order")
            print_json({"graph": str(path), **doc, "best_lower_bound_bytes": bound, "gap": gap})
        return
    table = Table(title="peak memory by method")
    for col in ("graph", "nodes", "method", "peak", "gap to LB", "optimal", "seconds"):
        table.add_column(col, justify="right" if col not in ("graph", "method") else "left")
    for path, graph, r, _bound, gap in rows:
        table.add_row(
            path.name,
            str(len(graph)),
            r.strategy,
            _fmt_bytes(r.peak_bytes),
            f"{100 * gap:.1f}%",
            "yes" if r.optimal else "no",
            f"{r.solve_time_s:.3f}",
        )
    out_console.print(table)


def main() -> None:
    app()
