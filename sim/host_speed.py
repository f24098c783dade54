"""How much slower or faster the host ran during one B of a measured run than while its
profile was measured: the ratio of the two speed probes (``hw.profiling.speed_probe``).

Why: a shared machine has speed states that last seconds to minutes; a profile holds
the one it was taken in, so a prediction from it matches the runs in that state and
misses the others by as much as they differ (at B = 1, where a request's latency is a
chain of host steps: ``benchmarks/README.md``, "Fidelity, session 9"). ``hw serve``
probes the host just before and just after each B's run, ``hw profile`` before each of
its passes and at its end, with the same probe; ``sim check`` multiplies every cost of
the shared-host model by the ratio (:func:`sim.sensitivity.scale_costs`: durations
scale, the duty-speed curve and the spells, which are ratios, do not).

Only the probe's state, not its value, is transferred: the probe is a gate after 2 ms
idle gaps, a step the server runs too, so a machine twice as slow for it is taken to be
twice as slow for every step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from sim.errors import CheckError
from traces.profile import SPEED_PROBE, LatencyProfile
from traces.serving import ServeConfig

__all__ = ["profile_probe_s", "run_probe_s", "speed_factor"]


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
            f"{ref[1] * 1e3:g} ms: the probes do not compare; use --no-speed-probe"
        )
    return got[0] / ref[0]
