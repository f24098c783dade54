"""The gate's own spread after an idle gap (``HostTerms.gate_cold_spread``, the ``chain_gate``
rows' p10 and p90): in the server, gates after an idle gap spread far wider than the spells
alone make them (B = 1, 250 req/s: p90 / median 1.95 against the model's 1.40), as the profile
measured them (1.76-1.88 at 6-12 ms gaps; benchmarks/README.md, session 19)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from sim.errors import SimConfigError
from sim.host import simulate_host
from sim.host_terms import HostTerms
from traces.profile import profile_from_frame

from .test_host import DUTY_ROWS, _one_expert_table, host_profile_frame, spaced_gates

SPREAD = (math.exp(-0.3), math.exp(0.5))  # p10, p90 over the median after long gaps


def _with_chain_gate(spread: bool = True) -> pl.DataFrame:
    """The host test profile in the server's threads (``duty_threads``) with ``chain_gate``
    rows at its levels' gaps, their spread widening with the gap."""
    threads = host_profile_frame().with_columns(
        pl.when(pl.col("component") == "duty")
        .then(pl.lit("duty_threads"))
        .otherwise(pl.col("component"))
        .alias("component")
    )
    gaps = [i * 1e-6 for i, _ in DUTY_ROWS]
    walls = np.array([200e-6, 210e-6, 260e-6, 300e-6, 340e-6])
    lo = np.array([0.95, 0.9, 0.85, 0.8, SPREAD[0]])
    hi = np.array([1.1, 1.2, 1.3, 1.5, SPREAD[1]])
    gate = pl.DataFrame(
        {
            "expert": -1, "batch_size": 1, "latency_s": walls, "samples": 50,
            "component": "chain_gate", "device": "cpu:test", "idle_s": gaps,
            "latency_p10_s": walls * lo if spread else None,
            "latency_p90_s": walls * hi if spread else None,
        }
    )  # fmt: skip
    return pl.concat([threads, gate], how="diagonal_relaxed")


def test_the_chain_gate_rows_give_the_gates_spread_per_idle_time() -> None:
    terms = HostTerms.from_profile(profile_from_frame(_with_chain_gate()), 64)
    assert terms is not None
    assert terms.gate_cold_spread[-1] == pytest.approx(SPREAD)
    assert terms.gate_cold_spread[0] == pytest.approx((0.95, 1.1))
    bare = HostTerms.from_profile(profile_from_frame(_with_chain_gate(spread=False)), 64)
    assert bare is not None and bare.gate_cold_spread == ()
    assert bare.gate_own_spread(1e-2, None) is None


def test_the_gates_own_spread_is_what_the_spells_leave_in_log_variance() -> None:
    """At the last level p10 = e^-0.3, p90 = e^0.5 over the median: without spells that
    whole; with spells of p90 e^0.3 the upper side keeps sqrt(0.5² - 0.3²) = 0.4 and the
    lower (spells p10 e^-0.3) nothing; spells as wide on both sides leave nothing."""
    host = HostTerms(
        np.zeros(2),
        gate_cold_idle_s=(0.0, 1e-2),
        gate_cold_cost_s=(0.0, 4e-4),
        gate_cold_spread=((0.95, 1.1), SPREAD),
    )
    assert host.gate_own_spread(0.5, None) == pytest.approx(SPREAD)  # flat past the last
    own = host.gate_own_spread(1e-2, (math.exp(-0.3), math.exp(0.3)))
    assert own == pytest.approx((1.0, math.exp(0.4)))
    assert host.gate_own_spread(1e-2, (math.exp(-0.4), math.exp(0.6))) is None
    for bad in (((0.9, 1.1),), ((1.1, 1.2), SPREAD), ((0.0, 1.2), SPREAD)):
        with pytest.raises(SimConfigError, match="gate spread"):
            HostTerms(
                np.zeros(2),
                gate_cold_idle_s=(0.0, 1e-2),
                gate_cold_cost_s=(0.0, 4e-4),
                gate_cold_spread=bad,
            )


def test_gates_after_long_gaps_spread_as_measured() -> None:
    """Gates 20 ms apart (each after 20 ms idle: the last level, flat past it), no spells or
    state: without the spread every gate takes its 100 + 400 µs; with it their p10, median
    and p90 over the median are the measured ones (2,000 gates: within a few %)."""
    cfg, work = spaced_gates(2000, 1e-4)
    host = HostTerms(np.zeros(2), gate_cold_idle_s=(0.0, 1e-2), gate_cold_cost_s=(0.0, 4e-4))
    table = _one_expert_table(1e-4)
    plain = simulate_host(cfg, table, work, host)
    np.testing.assert_allclose((plain.gate_done_s - plain.gate_start_s)[1:], 5e-4, rtol=1e-9)
    spread = simulate_host(cfg, table, work, replace(host, gate_cold_spread=((0.95, 1.1), SPREAD)))
    walls = (spread.gate_done_s - spread.gate_start_s)[1:]
    p10, med, p90 = np.quantile(walls, [0.1, 0.5, 0.9])
    assert med == pytest.approx(5e-4, rel=0.03)
    assert (p10 / med, p90 / med) == pytest.approx(SPREAD, rel=0.04)
