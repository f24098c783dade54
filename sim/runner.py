"""From files and options to simulated runs: the library behind ``sim run``, sweeps and checks."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from sim.config import GatePolicy, SimConfig
from sim.engine import simulate
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.output import serve_config, summarize_run
from sim.records import RunResult
from sim.service import ServiceTable
from sim.workload import Workload, make_workload
from traces import data_path
from traces.cli_support import parse_int_list
from traces.profile import LatencyProfile, ProfileExtrapolationWarning, read_profile
from traces.routing import RoutingTrace, read_routing

__all__ = [
    "DEFAULT_PROFILE",
    "PointRun",
    "auto_jobs",
    "load_service",
    "parse_b_values",
    "profile_defaults",
    "profile_has_host_terms",
    "profile_is_cpu",
    "run_points",
    "simulate_summary",
]

DEFAULT_PROFILE = "profiles/cpu-default.parquet"


def default_profile_path() -> Path:
    """The bundled CPU profile (shipped by ``hw profile`` in ``traces/data``)."""
    return data_path(DEFAULT_PROFILE)


def parse_b_values(text: str) -> list[int]:
    """``--B`` through the shared parser; its error becomes one clear line (exit 2)."""
    try:
        return parse_int_list(text, name="--B", minimum=1)
    except typer.BadParameter as exc:
        raise SimConfigError(f"--B {text!r}: {exc.format_message()}") from None


def profile_has_host_terms(profile: LatencyProfile) -> bool:
    """Whether ``hw profile`` measured the shared-host terms (system-model §8) in it."""
    return HostTerms.from_profile(profile, 1) is not None


def profile_is_cpu(profile: LatencyProfile) -> bool:
    """Whether the profile was measured on a CPU (its ``device`` column says ``cpu:...``)."""
    if "device" not in profile.frame.columns:
        return False
    names = profile.frame["device"].drop_nulls().unique().to_list()
    return bool(names) and all(str(d).startswith("cpu") for d in names)


def profile_defaults(profile: LatencyProfile) -> dict[str, Any]:
    """The SimConfig fields a run takes from its profile when not given: the number of
    experts, the gate and combine costs, and the shared-host model for a CPU profile with
    the host terms (``sim run`` and ``sim sweep`` alike, so a point gives the same numbers
    in both)."""
    return {
        "n_experts": len(profile.experts),
        "gate_latency_s": profile.component_latency_s("gate") or 0.0,
        "combine_latency_s": profile.component_latency_s("combine") or 0.0,
        "host": profile_has_host_terms(profile) and profile_is_cpu(profile),
    }


def load_service(
    profile: LatencyProfile, n_experts: int, max_batch: int
) -> tuple[ServiceTable, list[str]]:
    """Lookup tables for experts 0..M-1 up to ``max_batch``; also the extrapolation notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProfileExtrapolationWarning)
        table = ServiceTable.from_profile(profile, n_experts, max_batch)
    notes = sorted({str(w.message) for w in caught})
    return table, notes


@dataclass(frozen=True, eq=False)
class PointRun:
    """One simulated B value: its result and its ``serve-summary/1`` row."""

    result: RunResult
    summary: dict[str, Any]


def run_points(
    configs: Sequence[SimConfig],
    profile: LatencyProfile,
    trace: RoutingTrace | None = None,
    workload: Workload | None = None,
    on_done: Callable[[PointRun], None] | None = None,
    jobs: int = 1,
) -> tuple[list[PointRun], list[str]]:
    """Simulate configs that differ only in B, on one shared workload (same requests per B).

    ``jobs`` > 1 simulates the points in that many worker processes (spawned, not
    forked: the caller may hold threads, e.g. a progress bar); each point is a
    pure function of its config, the table and the workload, so the results are
    those of ``jobs = 1``. ``on_done`` is called in the order of ``configs``.
    """
    if not configs:
        return [], []
    if jobs < 1:
        raise SimConfigError(f"--jobs must be >= 1, got {jobs}")
    base = configs[0]
    table, notes = load_service(profile, base.n_experts, max(c.batch_size for c in configs))
    if workload is None:
        workload = make_workload(base, trace)
    jobs = min(jobs, len(configs))
    out = []
    if jobs == 1:
        points = (_run_point(c, configs, profile.source, table, workload) for c in configs)
        for point in points:
            out.append(point)
            if on_done is not None:
                on_done(point)
        return out, notes
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
        futures = [
            pool.submit(_run_point, c, configs, profile.source, table, workload) for c in configs
        ]
        for future in futures:
            point = future.result()
            out.append(point)
            if on_done is not None:
                on_done(point)
    return out, notes


def _run_point(
    config: SimConfig,
    configs: Sequence[SimConfig],
    source: str,
    table: ServiceTable,
    workload: Workload,
) -> PointRun:
    """One B value: simulate, then summarize as ``serve-summary/1`` (in a worker or here)."""
    result = simulate(config, table, workload)
    stopped = [config.batch_size] if result.stopped_early else []
    return PointRun(result, summarize_run(result, serve_config(configs, source, stopped)))


def auto_jobs(n_points: int, requests: int, host: bool = False) -> int:
    """Worker processes for ``sim run`` when ``--jobs`` is not given: one per point up to
    the cores this process may use, where that repays starting them (about a second each,
    plus moving each result back): from 50,000 simulated requests in all with the
    shared-host model, which simulates event by event (7 points of 100,000 requests: 157 s
    in one process, 88 s in two), from 500,000 with the fast engine (7.6 s against 6.6 s at
    700,000); else 1."""
    total = n_points * requests
    if n_points < 2 or total < (50_000 if host else 500_000):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(n_points, cores))


def simulate_summary(config: SimConfig, profile_path: str | None = None) -> dict[str, Any]:
    """Everything from files: one point's summary row plus its config (what sweeps run)."""
    profile = read_profile(profile_path or default_profile_path())
    trace = None
    if config.gate.policy is GatePolicy.TRACE:
        trace = read_routing(config.gate.trace or "")
    (point,), _ = run_points([config], profile, trace)
    return point.summary
