"""`hw moe ...`: registered on the root `hw` app as a command group."""

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
