"""A ``hw serve`` sweep: one real server run per B on the same seeded workload, then the
records and per-B summary in the ``traces.serving`` schema, with the full config beside them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import torch

from hw.moe.models import MoEClassifier
from hw.profiling.errors import ServeError
from hw.profiling.model import DTYPES, ServedModel, device_label, resolve_device
from hw.profiling.speed_probe import PROBE_GAP_S, PROBE_S, probe_samples
from hw.serving.plan import plan_workload
from hw.serving.server import PointResult, QueuedServer, prewarm
from traces.serving import (
    ServeConfig,
    records_frame,
    request_view,
    summarize,
)

__all__ = ["ServeRun", "ServerSettings", "place_model", "run_sweep"]


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the model runs: ``device`` kind (cpu, cuda), dtype, torch intra-op threads.

    ``threads`` = 1 by default: with a gate thread and one worker per device
    already competing for the cores, intra-op threads would oversubscribe them
    and make batch latencies depend on what the other threads do.
    ``switch_interval_s`` is Python's GIL switch interval during the run
    (``sys.setswitchinterval``, restored afterwards). Each of the gate's many
    small torch ops releases the GIL and must win it back; with CPython's
    default 5 ms, a busy device worker can make every one of those re-acquires
    wait (a convoy), which inflated the gate's service several-fold here
    (``docs/serving.md``).
    ``speed_probe_s``: on a CPU, seconds of the host speed probe
    (:mod:`hw.profiling.speed_probe`) before the first B, between two B and after the
    last, recorded with the run for ``sim check``; 0 turns it off.
    """

    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    switch_interval_s: float = 1e-5
    speed_probe_s: float = PROBE_S

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ServeError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.threads < 1:
            raise ServeError(f"--threads must be >= 1, got {self.threads}")
        if not self.switch_interval_s > 0:
            raise ServeError(f"GIL switch interval must be > 0, got {self.switch_interval_s}")
        if not self.speed_probe_s >= 0:
            raise ServeError(f"--speed-probe-s must be >= 0, got {self.speed_probe_s}")


@dataclass(frozen=True)
class ServeRun:
    """Everything one sweep produced."""

    records: pl.DataFrame
    summary: pl.DataFrame
    config: ServeConfig
    points: list[PointResult]


def place_model(model: MoEClassifier, cfg: ServeConfig, settings: ServerSettings) -> ServedModel:
    """Put the model on ``cfg.devices`` devices (CPU: D worker threads sharing the CPU;
    CUDA: GPUs ``0..D-1``, which must exist)."""
    base = resolve_device(settings.device)
    if base.type == "cuda":
        if cfg.devices > torch.cuda.device_count():
            raise ServeError(
                f"--devices {cfg.devices} but only {torch.cuda.device_count()} GPUs are visible"
            )
        devices = [torch.device("cuda", d) for d in range(cfg.devices)]
    else:
        devices = [base] * cfg.devices
    return ServedModel(model, devices, cfg.placement, DTYPES[settings.dtype])


def _median(values: pl.Series) -> float | None:
    v = values.drop_nulls()
    return float(v.median()) if len(v) else None  # type: ignore[arg-type]


def _probe_record(b_values: tuple[int, ...], probes: list[float], seconds: float) -> dict:
    """``{"speed_probe": {...}}`` for the config's ``extra`` (empty without probes): per B,
    the medians of the probe just before and just after its run (``median_s``)."""
    if not probes:
        return {}
    return {
        "speed_probe": {
            "seconds": seconds,
            "mean_gap_s": PROBE_GAP_S,
            "median_s": {str(b): probes[i : i + 2] for i, b in enumerate(b_values)},
        }
    }


def run_sweep(
    model: MoEClassifier,
    cfg: ServeConfig,
    settings: ServerSettings = ServerSettings(),
    on_progress: Callable[[int, int, int], None] | None = None,
) -> ServeRun:
    """Serve the config's workload once per B; ``on_progress(B, done, total)``.

    Returns the records, the summary, and the config completed with what the
    run measured (median gate and combine service, points stopped at
    ``max_backlog``, devices, torch version, and on a CPU the speed probes
    around each B: ``extra["speed_probe"]``, see :func:`_probe_record`).
    """
    served = place_model(model, cfg, settings)
    wl = plan_workload(cfg)
    old_threads, old_switch = torch.get_num_threads(), sys.getswitchinterval()
    torch.set_num_threads(settings.threads)
    sys.setswitchinterval(settings.switch_interval_s)
    points: list[PointResult] = []
    probe = settings.speed_probe_s > 0 and served.devices[0].type == "cpu"
    probes: list[float] = []

    def take_probe() -> None:
        if probe:
            got = probe_samples(
                served, settings.speed_probe_s, PROBE_GAP_S, cfg.seed + len(probes),
                settings.switch_interval_s,
            )  # fmt: skip
            probes.append(float(np.median(got)))

    try:
        x = served.inputs(wl.n, cfg.seed)
        gate_k = cfg.k if cfg.routing == "gate" and served.cfg.gate == "topk" else None
        take_probe()
        for b in cfg.b_values:
            prewarm(served, b)
            server = QueuedServer(
                served,
                b,
                max_wait_s=cfg.max_wait_s,
                warmup=cfg.warmup,
                max_backlog=cfg.max_backlog,
                rate_rps=cfg.rate_rps if cfg.arrival == "poisson" else None,
                gate_k=gate_k,
            )
            cb = None if on_progress is None else (lambda d, t, _b=b: on_progress(_b, d, t))
            points.append(server.run(wl, x, cb))
            take_probe()
    finally:
        torch.set_num_threads(old_threads)
        sys.setswitchinterval(old_switch)
    records = records_frame([r for p in points for r in p.rows])
    view = request_view(records, cfg.max_wait_s).filter(~pl.col("warmup"))
    cfg = replace(
        cfg,
        device_names=tuple(device_label(d) for d in served.devices),
        gate_latency_s=_median(view["gate_service_s"]),
        combine_latency_s=_median(view["combine_service_s"]),
        stopped_early=tuple(p.B for p in points if p.stopped_early),
        extra={
            **cfg.extra,
            "torch": torch.__version__,
            "dtype": settings.dtype,
            "threads": settings.threads,
            "gil_switch_interval_s": settings.switch_interval_s,
            "wall_s": {str(p.B): p.wall_s for p in points},
            **_probe_record(cfg.b_values, probes, settings.speed_probe_s),
        },
    )
    return ServeRun(records, summarize(records, cfg), cfg, points)
