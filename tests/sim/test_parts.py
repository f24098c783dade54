"""``sim check --parts``: each part of a request (queue, gate, worker, latency), measured
against the replay, so that a miss can be traced to the part that makes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import check_run, check_runs
from sim.cli import app
from sim.parts import PARTS, mean_parts, request_parts
from traces.serving import read_records, summarize

from .test_check import _measured

runner = CliRunner()


def _records(times: list[tuple[float, float, float, float]], k: int = 2) -> pl.DataFrame:
    """One row per (request, expert) with the request's times repeated, as serve-records."""
    rows = []
    for i, (arrival, start, done, complete) in enumerate(times):
        for _ in range(k):
            rows.append(
                {
                    "request": i,
                    "warmup": i == 0,
                    "arrival_s": arrival,
                    "gate_start_s": start,
                    "gate_done_s": done,
                    "complete_s": complete,
                }
            )
    return pl.DataFrame(rows)


def _flat(parts: dict[str, tuple[float, float]] | None) -> list[float]:
    assert parts is not None
    return [v for name in PARTS for v in parts[name]]


def test_parts_of_hand_built_requests() -> None:
    # request 0 is warm-up and wildly slow: it must not count
    times = [(0.0, 5.0, 6.0, 9.0)]
    times += [(t, t + 0.001 * i, t + 0.001 * i + 0.002, t + 0.001 * i + 0.010) for i, t in
              enumerate(np.arange(1, 101) * 0.1)]  # fmt: skip
    parts = request_parts(_records(times))
    assert set(parts) == set(PARTS)
    queue = np.array([0.001 * i for i in range(100)])
    assert parts["queue"] == pytest.approx(tuple(np.percentile(queue, [50, 99])))
    assert parts["gate"] == pytest.approx((0.002, 0.002))
    assert parts["worker"] == pytest.approx((0.008, 0.008))
    assert parts["latency"] == pytest.approx(tuple(np.percentile(queue + 0.010, [50, 99])))
    # every request counted once, however many experts it has
    assert _flat(request_parts(_records(times, k=1))) == pytest.approx(_flat(parts))
    empty = request_parts(_records(times[:1]))  # only the warm-up request
    assert all(np.isnan(v).all() for v in empty.values())


def test_mean_parts() -> None:
    a = {name: (1.0, 2.0) for name in PARTS}
    b = {name: (3.0, 6.0) for name in PARTS}
    assert mean_parts([a, b]) == {name: (2.0, 4.0) for name in PARTS}


@pytest.fixture(scope="module")
def slower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _measured(tmp_path_factory.mktemp("parts"), 1.6, "slow.parquet")


def test_the_latency_part_is_the_checks_own_latency(slower: Path, test_profile_path: Path):
    rows = check_run(slower, test_profile_path, parts=True)
    records, cfg = read_records(slower)
    summary = summarize(records, cfg)
    for r in rows:
        assert r.parts_measured is not None and r.parts_simulated is not None
        p50, p99 = r.parts_measured["latency"]
        meas = summary.filter(pl.col("B") == r.B).row(0, named=True)
        assert (p50, p99) == pytest.approx((meas["latency_p50_s"], meas["latency_p99_s"]))
        assert r.parts_simulated["latency"] == pytest.approx(
            (r.simulated["p50"], r.simulated["p99"])
        )
    assert check_run(slower, test_profile_path)[0].parts_measured is None  # only when asked


def test_parts_find_the_part_that_misses(slower: Path, test_profile_path: Path) -> None:
    """The run's experts are 1.6x the profile's, its gate the same: the miss is all in the
    worker's part, none in the gate."""
    (b1, *_) = check_run(slower, test_profile_path, parts=True)
    assert b1.parts_measured is not None and b1.parts_simulated is not None
    gate_m, gate_s = b1.parts_measured["gate"], b1.parts_simulated["gate"]
    work_m, work_s = b1.parts_measured["worker"], b1.parts_simulated["worker"]
    assert gate_s[0] == pytest.approx(gate_m[0], rel=0.05)
    assert work_s[0] < 0.8 * work_m[0]  # recorded: about 1 / 1.6 of it
    assert work_s[1] < 0.8 * work_m[1]


def test_parts_over_repeats_and_replays(slower: Path, test_profile_path: Path) -> None:
    one = check_run(slower, test_profile_path, parts=True)
    two = check_runs([slower, slower], test_profile_path, parts=True)
    for a, b in zip(one, two, strict=True):
        assert _flat(b.parts_measured) == pytest.approx(_flat(a.parts_measured))
        assert _flat(b.parts_simulated) == pytest.approx(_flat(a.parts_simulated))
    replayed = check_run(slower, test_profile_path, parts=True, replays=2)
    for r in replayed:
        assert r.parts_simulated is not None
        assert r.parts_simulated["latency"] == pytest.approx(
            (r.simulated["p50"], r.simulated["p99"])
        )  # the mean of the replays, as the metrics are


def test_parts_cli(slower: Path, test_profile_path: Path) -> None:
    args = ["check", str(slower), "--profile", str(test_profile_path), "--tolerance", "1000"]
    res = runner.invoke(app, [*args, "--parts", "--json"])
    assert res.exit_code == 0, res.stderr
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["B"] for d in docs] == [1, 4, 16]
    for d in docs:
        assert list(d["parts"]) == list(PARTS)
        assert d["parts"]["latency"]["simulated"]["p99"] == pytest.approx(d["simulated"]["p99"])
    plain = runner.invoke(app, [*args, "--json"])
    assert all("parts" not in json.loads(x) for x in plain.stdout.splitlines())
    table = runner.invoke(app, [*args, "--parts"])
    assert table.exit_code == 0 and "by part of a request" in table.stdout
    for name in PARTS:
        assert f"│ {name}" in table.stdout
