"""``sim run`` as other tools call it: JSON lines, outputs, bad input (exit 2), no torch."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.cli import JSON_KEYS, app
from traces.profile import write_profile
from traces.routing import RoutingTrace, write_routing
from traces.serving import read_records, read_summary, summary_path

from .conftest import profile_with_variation, sim_fixture_profile_frame

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["run", *args])
    return res.exit_code, res.stdout, res.stderr


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_one_object_per_b_with_required_keys(test_profile_path: Path) -> None:
    code, out, _ = _run(
        "--B", "1..8", "--profile", str(test_profile_path), "--requests", "3000", "--json"
    )
    assert code == 0
    rows = _json_lines(out)
    assert [r["B"] for r in rows] == [1, 2, 4, 8]
    for r in rows:
        assert set(JSON_KEYS) <= set(r)
        assert r["requests"] == 2700  # 10% warm-up excluded
        assert r["latency_p50_s"] <= r["latency_p95_s"] <= r["latency_p99_s"]
        assert r["throughput_rps"] == pytest.approx(1000, rel=0.1)
    # Larger B waits longer for its batch to fill at this light load.
    assert rows[-1]["latency_mean_s"] > rows[0]["latency_mean_s"]


def test_same_seed_same_json_other_seed_differs(test_profile_path: Path) -> None:
    args = ["--B", "4", "--profile", str(test_profile_path), "--requests", "2000", "--json"]
    a, b = _run(*args)[1], _run(*args)[1]
    c = _run(*args, "--seed", "9")[1]
    assert a == b
    assert _json_lines(a)[0]["latency_mean_s"] != _json_lines(c)[0]["latency_mean_s"]


def test_worker_processes_give_the_same_points_in_b_order(
    test_profile_path: Path, tmp_path: Path
) -> None:
    """--jobs 2 simulates the B values in two spawned processes: the JSON lines (B order)
    and the records written are those of one process."""
    args = ["--B", "1..16", "--profile", str(test_profile_path), "--requests", "3000", "--json"]
    one = _run(*args, "--jobs", "1", "--out", str(tmp_path / "one.parquet"))
    two = _run(*args, "--jobs", "2", "--out", str(tmp_path / "two.parquet"))
    assert one[0] == two[0] == 0
    assert one[1] == two[1] and [r["B"] for r in _json_lines(two[1])] == [1, 2, 4, 8, 16]
    a, b = read_records(tmp_path / "one.parquet")[0], read_records(tmp_path / "two.parquet")[0]
    assert a.equals(b)


def test_auto_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process unless the run repays starting more; never more than points or cores."""
    from sim import runner as sim_runner

    monkeypatch.setattr(sim_runner.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert sim_runner.auto_jobs(7, 1_000) == 1  # small: starting processes costs more
    assert sim_runner.auto_jobs(7, 100_000) == 2  # 700,000 requests: both cores
    assert sim_runner.auto_jobs(1, 10**6) == 1  # one point: nothing to share
    assert sim_runner.auto_jobs(7, 10_000, host=True) == 2  # event by event: worth it sooner
    assert sim_runner.auto_jobs(7, 5_000, host=True) == 1
    monkeypatch.setattr(sim_runner.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert sim_runner.auto_jobs(3, 10**6) == 3


def test_table_output_and_records_written(test_profile_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.parquet"
    code, stdout, _ = _run(
        "--B", "2,4", "--profile", str(test_profile_path), "--requests", "2000",
        "--devices", "2", "--combine-latency-s", "1e-5", "--gate-latency-s", "2e-5",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0 and "p99" in stdout and "sim: M=8" in stdout
    records, cfg = read_records(out)
    summary, cfg2 = read_summary(summary_path(out))
    assert cfg == cfg2 and cfg.b_values == (2, 4) and cfg.devices == 2
    assert records.height == 2 * 2000 * 2  # B values x requests x k
    assert summary["B"].to_list() == [2, 4]
    # The simulator follows the model's instant rules: no overhead by the server's yardstick.
    assert summary["overhead_max_s"].max() < 1e-9
    # Refuse to overwrite without --force.
    code, _, err = _run("--B", "2", "--profile", str(test_profile_path), "--out", str(out))
    assert code == 2 and "--force" in err


def test_routing_trace_replay(test_profile_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 500
    experts = np.stack([rng.permutation(8)[:3] for _ in range(n)])
    experts[::2, 2] = -1  # every other sample uses k = 2
    weights = np.where(experts >= 0, 1.0, 0.0)
    times = np.cumsum(rng.exponential(1e-3, n))
    trace = RoutingTrace.from_arrays(experts, weights, 8, arrival_time_s=times)
    path = tmp_path / "trace.parquet"
    write_routing(path, trace)
    out = tmp_path / "replay.parquet"
    code, _, err = _run(
        "--B", "2", "--profile", str(test_profile_path), "--routing", str(path),
        "--requests", str(n), "--warmup", "0", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    records, _ = read_records(out)
    per_req = records.group_by("request").agg(pl.col("expert").sort(), pl.col("arrival_s").first())
    per_req = per_req.sort("request")
    want = [sorted(e[e >= 0].tolist()) for e in experts]
    assert per_req["expert"].to_list() == want
    assert np.allclose(per_req["arrival_s"].to_numpy(), times - times[0])


def _bad_trace(tmp_path: Path) -> Path:
    trace = RoutingTrace.from_arrays(np.array([[0, 9]]), np.array([[0.5, 0.5]]), 10)
    path = tmp_path / "wide.parquet"
    write_routing(path, trace)
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--B", "0"], "minimum"),
        (["--B", "64..1"], "backwards"),
        (["--B", "x"], "not an integer"),
        (["--rate", "-3"], "rate"),
        (["--experts", "9"], "expert 8 is not in the profile"),
        (["--k", "2", "--gate", "topp:0.5"], "only one of"),
        (["--gate", "topp:1.5"], "top-p"),
        (["--gate", "magic:3"], "unknown gate"),
        (["--max-wait-ms", "0"], "max wait"),
        (["--devices", "0"], "devices"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_input_one_line_exit_2(args: list[str], needle: str, test_profile_path: Path) -> None:
    code, out, err = _run("--profile", str(test_profile_path), "--requests", "100", *args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_unknown_expert_in_trace_and_missing_profile(test_profile_path: Path, tmp_path: Path):
    code, _, err = _run(
        "--profile", str(test_profile_path), "--routing", str(_bad_trace(tmp_path)),
        "--experts", "8", "--requests", "10",
    )  # fmt: skip
    assert code == 2 and "uses expert 9" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run("--profile", str(tmp_path / "nope.parquet"))
    assert code == 2 and "no such file" in err
    bad = sim_fixture_profile_frame().with_columns(pl.lit(-1.0).alias("latency_s"))
    path = tmp_path / "neg.csv"
    bad.write_csv(path)
    code, _, err = _run("--profile", str(path))
    assert code == 2 and "latency_s" in err


def test_profile_extrapolation_is_a_note(tmp_path: Path) -> None:
    small = sim_fixture_profile_frame().filter(pl.col("batch_size") <= 8)
    path = tmp_path / "small.parquet"
    write_profile(small, path)
    code, _, err = _run("--B", "16", "--profile", str(path), "--requests", "500", "--json")
    assert code == 0 and "extrapolating" in err


def test_sim_never_imports_torch(test_profile_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from sim.cli import app\n"
        f"args = ['run', '--B', '1..4', '--profile', {str(test_profile_path)!r}]\n"
        "r = CliRunner().invoke(app, [*args, '--requests', '500', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "import sim.sweep, sim.check\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_default_profile_works_on_a_fresh_install() -> None:
    from sim.runner import default_profile_path

    if not default_profile_path().exists():
        pytest.skip("the bundled CPU profile is not shipped")
    code, out, err = _run("--B", "1..64", "--requests", "2000", "--json")
    assert code == 0, err
    assert [r["B"] for r in _json_lines(out)] == [1, 2, 4, 8, 16, 32, 64]


def test_chrome_trace_has_every_batch_on_its_device(test_profile_path: Path, tmp_path: Path):
    path = tmp_path / "trace.json"
    code, _, err = _run(
        "--B", "4", "--profile", str(test_profile_path), "--requests", "200", "--devices", "2",
        "--combine-latency-s", "1e-5", "--chrome-trace", str(path),
    )  # fmt: skip
    assert code == 0, err
    events = json.loads(path.read_text())["traceEvents"]
    batches = [e for e in events if e["ph"] == "X" and e["name"].startswith("expert")]
    assert sum(int(e["name"].split("x")[-1]) for e in batches) == 200 * 2  # every item
    for tid in (1, 2):  # one batch at a time per device: no overlap on a track
        spans = sorted(
            (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("tid") == tid and e["ph"] == "X"
        )
        assert all(b[0] >= a[1] - 1e-6 for a, b in itertools.pairwise(spans))
    code, _, err = _run(
        "--B",
        "2,4",
        "--profile",
        str(test_profile_path),
        "--chrome-trace",
        str(tmp_path / "x.json"),
    )
    assert code == 2 and "one B value" in err


def test_a_profile_measured_while_the_machine_changed_speed_is_flagged(tmp_path: Path) -> None:
    args = ["--B", "2", "--requests", "2000", "--json"]
    noisy = _run(*args, "--profile", str(profile_with_variation(tmp_path, 0.86)))
    steady = _run(*args, "--profile", str(profile_with_variation(tmp_path, 0.02)))
    assert noisy[0] == steady[0] == 0
    assert noisy[1] == steady[1]  # the note changes no number
    said = " ".join(noisy[2].split())
    assert "warning:" in said and "differ by 86%" in said and "quiet machine" in said
    assert "warning" not in steady[2]
    # the bundled default profile was measured steadily enough to say nothing
    assert "warning" not in _run("--B", "1", "--requests", "500", "--json")[2]
