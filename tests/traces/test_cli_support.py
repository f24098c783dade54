"""The shared range parser, atomic writes and the error-to-exit-2 wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from traces.atomic import atomic_path, atomic_write_text
from traces.cli_support import cli_errors, parse_int_list
from traces.errors import DeltasimError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", [8]),
        ("1,2,4", [1, 2, 4]),
        ("4,1,2,2", [1, 2, 4]),
        ("1..64", [1, 2, 4, 8, 16, 32, 64]),
        ("3..20", [3, 4, 8, 16, 20]),
        ("1..10:3", [1, 4, 7, 10]),
        ("1..4,6", [1, 2, 4, 6]),
    ],
)
def test_parse_int_list_accepts_values_lists_and_ranges(text: str, expected: list[int]) -> None:
    assert parse_int_list(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "below the minimum"),
        ("64..1", "backwards"),
        ("a", "not an integer"),
        ("1..8:0", "step"),
    ],
)
def test_parse_int_list_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        parse_int_list(text)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_cli_errors_gives_one_line_and_exit_2() -> None:
    app = typer.Typer()

    @app.command()
    @cli_errors
    def boom() -> None:
        raise DeltasimError("the input is bad")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    assert "the input is bad" in result.output
    assert "Traceback" not in result.output
