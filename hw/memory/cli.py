"""`hw capture`, `hw verify`, `hw memstudy`: registered on the root `hw` app."""

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
