"""How much slower or faster the host ran during one B of a measured run than while its
profile was measured (the ratio of two speed probes, ``hw.profiling.speed_probe``), and
the host model at that speed.

Why: a shared machine has speed states that last seconds to minutes; a profile holds
the one it was taken in, so a prediction from it matches the runs in that state and
misses the others by as much as they differ (at B = 1, where a request's latency is a
chain of host steps: ``benchmarks/README.md``, "Fidelity, session 9"). ``hw serve``
probes the host just before and just after each B's run, ``hw profile`` in phases among
its duty curve's, with the same probe (the gate on one request after idle gaps of 2 ms);
the factor is the run's probe ÷ the profile's.

What the factor changes: the host's *idle slowdown*, not its busy speed. The shared-host
model runs at a speed v(u) set by the host's duty u (``docs/system-model.md`` §8), 1 when
busy, lower the more the host idles; a state that makes the probe (at the probe's own
duty, ~15 %) ``factor`` × slower is taken to multiply the slowdown 1/v(u) − 1 at every
duty by the α that gives that ×``factor`` at the probe's duty, leaving the isolated costs
and a busy host's speed as they were. Why not every cost ×factor: on this machine the
same gate back to back ran at one speed in runs whose B = 1 gates differed ×1.8, and
scaling every cost by the probe overshot wherever the host was busy (at 500 req/s, B = 1
a factor 2.1 predicted +166 % where the run was slow but not saturated; ``benchmarks/
README.md``, "Fidelity, session 10").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from sim.errors import CheckError
from sim.host_terms import HostTerms
from sim.service import ServiceTable
from traces.profile import SPEED_PROBE, LatencyProfile
from traces.serving import ServeConfig

__all__ = [
    "at_host_speed",
    "probe_duty",
    "profile_probe_s",
    "run_probe_s",
    "slowed_when_idle",
    "speed_factor",
]


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def profile_probe_s(profile: LatencyProfile) -> tuple[float, float] | None:
    """(median probe time, mean gap) of the profile's ``speed_probe`` row; None without one."""
    if profile.components is None or "idle_s" not in profile.components.columns:
        return None
    rows = profile.components.filter(pl.col("component") == SPEED_PROBE)
    if rows.height != 1:
        return None
    median, gap = _positive(rows["latency_s"][0]), rows["idle_s"][0]
    if median is None or gap is None or not math.isfinite(gap) or gap < 0:
        return None
    return median, float(gap)


def run_probe_s(cfg: ServeConfig, b: int) -> tuple[float, float] | None:
    """(mean of the probes just before and after B's run, their mean gap) that ``hw serve``
    stored with the run; None where it stored none (older runs, ``--speed-probe-s 0``, a GPU).

    A record that is there but malformed is an error: it would silently drop the correction.
    """
    record = cfg.extra.get("speed_probe")
    if record is None:
        return None
    where = "the run's speed_probe record"
    if not isinstance(record, Mapping) or not isinstance(record.get("median_s"), Mapping):
        raise CheckError(f"{where} is malformed: expected median_s per B")
    gap = record.get("mean_gap_s")
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not gap >= 0:
        raise CheckError(f"{where}: mean_gap_s must be a number >= 0, got {gap!r}")
    pair = record["median_s"].get(str(b))
    if pair is None:
        return None
    values = [_positive(v) for v in pair] if isinstance(pair, list) else []
    if not values or any(v is None for v in values):
        raise CheckError(f"{where}: B = {b} needs positive probe times, got {pair!r}")
    return sum(values) / len(values), float(gap)  # type: ignore[arg-type]


def speed_factor(cfg: ServeConfig, profile: LatencyProfile, b: int) -> float | None:
    """Run probe ÷ profile probe for B (> 1: the host was slower during the run); None when
    either side has no probe. Probes after different gaps do not compare: an error."""
    ref, got = profile_probe_s(profile), run_probe_s(cfg, b)
    if ref is None or got is None:
        return None
    if not math.isclose(ref[1], got[1], rel_tol=1e-6, abs_tol=1e-9):
        raise CheckError(
            f"the run probed the host after {got[1] * 1e3:g} ms gaps, {profile.source} after "
            f"{ref[1] * 1e3:g} ms: the probes do not compare; use --host-speed run or profile"
        )
    return got[0] / ref[0]


def probe_duty(profile: LatencyProfile) -> float | None:
    """The host's duty while the profile's probe ran: probe ÷ (probe + mean gap)."""
    ref = profile_probe_s(profile)
    return None if ref is None else ref[0] / (ref[0] + ref[1])


def slowed_when_idle(host: HostTerms, factor: float, duty: float) -> HostTerms:
    """``host`` with its idle slowdown (1/v(u) − 1 at each duty u) multiplied by the α that
    makes it ``factor`` × slower at ``duty`` (module docstring); the costs and a busy host's
    speed are kept. α is floored at 0: a host is never faster than when busy. A curve with
    no slowdown at ``duty`` (or none at all) cannot express the state and is kept."""
    if not factor > 0:
        raise CheckError(f"host speed factor must be > 0, got {factor}")
    if not host.duty:
        return host
    slow = [1.0 / v - 1.0 for v in host.duty_speed]
    at_probe = float(np.interp(duty, host.duty, slow))
    if at_probe <= 0:
        return host
    alpha = max(0.0, (factor * (1.0 + at_probe) - 1.0) / at_probe)
    return replace(host, duty_speed=tuple(1.0 / (1.0 + alpha * s) for s in slow))


def at_host_speed(table: ServiceTable, profile: LatencyProfile, factor: float) -> ServiceTable:
    """``table`` with its host terms :func:`slowed_when_idle` by ``factor`` at the duty of
    the profile's probe (unchanged without host terms or a probe)."""
    duty = probe_duty(profile)
    if table.host is None or duty is None:
        return table
    return replace(table, host=slowed_when_idle(table.host, factor, duty))
