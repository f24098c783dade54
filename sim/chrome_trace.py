"""A Chrome/Perfetto trace of one simulated run, for looking at it event by event.

Open the JSON in ``chrome://tracing`` or https://ui.perfetto.dev: one track for
the gate, one per device (expert batches and the combine steps after them).
Times are microseconds of simulated clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sim.queues import KIND_NAMES
from sim.records import RunResult
from traces.atomic import atomic_write_text

__all__ = ["chrome_trace", "write_chrome_trace"]

_US = 1e6


def chrome_trace(result: RunResult) -> dict[str, Any]:
    """The trace-event document (``traceEvents``, complete events ``ph = X``)."""
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "thread_name", "pid": 0, "tid": 0, "args": {"name": "gate"}}
    ]
    for d in range(result.config.n_devices):
        events.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": 0,
                "tid": d + 1,
                "args": {"name": f"device {d}"},
            }
        )
    for i, (s, e) in enumerate(zip(result.gate_start_s, result.gate_done_s, strict=True)):
        events.append(
            {
                "ph": "X",
                "name": f"gate r{i}",
                "pid": 0,
                "tid": 0,
                "ts": s * _US,
                "dur": (e - s) * _US,
            }
        )
    for j in range(len(result.batch_size)):
        s, e = float(result.batch_start_s[j]), float(result.batch_end_s[j])
        events.append(
            {
                "ph": "X",
                "name": f"expert {result.batch_expert[j]} x{result.batch_size[j]}",
                "pid": 0,
                "tid": int(result.batch_device[j]) + 1,
                "ts": s * _US,
                "dur": (e - s) * _US,
                "args": {
                    "kind": KIND_NAMES[int(result.batch_kind[j])],
                    "formed_us": float(result.batch_formed_s[j]) * _US,
                },
            }
        )
    done = np.flatnonzero(result.combine_s > 0)
    for i in done.tolist():
        dev = int(result.batch_device[result.combine_batch[i]]) + 1
        end = float(result.completion_s[i])
        events.append(
            {
                "ph": "X",
                "name": f"combine r{i}",
                "pid": 0,
                "tid": dev,
                "ts": (end - float(result.combine_s[i])) * _US,
                "dur": float(result.combine_s[i]) * _US,
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(path: str | Path, result: RunResult) -> None:
    """Write the trace atomically."""
    atomic_write_text(path, json.dumps(chrome_trace(result)))
