"""A device worker woken while the gate goes straight on (``HostTerms.worker_join_p``, hw
profile's ``join_*`` rows): in ``hw serve`` it waited for the next gate in 79-93 % of the
cases where the next request arrived while the gate ran, and ran during it, keeping the host,
in 70-89 % where the next request had arrived before the gate started (benchmarks/README.md,
session 19)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.records import RunResult
from sim.service import ServiceTable
from traces.errors import FormatError
from traces.profile import (
    JOIN_EARLY_JOINED,
    JOIN_EARLY_WAITED,
    JOIN_LATE_JOINED,
    JOIN_LATE_WAITED,
    join_shares,
    profile_from_frame,
    write_profile,
)

from .test_host import host_model_run, host_profile_frame
from .test_host_preempt import host_timeline

runner = CliRunner()


def join_frame(counts: dict[str, int]) -> pl.DataFrame:
    """The host test profile plus ``join_*`` rows with these counts (0 writes no row)."""
    extra = pl.DataFrame(
        [
            {"expert": -1, "batch_size": 1, "latency_s": 3e-4, "samples": n, "component": c,
             "device": "cpu:test"}
            for c, n in counts.items() if n
        ]
    )  # fmt: skip
    return pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")


COUNTS = {JOIN_EARLY_JOINED: 90, JOIN_EARLY_WAITED: 10, JOIN_LATE_JOINED: 15, JOIN_LATE_WAITED: 60}


def test_the_rows_give_the_share_that_joined_per_case() -> None:
    assert join_shares(join_frame(COUNTS)) == pytest.approx((0.9, 0.2))
    terms = HostTerms.from_profile(profile_from_frame(join_frame(COUNTS)), 1)
    assert terms is not None and terms.worker_join_p == pytest.approx((0.9, 0.2))
    assert terms.worker_join(True) == pytest.approx(0.9)
    assert terms.worker_join(False) == pytest.approx(0.2)
    only_early = join_frame({JOIN_EARLY_JOINED: 3, JOIN_EARLY_WAITED: 1})
    assert join_shares(only_early) == pytest.approx((0.75, 0.0))  # no late pair: waits
    plain = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 1)
    assert plain is not None and plain.worker_join_p == () and plain.worker_join(True) == 0.0
    assert join_shares(host_profile_frame()) is None


def test_bad_join_rows_and_terms_are_one_clear_error() -> None:
    doubled = pl.concat([join_frame(COUNTS), join_frame(COUNTS).tail(1)])
    with pytest.raises(FormatError, match="join_"):
        join_shares(doubled)
    no_count = join_frame(COUNTS).with_columns(
        pl.when(pl.col("component") == JOIN_LATE_WAITED)
        .then(None)
        .otherwise(pl.col("samples"))
        .alias("samples")
    )
    with pytest.raises(FormatError, match="samples"):
        join_shares(no_count)
    for bad in ((0.5,), (0.5, 1.5), (-0.1, 0.2)):
        with pytest.raises(SimConfigError, match="join"):
            HostTerms(np.zeros(2), worker_join_p=bad)


def _timeline(arrivals: list[float], join: tuple[float, float] | tuple[()]) -> RunResult:
    """:func:`host_timeline` with no other host costs or hand-offs; the lock shared evenly at
    0.5 each (the threads share it); the woken worker joins the next gate with
    probabilities ``join`` (early, late)."""
    host = HostTerms(np.zeros(2), gate_rate=0.5, worker_rate=0.5, worker_join_p=join)
    return host_timeline(arrivals, host)


def test_a_joining_worker_keeps_the_host_while_the_next_gate_waits() -> None:
    """Requests 0 and 1 both at 0 (request 1 there before gate 0 starts: early). Gate 0 runs
    0-1 ms and wakes the idle worker while going on to gate 1. Joining, the worker runs its
    expert 1.0-1.4 ms alone while gate 1 waits: gate 1 ends at 2.4 ms. Waiting (never
    joins, or no rows), the worker starts after gate 1's end at 2.0 ms. Request 1 at 0.5
    ms instead (during gate 0: late) takes the late case's probability."""
    joined = _timeline([0.0, 0.0], (1.0, 0.0))
    assert joined.batch_start_s[0] == pytest.approx(1e-3)
    assert joined.batch_end_s[0] == pytest.approx(1.4e-3)
    assert joined.gate_done_s.tolist() == pytest.approx([1e-3, 2.4e-3])
    for join in ((0.0, 1.0), ()):
        waited = _timeline([0.0, 0.0], join)
        assert waited.batch_start_s[0] == pytest.approx(2e-3)
        assert waited.gate_done_s.tolist() == pytest.approx([1e-3, 2e-3])
    late = _timeline([0.0, 5e-4], (0.0, 1.0))
    assert late.batch_end_s[0] == pytest.approx(1.4e-3)
    assert late.gate_done_s[1] == pytest.approx(2.4e-3)
    assert _timeline([0.0, 5e-4], (1.0, 0.0)).batch_start_s[0] == pytest.approx(2e-3)


def test_sim_run_and_check_say_whether_the_worker_could_join(tmp_path: Path) -> None:
    prof = tmp_path / "TEST-join-profile.parquet"
    write_profile(join_frame(COUNTS), prof)
    plain = tmp_path / "TEST-plain-profile.parquet"
    write_profile(host_profile_frame(), plain)
    run = ["run", "--B", "1", "--rate", "800", "--requests", "400"]
    shown = runner.invoke(app, [*run, "--profile", str(prof)])
    assert shown.exit_code == 0, shown.output
    assert "worker joins" in " ".join(shown.stdout.split())
    assert "worker joins" not in " ".join(
        runner.invoke(app, [*run, "--profile", str(plain)]).stdout.split()
    )
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)
    docs = {}
    for name, path in (("join", prof), ("plain", plain)):
        check = ["check", str(out), "--profile", str(path), "--B", "1", "--json"]
        # at the profile's host speed: whether the worker joins does not hang on the speed search
        res = runner.invoke(app, [*check, "--host-speed", "profile"])
        assert res.exit_code in (0, 1), res.output
        docs[name] = json.loads(res.stdout.splitlines()[0])
    assert docs["join"]["worker_join"] is True and docs["plain"]["worker_join"] is False
