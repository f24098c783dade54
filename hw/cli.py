"""Console script of the `hw` package: each area registers its own commands."""

import typer

from hw.memory.cli import register as register_memory
from hw.moe.cli import register as register_moe
from hw.serving.cli import register as register_serving

__all__ = ["app", "main"]

app = typer.Typer(
    help="Run torch on a real device: capture, verify, MoE training, profiling, serving.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Run torch on a real device: capture, verify, MoE training, profiling, serving."""


register_memory(app)
register_moe(app)
register_serving(app)


def main() -> None:
    app()
