"""Console script of the `reports` package: `report build`, `report writeup`, `report demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from traces.atomic import atomic_write_text
from traces.cli_support import cli_errors, err_console, out_console, print_json, refuse_overwrite

__all__ = ["app", "main"]

app = typer.Typer(
    help="Build self-contained HTML reports from result files.",
    no_args_is_help=True,
    add_completion=False,
)

RunDirs = Annotated[
    list[Path], typer.Argument(help="Folders (searched recursively) or files of results.")
]


@app.callback()
def root() -> None:
    """Build self-contained HTML reports from result files."""


@app.command()
@cli_errors
def build(
    run_dirs: RunDirs,
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="Page title.")] = "deltasim report",
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """One self-contained HTML report (plotly.js inlined) of every result the folders hold."""
    from reports.build import build_report

    refuse_overwrite(out, force)
    sections = build_report(run_dirs, out, title)
    charts = [c.key for s in sections for c in s.charts]
    if json:
        print_json({"out": str(out), "sections": [s.key for s in sections], "charts": charts})
        return
    out_console.print(f"report with {len(charts)} figures written to [bold]{out}[/bold]")


@app.command()
@cli_errors
def writeup(
    run_dirs: RunDirs,
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("docs/results.md"),
    report: Annotated[str, typer.Option(help="Report the figure links point at.")] = "report.html",
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
) -> None:
    """The experimental write-up (results.md) from the same files as the report."""
    from reports.inputs import InputsError, load_inputs
    from reports.writeup import render_writeup

    refuse_overwrite(out, force)
    inp = load_inputs(run_dirs)
    if inp.empty():
        raise InputsError("no result files found in " + ", ".join(map(str, run_dirs)))
    dirs = " ".join(p.as_posix() for p in run_dirs)
    command = f"report writeup {dirs} --report {report} --out {out.as_posix()} --force"
    atomic_write_text(out, render_writeup(inp, report, command))
    out_console.print(f"write-up from {len(inp.files)} files written to [bold]{out}[/bold]")


@app.command()
@cli_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder of every output.")] = Path("runs/demo"),
    force: Annotated[bool, typer.Option(help="Start over: remove --out first.")] = False,
) -> None:
    """Run the whole mission end to end on bundled defaults (minutes on 2 CPU cores)."""
    from reports.demo import run_demo

    report = run_demo(out, force=force)
    err_console.print(f"[green]demo finished[/green]; the report is at [bold]{report}[/bold]")


def main() -> None:
    app()
