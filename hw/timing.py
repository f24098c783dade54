"""Latency measurement of a callable: warm-up, then at least N calls and at least T seconds.

CUDA: CUDA events recorded on the device's current stream around each call,
after a synchronization, so queued work from before is not billed to the call;
CPU: ``perf_counter`` (the call returns when its work is done). The garbage
collector is paused while timing (as ``timeit`` does) so a collection does not
land in one sample. Results stay in seconds (no unit conversion at measurement
time). ``max_time_s`` bounds the wall time of one measurement whatever the call
costs.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from traces.errors import DeltasimError

__all__ = ["LatencyStats", "TimingError", "gc_paused", "measure_latency", "measure_samples"]

# perf_counter's resolution: the smallest non-zero duration a CPU sample can report
_RESOLUTION_S = max(time.get_clock_info("perf_counter").resolution, 1e-9)


class TimingError(DeltasimError):
    """Impossible measurement settings (negative warm-up, no calls, no samples)."""


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Distribution of one call's wall time, in seconds."""

    median_s: float
    p10_s: float
    p90_s: float
    mean_s: float
    samples: int

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise TimingError("a latency needs at least one sample")
        if not (0 < self.p10_s <= self.median_s <= self.p90_s):
            raise TimingError(f"inconsistent percentiles: {self}")

    @classmethod
    def from_samples(cls, samples_s: list[float] | np.ndarray) -> LatencyStats:
        """Median, p10, p90 and mean of samples; a sample below the clock's resolution counts
        as one tick (a call too fast to time is not free)."""
        arr = np.maximum(np.asarray(samples_s, dtype=float), _RESOLUTION_S)
        if arr.size == 0:
            raise TimingError("a latency needs at least one sample")
        p10, p50, p90 = (float(v) for v in np.percentile(arr, [10, 50, 90]))
        return cls(p50, min(p10, p50), max(p90, p50), float(statistics.fmean(arr)), int(arr.size))

    def relative_spread(self) -> float:
        """(p90 - p10) / median: the noise of this measurement."""
        return (self.p90_s - self.p10_s) / self.median_s


@contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector off inside (as ``timeit`` does): a collection is not a sample's."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _time_cpu(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _time_cuda(fn: Callable[[], object], device: torch.device) -> float:
    stream = torch.cuda.current_stream(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record(stream)
    fn()
    end.record(stream)
    end.synchronize()
    return start.elapsed_time(end) / 1e3  # CUDA events report milliseconds


def measure_samples(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 5,
    min_calls: int = 20,
    min_time_s: float = 0.2,
    max_calls: int = 100_000,
    max_time_s: float = 60.0,
) -> list[float]:
    """Per-call wall times of ``fn()``, seconds: ``warmup`` untimed calls, then timed calls
    until both ``min_calls`` and ``min_time_s`` are reached, stopping early at
    ``max_calls`` or ``max_time_s`` (whichever comes first; at least one call)."""
    if warmup < 0:
        raise TimingError(f"warm-up calls must be >= 0, got {warmup}")
    if min_calls < 1 or max_calls < 1:
        raise TimingError(f"need at least one timed call, got min {min_calls}, max {max_calls}")
    if min_time_s < 0 or not max_time_s > 0:
        raise TimingError(f"bad time limits: min {min_time_s} s, max {max_time_s} s")
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    samples: list[float] = []
    t_start = time.perf_counter()
    with gc_paused():
        while True:
            samples.append(_time_cuda(fn, device) if cuda else _time_cpu(fn))
            elapsed = time.perf_counter() - t_start
            if len(samples) >= max_calls or elapsed >= max_time_s:
                break
            if len(samples) >= min_calls and elapsed >= min_time_s:
                break
    return samples


def measure_latency(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 5,
    min_calls: int = 20,
    min_time_s: float = 0.2,
    max_calls: int = 100_000,
    max_time_s: float = 60.0,
) -> LatencyStats:
    """Time ``fn()`` (see :func:`measure_samples`) and summarize the samples."""
    return LatencyStats.from_samples(
        measure_samples(
            fn,
            device=device,
            warmup=warmup,
            min_calls=min_calls,
            min_time_s=min_time_s,
            max_calls=max_calls,
            max_time_s=max_time_s,
        )
    )
