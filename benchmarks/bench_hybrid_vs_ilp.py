"""What ``hybrid`` gains over ``ilp`` on the whole graph: peak, proof, and time.

Run from the repository root::

    .venv/bin/python benchmarks/bench_hybrid_vs_ilp.py [--sizes 60,100,200]
        [--families layered,sp,transformer,chain,in-tree,out-tree] [--seeds 2]
        [--time-limit 60] [--out figures.json]

Both strategies get the same time limit on the same graphs. Per graph the table
lists each one's peak, proven lower bound, whether it proved optimality, and its
time; the summary per family counts proofs, wins and mean times. ``--out`` saves
every row as JSON (atomically).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scheduler.hybrid import schedule_hybrid
from scheduler.ilp import schedule_ilp
from scheduler.synthetic import make
from traces.atomic import atomic_write_text
from traces.cli_support import cli_errors, parse_int_list

__all__ = ["Row", "main", "run"]

out = Console()
if not out.is_terminal:  # piped into a file: wide enough for every column
    out = Console(width=140)
err = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Row:
    """Both strategies on one graph."""

    family: str
    seed: int
    nodes: int
    ilp_peak_bytes: int
    ilp_bound_bytes: int | None
    ilp_optimal: bool
    ilp_s: float
    ilp_status: str
    hybrid_peak_bytes: int
    hybrid_bound_bytes: int | None
    hybrid_optimal: bool
    hybrid_s: float


def run(families: list[str], sizes: list[int], seeds: int, time_limit_s: float) -> list[Row]:
    """Run ``ilp`` and ``hybrid`` on every (family, size, seed)."""
    rows = []
    for family in families:
        for size in sizes:
            for seed in range(seeds):
                graph = make(family, size, seed=seed).to_graph()
                with err.status(f"{family} n={len(graph)} seed={seed}: ilp"):
                    t0 = time.perf_counter()
                    ilp = schedule_ilp(graph, time_limit_s=time_limit_s)
                    ilp_s = time.perf_counter() - t0
                with err.status(f"{family} n={len(graph)} seed={seed}: hybrid"):
                    t0 = time.perf_counter()
                    hyb = schedule_hybrid(graph, time_limit_s=time_limit_s)
                    hyb_s = time.perf_counter() - t0
                rows.append(
                    Row(
                        family,
                        seed,
                        len(graph),
                        ilp.peak_bytes,
                        ilp.lower_bound_bytes,
                        ilp.optimal,
                        round(ilp_s, 3),
                        str(ilp.details.get("status", "")),
                        hyb.peak_bytes,
                        hyb.lower_bound_bytes,
                        hyb.optimal,
                        round(hyb_s, 3),
                    )
                )
                out.print(_row_text(rows[-1]), highlight=False)
    return rows


def _row_text(r: Row) -> str:
    gain = 100.0 * (r.ilp_peak_bytes - r.hybrid_peak_bytes) / r.ilp_peak_bytes
    return (
        f"{r.family:11s} n={r.nodes:5d} s{r.seed}  ilp {r.ilp_peak_bytes:>13d} "
        f"{'opt' if r.ilp_optimal else '   '} {r.ilp_s:6.1f}s | hybrid {r.hybrid_peak_bytes:>13d} "
        f"{'opt' if r.hybrid_optimal else '   '} {r.hybrid_s:6.1f}s | peak gain {gain:5.1f}%"
    )


def _summary(rows: list[Row]) -> Table:
    table = Table(title="hybrid vs ilp (same time limit)")
    for col in (
        "family",
        "graphs",
        "ilp proven",
        "hybrid proven",
        "hybrid lower",
        "tie",
        "ilp lower",
        "mean peak gain",
        "ilp mean s",
        "hybrid mean s",
    ):
        table.add_column(col, justify="left" if col == "family" else "right")
    for family in dict.fromkeys(r.family for r in rows):
        rs = [r for r in rows if r.family == family]
        k = len(rs)
        gain = sum((r.ilp_peak_bytes - r.hybrid_peak_bytes) / r.ilp_peak_bytes for r in rs) / k
        table.add_row(
            family,
            str(k),
            str(sum(r.ilp_optimal for r in rs)),
            str(sum(r.hybrid_optimal for r in rs)),
            str(sum(r.hybrid_peak_bytes < r.ilp_peak_bytes for r in rs)),
            str(sum(r.hybrid_peak_bytes == r.ilp_peak_bytes for r in rs)),
            str(sum(r.hybrid_peak_bytes > r.ilp_peak_bytes for r in rs)),
            f"{100 * gain:.2f}%",
            f"{sum(r.ilp_s for r in rs) / k:.1f}",
            f"{sum(r.hybrid_s for r in rs) / k:.1f}",
        )
    return table


app = typer.Typer(add_completion=False)


@app.command()
@cli_errors
def main(
    sizes: Annotated[str, typer.Option(help="Graph sizes (nodes), e.g. 60,100,200.")] = "60,100",
    families: Annotated[
        str, typer.Option(help="Comma-separated synthetic families.")
    ] = "layered,sp,transformer,chain,in-tree,out-tree",
    seeds: Annotated[int, typer.Option(min=1, help="Graphs per family and size.")] = 2,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Seconds for each strategy.")
    ] = 60.0,
    out_path: Annotated[Path | None, typer.Option("--out", help="Save rows as JSON.")] = None,
) -> None:
    """Run ilp and hybrid on the same graphs and print what hybrid gains."""
    rows = run(
        [f.strip() for f in families.split(",") if f.strip()],
        parse_int_list(sizes, "--sizes"),
        seeds,
        time_limit,
    )
    out.print(_summary(rows))
    if out_path is not None:
        atomic_write_text(out_path, json.dumps([asdict(r) for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    app()
