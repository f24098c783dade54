"""The machine's state over windows of time, read from timed calls: how much slower or
faster every call in a window ran than its block's level, the calls' own noise removed.

Shared because two tools read the same quantity from different calls: ``hw profile`` from
its two-thread chains' gates (``state_window`` rows, :mod:`hw.profiling.host_state`), and
``sim check`` from a measured run's own alone gates (:mod:`sim.run_state`), which see the
machine while the run ran rather than the minute before.

How: the calls fall into blocks of ``block_s``; what moves slower than a block is the host's
speed, which each tool takes apart. Each block is cut into windows of ``window_s``; a
window's state is its log median call, taken about its block's mean. The spread of those
medians mixes the state's with the medians' own sampling noise, so each window's calls are
split in two interleaved halves (even and odd positions): the halves share the state but
not the noise, and the covariance of their log medians (each about its block's mean,
pooled over the blocks, divided by the windows) is the state's variance alone (a
split-half estimate; 0 when negative).
"""

from __future__ import annotations

import numpy as np

from traces.profile import STATE_BLOCK_S

__all__ = ["MIN_HALF", "MIN_READING", "STATE_WINDOWS_S", "window_readings", "window_state"]

STATE_WINDOWS_S = (0.1, 0.25, 0.5, 1.0)  # window lengths the state is read over
MIN_HALF = 3  # calls per half a window needs to count
MIN_READING = 3  # calls a window needs for its own reading in window_readings


def window_state(
    starts: np.ndarray,
    walls_s: np.ndarray,
    window_s: float,
    block_s: float = STATE_BLOCK_S,
) -> tuple[float, float, int] | None:
    """(median of the window medians, the state's σ in log over windows of ``window_s``
    within whole blocks of ``block_s``, the medians' sampling noise removed, windows used)
    of calls that started at ``starts`` and took ``walls_s``; None without two windows of
    at least 2·:data:`MIN_HALF` calls in some whole block (module docstring). A last block
    90 % covered counts as whole. Raises ValueError unless 0 < window <= block."""
    if not 0 < window_s <= block_s:
        raise ValueError(f"machine state: need 0 < window <= block, got {window_s}, {block_s}")
    if len(starts) == 0:
        return None
    order = np.argsort(starts, kind="stable")
    t = starts[order] - starts[order][0]
    log_wall = np.log(np.maximum(walls_s[order], 1e-9))
    per_block = round(block_s / window_s)
    whole = t < np.floor(t[-1] / block_s + 0.1) * block_s
    index = (t[whole] // window_s).astype(np.int64)
    cuts = np.flatnonzero(np.diff(index)) + 1
    medians: list[float] = []
    by_block: dict[int, list[tuple[float, float]]] = {}
    starts_of = np.concatenate([[0], cuts])
    for first, part in zip(starts_of, np.split(log_wall[whole], cuts), strict=True):
        if len(part) >= 2 * MIN_HALF:
            medians.append(float(np.median(part)))
            block = int(index[first]) // per_block
            by_block.setdefault(block, []).append(
                (float(np.median(part[0::2])), float(np.median(part[1::2])))
            )
    halves = [np.array(v) for v in by_block.values() if len(v) >= 2]
    if not halves:
        return None
    used = sum(len(h) for h in halves)
    cross = sum(
        float(np.sum((h[:, 0] - h[:, 0].mean()) * (h[:, 1] - h[:, 1].mean()))) for h in halves
    )
    return float(np.exp(np.median(medians))), float(np.sqrt(max(cross / used, 0.0))), used


def window_readings(
    starts: np.ndarray, walls_s: np.ndarray, start_s: float, window_s: float, windows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(reading, its noise variance) per window of ``window_s`` from ``start_s``, for
    ``windows`` windows: a window's reading is its calls' log median about the mean of
    every window's (nan where it has fewer than :data:`MIN_READING` calls), its noise the
    variance of a median of that many calls, c / n, with c pooled over the windows from
    the gap between their even- and odd-numbered halves' medians (each half's median has
    variance 2c / n, their difference 4c / n). Where the state moved during a run, not
    only how much: ``sim.run_state`` smooths these into the run's own state path."""
    if not window_s > 0 or windows < 0:
        raise ValueError(f"machine state: need a window > 0 and windows >= 0, got {window_s}")
    seen, counts = np.full(windows, np.nan), np.zeros(windows)
    order = np.argsort(starts, kind="stable")
    index = np.floor((np.asarray(starts, dtype=float)[order] - start_s) / window_s)
    log_wall = np.log(np.maximum(np.asarray(walls_s, dtype=float)[order], 1e-9))
    inside = (index >= 0) & (index < windows)
    index, log_wall = index[inside].astype(np.int64), log_wall[inside]
    gaps: list[float] = []
    for i in np.unique(index):
        part = log_wall[index == i]
        counts[i] = len(part)
        if len(part) >= MIN_READING:
            seen[i] = float(np.median(part))
        if len(part) >= 2 * MIN_HALF:
            half_gap = float(np.median(part[0::2]) - np.median(part[1::2]))
            gaps.append(len(part) * half_gap * half_gap / 4)
    read = np.isfinite(seen)
    if read.any():
        seen[read] -= seen[read].mean()
    scale = float(np.mean(gaps)) if gaps else np.inf
    noise = np.where(counts > 0, scale / np.maximum(counts, 1), np.inf)
    return seen, noise
