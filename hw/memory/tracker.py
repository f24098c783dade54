"""Peak-memory tracking around a workload: one context manager for CPU and CUDA.

CPU: ``torch.profiler`` records every allocation and free of the CPU allocator
while the block runs; replaying those events in time order, matching frees to
allocations by pointer, gives the exact live-bytes curve and its peak. This sees
Inductor-compiled code too (it allocates through the same allocator), is byte-
exact and repeatable, and unlike RSS or ``total_allocated`` is not polluted by
earlier sessions. CUDA: the caching allocator's own statistics
(``reset_peak_memory_stats`` / ``max_memory_allocated``).

Both report the peak *above what was allocated when the block began*. On CPU a
free of a block allocated before the block began is invisible to the profiler,
so a workload that must count its inputs allocates (clones) them inside the block.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from traces.fds import silenced_fd

__all__ = ["MemoryPeak", "PeakTracker", "replay_allocations", "track_peak"]


@dataclass(frozen=True, slots=True)
class MemoryPeak:
    """What one tracked block allocated: its peak and its net growth, in bytes.

    ``peak_bytes`` is the highest live total above the block's start;
    ``end_bytes`` what was still live at its end (both relative to the start).
    ``n_allocations`` counts allocations (CPU; -1 where the backend cannot count).
    """

    device: str
    peak_bytes: int
    end_bytes: int
    n_allocations: int

    def __post_init__(self) -> None:
        if self.peak_bytes < 0:
            raise ValueError("peak_bytes must be >= 0")
        if self.end_bytes > self.peak_bytes:
            raise ValueError("end_bytes cannot exceed peak_bytes")


def replay_allocations(events: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """Replay ``(time_ns, ptr, signed_size)`` events; return ``(peak, end, n_allocs)``.

    A free whose pointer was not allocated in the window is ignored (the profiler
    reports those with an unknown size); a pointer reused after its free counts anew.
    """
    live: dict[int, int] = {}
    current = peak = allocs = 0
    for _t, ptr, size in sorted(events, key=lambda e: e[0]):
        if size > 0:
            if ptr in live:  # a missed free; keep the books consistent
                current -= live.pop(ptr)
            live[ptr] = size
            current += size
            allocs += 1
            peak = max(peak, current)
        elif size < 0 and ptr in live:
            current -= live.pop(ptr)
    return peak, current, allocs


def _allocation_events(prof: torch.profiler.profile, device: str) -> list[tuple[int, int, int]]:
    from torch._C._profiler import _EventType

    out: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        stack.extend(ev.children)
        if ev.tag != _EventType.Allocation:
            continue
        fields = ev.extra_fields
        if str(fields.device).split(":")[0] != device:
            continue
        out.append((ev.start_time_ns, int(fields.ptr), int(fields.alloc_size)))
    return out


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Silence the profiler's start/stop chatter on fd 2 (it is not our output)."""
    logging.getLogger("torch.profiler").setLevel(logging.ERROR)
    with silenced_fd(2):
        yield


class PeakTracker:
    """``with PeakTracker("cpu") as t: work()`` then ``t.result`` is a :class:`MemoryPeak`.

    Device "cpu" replays profiler allocation events; "cuda" reads the caching
    allocator's statistics (synchronizing before and after the block).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device).type
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {device!r}")
        self._result: MemoryPeak | None = None
        self._prof: torch.profiler.profile | None = None
        self._start = 0
        self._quiet: contextlib.ExitStack | None = None

    @property
    def result(self) -> MemoryPeak:
        if self._result is None:
            raise RuntimeError("the tracked block has not finished")
        return self._result

    def __enter__(self) -> PeakTracker:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(_quiet_profiler())
        self._prof = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        )
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - self._start
            end = torch.cuda.memory_allocated() - self._start
            self._result = MemoryPeak("cuda", max(peak, 0), min(end, max(peak, 0)), -1)
            return
        assert self._prof is not None and self._quiet is not None
        try:
            self._prof.__exit__(*exc)
        finally:
            self._quiet.close()
        if exc[0] is None:
            peak, end, n = replay_allocations(_allocation_events(self._prof, "cpu"))
            self._result = MemoryPeak("cpu", peak, end, n)
        self._prof = None


def track_peak(device: str | torch.device = "cpu") -> PeakTracker:
    """Shorthand for :class:`PeakTracker`."""
    return PeakTracker(device)
