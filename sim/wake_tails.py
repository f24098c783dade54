"""The tails a measured run's wake-ups add to the host model's hand-offs
(:mod:`sim.run_wakes` reads them; :mod:`sim.host` draws them)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sim.errors import SimConfigError

__all__ = ["WakeTails"]


@dataclass(frozen=True)
class WakeTails:
    """Per kind of wake-up, the excesses (s, zero where a wait was below the quantile) one of
    which each such wake-up in the replay adds to its hand-off; empty: nothing added."""

    gate_idle: tuple[float, ...] = ()  # a gate woken with no worker at work
    gate_busy: tuple[float, ...] = ()  # a gate woken while a worker is at work
    worker: tuple[float, ...] = ()  # a worker woken by a batch, the gate waiting
    worker_after_gate: tuple[float, ...] = ()  # ... after the gate that went straight on

    def __post_init__(self) -> None:
        for f in fields(self):
            if any(not 0.0 <= x < float("inf") for x in getattr(self, f.name)):
                raise SimConfigError(
                    f"host model: wake tails' {f.name} are seconds >= 0, all finite"
                )

    @staticmethod
    def draw(excess: tuple[float, ...], rng: np.random.Generator) -> float:
        """One excess from ``excess`` (0 where empty)."""
        return float(excess[int(rng.integers(len(excess)))]) if excess else 0.0
