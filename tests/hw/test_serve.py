"""`hw serve`: the real queued server on a tiny model keeps every rule of docs/system-model.md.

Assertions are structural (every request once, exact batches, ordered
timestamps, one batch at a time per device, FIFO queues, overload detected),
so they hold on a loaded machine; no speed is asserted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hw.cli import app
from hw.profiling.errors import ServeError
from hw.profiling.model import random_model
from hw.profiling.speed_probe import PROBE_GAP_S
from hw.serving.plan import plan_workload, poisson_arrivals, policy_routes
from hw.serving.run import ServerSettings, ServeRun, run_sweep
from traces.routing import RoutingTrace, write_routing
from traces.serving import ServeConfig, read_records, read_summary, summary_path, write_records

runner = CliRunner()
ORDER = [
    "arrival_s",
    "gate_start_s",
    "gate_done_s",
    "enqueue_s",
    "batch_formed_s",
    "batch_start_s",
    "batch_end_s",
    "combine_start_s",
    "complete_s",
]


def _sweep(
    b_values: tuple[int, ...] = (1, 3), M: int = 4, k: int = 2, **kw: Any
) -> tuple[ServeRun, ServeConfig]:
    settings = kw.pop("settings", ServerSettings(speed_probe_s=0.03))
    base: dict[str, Any] = dict(rate_rps=400.0, requests=100, warmup=5)
    base.update(kw)
    cfg = ServeConfig(n_experts=M, b_values=b_values, k=k, **base)
    model = random_model(M, 8, 8, k=k, seed=0)
    return run_sweep(model, cfg, settings), cfg


def _check_invariants(run: ServeRun, cfg: ServeConfig) -> None:
    rec = run.records
    for point in run.points:
        rows = rec.filter(pl.col("B") == point.B)
        B = point.B
        # every generated request completes exactly once, with k distinct experts
        assert (point.combine_counts == 1).all()
        per_req = rows.group_by("request").agg(
            pl.len(), pl.col("k").first(), pl.col("expert").n_unique().alias("distinct")
        )
        assert sorted(per_req["request"].to_list()) == list(range(point.requests))
        assert (per_req["len"] == per_req["k"]).all() and (
            per_req["distinct"] == per_req["k"]
        ).all()
        # batches: exactly B except max_wait flushes and the final drain (both partial)
        batches = rows.group_by("batch").agg(
            pl.len(),
            pl.col("batch_size").first(),
            pl.col("batch_kind").first(),
            pl.col("expert").n_unique().alias("experts"),
            pl.col("expert").first(),
            pl.col("device").first(),
            pl.col("batch_formed_s").first(),
            pl.col("batch_start_s").first(),
            pl.col("batch_end_s").first(),
        )
        assert (batches["len"] == batches["batch_size"]).all()
        assert (batches["experts"] == 1).all()
        exact = batches.filter(pl.col("batch_kind") == "exact")
        partial = batches.filter(pl.col("batch_kind") != "exact")
        assert (exact["batch_size"] == B).all()
        assert (partial["batch_size"] < B).all()
        if cfg.max_wait_s is None:
            assert (batches["batch_kind"] != "flush").all()
        drains = batches.filter(pl.col("batch_kind") == "drain")
        assert drains["expert"].n_unique() == drains.height  # at most one drain per expert
        assert (drains["batch_formed_s"] >= rows["gate_done_s"].max()).all()
        # per-row timestamps are ordered
        t = rows.select(ORDER).to_numpy()
        assert (np.diff(t, axis=1) >= 0).all()
        # the combine ran after the batch that delivered the last answer
        last = rows.group_by("request").agg(
            pl.col("batch").sort_by("batch_end_s").last(), pl.col("combine_batch").first()
        )
        ends = rows.group_by("request").agg(
            pl.col("batch_end_s").max(),
            pl.col("batch_end_s")
            .filter(pl.col("batch") == pl.col("combine_batch"))
            .first()
            .alias("crit_end"),
        )
        assert (ends["batch_end_s"] == ends["crit_end"]).all(), last
        # arrivals in id order; one gate, first come first served
        req = rows.group_by("request").agg(pl.col(c).first() for c in ORDER).sort("request")
        assert (np.diff(req["arrival_s"].to_numpy()) >= 0).all()
        g0, g1 = req["gate_start_s"].to_numpy(), req["gate_done_s"].to_numpy()
        assert (g0[1:] >= g1[:-1]).all()
        # a device runs one thing at a time: its batches and combines never overlap,
        # and it takes ready batches in the order they were formed
        comb = rows.group_by("request").agg(
            pl.col("device").filter(pl.col("batch") == pl.col("combine_batch")).first(),
            pl.col("combine_start_s").first(),
            pl.col("complete_s").first(),
        )
        for d in range(cfg.devices):
            b = batches.filter(pl.col("device") == d).sort("batch_start_s")
            c = comb.filter(pl.col("device") == d)
            iv = np.concatenate(
                [
                    b.select("batch_start_s", "batch_end_s").to_numpy(),
                    c.select("combine_start_s", "complete_s").to_numpy(),
                ]
            )
            iv = iv[np.argsort(iv[:, 0], kind="stable")]
            assert (iv[1:, 0] >= iv[:-1, 1]).all()
            assert (np.diff(b["batch_formed_s"].to_numpy()) >= 0).all()
            assert set(b["expert"].to_list()) <= {e for e in range(cfg.n_experts) if
                                                   cfg.placement[e] == d}  # fmt: skip
        # each expert's queue is FIFO: enqueue order = batch order
        for e in range(cfg.n_experts):
            q = rows.filter(pl.col("expert") == e).sort("enqueue_s", "request")
            assert (np.diff(q["batch"].to_numpy()) >= 0).all()


def test_every_request_completes_once_in_exact_batches() -> None:
    switch, threads = sys.getswitchinterval(), torch.get_num_threads()
    run, cfg = _sweep((1, 3))
    assert (sys.getswitchinterval(), torch.get_num_threads()) == (switch, threads)  # restored
    _check_invariants(run, cfg)
    s = run.summary
    assert s["B"].to_list() == [1, 3]
    assert (s["requests"] == 95).all() and (s["warmup_requests"] == 5).all()
    assert (s["flush_batches"] == 0).all()
    assert run.records.filter(pl.col("warmup"))["request"].unique().sort().to_list() == list(
        range(5)
    )
    assert (s["overhead_p50_s"] >= 0).all() and (s["overhead_p50_s"] < s["latency_p50_s"]).all()
    assert run.config.gate_latency_s and run.config.gate_latency_s > 0
    assert run.config.combine_latency_s and run.config.combine_latency_s > 0


def test_max_wait_flushes_partial_batches_never_early() -> None:
    wait = 0.004
    run, cfg = _sweep((8,), M=2, k=1, rate_rps=200.0, requests=60, max_wait_s=wait)
    _check_invariants(run, cfg)
    rows = run.records
    flushed = rows.filter(pl.col("batch_kind") == "flush")
    assert flushed.height > 0
    first = flushed.group_by("batch").agg(
        pl.col("enqueue_s").min(), pl.col("batch_formed_s").first()
    )
    assert (first["batch_formed_s"] - first["enqueue_s"] >= wait - 1e-9).all()


def test_two_devices_keep_placement_and_invariants() -> None:
    run, cfg = _sweep((2,), M=4, k=2, devices=2, requests=80)
    _check_invariants(run, cfg)
    dev = run.records.select("expert", "device").unique()
    assert all(d == e % 2 for e, d in dev.iter_rows())
    assert len(run.summary["device_util"][0]) == 2


def test_overload_is_reported_and_bounded() -> None:
    t0 = time.perf_counter()
    run, cfg = _sweep((1,), rate_rps=1e5, requests=300, warmup=0)
    assert time.perf_counter() - t0 < 120
    _check_invariants(run, cfg)
    s = run.summary.row(0, named=True)
    assert s["overloaded"] and not s["stopped_early"]
    assert s["backlog_end_n"] > s["backlog_half_n"]
    capped, cfg2 = _sweep((1,), rate_rps=1e5, requests=300, warmup=0, max_backlog=40)
    _check_invariants(capped, cfg2)
    point = capped.points[0]
    assert point.stopped_early and point.requests < 300
    assert capped.config.stopped_early == (1,)
    assert capped.summary["overloaded"][0] and capped.summary["stopped_early"][0]


def test_light_load_is_not_overload() -> None:
    run, _ = _sweep((1,), rate_rps=25.0, requests=30, k=1)
    assert not run.summary["overloaded"][0]


def _trace(path: Path, n: int = 30, M: int = 4) -> RoutingTrace:
    rng = np.random.default_rng(3)
    experts = np.array([rng.choice(M, size=2, replace=False) for _ in range(n)])
    weights = rng.dirichlet([1, 1], size=n)
    times = 5.0 + np.cumsum(rng.exponential(1 / 300, size=n))
    trace = RoutingTrace.from_arrays(experts, weights, M, arrival_time_s=times)
    write_routing(path, trace)
    return trace


def test_trace_replay_uses_its_routing_and_arrival_times(tmp_path: Path) -> None:
    path = tmp_path / "trace.parquet"
    trace = _trace(path)
    run, cfg = _sweep(
        (2,), rate_rps=None, requests=None, warmup=2, arrival="trace", routing="trace",
        routing_trace=str(path),
    )  # fmt: skip
    _check_invariants(run, cfg)
    rec = run.records.sort("request", "slot")
    got = rec.group_by("request", maintain_order=True).agg(pl.col("expert"), pl.col("weight"))
    want_e, want_w = trace.padded()
    for i, (es, ws) in enumerate(
        zip(got["expert"].to_list(), got["weight"].to_list(), strict=True)
    ):
        order = np.argsort(want_e[i])
        assert es == want_e[i][order].tolist()
        assert np.allclose(ws, want_w[i][order])
    planned = trace.table["arrival_time_s"].to_numpy() - trace.table["arrival_time_s"][0]
    arrived = rec.group_by("request", maintain_order=True).agg(pl.col("arrival_s").first())
    assert (arrived["arrival_s"].to_numpy() >= planned - 1e-9).all()  # open loop, never early


def test_a_run_longer_than_its_trace_cycles_it(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    trace = _trace(path, n=10)
    cfg = ServeConfig(n_experts=4, b_values=(2,), k=2, requests=25, arrival="trace",
                      routing="trace", routing_trace=str(path))  # fmt: skip
    wl = plan_workload(cfg)
    assert wl.n == 25 and wl.experts is not None
    assert wl.experts[3] == wl.experts[13] == wl.experts[23]
    t = trace.table["arrival_time_s"].to_numpy()
    mean_gap = (t[-1] - t[0]) / 9
    assert np.allclose(wl.arrival_s[:10], t - t[0])
    assert wl.arrival_s[10] == pytest.approx(t[-1] - t[0] + mean_gap)
    assert np.allclose(np.diff(wl.arrival_s[10:20]), np.diff(t))


def test_gate_routing_uses_the_models_top_k() -> None:
    run, cfg = _sweep((2,), routing="gate", requests=40)
    _check_invariants(run, cfg)
    assert (run.records["k"] == 2).all()


def _ideal_completion(rows: pl.DataFrame) -> np.ndarray:
    """Replay one B of a one-device run by the system model's rules with the run's own
    measured service times (gate, each batch, each combine); completion per request."""
    req = rows.group_by("request").agg(pl.col(c).first() for c in ORDER).sort("request")
    arrival = req["arrival_s"].to_numpy()
    gate_s = (req["gate_done_s"] - req["gate_start_s"]).to_numpy()
    comb_s = (req["complete_s"] - req["combine_start_s"]).to_numpy()
    gate_done = np.zeros(len(req))
    t = -np.inf
    for i in range(len(req)):
        t = gate_done[i] = max(arrival[i], t) + gate_s[i]
    remaining = rows.group_by("request").len().sort("request")["len"].to_numpy().copy()
    done = np.full(len(req), np.nan)
    free = -np.inf
    for (_bid,), b in rows.sort("batch", "enqueue_s").group_by("batch", maintain_order=True):
        members = b["request"].to_list()
        kind = b["batch_kind"][0]
        formed = gate_done.max() if kind == "drain" else max(gate_done[m] for m in members)
        free = max(formed, free) + (b["batch_end_s"][0] - b["batch_start_s"][0])
        for m in members:  # combines in batch order, right after the batch
            remaining[m] -= 1
            if remaining[m] == 0:
                free = done[m] = free + comb_s[m]
    return done


def test_real_run_never_beats_the_model_fed_its_own_service_times() -> None:
    """Same batches, same order; every request completes no earlier than the ideal model
    says, and the difference is the server's overhead (docs/system-model.md §7)."""
    run, _ = _sweep((1, 3), requests=80)
    for b in (1, 3):
        rows = run.records.filter(pl.col("B") == b)
        ideal = _ideal_completion(rows)
        real = rows.group_by("request").agg(pl.col("complete_s").first()).sort("request")
        lag = real["complete_s"].to_numpy() - ideal
        assert not np.isnan(ideal).any()
        assert (lag >= -1e-9).all(), lag.min()


# --- workload ----------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_open_loop_and_at_rate() -> None:
    a = poisson_arrivals(200.0, seed=7, n=20_000)
    assert np.array_equal(a, poisson_arrivals(200.0, seed=7, n=20_000))
    assert a[0] > 0 and (np.diff(a) > 0).all()
    assert np.mean(np.diff(a)) == pytest.approx(1 / 200.0, rel=0.03)
    d = poisson_arrivals(200.0, seed=7, duration_s=3.0)
    assert (d < 3.0).all() and len(d) == pytest.approx(600, rel=0.15)
    assert np.array_equal(d, a[: len(d)])  # the same stream, cut at the duration


def test_policy_routes_follow_the_popularity_law() -> None:
    experts, _ = policy_routes(20_000, 4, 1, skew=1.0, seed=0)
    freq = np.bincount([e[0] for e in experts], minlength=4) / 20_000
    law = 1 / np.arange(1, 5)
    assert np.allclose(freq, law / law.sum(), atol=0.015)
    two, w2 = policy_routes(500, 5, 2, skew=0.0, seed=1)
    assert all(len(set(e)) == 2 and e == sorted(e) for e in two)
    assert all(w == [0.5, 0.5] for w in w2)


# --- CLI ---------------------------------------------------------------------------------------

TINY = ["--experts", "4", "--d-model", "8", "--expert-hidden", "8", "--warmup", "3",
        "--speed-probe-s", "0.03"]  # fmt: skip


def _error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_cli_writes_records_and_summary_in_the_shared_schema(tmp_path: Path) -> None:
    out = tmp_path / "measured.parquet"
    args = ["serve", "--out", str(out), "--B", "1,2", "--rate", "300", "--requests", "40", *TINY]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["warmup_excluded"] == 3 and [p["B"] for p in doc["points"]] == [1, 2]
    assert list(doc["speed_probe"]["median_s"]) == ["1", "2"]  # the host's state around each B
    records, cfg = read_records(out)
    summary, cfg2 = read_summary(summary_path(out))
    assert cfg == cfg2 and cfg.b_values == (1, 2) and cfg.model["n_experts"] == 4
    assert records.height == 2 * 40 * 2  # two B values, 40 requests, k = 2
    assert summary["requests"].to_list() == [37, 37]
    text = runner.invoke(app, [*args, "--force", "--no-progress"])
    assert text.exit_code == 0 and "warm-up" in text.stdout
    assert "host speed probe" in " ".join(text.stdout.split())


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--B", "0", "--rate", "10"], "--B"),
        (["--rate", "-5"], "--rate"),
        (["--B", "2"], "--rate"),
        (["--rate", "10", "--checkpoint", "/nonexistent.pt"], "no such checkpoint"),
        (["--rate", "10", "--routing", "/nonexistent.parquet"], "no such routing trace"),
        (["--rate", "10", "--route", "magic"], "--route"),
        (["--rate", "10", "--devices", "2", "--placement", "0,1,2,0"], "placement"),
        (["--rate", "10", "--k", "9"], "k must be"),
        (["--rate", "10", "--warmup", "600"], "warmup"),
        (["--rate", "10", "--duration", "1"], "not both"),
        (["--rate", "10", "--speed-probe-s", "-0.5"], "--speed-probe-s"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_write_nothing(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    out = tmp_path / "m.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--requests", "20", *TINY, *extra]
    line = _error_line(runner.invoke(app, args))
    assert needle in line
    assert list(tmp_path.iterdir()) == []


def test_the_host_speed_is_probed_before_between_and_after_the_b_values(tmp_path: Path) -> None:
    """Each B gets the probe taken just before its run and the one just after (shared with
    the next B), stored with the run for sim check; none when turned off."""
    run, _ = _sweep((1, 3, 2), settings=ServerSettings(speed_probe_s=0.03))
    rec = run.config.extra["speed_probe"]
    assert rec["mean_gap_s"] == PROBE_GAP_S and rec["seconds"] == 0.03
    pairs = rec["median_s"]
    assert list(pairs) == ["1", "3", "2"] and all(len(p) == 2 for p in pairs.values())
    assert pairs["1"][1] == pairs["3"][0] and pairs["3"][1] == pairs["2"][0]
    assert all(0 < v < 0.03 for p in pairs.values() for v in p)  # a gate, not the whole probe
    path = tmp_path / "m.parquet"
    write_records(path, run.records, run.config)
    assert read_records(path)[1].extra["speed_probe"] == rec  # it survives the file
    off, _ = _sweep((1,), settings=ServerSettings(speed_probe_s=0))
    assert "speed_probe" not in off.config.extra
    with pytest.raises(ServeError, match="--speed-probe-s"):
        ServerSettings(speed_probe_s=-1)


@pytest.mark.gpu
def test_serve_on_cuda() -> None:
    run, cfg = _sweep((1, 4), settings=ServerSettings(device="cuda"), requests=60)
    _check_invariants(run, cfg)
    assert run.config.device_names[0].startswith("cuda:")


def test_cli_duration_runs_the_arrivals_of_that_many_seconds(tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--rate", "200", "--duration", "0.25",
            "--max-wait-s", "0.02", *TINY, "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records, cfg = read_records(out)
    assert cfg.duration_s == 0.25 and cfg.requests is None
    assert (records["arrival_s"] >= 0).all()
    planned_last = records["request"].max()
    assert 15 <= planned_last + 1 <= 100  # ~50 Poisson arrivals in 0.25 s at 200/s


def test_cli_placement_is_kept_in_expert_order(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--rate", "300", "--requests", "30",
            "--devices", "2", "--placement", "1,1,0,1", *TINY, "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records, cfg = read_records(out)
    assert cfg.placement == (1, 1, 0, 1)
    pairs = dict(records.select("expert", "device").unique().iter_rows())
    assert all(pairs[e] == cfg.placement[e] for e in pairs)


def test_cli_serves_a_trained_checkpoint_with_its_own_gate(tmp_path: Path) -> None:
    from hw.profiling.model import save_checkpoint

    ckpt = tmp_path / "m.pt"
    save_checkpoint(random_model(3, 8, 8, k=2, seed=5), ckpt)
    out = tmp_path / "c.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--rate", "300", "--requests", "30",
            "--checkpoint", str(ckpt), "--route", "gate", "--warmup", "2", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records, cfg = read_records(out)
    assert cfg.n_experts == 3 and cfg.routing == "gate" and cfg.model == {"checkpoint": str(ckpt)}
    assert set(records["expert"].unique().to_list()) <= {0, 1, 2}
    assert (records["k"] == 2).all()


def test_cli_trace_for_another_model_is_a_clear_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.parquet"
    _trace(trace, M=4)
    out = tmp_path / "o.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--rate", "100", "--routing", str(trace),
            "--experts", "6", "--d-model", "8", "--expert-hidden", "8"]  # fmt: skip
    line = _error_line(runner.invoke(app, args))
    assert "4 experts" in line and "6" in line
    assert not out.exists()


def test_cli_routing_trace_brings_its_own_arrivals(tmp_path: Path) -> None:
    trace = tmp_path / "t.parquet"
    _trace(trace, n=12, M=4)
    out = tmp_path / "o.parquet"
    args = ["serve", "--out", str(out), "--B", "2", "--routing", str(trace), "--requests", "15",
            *TINY, "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records, cfg = read_records(out)
    assert cfg.arrival == "trace" and cfg.routing == "trace" and cfg.rate_rps is None
    assert records["rate_rps"].null_count() == records.height
    assert records["request"].n_unique() == 15  # 12 trace rows, cycled


def test_a_top_p_model_serves_a_per_request_k() -> None:
    from hw.moe.models import build_moe_classifier

    model = build_moe_classifier(
        gate="topp", n_experts=4, p=0.6, d_model=8, expert_hidden=8, trunk="mlp", seed=3
    ).eval()
    cfg = ServeConfig(n_experts=4, b_values=(2,), rate_rps=300.0, requests=60, warmup=0,
                      routing="gate", k=1)  # fmt: skip
    run = run_sweep(model, cfg)
    _check_invariants(run, cfg)
    ks = run.records.group_by("request").agg(pl.col("k").first())["k"]
    assert ks.min() >= 1 and ks.max() <= 4
    w = run.records.group_by("request").agg(pl.col("weight").sum())["weight"]
    assert ((w >= 0.6 - 1e-6) & (w <= 1 + 1e-6)).all()  # top-p: the used mass reaches p
