"""Measured terms of the shared-host model (``docs/system-model.md`` §8), read from a profile.

Kept apart from :mod:`sim.host` (the engine) so the service tables can carry
them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from sim.errors import SimConfigError
from traces.profile import HOST_COMPONENTS, LatencyProfile

__all__ = ["HOST_COMPONENTS", "HostTerms"]


@dataclass(frozen=True, eq=False)
class HostTerms:
    """Measured costs of the host model; see the module docstring.

    ``dispatch_s[b]``: host work of gathering a batch of b inputs (index 0 unused);
    ``collect_s``: gathering one request's answers before its combine;
    ``gate_rate``, ``worker_rate``: speed (0, 1] of the gate / a worker while
    the other is active (1 = no interference); ``wake_speed[i]``: speed of the
    host in a busy period that starts after ``wake_idle_s[i]`` of idleness
    (interpolated; empty = always 1).
    """

    dispatch_s: np.ndarray
    collect_s: float = 0.0
    gate_rate: float = 1.0
    worker_rate: float = 1.0
    wake_idle_s: tuple[float, ...] = ()
    wake_speed: tuple[float, ...] = ()

    def speed_after_idle(self, idle_s: float) -> float:
        """Speed (0, 1] of the host in a busy period that follows ``idle_s`` of idleness."""
        if not self.wake_idle_s:
            return 1.0
        return float(np.interp(idle_s, self.wake_idle_s, self.wake_speed))

    def __post_init__(self) -> None:
        for name in ("gate_rate", "worker_rate"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise SimConfigError(f"host model: {name} must be in (0, 1], got {v}")
        if not self.collect_s >= 0 or (np.asarray(self.dispatch_s)[1:] < 0).any():
            raise SimConfigError("host model: dispatch and collect costs must be >= 0")
        if len(self.wake_idle_s) != len(self.wake_speed) or any(
            not 0.0 < x <= 1.0 for x in self.wake_speed
        ):
            raise SimConfigError("host model: one wake speed in (0, 1] per idle time")

    @classmethod
    def neutral(cls, max_batch: int) -> HostTerms:
        """No host costs and no interference: the host engine then runs the ideal model."""
        return cls(np.zeros(max_batch + 1))

    @classmethod
    def from_profile(cls, profile: LatencyProfile, max_batch: int) -> HostTerms | None:
        """The host terms ``hw profile`` measured, or None when the profile lacks any of them.

        The rates are ``gate_alone / gate_contended`` and ``worker_alone /
        worker_contended``: each pair measured in alternation by ``hw profile``
        (``hw.profiling.host``), capped at 1. The speed after idle τ is the
        ``wake`` chain at idle 0 ÷ the chain after τ (capped at 1; none measured: 1).
        """
        got = {c: profile.component_latency_s(c) for c in HOST_COMPONENTS}
        if any(v is None for v in got.values()):
            return None
        dispatch = np.zeros(max_batch + 1)
        dispatch[1:] = [profile.component_latency_s("dispatch", b) for b in range(1, max_batch + 1)]
        v: dict[str, float] = {c: float(x) for c, x in got.items() if x is not None}
        idle: tuple[float, ...] = ()
        speed: tuple[float, ...] = ()
        comps = profile.components
        if comps is not None and "idle_s" in comps.columns:
            wake = comps.filter(pl.col("component") == "wake").sort("idle_s")
            at0 = wake.filter(pl.col("idle_s") == 0)
            if at0.height and wake.height > 1:
                base = float(at0["latency_s"][0])
                idle = tuple(float(x) for x in wake["idle_s"])
                speed = tuple(min(1.0, base / float(x)) for x in wake["latency_s"])
        return cls(
            dispatch_s=dispatch,
            collect_s=v["collect"],
            gate_rate=min(1.0, v["gate_alone"] / v["gate_contended"]),
            worker_rate=min(1.0, v["worker_alone"] / v["worker_contended"]),
            wake_idle_s=idle,
            wake_speed=speed,
        )
