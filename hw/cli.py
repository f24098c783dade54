"""Console script of the `hw` package."""

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    help="Run torch on a real device: capture, verify, MoE training, profiling, serving.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Run torch on a real device: capture, verify, MoE training, profiling, serving."""


def main() -> None:
    app()
