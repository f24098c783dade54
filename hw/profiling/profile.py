"""``hw profile``: per-expert latency against batch size, plus the gate's and the combine's cost.

Every (step, batch size) is timed with :func:`hw.timing.measure_samples`
(warm-up, then at least N calls and at least T seconds), in ``repeats`` full
passes separated in time. The written median pools the passes; the pass-to-pass
difference of medians is the run-to-run variation reported to the user, so the
noise of the numbers is known. Rows follow the latency profile contract
(``traces/profile.py``); gate and combine rows carry ``component`` and
``expert = -1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from hw.profiling.errors import ProfilingError
from hw.profiling.host import HostTiming, dispatch_call, measure_host
from hw.profiling.host_state import STATE_S
from hw.profiling.model import DTYPES, ServedModel, device_label, model_from_spec, resolve_device
from hw.profiling.preemption import PREEMPT_PAIRS
from hw.profiling.speed_probe import PROBE_S
from hw.timing import LatencyStats, measure_samples
from traces.profile import profile_from_frame

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "ProfileConfig",
    "ProfileResult",
    "Variation",
    "run_profile",
]

DEFAULT_BATCH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile and how; ``model`` is a :func:`model_from_spec` spec.

    Each of the ``repeats`` passes visits every point ``rounds`` times, round
    robin, with 1/rounds of the calls and time each: a slow spell of a shared
    machine then hits every batch size alike instead of a few neighbours.

    ``experts`` restricts the experts timed (None: all). ``threads`` is torch's
    intra-op thread count during the measurement (None: leave torch's setting).

    ``host_terms`` (CPU, with the gate and combine): also measure the host-side
    costs of the CPU server (``hw.profiling.host``: dispatch per batch size,
    collect, the GIL contention pairs, the duty and hand-off curves) for the simulator's
    shared-host model, with the server's GIL switch interval ``gil_switch_s``,
    ``idle_calls`` calls per idle time for its hand-off curves and phases of
    ``duty_phase_s`` seconds for its duty curve; with them, phases of ``speed_probe_s``
    seconds of the host speed probe (:mod:`hw.profiling.speed_probe`) visited among the
    duty curve's, pooled into one ``speed_probe`` row (0: none), for ``sim check`` to
    compare the host's state during a measured run with its state here; and ``state_s``
    seconds of the two-thread chain for the machine's state over time, ``state_window``
    rows (:mod:`hw.profiling.host_state`; 0: none); and ``preempt_pairs`` pairs of requests
    per level of load for how often a woken gate takes the host whole from a worker at work,
    ``preempt_*`` rows (:mod:`hw.profiling.preemption`), and as many pairs for whether a
    worker woken while the gate goes on runs during the next gate, ``join_*`` rows
    (:mod:`hw.profiling.worker_join`; 0: neither).
    """

    model: dict[str, Any] = field(default_factory=dict)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    experts: tuple[int, ...] | None = None
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 5
    min_calls: int = 20
    min_time_s: float = 0.1
    max_time_s: float = 10.0
    repeats: int = 2
    rounds: int = 4
    threads: int | None = 1
    seed: int = 0
    gate_and_combine: bool = True
    host_terms: bool = True
    gil_switch_s: float = 1e-5
    idle_calls: int = 100
    duty_phase_s: float = 0.5
    duty_visits: int = 3
    speed_probe_s: float = PROBE_S
    state_s: float = STATE_S
    preempt_pairs: int = PREEMPT_PAIRS

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ProfilingError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        if self.dtype not in DTYPES:
            raise ProfilingError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.repeats < 1 or self.rounds < 1:
            raise ProfilingError(
                f"repeats and rounds must be >= 1, got {self.repeats}, {self.rounds}"
            )
        if self.threads is not None and self.threads < 1:
            raise ProfilingError(f"threads must be >= 1, got {self.threads}")
        if not self.gil_switch_s > 0:
            raise ProfilingError(f"GIL switch interval must be > 0, got {self.gil_switch_s}")
        if self.idle_calls < 1 or not self.duty_phase_s > 0 or self.duty_visits < 1:
            raise ProfilingError(
                f"need idle_calls >= 1, duty_phase_s > 0 and duty_visits >= 1, got "
                f"{self.idle_calls}, {self.duty_phase_s}, {self.duty_visits}"
            )
        if not self.speed_probe_s >= 0:
            raise ProfilingError(f"--speed-probe-s must be >= 0, got {self.speed_probe_s}")
        if not 0 <= self.state_s < float("inf"):
            raise ProfilingError(f"--state-s must be >= 0 and finite, got {self.state_s}")
        if self.preempt_pairs < 0:
            raise ProfilingError(f"--preempt-pairs must be >= 0, got {self.preempt_pairs}")
        object.__setattr__(self, "batch_sizes", tuple(sorted(set(self.batch_sizes))))


@dataclass(frozen=True)
class Variation:
    """Run-to-run variation: |median_1 - median_2| / min over all rows of a profile."""

    median_rel: float
    p90_rel: float
    max_rel: float
    worst: str  # which (step, batch size) varied most

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProfileResult:
    """The profile table (contract columns plus ``component``), its variation and settings."""

    frame: pl.DataFrame
    variation: Variation | None
    device: str
    wall_s: float
    config: ProfileConfig

    def meta(self) -> dict[str, Any]:
        """What is written beside the profile: how it was measured."""
        return {
            "config": asdict(self.config),
            "device": self.device,
            "wall_s": self.wall_s,
            "torch": torch.__version__,
            "variation": None if self.variation is None else self.variation.to_dict(),
        }


def _steps(served: ServedModel, cfg: ProfileConfig) -> list[tuple[str, int, Callable[[int], Any]]]:
    """(component, expert, factory b -> zero-arg call) for every timed step."""
    experts = range(served.n_experts) if cfg.experts is None else cfg.experts
    for e in experts:
        served.check_expert(e)
    gen = torch.Generator().manual_seed(cfg.seed)
    dtype = DTYPES[cfg.dtype]
    k = min(served.cfg.k, served.n_experts)

    def expert_call(e: int) -> Callable[[int], Any]:
        dev = served.devices[served.placement[e]]

        def make(b: int) -> Callable[[], Any]:
            h = torch.randn(b, served.d_model, generator=gen).to(dev, dtype)
            return lambda: served.expert(e, h)

        return make

    def gate_call(b: int) -> Callable[[], Any]:
        x = torch.randn(b, served.n_features, generator=gen).to(served.devices[0], dtype)
        return lambda: served.gate(x)

    def combine_call(b: int) -> Callable[[], Any]:
        outs = torch.randn(b, k, served.d_model, generator=gen).to(served.devices[0], dtype)
        w = torch.softmax(torch.randn(b, k, generator=gen), 1).to(served.devices[0], dtype)
        return lambda: served.combine(outs, w)

    pool = torch.randn(max(cfg.batch_sizes), served.d_model, generator=gen).to(
        served.devices[0], dtype
    )

    def dispatch(b: int) -> Callable[[], Any]:
        return dispatch_call(served, 0, b, pool)

    steps = [("expert", e, expert_call(e)) for e in experts]
    if cfg.gate_and_combine:
        steps += [("gate", -1, gate_call), ("combine", -1, combine_call)]
    if _with_host(cfg, served):
        steps.append(("dispatch", -1, dispatch))
    return steps


def _with_host(cfg: ProfileConfig, served: ServedModel) -> bool:
    """Host terms: asked for, with the gate and combine, on a CPU (the server's host)."""
    return cfg.host_terms and cfg.gate_and_combine and served.devices[0].type == "cpu"


def run_profile(
    cfg: ProfileConfig, on_step: Callable[[int, int], None] | None = None
) -> ProfileResult:
    """Measure every step at every batch size, ``cfg.repeats`` passes; ``on_step(done, total)``."""
    device = resolve_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    model = model_from_spec(cfg.model)
    served = ServedModel(model, [device], dtype=dtype)
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        steps = _steps(served, cfg)
        calls = {(c, e, b): make(b) for c, e, make in steps for b in cfg.batch_sizes}
        total = len(calls) * cfg.repeats * cfg.rounds
        passes: list[dict[tuple[str, int, int], list[float]]] = []
        done = 0
        for _ in range(cfg.repeats):
            found: dict[tuple[str, int, int], list[float]] = {k: [] for k in calls}
            for r in range(cfg.rounds):
                for key, call in calls.items():
                    found[key] += measure_samples(
                        call,
                        device=device,
                        warmup=cfg.warmup if r == 0 else 1,
                        min_calls=-(-cfg.min_calls // cfg.rounds),
                        min_time_s=cfg.min_time_s / cfg.rounds,
                        max_time_s=cfg.max_time_s / cfg.rounds,
                    )
                    done += 1
                    if on_step is not None:
                        on_step(done, total)
            passes.append(found)
        host = []
        if _with_host(cfg, served):
            timing = HostTiming(
                min_calls=cfg.min_calls,
                min_time_s=cfg.min_time_s,
                max_time_s=cfg.max_time_s,
                rounds=cfg.rounds,
                switch_interval_s=cfg.gil_switch_s,
                idle_calls=cfg.idle_calls,
                duty_phase_s=cfg.duty_phase_s,
                duty_visits=cfg.duty_visits,
                speed_probe_s=cfg.speed_probe_s,
                state_s=cfg.state_s,
                preempt_pairs=cfg.preempt_pairs,
            )
            host = measure_host(served, timing, torch.Generator().manual_seed(cfg.seed + 1))
    finally:
        torch.set_num_threads(old_threads)
    label = device_label(device)

    def row(comp: str, e: int, b: int, st: LatencyStats, idle_s: float | None) -> dict:
        return {
            "expert": e,
            "batch_size": b,
            "latency_s": st.median_s,
            "latency_p10_s": st.p10_s,
            "latency_p90_s": st.p90_s,
            "device": label,
            "dtype": cfg.dtype,
            "samples": st.samples,
            "component": comp,
            "idle_s": idle_s,
        }

    rows = []
    rel: list[tuple[float, str]] = []
    for key in calls:
        comp, e, b = key
        pooled = [s for p in passes for s in p[key]]
        rows.append(row(comp, e, b, LatencyStats.from_samples(pooled), None))
        if len(passes) > 1:
            meds = [LatencyStats.from_samples(p[key]).median_s for p in passes]
            name = f"{comp} {e} b={b}" if comp == "expert" else f"{comp} b={b}"
            rel.append(((max(meds) - min(meds)) / min(meds), name))
    variation = None
    if rel:
        vals = np.array([r for r, _ in rel])
        worst = max(rel)
        variation = Variation(
            float(np.median(vals)), float(np.percentile(vals, 90)), worst[0], worst[1]
        )
    rows += [row(comp, -1, b, st, idle) for comp, b, idle, st in host]
    frame = pl.DataFrame(rows, schema_overrides={"idle_s": pl.Float64})
    profile_from_frame(frame, source="measured profile")  # holds to the contract
    return ProfileResult(frame, variation, label, time.perf_counter() - t0, cfg)
