"""Console script of the `reports` package."""

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    help="Build self-contained HTML reports from result files.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Build self-contained HTML reports from result files."""


def main() -> None:
    app()
