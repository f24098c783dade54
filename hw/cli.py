"""Console script of the `hw` package."""

import typer

__all__ = ["app", "main"]

app = typer.Typer(help="Run torch on a real device: capture graphs, verify orders, train MoE models, profile, serve. Commands arrive with their issues.", no_args_is_help=True, add_completion=False)


@app.callback()
def root() -> None:
    """Run torch on a real device: capture graphs, verify orders, train MoE models, profile, serve. Commands arrive with their issues."""


def main() -> None:
    app()
