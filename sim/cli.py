"""Console script of the `sim` package."""

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    help="Simulate MoE serving with size-B expert queues (SimPy).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Simulate MoE serving with size-B expert queues (SimPy)."""


def main() -> None:
    app()
