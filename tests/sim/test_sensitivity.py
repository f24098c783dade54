"""``sim check --sensitivity``: the band of predictions with every measured cost ×(1 ± p)."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.check import Terms, check_run
from sim.cli import app
from sim.config import GateSpec, SimConfig
from sim.engine import simulate
from sim.errors import CheckError
from sim.host_terms import HostTerms
from sim.output import summarize_run
from sim.sensitivity import parse_sensitivity, scale_costs
from sim.service import ServiceTable
from sim.workload import Workload, make_workload
from traces import data_path

runner = CliRunner()

SHIPPED_RUN = data_path("serve/cpu-q250.parquet")
SHIPPED_PROFILE = data_path("profiles/cpu-host.parquet")
P50_SLACK = 0.005  # the model's own jitter in p50 when costs move (test_band_on_the_shipped_run)


def _host() -> HostTerms:
    return HostTerms(
        dispatch_s=np.array([0.0, 1e-5, 2e-5]),
        collect_s=3e-6,
        gate_rate=0.4,
        worker_rate=0.7,
        duty=(0.1, 0.9),
        duty_speed=(0.6, 1.0),
        handoff_idle_s=(0.0, 1e-3),
        handoff_gate_s=(1e-5, 5e-5),
        handoff_worker_s=(2e-5, 6e-5),
        wake_idle_s=(1e-4, 2e-3),
        gate_cold_idle_s=(1e-4, 3e-3),
        gate_cold_cost_s=(1e-5, 2e-4),
        wake_handoff_s=(4e-5, 5e-5),
        gate_wake_idle_s=(4e-4, 5e-3),
        gate_wake_handoff_s=(2.5e-5, 4e-5),
        wake_cost_s=(2e-5, 5e-5),
        gate_overhead_s=4e-5,
        sched_tick_s=4e-3,
        batch_overhead_s=1e-5,
        completion_overhead_s=2e-5,
        arrival_penalty_gate_s=5e-5,
        arrival_penalty_worker_s=4e-5,
        arrival_penalty_company_s=(7e-5, 6e-5),
        gate_contention_s=9e-4,
        worker_contention_s=(1e-5, 6e-5, 3e-5),
        busy_handoff_duty=(0.2, 0.8),
        busy_handoff_s=((2e-5, 6e-5, 3e-4), (1e-5, 3e-5, 1e-4)),
        speed_scale=0.9,
        combine_factor=1.2,
    )


def test_scale_costs_scales_every_duration_and_keeps_the_ratios() -> None:
    cfg = SimConfig(
        batch_size=2, n_experts=1, gate=GateSpec(k=1), gate_latency_s=3e-4,
        combine_latency_s=1e-4, batch_overhead_s=2e-5,
    )  # fmt: skip
    median = np.array([[np.nan, 1e-4, 1.5e-4]])
    table = ServiceTable(median, median * 0.8, median * 1.3, _host())
    cfg2, table2 = scale_costs(cfg, table, 1.25)
    assert (cfg2.gate_latency_s, cfg2.combine_latency_s, cfg2.batch_overhead_s) == pytest.approx(
        (3.75e-4, 1.25e-4, 2.5e-5)
    )
    pairs = ((table2.median, 1.0), (table2.p10, 0.8), (table2.p90, 1.3))
    for got, spread in pairs:
        assert got is not None
        np.testing.assert_allclose(got[:, 1:], median[:, 1:] * spread * 1.25)
    h, h2 = table.host, table2.host
    assert h is not None and h2 is not None
    ratios = {"gate_rate", "worker_rate", "duty", "duty_speed", "handoff_idle_s", "wake_idle_s"}
    ratios |= {"speed_scale", "combine_factor", "handoff_factor", "gate_cold_idle_s"}
    ratios |= {"busy_handoff_duty"}
    ratios |= {"gate_wake_idle_s", "sched_tick_s"}  # the kernel's period is not a cost
    for f in fields(HostTerms):
        a, b = getattr(h, f.name), getattr(h2, f.name)
        # factors on wall times and the run's wake-up tails, the machine's: kept
        if f.name in ("state", "state_path", "wake_tails"):
            assert b is a
            continue
        want = a if f.name in ratios else np.asarray(a) * 1.25
        np.testing.assert_allclose(np.asarray(b, dtype=float), np.asarray(want, dtype=float))
    assert (cfg.gate_latency_s, table.median[0, 1]) == (3e-4, 1e-4)  # inputs untouched
    with pytest.raises(CheckError):
        scale_costs(cfg, table, 0.0)


def test_latency_scales_exactly_with_the_costs_when_nothing_queues() -> None:
    # One expert, B = 1, deterministic service, arrivals 1 s apart: every latency is
    # gate + service + combine, so ×c on every cost is ×c on every percentile.
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), rate_rps=1.0, n_requests=400,
        gate_latency_s=2e-4, combine_latency_s=1e-4, warmup=0,
    )  # fmt: skip
    table = ServiceTable.constant([[5e-4]])
    work = Workload.from_lists([float(i) for i in range(cfg.n_requests)], [[0]] * cfg.n_requests)
    base = summarize_run(simulate(cfg, table, work))
    for c in (0.9, 1.1):
        got = summarize_run(simulate(*scale_costs(cfg, table, c), work))
        assert got["latency_p50_s"] == pytest.approx(c * base["latency_p50_s"], rel=1e-9)
        assert got["latency_p99_s"] == pytest.approx(c * base["latency_p99_s"], rel=1e-9)
    assert base["latency_p50_s"] == pytest.approx(8e-4, rel=1e-9)


def test_queueing_makes_latency_more_than_proportional_to_the_costs() -> None:
    # M/D/1 (B = 1, one expert) at utilization 0.7: the mean latency is
    # s + λs²/(2(1-λs)), whose elasticity to s is well above 1; with the same
    # arrivals the model must show it, and match the closed form at each scale.
    s, lam = 1e-3, 700.0
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), rate_rps=lam, n_requests=200_000,
        warmup=2000, seed=3,
    )  # fmt: skip
    table = ServiceTable.constant([[s]])
    work = make_workload(cfg)
    for c in (0.95, 1.0, 1.05):
        sc = s * c
        want = sc + lam * sc**2 / (2 * (1 - lam * sc))
        got = summarize_run(simulate(*scale_costs(cfg, table, c), work))["latency_mean_s"]
        assert got == pytest.approx(want, rel=0.03)


def test_parse_sensitivity() -> None:
    assert parse_sensitivity(5) == pytest.approx(0.05)
    for bad in (0, -5, 100, 250):
        with pytest.raises(CheckError):
            parse_sensitivity(bad)


def _shipped() -> None:
    if not (SHIPPED_RUN.exists() and SHIPPED_PROFILE.exists()):
        pytest.skip("the host-model regression data is not shipped")


def test_band_on_the_shipped_run() -> None:
    """The shipped quiet 250 req/s run with the profile taken beside it: dearer costs
    predict later completions, and the band is relatively widest at B = 1, where a
    request's latency is all host work; at B = 16 it is mostly the wait for 16 requests
    to the same expert, which no cost changes."""
    _shipped()
    # the workers' absences (sim.run_absences) are replayed at the run's instants: a request
    # moved by the costs meets or misses one, so B = 1's p99 (six requests of this run) is not
    # monotone in the costs with them (the prediction 8 % above both ends of its band): the
    # band is read without them
    rows = check_run(SHIPPED_RUN, SHIPPED_PROFILE, sensitivity=0.05, absences_from_run=False)
    plain = check_run(SHIPPED_RUN, SHIPPED_PROFILE, absences_from_run=False)
    width = {}  # of the p50 band, relative to the prediction
    for r, p in zip(rows, plain, strict=True):
        assert r.simulated == p.simulated and r.within == p.within  # the band adds, never moves
        assert r.band is not None
        lo, hi = r.band["p50"]
        # at B >= 4 the band is 0.05 % wide, narrower than what another placing of the same
        # draws moves the p50 (0.3 %: costs x0.95 and x1.05 both read 0.3 % below x1.0)
        assert lo * (1 - P50_SLACK) < r.simulated["p50"] < hi * (1 + P50_SLACK), (r.B, r.band)
        width[r.B] = (r.band["p50"][1] - r.band["p50"][0]) / r.simulated["p50"]
    assert width[1] > 0.03 and width[1] > 5 * width[16], width  # recorded: 7.5 %, 0.09 %
    # p99 rests on ~10 requests, and a request moved by the costs meets other spells: at
    # B >= 4 the band holds it (with the lock shared evenly, the default; with the lock won
    # whole, other draws of who holds it move p99 out of its own band: not asserted); at
    # B = 1, where every step is host work, it may sit a few per cent outside (with the
    # expert calls' speed read from the run, 2 % below the band's low end on this run)
    for r in rows:
        lo, hi = r.band["p99"]
        slack = 0.05 if r.B == 1 else 0.01
        assert (1 - slack) * lo < r.simulated["p99"] < (1 + slack) * hi, (r.B, r.band)


def test_sensitivity_cli(tmp_path) -> None:
    _shipped()
    args = ["check", str(SHIPPED_RUN), "--profile", str(SHIPPED_PROFILE), "--sensitivity", "5"]
    # the option's way through the command, not the band on the default model (the test
    # above): at the profile's host speed, without the run's absences and price of company,
    # the check skips the searches that make the default one slow
    args += ["--host-speed", "profile", "--worker-absences", "off", "--host-contention", "profile"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code in (0, 1), res.stderr
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["B"] for d in docs] == [1, 4, 16]
    for d in docs:
        lo, hi = d["band"]["p50"]
        assert lo * (1 - P50_SLACK) <= d["simulated"]["p50"] <= hi * (1 + P50_SLACK)
        assert d["in_band"]["p50"] == (lo <= d["measured"]["p50"] <= hi)
    res = runner.invoke(app, args)
    assert "costs ±5%" in res.stdout.replace("\n", " ") or "±5%" in res.stdout
    for bad in (["--sensitivity", "0"], ["--sensitivity", "-3"], ["--sensitivity", "100"]):
        res = runner.invoke(app, ["check", str(SHIPPED_RUN), *bad])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    with pytest.raises(CheckError, match="--terms profile"):
        check_run(SHIPPED_RUN, terms=Terms.REPLAY, sensitivity=0.05)
    res = runner.invoke(app, ["check", str(SHIPPED_RUN), "--terms", "replay", "--sensitivity", "5"])
    assert res.exit_code == 2 and "--terms profile" in res.stderr
