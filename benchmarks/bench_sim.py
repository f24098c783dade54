"""Simulator benchmarks: simulated requests per second, against a plain SimPy model.

Run from the repository root (see ``benchmarks/README.md``, section "Simulator")::

    .venv/bin/python benchmarks/bench_sim.py [--requests 200000] [--naive-requests 20000]
        [--profile PATH] [--no-cli] [--out results.json]

Figures, each printed in a rich table:

* speed of ``sim.engine.simulate`` (workload draws included) for k = 2, M = 8,
  B = 16, pinned to one core: target >= 200,000 simulated requests/s;
* the same for the plain process-per-request SimPy model (``sim.naive``) and
  the ratio between the two (the two give the same completion times, see
  ``tests/sim/test_engine.py``), and for the shared-host model (``sim.host``,
  ``docs/system-model.md`` §8, which simulates the gate and queues event by event);
* wall time of ``sim run --B 1..64 --requests 100000`` (the CLI end to end,
  metrics and JSON included): target < 60 s;
* with ``--fidelity RUN.parquet`` (repeatable; measured ``hw serve`` runs):
  ``sim check`` per B in its modes (``profile`` — with the shared-host model for a
  CPU run when the profile has its terms, then also the ideal model —, ``sampled``,
  ``replay``), printed as the Markdown table of ``benchmarks/README.md``;
* with ``--repeated A.parquet,B.parquet,C.parquet`` (repeatable; runs of the same
  command): per B, the measured mean and spread over the runs, the default
  prediction's mean, the error of the means, and in how many runs the point is
  within tolerance. On a shared box the real server's p50/p99 at small B vary
  from run to run by more than the tolerance; this shows how much. With
  ``--sensitivity P`` also the band of p50/p99 predictions with every measured
  cost off by ±P % (``sim check --sensitivity``).

The profile is ``--profile``, else the bundled CPU profile when it exists, else
a synthetic linear one (said so in the output).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from sim.config import GateSpec, SimConfig
from sim.engine import simulate
from sim.host_terms import HostTerms
from sim.naive import simulate_naive
from sim.runner import default_profile_path, load_service
from sim.sensitivity import parse_sensitivity
from sim.workload import make_workload
from traces.atomic import atomic_write_text
from traces.cli_support import cli_errors
from traces.profile import read_profile, write_profile

__all__ = ["fidelity_markdown", "main", "repeated_markdown", "speed"]

console = Console(stderr=True)
app = typer.Typer(add_completion=False)


def _synthetic_profile(path: Path) -> None:
    """Linear profile (60 µs + 5 µs per sample) for 8 experts, when no real one is at hand."""
    rows = [(e, b, 60e-6 + 5e-6 * b) for e in range(8) for b in (1, 2, 4, 8, 16, 32, 64)]
    write_profile(
        pl.DataFrame(rows, schema=["expert", "batch_size", "latency_s"], orient="row"), path
    )


def speed(profile_path: Path, n: int, engine: str, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` simulated requests/s of one engine (k=2, M=8, B=16, ~60% load).

    ``engine``: ``engine`` (the fast ideal model), ``naive`` (plain SimPy) or ``host``
    (the shared-host model of system-model §8, with the profile's host terms, else with
    rates of 0.5 and a 10 µs dispatch: its speed hardly depends on the values).
    """
    table, _ = load_service(read_profile(profile_path), 8, 16)
    # Offered load: each request costs k/B batch services of s(16) on one device.
    capacity = 16 / (2 * float(table.median[:, 16].mean()))
    cfg = SimConfig(
        batch_size=16, n_experts=8, gate=GateSpec(k=2), rate_rps=0.6 * capacity, n_requests=n
    )
    if engine == "host":
        cfg = cfg.with_(host=True)
        if table.host is None:
            terms = HostTerms(np.full(17, 10e-6), gate_rate=0.5, worker_rate=0.5)
            table = replace(table, host=terms)
    run = simulate_naive if engine == "naive" else simulate
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        work = make_workload(cfg)
        run(cfg, table, work)
        best = min(best, time.perf_counter() - t0)
    return {"engine": engine, "requests": n, "seconds": best, "requests_per_s": n / best}


def cli_sweep(profile_path: Path, requests: int) -> dict[str, Any]:
    """Wall time of ``sim run --B 1..64`` end to end, on whatever cores the OS gives."""
    cmd = [
        sys.executable, "-m", "sim.cli", "run", "--B", "1..64", "--requests", str(requests),
        "--profile", str(profile_path), "--json",
    ]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"sim run failed: {res.stderr.strip()}")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    return {"points": len(rows), "requests_per_point": requests, "seconds": wall}


def fidelity_markdown(runs: list[Path], profile: Path | None) -> str:
    """sim vs measured per run, B and mode, as a Markdown table."""
    from sim.check import Terms, check_run

    lines = [
        "| run | B | mode | thr meas | thr err | p50 meas ms | p50 err | p99 meas ms | p99 err "
        "| ok |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for run in runs:
        for terms, host in [(Terms.PROFILE, None), *_extra_modes(run, profile)]:
            for r in check_run(run, profile, terms=terms, host=host):
                m, e = r.measured, r.error_pct
                ok = ("yes" if r.within else "no") + (" (overloaded)" if r.overloaded else "")
                mode = terms.value + (" + host" if r.host else "")
                lines.append(
                    f"| {run.stem} | {r.B} | {mode} | {m['throughput']:.1f} | "
                    f"{e['throughput']:+.1f}% | {m['p50'] * 1e3:.2f} | {e['p50']:+.1f}% | "
                    f"{m['p99'] * 1e3:.2f} | {e['p99']:+.1f}% | {ok} |"
                )
    return "\n".join(lines)


def repeated_markdown(
    group: list[Path],
    profile: Path | None,
    sensitivity: float | None = None,
    **model: Any,
) -> str:
    """Per B over runs of one command (``sim check`` on several runs): measured mean and
    spread ((max - min) / mean), the default prediction's mean, the error of the means,
    runs within tolerance; with ``sensitivity`` (a fraction) also the mean band of p50 and
    p99 predictions with every cost ×(1 ± it) and whether the measured mean lies in it.
    ``model``: options of :func:`sim.check.check_runs` other than the defaults (the
    benchmark's tables use the defaults)."""
    from sim.check import METRICS, check_runs

    rows = check_runs(group, profile, sensitivity=sensitivity, **model)
    head = " | ".join(f"{k} meas (spread) | {k} sim | {k} err" for k in METRICS)
    band_cols = ("p50", "p99") if sensitivity is not None else ()
    band_head = "".join(f" {k} band ±{100 * sensitivity:g}% |" for k in band_cols if sensitivity)
    lines = [
        f"| runs | B | {head} | runs ok | mean ok |{band_head}",
        "|---|---:|" + "---:|---:|---:|" * len(METRICS) + ":-:|:-:|" + "---:|" * len(band_cols),
    ]
    scale = {"throughput": 1.0, "p50": 1e3, "p99": 1e3}
    for r in rows:
        cells = []
        for k in METRICS:
            lo, hi = r.measured_range[k] if r.measured_range else (r.measured[k], r.measured[k])
            spread = 100.0 * (hi - lo) / r.measured[k]
            cells.append(
                f"{r.measured[k] * scale[k]:.2f} ({spread:.0f}%) | "
                f"{r.simulated[k] * scale[k]:.2f} | {r.error_pct[k]:+.1f}%"
            )
        within = r.runs_within if r.runs_within is not None else int(r.within)
        over = " (overloaded)" if r.overloaded else ""
        bands = ""
        for k in band_cols:
            assert r.band is not None
            lo, hi = r.band[k]
            inside = " ∋ meas" if r.in_band(k) else ""
            bands += f" {lo * 1e3:.2f}–{hi * 1e3:.2f}{inside} |"
        lines.append(
            f"| {group[0].stem} ×{len(group)} | {r.B} | {' | '.join(cells)} | "
            f"{within}/{r.runs} | {'yes' if r.within else 'no'}{over} |{bands}"
        )
    return "\n".join(lines)


def _extra_modes(run: Path, profile: Path | None) -> list[tuple[Any, bool | None]]:
    """After the default prediction: the ideal model too when the default was the host
    model, then ``sampled`` and ``replay``."""
    from sim.check import Terms, check_run

    first = check_run(run, profile, terms=Terms.PROFILE)
    extra: list[tuple[Any, bool | None]] = []
    if first and first[0].host:
        extra.append((Terms.PROFILE, False))
    return [*extra, (Terms.SAMPLED, None), (Terms.REPLAY, None)]


@app.command()
@cli_errors
def main(
    requests: Annotated[int, typer.Option(help="Requests for the fast engine.")] = 200_000,
    naive_requests: Annotated[int, typer.Option(help="Requests for the plain model.")] = 20_000,
    repeats: Annotated[int, typer.Option(help="Best of this many runs.")] = 3,
    profile: Annotated[Path | None, typer.Option(help="Latency profile.")] = None,
    cli: Annotated[bool, typer.Option(help="Also time `sim run --B 1..64`.")] = True,
    out: Annotated[Path | None, typer.Option(help="Save the figures as JSON.")] = None,
    fidelity: Annotated[
        list[Path] | None, typer.Option(help="Measured hw serve runs to check (repeatable).")
    ] = None,
    repeated: Annotated[
        list[str] | None,
        typer.Option(help="Comma-separated runs of one command, judged together (repeatable)."),
    ] = None,
    sensitivity: Annotated[
        float | None,
        typer.Option(help="With --repeated: also the p50/p99 band with every cost ± this %."),
    ] = None,
    speed_: Annotated[bool, typer.Option("--speed/--no-speed", help="Run the speed part.")] = True,
) -> None:
    tmp = tempfile.TemporaryDirectory()
    if profile is None:
        profile = default_profile_path()
        if not profile.exists():
            profile = Path(tmp.name) / "synthetic-linear-profile.parquet"
            _synthetic_profile(profile)
    console.print(f"profile: {profile}")
    if fidelity:
        print(fidelity_markdown(list(fidelity), profile))
    spread = None if sensitivity is None else parse_sensitivity(sensitivity)
    for group in repeated or []:
        print(repeated_markdown([Path(p) for p in group.split(",") if p], profile, spread))
    if not speed_:
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    fast = speed(profile, requests, "engine", repeats)
    plain = speed(profile, naive_requests, "naive", 1)
    host = speed(profile, naive_requests, "host", 1)
    ratio = fast["requests_per_s"] / plain["requests_per_s"]
    t = Table(title="sim speed: k=2, M=8, B=16, one core")
    for col in ("engine", "requests", "seconds", "requests/s"):
        t.add_column(col, justify="right")
    for r in (fast, plain, host):
        t.add_row(
            r["engine"], str(r["requests"]), f"{r['seconds']:.3f}", f"{r['requests_per_s']:,.0f}"
        )
    Console().print(t)
    target = "met" if fast["requests_per_s"] >= 200_000 else "MISSED"
    Console().print(
        f"fast / plain SimPy = {ratio:.1f}x; target 200,000 req/s on one core: {target}"
    )
    result: dict[str, Any] = {
        "machine": platform.platform(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "profile": str(profile),
        "fast": fast,
        "naive": plain,
        "host": host,
        "ratio": ratio,
    }
    if cli:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        run = cli_sweep(profile, 100_000)
        result["cli"] = run
        ok = "met" if run["seconds"] < 60 else "MISSED"
        Console().print(
            f"sim run --B 1..64 --requests 100000: {run['points']} points in "
            f"{run['seconds']:.1f} s (target < 60 s: {ok})"
        )
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    app()
