"""Shared CLI plumbing: consoles, the error-to-exit-2 wrapper, the range parser.

Every console script is a typer app whose commands are wrapped by
:func:`cli_errors`, which turns a :class:`DeltasimError` into one red line on
stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from traces.errors import DeltasimError

__all__ = [
    "ForceOpt",
    "JsonOpt",
    "cli_errors",
    "err_console",
    "out_console",
    "parse_int_list",
    "print_json",
    "refuse_overwrite",
    "run_app",
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
ForceOpt = Annotated[bool, typer.Option(help="Overwrite existing outputs.")]

out_console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Turn a DeltasimError into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DeltasimError as exc:
            # escape: a message may hold brackets ("[grid]", "['x']") that rich reads as markup
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def run_app(app: typer.Typer) -> None:
    """Run a typer app as a console script."""
    app()


def print_json(obj: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def refuse_overwrite(path: Path | None, force: bool) -> None:
    """Never overwrite an output silently."""
    if path is not None and path.exists() and not force:
        raise DeltasimError(f"{path} exists; pass --force to overwrite it")


def parse_int_list(text: str, name: str = "--B", minimum: int = 1) -> list[int]:
    """Parse ``8``, ``1,2,4`` or ``1..64`` (powers of two from lo to hi, plus hi).

    ``a..b`` means every power of two in [a, b] together with a and b;
    ``a..b:s`` means a, a+s, ... up to b. Raises typer.BadParameter.
    """
    text = text.strip()
    values: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                lo_s, hi_s = part.split("..", 1)
                step = None
                if ":" in hi_s:
                    hi_s, step_s = hi_s.split(":", 1)
                    step = int(step_s)
                lo, hi = int(lo_s), int(hi_s)
                if lo > hi:
                    raise typer.BadParameter(f"range {part!r} runs backwards", param_hint=name)
                if step is not None:
                    if step <= 0:
                        raise typer.BadParameter(f"step must be > 0 in {part!r}", param_hint=name)
                    values.extend(range(lo, hi + 1, step))
                else:
                    p = 1
                    vals = {lo, hi}
                    while p <= hi:
                        if p >= lo:
                            vals.add(p)
                        p *= 2
                    values.extend(sorted(vals))
            else:
                values.append(int(part))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an integer, a list like 1,2,4 or a range like 1..64",
            param_hint=name,
        ) from None
    for v in values:
        if v < minimum:
            raise typer.BadParameter(f"{v} is below the minimum {minimum}", param_hint=name)
    return sorted(set(values))
