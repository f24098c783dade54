"""``sim sweep``: grid expansion, Dask execution (threads in tests), resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from sim.cli import app
from sim.errors import SweepSpecError
from sim.runner import simulate_summary
from sim.sweep import load_spec, parts_dir, run_sweep, slurm_cluster
from traces.routing import RoutingTrace, write_routing

from .conftest import profile_with_variation

runner = CliRunner()


def _spec(tmp_path: Path, profile: Path, requests: int = 2000, seeds: str = "[0, 1]") -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(
        f'profile = "{profile}"\n'
        "[grid]\n"
        'B = "2..8"\n'
        "rate = [500.0, 1500.0]\n"
        f"seed = {seeds}\n"
        "experts = 8\n"
        'gate = "topk:2"\n'
        f"requests = {requests}\n"
    )
    return path


def test_spec_expands_the_grid_in_order(tmp_path: Path, test_profile_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, test_profile_path))
    combos = [(p.config.batch_size, p.config.rate_rps, p.config.seed) for p in spec.points]
    assert combos == [(b, r, s) for b in (2, 4, 8) for r in (500.0, 1500.0) for s in (0, 1)]
    assert len({p.id for p in spec.points}) == 12
    assert spec.profile == str(test_profile_path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[grid]\nB = [0]\n", "B (batch size)"),
        ("[grid]\nB = [1]\nwarp = 3\n", "unknown grid keys"),
        ("B = [1]\n", "[grid]"),
        ("[grid\n", "not valid TOML"),
        ("[grid]\nB = [2]\nrate = [-1.0]\n", "rate"),
        ('[grid]\nB = [2]\nhost = "false"\n', "expected true or false"),
        ('[grid]\nB = [2]\nhost_lock = ["even", "shared"]\n', "whole or even"),
    ],
)
def test_bad_spec_one_line_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SweepSpecError, match=r"bad\.toml"):
        load_spec(path)
    res = runner.invoke(app, ["sweep", str(path), "--threads"])
    assert res.exit_code == 2 and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_sweep_runs_every_point_and_resumes_without_recomputing(
    tmp_path: Path, test_profile_path: Path
) -> None:
    spec = load_spec(_spec(tmp_path, test_profile_path))
    out = tmp_path / "res.parquet"
    table, ran = run_sweep(spec, out, workers=2, processes=False)
    assert ran == 12 and table.height == 12
    assert pl.read_parquet(out).height == 12
    # One point recomputed alone gives the same numbers as inside the sweep.
    p = spec.points[5]
    direct = simulate_summary(p.config, spec.profile)
    row = table.filter(pl.col("point") == p.id).row(0, named=True)
    assert row["latency_p99_s"] == direct["latency_p99_s"]
    assert row["B"] == p.config.batch_size and row["rate_rps"] == p.config.rate_rps
    # Simulate a kill: the final table and half the parts are gone, a half-written
    # temporary part is left behind. Running again computes only the missing points.
    out.unlink()
    parts = sorted(parts_dir(out).glob("*.parquet"))
    for part in parts[::2]:
        part.unlink()
    (parts_dir(out) / ".deadbeef.parquet.x.tmp").write_bytes(b"PAR1 truncated")
    seen: list[bool] = []
    again, ran = run_sweep(
        spec, out, workers=2, processes=False, on_point=lambda _p, now: seen.append(now)
    )
    assert ran == 6 and sorted(seen) == [False] * 6 + [True] * 6
    assert_frame_equal(again, table)


def test_killed_sweep_process_resumes_to_the_same_table(
    tmp_path: Path, test_profile_path: Path
) -> None:
    spec_path = _spec(tmp_path, test_profile_path, requests=10_000)
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(spec_path), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--threads", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    parts = parts_dir(out)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 1:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = len(list(parts.glob("*.parquet")))
    assert 1 <= finished < 12, "the sweep should have been killed part-way"
    assert not out.exists()
    spec = load_spec(spec_path)
    table, ran = run_sweep(spec, out, workers=2, processes=False)
    assert ran == 12 - finished
    fresh, _ = run_sweep(spec, tmp_path / "fresh.parquet", workers=2, processes=False)
    assert_frame_equal(table, fresh)


def test_cli_sweep_json_and_table(tmp_path: Path) -> None:
    noisy = profile_with_variation(tmp_path, 0.4)  # measured while the machine changed speed
    path = _spec(tmp_path, noisy, requests=1000, seeds="0")
    res = runner.invoke(app, ["sweep", str(path), "--threads", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 6
    assert "differ by 40%" in " ".join(res.stderr.split())
    res = runner.invoke(app, ["sweep", str(path), "--threads"])
    assert res.exit_code == 0 and "0 points run now, 6 already finished" in res.stderr


def test_sweep_over_the_host_models_lock_sharing(tmp_path: Path, host_profile_path: Path) -> None:
    """host = true with both lock sharings: two points, told apart by their configs, that
    differ where the lock matters (B = 1 with both threads busy); a profile without the
    host terms is refused up front."""
    prof = host_profile_path
    path = tmp_path / "lock.toml"
    path.write_text(
        f'profile = "{prof}"\n[grid]\nB = 1\nrate = 1000.0\nrequests = 1500\nhost = true\n'
        'host_lock = ["even", "whole"]\n'
    )
    res = runner.invoke(app, ["sweep", str(path), "--threads", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    configs = [r["config"] for r in rows]
    assert sorted(c["host_lock"] for c in configs) == ["even", "whole"]
    assert all(c["host"] for c in configs)
    assert rows[0]["latency_p99_s"] != rows[1]["latency_p99_s"]
    plain = tmp_path / "plain.toml"
    plain.write_text(path.read_text().replace(str(prof), str(profile_with_variation(tmp_path, 0))))
    res = runner.invoke(app, ["sweep", str(plain), "--threads"])
    assert res.exit_code == 2 and "host terms" in res.stderr


def test_a_sweep_point_takes_what_sim_run_takes_from_the_profile(
    tmp_path: Path, host_profile_path: Path
) -> None:
    """Unset, the gate and combine costs are the profile's and the shared-host model is on
    for a CPU profile with its terms, as in `sim run`: the same point gives the same
    numbers either way; set in the spec, they win."""
    prof = host_profile_path
    path = tmp_path / "same.toml"
    path.write_text(f'profile = "{prof}"\n[grid]\nB = 2\nrate = 800.0\nrequests = 1500\n')
    (point,) = load_spec(path).points
    assert point.config.host
    assert point.config.gate_latency_s == pytest.approx(200e-6)
    assert point.config.combine_latency_s == pytest.approx(60e-6)
    swept = runner.invoke(app, ["sweep", str(path), "--threads", "--json"])
    run = runner.invoke(
        app, ["run", "--profile", str(prof), "--B", "2", "--rate", "800", "--requests", "1500",
              "--json"],
    )  # fmt: skip
    assert swept.exit_code == 0 and run.exit_code == 0, swept.stderr + run.stderr
    for key in ("throughput_rps", "latency_p50_s", "latency_p99_s"):
        assert json.loads(swept.stdout)[key] == json.loads(run.stdout)[key]
    path.write_text(path.read_text() + "host = false\ngate_latency_s = 1e-4\n")
    (point,) = load_spec(path).points
    assert not point.config.host and point.config.gate_latency_s == 1e-4


def test_slurm_job_script_from_spec() -> None:
    cluster = slurm_cluster(
        {"queue": "shared", "account": "lab", "memory": "4GB", "walltime": "00:30:00", "jobs": 2}
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p shared" in script and "#SBATCH -A lab" in script
    assert "#SBATCH -t 00:30:00" in script and "dask_worker" in script


def test_sweep_on_an_existing_scheduler(tmp_path: Path, test_profile_path: Path) -> None:
    from distributed import LocalCluster

    spec = load_spec(_spec(tmp_path, test_profile_path, requests=1000, seeds="0"))
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        table, ran = run_sweep(
            spec, tmp_path / "remote.parquet", scheduler=cluster.scheduler_address
        )
    assert ran == 6 and table.height == 6
    assert table["point"].to_list() == [p.id for p in spec.points]


def _trace_spec(tmp_path: Path, profile: Path, trace: str, extra: str = "") -> Path:
    path = tmp_path / "traced.toml"
    path.write_text(
        f'profile = "{profile}"\n[grid]\nB = [2]\nrate = 800.0\nrequests = 400\n'
        f'gate = "trace:{trace}"\n{extra}'
    )
    return path


def test_a_traced_point_takes_the_traces_experts_as_sim_run_does(
    tmp_path: Path, test_profile_path: Path
) -> None:
    rng = np.random.default_rng(3)
    experts = np.stack([rng.permutation(6)[:2] for _ in range(400)])
    write_routing(
        tmp_path / "six.parquet", RoutingTrace.from_arrays(experts, np.full((400, 2), 0.5), 6)
    )
    spec = load_spec(_trace_spec(tmp_path, test_profile_path, "six.parquet"))
    (point,) = spec.points
    assert point.config.n_experts == 6  # the trace's, not the profile's 8
    swept = simulate_summary(point.config, spec.profile)
    res = runner.invoke(
        app,
        ["run", "--B", "2", "--rate", "800", "--requests", "400", "--json",
         "--profile", str(test_profile_path), "--routing", str(tmp_path / "six.parquet")],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    ran = json.loads(res.stdout.strip().splitlines()[0])
    assert ran["latency_p99_s"] == pytest.approx(swept["latency_p99_s"], rel=1e-12)
    assert ran["throughput_rps"] == pytest.approx(swept["throughput_rps"], rel=1e-12)
    # An experts axis still wins over the trace, as --experts does in sim run.
    spec8 = load_spec(_trace_spec(tmp_path, test_profile_path, "six.parquet", "experts = 8\n"))
    assert spec8.points[0].config.n_experts == 8


def test_an_unreadable_trace_is_refused_before_any_point_runs(
    tmp_path: Path, test_profile_path: Path
) -> None:
    (tmp_path / "junk.parquet").write_text("not parquet")
    for name, needle in (
        ("gone.parquet", "gone.parquet: (file): no such file"),
        ("junk.parquet", "junk.parquet"),
    ):
        path = _trace_spec(tmp_path, test_profile_path, name)
        res = runner.invoke(app, ["sweep", str(path), "--threads", "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()


def test_the_machine_state_is_a_grid_axis(tmp_path: Path, host_profile_path: Path) -> None:
    """state_sigma as an axis: the point with it equals `sim run --host-state` at the same
    settings, the point without equals plain `sim run`; a bad value is a spec error."""

    prof = host_profile_path
    path = tmp_path / "state.toml"
    path.write_text(
        f'profile = "{prof}"\n[grid]\nB = 1\nrate = 800.0\nrequests = 1500\n'
        "state_sigma = [0.0, 0.3]\nstate_rho = 0.8\nstate_window_s = 0.05\n"
    )
    spec = load_spec(path)
    got = {p.config.state_sigma: simulate_summary(p.config, spec.profile) for p in spec.points}
    args = ["run", "--profile", str(prof), "--B", "1", "--rate", "800", "--requests", "1500",
            "--json"]  # fmt: skip
    for sigma, extra in ((0.0, []), (0.3, ["--host-state", "0.3,0.8,0.05"])):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        ran = json.loads(res.stdout)
        assert ran["latency_p99_s"] == pytest.approx(got[sigma]["latency_p99_s"], rel=1e-12)
    assert got[0.3]["latency_p99_s"] != got[0.0]["latency_p99_s"]
    path.write_text(path.read_text().replace("state_rho = 0.8", "state_rho = 1.5"))
    with pytest.raises(SweepSpecError, match="lag-one"):
        load_spec(path)


def _boolean_axis_matches_sim_run(
    tmp_path: Path, frame: pl.DataFrame, field: str, option: str, requests: int
) -> Path:
    """A grid of ``field = [true, false]`` on a profile of ``frame``: true equals plain `sim
    run`, false equals `sim run OPTION off`, and the two differ; returns the spec's path."""
    from traces.profile import write_profile

    prof = tmp_path / f"TEST-{field}-profile.parquet"
    write_profile(frame, prof)
    path = tmp_path / f"{field}.toml"
    path.write_text(
        f'profile = "{prof}"\n[grid]\nB = 1\nrate = 800.0\nrequests = {requests}\n'
        f"{field} = [true, false]\n"
    )
    spec = load_spec(path)
    got = {getattr(p.config, field): simulate_summary(p.config, spec.profile) for p in spec.points}
    args = ["run", "--profile", str(prof), "--B", "1", "--rate", "800", "--requests",
            str(requests), "--json"]  # fmt: skip
    for on, extra in ((True, []), (False, [option, "off"])):
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        ran = json.loads(res.stdout)
        assert ran["latency_p99_s"] == pytest.approx(got[on]["latency_p99_s"], rel=1e-12)
    assert got[True]["latency_p99_s"] != got[False]["latency_p99_s"]
    return path


def test_the_gate_preemption_is_a_grid_axis(tmp_path: Path) -> None:
    """gate_preempt as an axis: true equals plain `sim run` on a profile with the preempt rows,
    false equals `sim run --host-preempt off`; a string is a spec error."""
    from .test_host_preempt import preempt_frame

    path = _boolean_axis_matches_sim_run(
        tmp_path, preempt_frame(), "gate_preempt", "--host-preempt", 1500
    )
    path.write_text(path.read_text().replace("[true, false]", '"no"'))
    with pytest.raises(SweepSpecError, match="true or false"):
        load_spec(path)


def test_the_machines_stalls_are_a_grid_axis(tmp_path: Path) -> None:
    """host_stalls as an axis: true equals plain `sim run` on a profile with the stall rows,
    false equals `sim run --host-stalls off`."""
    from .test_host_stalls import stall_frame

    _boolean_axis_matches_sim_run(tmp_path, stall_frame(), "host_stalls", "--host-stalls", 4000)
