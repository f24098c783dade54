"""The benchmark script runs and reports consistent figures (default suite, tiny sizes);
the performance targets themselves are behind the ``benchmark`` marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks import bench_scheduler as bench

runner = CliRunner()


def test_tiny_run_writes_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = runner.invoke(
        bench.app,
        [
            "--sizes",
            "12,200",
            "--families",
            "chain,in-tree,sp",
            "--methods",
            "given,lpmf,bfs,dfs,sp,ilp",
            "--time-limit",
            "5",
            "--no-targets",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert {r["family"] for r in rows} == {"chain", "in-tree", "sp"}
    for r in rows:
        if r["peak_bytes"] is not None and r["lower_bound_bytes"] is not None:
            assert r["lower_bound_bytes"] <= r["peak_bytes"]
    # ilp is capped: it must be reported as skipped on the 200-node graphs, not run.
    capped = [r for r in rows if r["method"] == "ilp" and r["size"] == 200]
    assert capped and all(r["note"].startswith(">") and r["peak_bytes"] is None for r in capped)
    # A chain has one order: every method that ran finds the same peak.
    for size in (12, 200):
        ran = [r for r in rows if r["family"] == "chain" and r["size"] == size and r["seconds_s"]]
        assert len(ran) >= 4 and len({r["peak_bytes"] for r in ran}) == 1
    assert "chain: peak memory by method" in result.stdout


def test_unknown_family_is_rejected() -> None:
    result = runner.invoke(bench.app, ["--families", "nope", "--no-targets"])
    assert result.exit_code == 2 and "nope" in result.output


@pytest.mark.benchmark
def test_targets_are_met() -> None:
    targets = bench.run_targets(quick=False)
    failed = [t for t in targets if not t.passed]
    assert not failed, "\n".join(f"{t.name}: {t.measured} ({t.detail})" for t in failed)
