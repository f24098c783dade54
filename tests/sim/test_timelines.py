"""Exact event timelines of tiny hand-built scenarios (SimPy's own test style), in both engines.

Every number below is worked out by hand from ``docs/system-model.md``.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import GateSpec, SimConfig
from sim.engine import simulate
from sim.naive import simulate_naive
from sim.queues import DRAINED, EXACT, FLUSHED
from sim.records import RunResult
from sim.service import ServiceTable
from sim.workload import Workload

ENGINES = {"engine": simulate, "naive": simulate_naive}


def _batches(r: RunResult) -> list[tuple[int, int, float, float, float, list[int]]]:
    """(expert, kind, formed, start, end, members) per batch, in start order."""
    out = []
    for j in np.argsort(r.batch_start_s, kind="stable"):
        members = sorted(r.item_request[r.item_batch == j].tolist())
        out.append(
            (
                int(r.batch_expert[j]),
                int(r.batch_kind[j]),
                round(float(r.batch_formed_s[j]), 9),
                round(float(r.batch_start_s[j]), 9),
                round(float(r.batch_end_s[j]), 9),
                members,
            )
        )
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_gate_queue_device_combine_timeline(engine: str) -> None:
    # Gate 0.1 s, combine 0.05 s, B = 2, one device, two experts.
    table = ServiceTable.constant([[0.2, 0.3], [0.1, 0.25]])
    work = Workload.from_lists([0.0, 0.05, 0.3, 0.35], [[0, 1], [0], [0, 1], [1]])
    cfg = SimConfig(
        batch_size=2, n_experts=2, n_requests=4, gate_latency_s=0.1, combine_latency_s=0.05
    )
    r = ENGINES[engine](cfg, table, work)
    assert r.gate_start_s.tolist() == pytest.approx([0.0, 0.1, 0.3, 0.4])
    assert r.gate_done_s.tolist() == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert _batches(r) == [
        (0, EXACT, 0.2, 0.2, 0.5, [0, 1]),  # r1 done at 0.5, combine until 0.55
        (1, EXACT, 0.4, 0.55, 0.8, [0, 2]),  # formed first among the ready ones
        (0, DRAINED, 0.5, 0.85, 1.05, [2]),  # drain at the last gate-done, expert 0 first
        (1, DRAINED, 0.5, 1.1, 1.2, [3]),
    ]
    assert r.completion_s.tolist() == pytest.approx([0.85, 0.55, 1.1, 1.25])


@pytest.mark.parametrize("engine", ENGINES)
def test_max_wait_flush_exact_and_drain_timeline(engine: str) -> None:
    table = ServiceTable.constant([[0.1, 0.15, 0.2]])
    arrivals = [0.1, 0.2, 0.5, 0.6, 0.65, 0.7, 1.5]
    work = Workload.from_lists(arrivals, [[0]] * len(arrivals))
    cfg = SimConfig(batch_size=3, n_experts=1, n_requests=7, gate=GateSpec(k=1), max_wait_s=0.25)
    r = ENGINES[engine](cfg, table, work)
    assert _batches(r) == [
        (0, FLUSHED, 0.35, 0.35, 0.5, [0, 1]),  # r0 waited 0.25 s with 2 in the queue
        (0, EXACT, 0.65, 0.65, 0.85, [2, 3, 4]),  # the third item arrives before r2's deadline
        (0, FLUSHED, 0.95, 0.95, 1.05, [5]),
        (0, DRAINED, 1.5, 1.5, 1.6, [6]),  # last request: drain before its deadline
    ]
    assert r.completion_s.tolist() == pytest.approx([0.5, 0.5, 0.85, 0.85, 0.85, 1.05, 1.6])


@pytest.mark.parametrize("engine", ENGINES)
def test_simultaneous_ends_last_answer_is_highest_device(engine: str) -> None:
    # Both experts of r0 end at 0.5 on devices 0 and 1: the answer from device 1 counts
    # last (system-model §5), so r0's combine holds device 1 and delays r1's batch there.
    table = ServiceTable.constant([[0.5], [0.5]])
    work = Workload.from_lists([0.0, 0.05], [[0, 1], [1]])
    cfg = SimConfig(batch_size=1, n_experts=2, n_devices=2, n_requests=2, combine_latency_s=0.1)
    r = ENGINES[engine](cfg, table, work)
    assert r.completion_s.tolist() == pytest.approx([0.6, 1.2])
    assert int(r.batch_device[r.combine_batch[0]]) == 1
    assert _batches(r)[-1] == (1, EXACT, 0.05, 0.6, 1.1, [1])


@pytest.mark.parametrize("engine", ENGINES)
def test_request_completes_at_last_of_its_k_experts(engine: str) -> None:
    # k = 3 on three devices with very different service times; B = 1, no combine.
    table = ServiceTable.constant([[0.3], [0.7], [0.2]])
    work = Workload.from_lists([0.0], [[0, 1, 2]])
    cfg = SimConfig(batch_size=1, n_experts=3, n_devices=3, n_requests=1, gate=GateSpec(k=3))
    r = ENGINES[engine](cfg, table, work)
    assert sorted(r.batch_end_s.tolist()) == pytest.approx([0.2, 0.3, 0.7])
    assert r.completion_s[0] == pytest.approx(0.7)
    assert int(r.batch_expert[r.combine_batch[0]]) == 1
