"""The shared-host model (docs/system-model.md §8): exact timelines, neutrality, the check.

Timelines are worked out by hand from the processor-sharing rule: alone a
thread runs at the busy period's speed; with company the gate runs at
``gate_rate`` and a worker at ``worker_rate`` of it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import simpy
from typer.testing import CliRunner

from sim.check import check_run
from sim.cli import app
from sim.config import GateSpec, HostLock, ServiceModel, SimConfig
from sim.engine import simulate
from sim.errors import SimConfigError
from sim.host import GATE, SharedHost, simulate_host
from sim.host_terms import HostTerms
from sim.output import records_of, serve_config
from sim.service import ServiceTable
from sim.workload import Workload, make_workload
from traces.profile import profile_from_frame, write_profile
from traces.serving import write_records

from .conftest import sim_fixture_profile_frame

runner = CliRunner()


def _run_jobs(
    jobs: list[tuple[int, float, float]],
    gate_rate: float,
    worker_rate: float,
    speed: float = 1.0,
    contention: dict[int, float] | None = None,
    lock_draw: Any = None,
    whole: frozenset[int] = frozenset(),
) -> dict[int, float]:
    """Each (thread, start, work) on one SharedHost; returns thread -> finish time.
    ``contention``: thread -> the wall time company adds to its job (additive contention);
    ``lock_draw``: where the host draws who wins the lock whole (None: shared evenly);
    ``whole``: threads whose jobs take the host whole, running at the host's speed."""
    env = simpy.Environment()
    host = SharedHost(env, gate_rate, worker_rate, speed, lock_draw)
    done: dict[int, float] = {}

    def job(thread: int, start: float, work: float) -> Generator[simpy.Event, None, None]:
        yield env.timeout(start)
        yield from host.work(thread, work, (contention or {}).get(thread), thread in whole)
        done[thread] = env.now

    for j in jobs:
        env.process(job(*j))
    env.run()
    return done


def test_a_thread_alone_runs_at_full_speed() -> None:
    assert _run_jobs([(GATE, 0.5, 2.0)], 0.1, 0.1) == {GATE: pytest.approx(2.5)}


def test_two_threads_share_the_host_at_their_rates() -> None:
    # Gate 1.0 s of work from 0, worker 0.5 s from 0.2. Alone until 0.2: gate has 0.8 left.
    # Together the gate runs at 0.5: done at 0.2 + 0.8 / 0.5 = 1.8; by then the worker did
    # 1.6 * 0.25 = 0.4 of its 0.5, and finishes the last 0.1 alone at 1.9.
    done = _run_jobs([(GATE, 0.0, 1.0), (0, 0.2, 0.5)], gate_rate=0.5, worker_rate=0.25)
    assert done[GATE] == pytest.approx(1.8)
    assert done[0] == pytest.approx(1.9)


def test_processor_sharing_of_equal_jobs_finishes_both_at_twice_the_work() -> None:
    done = _run_jobs([(GATE, 0.0, 0.3), (0, 0.0, 0.3)], gate_rate=0.5, worker_rate=0.5)
    assert done == {GATE: pytest.approx(0.6), 0: pytest.approx(0.6)}


def test_additive_contention_adds_its_wall_time_to_a_fully_shared_job() -> None:
    # Gate 0.3 s of work with 0.6 s of contention: shared for its whole run it takes
    # 0.3 + 0.6 = 0.9 s (rate 1/3), whatever its fixed rate says; the worker, with a long
    # job at its fixed rate 0.5, did 0.45 of its 1.0 by then and finishes alone at 1.45.
    done = _run_jobs(
        [(GATE, 0.0, 0.3), (0, 0.0, 1.0)], gate_rate=0.01, worker_rate=0.5,
        contention={GATE: 0.6},
    )  # fmt: skip
    assert done[GATE] == pytest.approx(0.9)
    assert done[0] == pytest.approx(0.9 + 0.55)


def test_additive_contention_is_paid_in_proportion_to_the_overlap() -> None:
    # Gate 1.0 s of work, contention 1.0 s (rate 0.5 when shared); a worker job of 0.2 s
    # from 0.5 with no interference of its own (rate 1). Alone to 0.5 (0.5 left), shared
    # 0.5-0.7 (0.1 done), alone again: 0.4 left -> done at 1.1: a 0.2 s overlap cost 0.1 s.
    # At half speed every wall time doubles except the contention's: 0.5 s more when shared
    # throughout: 0.3 s of work -> 0.6 s alone, 0.6 + 0.5 = 1.1 s shared.
    done = _run_jobs(
        [(GATE, 0.0, 1.0), (0, 0.5, 0.2)], gate_rate=0.01, worker_rate=1.0,
        contention={GATE: 1.0},
    )  # fmt: skip
    assert done == {GATE: pytest.approx(1.1), 0: pytest.approx(0.7)}
    slow = _run_jobs(
        [(GATE, 0.0, 0.3), (0, 0.0, 5.0)], gate_rate=0.01, worker_rate=1.0, speed=0.5,
        contention={GATE: 0.5},
    )  # fmt: skip
    assert slow[GATE] == pytest.approx(1.1)


def test_rates_of_one_mean_no_interference() -> None:
    done = _run_jobs([(GATE, 0.0, 1.0), (0, 0.1, 0.2), (1, 0.2, 0.3)], 1.0, 1.0)
    assert done == {GATE: pytest.approx(1.0), 0: pytest.approx(0.3), 1: pytest.approx(0.5)}


def test_a_slower_host_stretches_every_step_and_counts_its_busy_time() -> None:
    # speed 0.5: the gate's 1.0 s takes 2.0 s; the worker joins at 1.0 s and shares the host
    # at rate 0.5 (0.25 absolute) until the gate ends at 2.5 s, then runs alone at 0.5.
    env = simpy.Environment()
    host = SharedHost(env, 0.5, 0.5, speed=0.5)
    done: dict[int, float] = {}

    def job(thread: int, start: float, work: float) -> Generator[simpy.Event, None, None]:
        yield env.timeout(start)
        yield from host.work(thread, work)
        done[thread] = env.now

    env.process(job(GATE, 0.0, 1.0))
    env.process(job(0, 1.0, 0.5))
    env.process(job(1, 5.0, 0.25))  # after an idle gap of 1.0 s
    env.run()
    # 0-1: gate alone at 0.5 (0.5 done); 1-?: both at 0.25 each: gate's 0.5 left takes 2.0 s,
    # worker gets 0.5 done by 3.0: both end at 3.0 s.
    assert done[GATE] == pytest.approx(3.0) and done[0] == pytest.approx(3.0)
    assert done[1] == pytest.approx(5.5)
    assert host.busy_s == pytest.approx(3.0 + 0.5)


def _one_expert_table(service_s: float) -> ServiceTable:
    return ServiceTable.constant([[service_s]])


def test_full_engine_timeline_with_a_shared_host() -> None:
    """One expert, k = 1, B = 1; gate and expert 1 ms each; both rates 0.5, shared evenly.

    Request 0: gate 0 -> 1 ms alone; its batch runs 1 -> 2 ms... but request 1 arrives
    at 1.5 ms: from then the worker (0.5 ms left) and the gate (1 ms) share the host at
    half speed. The batch ends at 2.5 ms (request 0 completes), the gate has 0.5 ms left
    and runs it alone: done 3.0 ms; request 1's batch runs 3.0 -> 4.0 ms.
    """
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=2, max_backlog=None,
        gate_latency_s=1e-3, warmup=0, host=True, host_lock=HostLock.EVEN,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 1.5e-3], [[0], [0]])
    host = HostTerms(np.zeros(2), gate_rate=0.5, worker_rate=0.5)
    table = _one_expert_table(1e-3)
    res = simulate_host(cfg, table, work, host)
    assert res.gate_done_s.tolist() == pytest.approx([1e-3, 3e-3])
    assert res.batch_start_s.tolist() == pytest.approx([1e-3, 3e-3])
    assert res.batch_end_s.tolist() == pytest.approx([2.5e-3, 4e-3])
    assert res.completion_s.tolist() == pytest.approx([2.5e-3, 4e-3])
    # the ideal model: no sharing, request 1's gate ends at 2.5 ms
    ideal = simulate(cfg.with_(host=False), table, work)
    assert ideal.gate_done_s.tolist() == pytest.approx([1e-3, 2.5e-3])


def test_dispatch_and_collect_run_on_the_worker_before_the_batch_and_the_combine() -> None:
    """Host work of a batch: dispatch (batch start is stamped after it), expert; then per
    completing request: collect + combine (its combine step, as the server stamps it)."""
    cfg = SimConfig(
        batch_size=2, n_experts=1, gate=GateSpec(k=1), n_requests=2, max_backlog=None,
        gate_latency_s=1e-4, combine_latency_s=3e-4, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 0.0], [[0], [0]])
    host = HostTerms(np.array([0.0, 0.0, 2e-4]), collect_s=1e-4)
    res = simulate_host(cfg, ServiceTable.constant([[1e-3, 1e-3]]), work, host)
    # gates 0-0.1, 0.1-0.2 ms; batch of 2 formed at 0.2, dispatch to 0.4, expert to 1.4 ms;
    # combines (collect 0.1 + combine 0.3) one after the other: 1.8 and 2.2 ms
    assert res.batch_formed_s.tolist() == pytest.approx([2e-4])
    assert res.batch_start_s.tolist() == pytest.approx([4e-4])
    assert res.batch_end_s.tolist() == pytest.approx([1.4e-3])
    assert res.completion_s.tolist() == pytest.approx([1.8e-3, 2.2e-3])
    assert res.combine_s.tolist() == pytest.approx([4e-4, 4e-4])


def test_the_servers_loop_overheads_lengthen_the_gate_dispatch_and_combine_jobs() -> None:
    """Gate 100 + 30 µs overhead; batch dispatch 20 + 10 µs; expert 200 µs; collect 5 +
    combine 50 + completion overhead 15 µs: one request completes at 430 µs."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=1, max_backlog=None,
        gate_latency_s=1e-4, combine_latency_s=5e-5, warmup=0, host=True,
    )  # fmt: skip
    host = HostTerms(
        np.array([0.0, 2e-5]),
        collect_s=5e-6,
        gate_overhead_s=3e-5,
        batch_overhead_s=1e-5,
        completion_overhead_s=1.5e-5,
    )
    res = simulate_host(
        cfg, ServiceTable.constant([[2e-4]]), Workload.from_lists([0.0], [[0]]), host
    )
    assert res.gate_done_s.tolist() == pytest.approx([1.0e-4])  # the call: the server's stamp
    assert res.batch_start_s.tolist() == pytest.approx([1.6e-4])
    assert res.completion_s.tolist() == pytest.approx([4.3e-4])
    # 12 of the 30 µs inside the server's gate stamps: the gate is stamped done at 112 µs,
    # and nothing else moves (the rest of the loop still runs before the batch forms)
    stamped = simulate_host(
        cfg,
        ServiceTable.constant([[2e-4]]),
        Workload.from_lists([0.0], [[0]]),
        replace(host, gate_stamped_overhead_s=1.2e-5),
    )
    assert stamped.gate_done_s.tolist() == pytest.approx([1.12e-4])
    assert stamped.batch_start_s.tolist() == pytest.approx([1.6e-4])
    assert stamped.completion_s.tolist() == pytest.approx([4.3e-4])
    with pytest.raises(SimConfigError, match="overheads"):
        HostTerms(np.zeros(2), batch_overhead_s=-1e-6)
    for bad in (-1e-6, 3.1e-5):  # a part of the gate's loop overhead, no more
        with pytest.raises(SimConfigError, match="stamped overhead"):
            HostTerms(np.zeros(2), gate_overhead_s=3e-5, gate_stamped_overhead_s=bad)
    for duty, speed in (((0.5, 0.2), (0.5, 1.0)), ((0.2, 0.5), (0.0, 1.0)), ((0.5,), ())):
        with pytest.raises(SimConfigError, match="duties increasing"):
            HostTerms(np.zeros(2), duty=duty, duty_speed=speed)


def test_an_arrival_delays_the_threads_at_work_by_their_measured_penalty() -> None:
    """Gate 100 µs per request, penalty 20 µs to the gate per arrival while it works.
    Request 1 arrives at 50 µs, during request 0's gate: that gate ends at 120 µs; request
    2 arrives at 150 µs during request 1's gate (120-220 + 20): ends 240 µs; request 2's
    gate follows, 240-340 µs, no arrival during it."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=3, max_backlog=None,
        gate_latency_s=1e-4, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 5e-5, 1.5e-4], [[0], [0], [0]])
    host = HostTerms(np.zeros(2), arrival_penalty_gate_s=2e-5)
    res = simulate_host(cfg, ServiceTable.constant([[1e-6]]), work, host)
    assert res.gate_done_s.tolist() == pytest.approx([1.2e-4, 2.4e-4, 3.4e-4])
    # the penalty is priced at the thread's rate when it lands: 0.2 s at rate 0.5 = 0.1 s work
    env = simpy.Environment()
    cpu = SharedHost(env, 0.5, 0.5)
    done: dict[int, float] = {}

    def job(thread: int, work_s: float) -> Generator[simpy.Event, None, None]:
        yield from cpu.work(thread, work_s)
        done[thread] = env.now

    def wake() -> Generator[simpy.Event, None, None]:
        yield env.timeout(0.5)
        cpu.delay_active(0.2, 0.0)

    env.process(job(GATE, 1.0)), env.process(job(0, 1.0)), env.process(wake())
    env.run()
    # at 0.5 s both have 0.75 left, the gate 0.1 more; both at rate 0.5 until the worker
    # ends at 2.0, the gate then alone (rate 1) for its last 0.1: 2.1
    assert done[0] == pytest.approx(2.0)
    assert done[GATE] == pytest.approx(2.1)


def test_an_arrival_costs_the_threads_their_penalty_in_company_when_both_work() -> None:
    """Gate 100 µs, expert 1 ms (the worker at work from 0.1 ms to past 3 ms); the gate's
    penalty 10 µs alone, 50 µs with the worker at work. Request 2 arrives at 250 µs, during
    request 1's gate (200 µs on) with the worker at work: that gate ends at 350 µs, not
    310. Request 4 arrives at 5050 µs during request 3's gate, the worker idle since request
    2's batch: 10 µs (5110). Without company rows every arrival costs the alone penalty."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=5, max_backlog=None,
        gate_latency_s=1e-4, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 2e-4, 2.5e-4, 5e-3, 5.05e-3], [[0]] * 5)
    alone = HostTerms(np.zeros(2), arrival_penalty_gate_s=1e-5)
    company = replace(alone, arrival_penalty_company_s=(5e-5, 0.0))
    table = ServiceTable.constant([[1e-3]])
    got = simulate_host(cfg, table, work, company).gate_done_s.tolist()
    assert got == pytest.approx([1e-4, 3.5e-4, 4.5e-4, 5.11e-3, 5.21e-3])
    got = simulate_host(cfg, table, work, alone).gate_done_s.tolist()
    assert got == pytest.approx([1e-4, 3.1e-4, 4.1e-4, 5.11e-3, 5.21e-3])
    assert company.arrival_penalties(True) == (5e-5, 0.0)
    assert company.arrival_penalties(False) == alone.arrival_penalties(True) == (1e-5, 0.0)
    for bad in ((1e-5,), (1e-5, -1e-6), (1e-5, float("nan")), (1e-5, 2e-5, 3e-5)):
        with pytest.raises(SimConfigError, match="in company"):
            replace(alone, arrival_penalty_company_s=bad)


def test_the_company_penalties_are_read_from_their_rows() -> None:
    """``arrival_penalty_*_company`` rows give the penalties in company; a loop without its
    row keeps its penalty alone; a profile with neither row has none (the alone ones)."""

    alone = {"arrival_penalty_gate": 20.0, "arrival_penalty_worker": 30.0}
    both = _terms_with_rows(
        **alone, arrival_penalty_gate_company=45.0, arrival_penalty_worker_company=55.0
    )
    assert both.arrival_penalty_company_s == pytest.approx((45e-6, 55e-6))
    assert both.arrival_penalties(False) == pytest.approx((20e-6, 30e-6))
    gate_only = _terms_with_rows(**alone, arrival_penalty_gate_company=45.0)
    assert gate_only.arrival_penalty_company_s == pytest.approx((45e-6, 30e-6))
    assert _terms_with_rows(**alone).arrival_penalty_company_s == ()


# B = 1, k = 1, gate 100 µs, expert 200 µs; requests 0 and 1 arrive together at 0.5 ms,
# request 2 alone at 2 ms. Gate hand-off 10 µs after no wait rising to 30 µs after 1 ms
# (20 µs after 0.5 ms); worker hand-off a flat 50 µs.
HANDOFF_CFG = SimConfig(
    batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=3, max_backlog=None,
    gate_latency_s=1e-4, warmup=0, host=True,
)  # fmt: skip
HANDOFF_WORK = Workload.from_lists([5e-4, 5e-4, 2e-3], [[0], [0], [0]])
HANDOFF_HOST = HostTerms(
    np.zeros(2),
    handoff_idle_s=(0.0, 1e-3),
    handoff_gate_s=(10e-6, 30e-6),
    handoff_worker_s=(50e-6, 50e-6),
)


def test_arrivals_and_batches_that_find_their_thread_waiting_pay_its_hand_off() -> None:
    """Request 0 wakes the gate (+20 µs), request 1 is already queued in the inbox and pays
    nothing (the scenario above)."""
    table = ServiceTable.constant([[2e-4]])
    res = simulate_host(HANDOFF_CFG, table, HANDOFF_WORK, HANDOFF_HOST)
    # gate: 0.52-0.62, 0.62-0.72 ms; request 2 at 2.0 ms after the gate idled 1.28 ms: +30 µs
    assert res.gate_start_s.tolist() == pytest.approx([5.2e-4, 6.2e-4, 2.03e-3])
    # worker: woken by batch 0 at 0.62 (+50 µs) -> 0.67-0.87; batch 1 (formed 0.72) was
    # waiting, no hand-off: 0.87-1.07; batch 2 formed 2.13, worker idle again: 2.18-2.38
    # (no contention in these terms: the threads do not share a lock, so the worker woken
    # while the gate goes on runs at once)
    assert res.batch_start_s.tolist() == pytest.approx([6.7e-4, 8.7e-4, 2.18e-3])
    assert res.completion_s.tolist() == pytest.approx([8.7e-4, 1.07e-3, 2.38e-3])


def test_a_woken_worker_pays_the_chains_hand_off_and_its_cold_start() -> None:
    """With the two-thread chain's curves, a worker woken by a batch pays that hand-off
    (instead of the plain curve) and its next step the cold start, at its wait; a batch
    that finds the worker busy pays neither. The scenario above, with a chain hand-off of
    40 µs after no wait rising to 60 µs after 1 ms and a cold start of 20 rising to 40 µs."""
    host = replace(
        HANDOFF_HOST,
        wake_idle_s=(0.0, 1e-3),
        wake_handoff_s=(40e-6, 60e-6),
        wake_cost_s=(20e-6, 40e-6),
    )
    res = simulate_host(HANDOFF_CFG, ServiceTable.constant([[2e-4]]), HANDOFF_WORK, host)
    # gates as in the plain test: done 0.62, 0.72 and 2.13 ms. The worker waited 0.62 ms
    # for batch 0: hand-off 52.4 µs, cold 32.4 µs: starts 0.62 + 0.0524 + 0.0324, ends
    # +0.2. Batch 1 was waiting: no hand-off, no cold start. Batch 2: the worker idled
    # from 1.1048 to 2.13 (over 1 ms): 60 + 40 µs.
    b0 = 6.2e-4 + 52.4e-6 + 32.4e-6
    assert res.batch_start_s.tolist() == pytest.approx([b0, b0 + 2e-4, 2.13e-3 + 100e-6])
    assert res.completion_s.tolist() == pytest.approx(
        [b0 + 2e-4, b0 + 4e-4, 2.13e-3 + 100e-6 + 2e-4]
    )
    assert host.worker_handoff_after_gate(5e-4) == pytest.approx(50e-6)  # the plain curve


def test_an_arrival_that_wakes_the_gate_pays_the_chains_gate_hand_off() -> None:
    """With the server threads' gate hand-off (40 µs after no wait rising to 80 µs after
    1 ms), an arrival that wakes the gate pays it at the gate's wait instead of the plain
    curve; request 1, queued in the inbox, pays nothing. The scenario above."""
    host = replace(HANDOFF_HOST, gate_wake_idle_s=(0.0, 1e-3), gate_wake_handoff_s=(40e-6, 80e-6))
    res = simulate_host(HANDOFF_CFG, ServiceTable.constant([[2e-4]]), HANDOFF_WORK, host)
    # request 0 at 0.5 ms, the gate idle since 0: 60 µs; gates 0.56-0.66 and 0.66-0.76;
    # request 2 at 2.0 ms after the gate idled 1.24 ms: 80 µs
    assert res.gate_start_s.tolist() == pytest.approx([5.6e-4, 6.6e-4, 2.08e-3])
    assert host.gate_handoff(5e-4) == pytest.approx(60e-6)
    assert HANDOFF_HOST.gate_handoff(5e-4) == pytest.approx(20e-6)  # the plain curve


def test_the_cold_start_part_outside_the_gather_falls_after_the_batchs_start() -> None:
    """The scenario above with the cold start split: of 20-40 µs, 5-15 µs in the gather
    (before the batch's start), the rest in the expert call (after it), as the chain's
    gather rows say: the start moves earlier by the expert's part, the end stays."""
    whole = replace(
        HANDOFF_HOST,
        wake_idle_s=(0.0, 1e-3),
        wake_handoff_s=(40e-6, 60e-6),
        wake_cost_s=(20e-6, 40e-6),
    )
    split = replace(whole, wake_gather_cost_s=(5e-6, 15e-6))
    table = ServiceTable.constant([[2e-4]])
    a = simulate_host(HANDOFF_CFG, table, HANDOFF_WORK, whole)
    b = simulate_host(HANDOFF_CFG, table, HANDOFF_WORK, split)
    # batch 0: waited 0.62 ms: cold 32.4 µs, of which 11.2 in the gather; batch 1 was
    # waiting (no cold start); batch 2 waited over 1 ms: 40 µs, 15 in the gather
    in_expert = [32.4e-6 - 11.2e-6, 0.0, 25e-6]
    assert b.batch_start_s.tolist() == pytest.approx(
        [x - c for x, c in zip(a.batch_start_s, in_expert, strict=True)]
    )
    assert b.completion_s.tolist() == pytest.approx(a.completion_s.tolist())


def test_a_worker_woken_while_the_gate_goes_on_waits_for_that_gate() -> None:
    """Requests 0 and 1 arrive together, request 2 alone at 2 ms; B = 1, k = 1, gate 100 µs
    with 200 µs of contention, expert 300 µs. Plain worker hand-off 50 µs; the chain's
    hand-off and cold start (used for a worker woken by a gate that then blocks) 80 and
    30 µs. In the server a worker notified by a gate thread that goes straight on to its
    next request runs only once that gate is done (benchmarks/README.md, session 8)."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=3, max_backlog=None,
        gate_latency_s=1e-4, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 0.0, 2e-3], [[0], [0], [0]])
    host = HostTerms(
        np.zeros(2),
        gate_contention_s=2e-4,
        worker_contention_s=(0.0, 0.0, 0.0),
        handoff_idle_s=(0.0, 1e-3),
        handoff_gate_s=(10e-6, 10e-6),
        handoff_worker_s=(50e-6, 50e-6),
        wake_idle_s=(0.0, 1e-3),
        wake_handoff_s=(80e-6, 80e-6),
        wake_cost_s=(30e-6, 30e-6),
    )
    res = simulate_host(cfg, ServiceTable.constant([[3e-4]]), work, host)
    # gate 0-0.1 ms; batch 0 formed at 0.1 with request 1 waiting: the gate runs request 1
    # 0.1-0.2 alone (the woken worker is not company), the worker starts 50 µs after it:
    # batch 0 at 0.25-0.55, no cold start; batch 1 (formed at 0.2) follows at 0.55-0.85.
    # Request 2 wakes the gate (+10 µs): 2.01-2.11; the gate does not go on, so the
    # worker, idle since 0.85, pays the chain's hand-off and cold start: 2.11 + 0.08 + 0.03.
    assert res.gate_done_s.tolist() == pytest.approx([1e-4, 2e-4, 2.11e-3])
    assert res.batch_start_s.tolist() == pytest.approx([2.5e-4, 5.5e-4, 2.22e-3])
    assert res.completion_s.tolist() == pytest.approx([5.5e-4, 8.5e-4, 2.52e-3])


def test_host_speed_is_the_fixed_point_of_the_measured_duty_curve() -> None:
    """Periodic arrivals every T, k = 1, B = 1, one device: at speed s each request keeps
    the host busy (g + e) / s with no overlap, so the duty over the run's span is known in
    closed form. With v(u) = 0.2 + 0.8 u the engine's speed must solve v(u(s)) = s, found
    here independently by bisection on the closed form; latencies are then (g + e) / s."""
    g, e, period, n = 1e-4, 1.5e-4, 1e-3, 400
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=n, max_backlog=None,
        gate_latency_s=g, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([i * period for i in range(n)], [[0]] * n)
    host = HostTerms(np.zeros(2), duty=(0.0, 1.0), duty_speed=(0.2, 1.0))

    def duty(s: float) -> float:
        busy = (g + e) / s
        return n * busy / ((n - 1) * period + busy)

    lo, hi = 0.2, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.2 + 0.8 * duty(mid) >= mid else (lo, mid)
    s = 0.5 * (lo + hi)
    assert 0.5 < s < 0.6  # about (0.2 + sqrt(0.84)) / 2 = 0.558 for a long run
    res = simulate_host(cfg, ServiceTable.constant([[e]]), work, host)
    latency = res.completion_s - np.asarray(work.arrival_s)
    np.testing.assert_allclose(latency, (g + e) / s, rtol=1e-2)  # s known to 4e-3 of ~0.56
    # a busy run earns full speed: all arrive at once, the gate runs them back to back
    # while the worker, the slower, follows in parallel (rates 1): busy all along, duty 1
    busy = Workload.from_lists([0.0] * n, [[0]] * n)
    res = simulate_host(cfg, ServiceTable.constant([[e]]), busy, host)
    assert res.completion_s[-1] == pytest.approx(g + n * e, rel=1e-9)


@pytest.mark.parametrize("max_wait_s", [None, 0.004])
@pytest.mark.parametrize("b", [1, 4, 16])
@pytest.mark.parametrize("devices", [1, 2])
def test_neutral_host_reproduces_the_fast_engine(
    test_profile_path: Path, b: int, max_wait_s: float | None, devices: int
) -> None:
    """No host costs and rates of 1: the host engine is the ideal model, request for request."""
    from traces.profile import read_profile

    cfg = SimConfig(
        batch_size=b, rate_rps=3000, n_requests=1500, n_devices=devices, max_backlog=None,
        gate_latency_s=1e-4, combine_latency_s=5e-5, max_wait_s=max_wait_s, seed=3,
    )  # fmt: skip
    table = ServiceTable.from_profile(read_profile(test_profile_path), 8, b)
    work = make_workload(cfg)
    fast = simulate(cfg, table, work)
    slow = simulate_host(cfg, table, work, HostTerms.neutral(b))
    np.testing.assert_allclose(slow.gate_done_s, fast.gate_done_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slow.completion_s, fast.completion_s, rtol=0, atol=1e-12)
    assert sorted(slow.batch_size.tolist()) == sorted(fast.batch_size.tolist())


# --- profiles with host terms, the switch, and sim check ---------------------------------------

HOST_ROWS = {  # µs: gate alone 200, contended 800 (rate 0.25); worker 50 / 100 (rate 0.5)
    "gate": 200, "combine": 60, "collect": 10, "gate_alone": 200, "gate_contended": 800,
    "worker_alone": 50, "worker_contended": 100,
}  # fmt: skip


DUTY_ROWS = (  # (mean idle µs, chain µs): duty = chain / (chain + idle), speed = 404 / chain
    (0, 404.0),  # speed 1.0
    (404, 505.0),  # speed 0.8, duty 5/9
    (1616, 808.0),  # speed 0.5, duty 1/3
    (3636, 1010.0),  # speed 0.4
    (9696, 673.33),  # speed 0.6 at the lowest duty (noise: pooled with 0.4 and 0.5 to 0.5)
)
HANDOFF_ROWS = ((0.0, 30, 40), (1e-3, 40, 50), (1e-2, 80, 90))  # idle s, gate µs, worker µs


def host_profile_frame() -> pl.DataFrame:
    """The test profile plus gate/combine and every host term (dispatch 10 µs + 1 µs/sample)."""
    base = sim_fixture_profile_frame().with_columns(
        pl.lit("expert").alias("component"), pl.lit("cpu:test").alias("device")
    )
    rows = [(c, 1, v * 1e-6, None) for c, v in HOST_ROWS.items()]
    rows += [("dispatch", b, (10 + b) * 1e-6, None) for b in (1, 64)]
    # duty rows (k = 2 worker steps): chain = steps / speed, with the steps as the model runs
    # them: gate 200 + 2 * (dispatch 11 + expert 0 at b=1 56) + collect 10 + combine 60 = 404
    rows += [("duty", 2, c * 1e-6, i * 1e-6) for i, c in DUTY_ROWS]
    rows += [("handoff_gate", 1, g * 1e-6, i) for i, g, _ in HANDOFF_ROWS]
    rows += [("handoff_worker", 1, w * 1e-6, i) for i, _, w in HANDOFF_ROWS]
    steps = pl.DataFrame(
        [
            {
                "expert": -1,
                "batch_size": b,
                "latency_s": v,
                "samples": 1,
                "component": c,
                "device": "cpu:test",
                "idle_s": idle,
            }
            for c, b, v, idle in rows
        ],
        schema_overrides={"idle_s": pl.Float64},
    )
    return pl.concat([base, steps], how="diagonal_relaxed")


def _terms_with_rows(**rows_us: float) -> HostTerms:
    """The host terms of ``host_profile_frame`` plus one batch-size-1 row per component
    named, its latency in µs."""
    extra = pl.DataFrame(
        {
            "expert": [-1] * len(rows_us),
            "batch_size": [1] * len(rows_us),
            "latency_s": [v * 1e-6 for v in rows_us.values()],
            "component": list(rows_us),
        }
    )
    frame = pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")
    terms = HostTerms.from_profile(profile_from_frame(frame), 64)
    assert terms is not None
    return terms


def test_the_combine_gets_its_own_measured_contention() -> None:
    """With the completion pair (collect + combine alone / while the gate loops) the combine
    job's contention is their difference, not the worker step's scaled by cost; the
    dispatch and expert jobs keep theirs; a contended time below the alone one gives 0."""

    def with_pair(alone_us: float, contended_us: float) -> HostTerms:
        return _terms_with_rows(completion_alone=alone_us, completion_contended=contended_us)

    terms = with_pair(80, 130)
    assert terms.worker_contention_s == pytest.approx((50e-6 * 11 / 67, 50e-6 * 56 / 67, 50e-6))
    assert with_pair(130, 80).worker_contention_s[2] == 0.0


def test_host_terms_read_from_a_profile() -> None:
    terms = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 64)
    assert terms is not None
    assert terms.gate_rate == pytest.approx(0.25) and terms.worker_rate == pytest.approx(0.5)
    # additive contention: contended - alone, the worker's split over its jobs as the worker
    # step it was timed on (dispatch 11 + expert 56 at b = 1) and the combine (collect 10 +
    # combine 60) relate to that step
    assert terms.gate_contention_s == pytest.approx(600e-6)
    assert terms.worker_contention_s == pytest.approx(
        (50e-6 * 11 / 67, 50e-6 * 56 / 67, 50e-6 * 70 / 67)
    )
    assert terms.dispatch_s[1] == pytest.approx(11e-6) and terms.dispatch_s[64] == pytest.approx(
        74e-6
    )
    assert terms.collect_s == pytest.approx(10e-6)
    duties = sorted(c / (c + i) for i, c in DUTY_ROWS)
    assert terms.duty == pytest.approx(duties) and duties[2] == pytest.approx(1 / 3)
    # speeds in duty order 0.6, 0.4, 0.5, 0.8, 1.0 -> non-decreasing: 0.5, 0.5, 0.5, 0.8, 1.0
    assert terms.duty_speed == pytest.approx((0.5, 0.5, 0.5, 0.8, 1.0), abs=1e-3)
    assert terms.speed_at_duty(0.0) == pytest.approx(0.5, abs=1e-3)
    assert terms.speed_at_duty(0.5 * (1 / 3 + 5 / 9)) == pytest.approx(0.65, abs=1e-3)
    with pytest.raises(SimConfigError, match="handoff_gate and handoff_worker"):
        no_worker = host_profile_frame().filter(pl.col("component") != "handoff_worker")
        HostTerms.from_profile(profile_from_frame(no_worker), 64)
    assert terms.gate_handoff(5e-4) == pytest.approx(35e-6)
    assert terms.worker_handoff(0.1) == pytest.approx(90e-6)  # flat past the last point
    # a profile without them (the bundled one, older `hw profile`) has none
    assert HostTerms.from_profile(profile_from_frame(sim_fixture_profile_frame()), 64) is None


def test_the_duty_curve_timed_in_the_servers_threads_is_preferred() -> None:
    """``duty_threads`` rows (the chain timed with the gate and the worker in two threads, as
    the server runs it) give the duty speeds; the one-thread ``duty`` rows of the same
    profile are then ignored, and alone (older profiles) they are read as before."""
    old = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 64)
    threads = host_profile_frame().with_columns(
        pl.when(pl.col("component") == "duty")
        .then(pl.lit("duty_threads"))
        .otherwise(pl.col("component"))
        .alias("component"),
        pl.when(pl.col("component") == "duty")
        .then(pl.col("latency_s") * 2)  # every chain twice as long: half the speed
        .otherwise(pl.col("latency_s"))
        .alias("latency_s"),
    )
    both = pl.concat([threads, host_profile_frame().filter(pl.col("component") == "duty")])
    for frame in (threads, both):
        terms = HostTerms.from_profile(profile_from_frame(frame), 64)
        assert old is not None and terms is not None
        duties = sorted(2 * c / (2 * c + i) for i, c in DUTY_ROWS)
        assert terms.duty == pytest.approx(duties)
        # speeds 404 / (2 chain): 0.3, 0.2, 0.25, 0.4, 0.5 in duty order, then non-decreasing
        assert terms.duty_speed == pytest.approx((0.25, 0.25, 0.25, 0.4, 0.5), abs=1e-3)
        assert terms.duty_speed != old.duty_speed


def test_the_chains_wake_curves_are_read_and_their_cold_start_leaves_the_duty_speed() -> None:
    """``handoff_worker_chain``, ``chain_first_step`` and ``chain_next_step`` rows give the
    worker's hand-off and cold start (first - next, floored at 0) at its wait; the cold
    start is charged apart, so each duty level's chain is taken without it."""
    threads = host_profile_frame().with_columns(
        pl.when(pl.col("component") == "duty")
        .then(pl.lit("duty_threads"))
        .otherwise(pl.col("component"))
        .alias("component")
    )
    waits = [1e-4 * (i + 1) for i in range(len(DUTY_ROWS))]
    first = [150e-6, 150e-6, 130e-6, 120e-6, 50e-6]  # the last: warm, a dip under `next`
    wake = pl.DataFrame(
        {
            "expert": -1,
            "batch_size": 1,
            "latency_s": [*[40e-6] * 5, *first, *[60e-6] * 5],
            "samples": 1,
            "component": [
                *["handoff_worker_chain"] * 5, *["chain_first_step"] * 5,
                *["chain_next_step"] * 5,
            ],
            "device": "cpu:test",
            "idle_s": waits * 3,
        }
    )  # fmt: skip
    terms = HostTerms.from_profile(
        profile_from_frame(pl.concat([threads, wake], how="diagonal_relaxed")), 64
    )
    assert terms is not None
    assert terms.wake_idle_s == pytest.approx(waits)
    assert terms.wake_cost_s == pytest.approx([90e-6, 90e-6, 70e-6, 60e-6, 0.0])
    assert terms.worker_handoff(2.5e-4) == pytest.approx(40e-6)  # instead of the plain curve
    assert terms.worker_wake_cost(1.5e-4) == pytest.approx(90e-6)
    # the duty levels (by gap) take the cold start of the same level (by wait) out
    cost = dict(zip(sorted(i for i, _ in DUTY_ROWS), terms.wake_cost_s, strict=True))
    chains = [(i, c * 1e-6 - cost[i]) for i, c in DUTY_ROWS]
    want = sorted((c / (c + i * 1e-6), min(1.0, 404e-6 / c)) for i, c in chains)
    assert terms.duty == pytest.approx([u for u, _ in want])
    bad = wake.with_columns(
        pl.when(pl.col("component") == "chain_next_step")
        .then(pl.col("idle_s") * 2)
        .otherwise(pl.col("idle_s"))
        .alias("idle_s")
    )
    with pytest.raises(SimConfigError, match="same idle times"):
        HostTerms.from_profile(
            profile_from_frame(pl.concat([threads, bad], how="diagonal_relaxed")), 64
        )
    # without the gather rows the whole cold start falls in the gather (older profiles)
    assert terms.wake_gather_cost_s == ()
    assert terms.worker_wake_gather_cost(1.5e-4) == pytest.approx(90e-6)
    # with them, the gather's part: first - next gather, floored at 0, at most the whole
    gathers = pl.DataFrame(
        {
            "expert": -1,
            "batch_size": 1,
            "latency_s": [40e-6, 30e-6, 100e-6, 5e-6, 20e-6, *[10e-6] * 5],
            "samples": 1,
            "component": [*["chain_first_gather"] * 5, *["chain_next_gather"] * 5],
            "device": "cpu:test",
            "idle_s": waits * 2,
        }
    )
    frames = [threads, wake, gathers]
    split = HostTerms.from_profile(
        profile_from_frame(pl.concat(frames, how="diagonal_relaxed")), 64
    )
    assert split is not None
    assert split.wake_gather_cost_s == pytest.approx([30e-6, 20e-6, 70e-6, 0.0, 0.0])
    assert split.wake_cost_s == terms.wake_cost_s and split.duty == terms.duty
    assert split.worker_wake_gather_cost(2.5e-4) == pytest.approx(45e-6)  # between levels
    moved = gathers.with_columns((pl.col("idle_s") * 3).alias("idle_s"))
    with pytest.raises(SimConfigError, match="chain_first_gather"):
        HostTerms.from_profile(
            profile_from_frame(pl.concat([threads, wake, moved], how="diagonal_relaxed")), 64
        )


def test_the_chains_gate_gives_the_gates_cold_start_and_leaves_the_duty_speed() -> None:
    """``chain_gate`` rows (the chain's gate at each level's mean gap): the cold start is each
    level's gate over the shortest gaps' (floored at 0), and each level's chain is priced
    without it, as the worker's cold start is; rows at other idle times are refused."""
    threads = host_profile_frame().with_columns(
        pl.when(pl.col("component") == "duty")
        .then(pl.lit("duty_threads"))
        .otherwise(pl.col("component"))
        .alias("component")
    )
    gaps = [i * 1e-6 for i, _ in DUTY_ROWS]  # 0, 404, 1616, 3636, 9696 µs
    walls = [200e-6, 210e-6, 260e-6, 190e-6, 340e-6]  # 3636 µs: under the warm one
    gate = pl.DataFrame(
        {
            "expert": -1, "batch_size": 1, "latency_s": walls, "samples": 1,
            "component": "chain_gate", "device": "cpu:test", "idle_s": gaps,
        }
    )  # fmt: skip
    plain = HostTerms.from_profile(profile_from_frame(threads), 64)
    terms = HostTerms.from_profile(
        profile_from_frame(pl.concat([threads, gate], how="diagonal_relaxed")), 64
    )
    assert plain is not None and terms is not None
    assert plain.gate_cold_cost_s == () and plain.gate_cold_cost(5e-3) == 0.0
    assert terms.gate_cold_idle_s == pytest.approx(gaps)
    assert terms.gate_cold_cost_s == pytest.approx([0.0, 10e-6, 60e-6, 0.0, 140e-6])
    assert terms.gate_cold_cost(1010e-6) == pytest.approx(35e-6)  # halfway: interpolated
    assert terms.gate_cold_cost(0.1) == pytest.approx(140e-6)  # flat past the last level
    cost = dict(zip(gaps, terms.gate_cold_cost_s, strict=True))
    chains = [(i * 1e-6, c * 1e-6 - cost[i * 1e-6]) for i, c in DUTY_ROWS]
    want = sorted((c / (c + i), min(1.0, 404e-6 / c)) for i, c in chains)
    assert terms.duty == pytest.approx([u for u, _ in want])
    # a chain priced without its gate's cold start is faster: no level slower than before
    for u, v in zip(terms.duty, terms.duty_speed, strict=True):
        assert v >= plain.speed_at_duty(u) - 1e-12
    moved = gate.with_columns((pl.col("idle_s") * 2).alias("idle_s"))
    with pytest.raises(SimConfigError, match="chain_gate"):
        HostTerms.from_profile(
            profile_from_frame(pl.concat([threads, moved], how="diagonal_relaxed")), 64
        )
    for idle, cold in ((((1e-3, 0.0)), (0.0, 1e-4)), ((0.0, 1e-3), (-1e-6, 1e-4))):
        with pytest.raises(SimConfigError, match="gate cold cost"):
            HostTerms(np.zeros(2), gate_cold_idle_s=idle, gate_cold_cost_s=cold)
    with pytest.raises(SimConfigError, match="gate cold cost"):
        HostTerms(np.zeros(2), gate_cold_idle_s=(0.0,), gate_cold_cost_s=())


def test_a_gate_on_a_host_idle_for_a_while_pays_its_cold_start() -> None:
    """Gate 100 µs, expert 1 ms, cold start 0 after no idle time rising to 100 µs after
    1 ms (flat past it). Request 0 at 0 (host idle 0): gate to 0.1 ms, batch to 1.1 ms.
    Request 1 at 1.6 ms, the host idle 0.5 ms: 50 µs cold, gate done 1.75 ms, batch to
    2.75 ms. Request 2 at 5 ms (idle 2.25 ms): 100 µs cold, gate done 5.2 ms. Request 3 at
    5.15 ms waits for that gate and starts at once (the host busy): no cold start. At half
    speed the gate's work doubles; the cold start is measured wall time and does not; a gate
    that finds a worker at work pays none."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=4, max_backlog=None,
        gate_latency_s=1e-4, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([0.0, 1.6e-3, 5e-3, 5.15e-3], [[0]] * 4)
    host = HostTerms(np.zeros(2), gate_cold_idle_s=(0.0, 1e-3), gate_cold_cost_s=(0.0, 1e-4))
    res = simulate_host(cfg, _one_expert_table(1e-3), work, host)
    assert res.gate_done_s.tolist() == pytest.approx([1e-4, 1.75e-3, 5.2e-3, 5.3e-3])
    assert res.completion_s.tolist() == pytest.approx([1.1e-3, 2.75e-3, 6.2e-3, 7.2e-3])
    half = simulate_host(cfg, _one_expert_table(1e-3), work, replace(host, speed_scale=0.5))
    # gate 0 -> 0.2 ms, batch to 2.2 ms; request 1's gate finds the worker at work (no
    # idle time): 1.6 -> 1.8 ms, its batch 2.2 -> 4.2 ms; request 2's after 0.8 ms idle: 80 µs
    assert half.gate_done_s[:3].tolist() == pytest.approx([2e-4, 1.8e-3, 5.28e-3])


def spaced_gates(n: int, gate_s: float) -> tuple[SimConfig, Workload]:
    """One expert, B = 1, ``n`` requests 20 ms apart (each gate on a host idle that long),
    gate ``gate_s``, no warm-up."""
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=n, max_backlog=None,
        gate_latency_s=gate_s, warmup=0, host=True,
    )  # fmt: skip
    return cfg, Workload.from_lists([i * 2e-2 for i in range(n)], [[0]] * n)


def test_cold_starts_stretch_with_the_machines_state() -> None:
    """The profile measured the machine's state and spells on whole chains, cold starts
    included, so a cold start stretches with the state of the moment as every step does:
    gates 20 ms apart, each 1 µs of work plus a 400 µs cold start, all take 401 µs
    without a state, and spread with it (log sd near the state's σ 0.3), the work only
    could not (SharedHost.steady_speed: the run's speed without those factors)."""
    cfg, work = spaced_gates(400, 1e-6)
    host = HostTerms(np.zeros(2), gate_cold_idle_s=(0.0, 1e-2), gate_cold_cost_s=(0.0, 4e-4))
    table = _one_expert_table(1e-4)
    plain = simulate_host(cfg, table, work, host)
    walls = plain.gate_done_s - plain.gate_start_s
    np.testing.assert_allclose(walls[1:], 401e-6, rtol=1e-9)
    state = replace(cfg, state_sigma=0.3, state_rho=0.0, state_window_s=0.02)
    stretched = simulate_host(state, table, work, host)
    walls = stretched.gate_done_s - stretched.gate_start_s
    assert float(np.std(np.log(walls[1:]))) == pytest.approx(0.3, rel=0.25)
    env = simpy.Environment()
    cpu = SharedHost(env, 1.0, 1.0, 0.5)
    cpu.set_state(2.0)
    assert cpu.steady_speed == 0.5 and cpu.speed == 0.25


def test_older_profiles_busy_hand_off_rows_are_not_read() -> None:
    """``handoff_worker_busy`` rows (profiles before 2026-12-02) change nothing, on any
    idle times: a worker woken while the gate goes on waits for that gate's end."""
    busy = pl.DataFrame(
        {
            "expert": [-1] * 3,
            "batch_size": [1] * 3,
            "latency_s": [w * 1e-6 for w in (200, 300, 400)],
            "component": ["handoff_worker_busy"] * 3,
            "idle_s": [2 * i + 1e-4 for i, _, _ in HANDOFF_ROWS],
        }
    )
    frame = pl.concat([host_profile_frame(), busy], how="diagonal_relaxed")
    terms = HostTerms.from_profile(profile_from_frame(frame), 64)
    assert terms is not None
    assert terms.worker_handoff(5e-4) == pytest.approx(45e-6)
    assert terms.worker_handoff_after_gate(5e-4) == pytest.approx(45e-6)


def test_host_off_changes_nothing(host_profile_path: Path, test_profile_path: Path) -> None:
    """Host terms in the profile do not leak into the ideal model."""
    from traces.profile import read_profile

    cfg = SimConfig(batch_size=4, rate_rps=2000, n_requests=2000, gate_latency_s=1e-4, seed=1)
    work = make_workload(cfg)
    with_terms = ServiceTable.from_profile(read_profile(host_profile_path), 8, 4)
    without = ServiceTable.from_profile(read_profile(test_profile_path), 8, 4)
    assert with_terms.host is not None and without.host is None
    a, b = simulate(cfg, with_terms, work), simulate(cfg, without, work)
    assert np.array_equal(a.completion_s, b.completion_s)
    assert np.array_equal(a.batch_start_s, b.batch_start_s)


def test_host_model_needs_the_terms(test_profile_path: Path) -> None:
    from traces.profile import read_profile

    table = ServiceTable.from_profile(read_profile(test_profile_path), 8, 4)
    cfg = SimConfig(batch_size=4, n_requests=100, host=True)
    with pytest.raises(SimConfigError, match="host terms"):
        simulate(cfg, table, make_workload(cfg))
    res = runner.invoke(app, ["run", "--profile", str(test_profile_path), "--B", "4", "--host",
                              "--requests", "100"])  # fmt: skip
    assert res.exit_code == 2 and "host terms" in res.stderr and "Traceback" not in res.output


def test_sim_run_defaults_to_the_host_model_for_a_cpu_profile_with_its_terms(
    host_profile_path: Path,
) -> None:
    args = ["run", "--profile", str(host_profile_path), "--B", "1", "--rate", "3000",
            "--requests", "2000", "--json"]  # fmt: skip
    auto = runner.invoke(app, args)
    on = runner.invoke(app, [*args, "--host"])
    off = runner.invoke(app, [*args, "--no-host"])
    assert auto.exit_code == on.exit_code == off.exit_code == 0, auto.output
    import json

    for key in ("throughput_rps", "latency_p50_s", "latency_p99_s"):
        assert json.loads(auto.stdout)[key] == json.loads(on.stdout)[key]
    p50_host = json.loads(on.stdout)["latency_p50_s"]
    p50_ideal = json.loads(off.stdout)["latency_p50_s"]
    assert p50_host > p50_ideal  # contention and the wake speed only ever slow the host


def host_model_run(
    path: Path,
    table: ServiceTable,
    device: str = "cpu:test",
    seed: int = 5,
    extra: dict[str, Any] | None = None,
    n_requests: int = 2000,
    rate_rps: float = 1500.0,
    b_values: tuple[int, ...] = (1, 4, 16),
) -> Path:
    """A 'measured' run at ``b_values`` made by the host model itself from ``table``, stored
    at ``path`` as `hw serve` stores a run (``extra`` added to its config's)."""
    configs = [
        SimConfig(
            batch_size=b,
            n_experts=8,
            rate_rps=rate_rps,
            n_requests=n_requests,
            max_backlog=None,
            gate_latency_s=200e-6,
            combine_latency_s=60e-6,
            seed=seed,
            host=True,
            warmup=200,
        )
        for b in b_values
    ]
    work = make_workload(configs[0])
    records = pl.concat([records_of(simulate(c, table, work)) for c in configs])
    cfg = serve_config(configs)
    cfg = replace(
        cfg, device_names=(device,), placement=(0,) * 8, extra={**cfg.extra, **(extra or {})}
    )
    write_records(path, records, cfg)
    return path


def _host_run(tmp_path: Path, device: str) -> Path:
    from traces.profile import read_profile

    prof = read_profile(tmp_path / "TEST-host-profile.parquet")
    path = tmp_path / f"run-{device.split(':')[0]}.parquet"
    return host_model_run(path, ServiceTable.from_profile(prof, 8, 16), device)


def test_check_applies_the_host_model_to_cpu_runs(tmp_path: Path) -> None:
    write_profile(host_profile_frame(), tmp_path / "TEST-host-profile.parquet")
    prof = tmp_path / "TEST-host-profile.parquet"
    cpu = _host_run(tmp_path, "cpu:test")
    rows = check_run(cpu, prof, service=ServiceModel.MEDIAN)
    assert all(r.host and r.within for r in rows), rows
    assert all(abs(r.error_pct["p50"]) < 1e-6 for r in rows)  # the same model, the same run
    ideal = check_run(cpu, prof, service=ServiceModel.MEDIAN, host=False)
    assert not any(r.host for r in ideal)
    assert ideal[0].simulated["p50"] < rows[0].simulated["p50"]
    gpu = _host_run(tmp_path, "cuda:test")
    assert not any(r.host for r in check_run(gpu, prof, service=ServiceModel.MEDIAN))
    res = runner.invoke(app, ["check", str(cpu), "--profile", str(prof), "--service", "median"])
    assert res.exit_code == 0, res.output
    assert "shared-host model" in res.stdout
    bad = runner.invoke(app, ["check", str(cpu), "--profile", str(prof), "--terms", "replay",
                              "--host"])  # fmt: skip
    assert bad.exit_code == 2 and "--terms profile" in bad.stderr


# --- the machine's spells ---------------------------------------------------------------


def test_a_spell_stretches_the_work_left_from_its_start() -> None:
    """Speed 0.5: the gate's 1.0 s of work takes 2.0 s alone. A spell of factor 2 from 1.0 s
    (speed 0.25) leaves 0.5 s of work to do at 0.25: done at 3.0; one of factor 0.5 from
    1.0 s (speed 1.0): done at 1.5."""
    for factor, end in ((2.0, 3.0), (0.5, 1.5)):
        env = simpy.Environment()
        host = SharedHost(env, 1.0, 1.0, speed=0.5)
        done: list[float] = []
        env.process(_job_then_stamp(env, host, done))
        env.process(_spell_at(env, host, 1.0, factor))
        env.run()
        assert done == [pytest.approx(end)]
        assert host.speed == pytest.approx(0.5 / factor)


def _job_then_stamp(
    env: simpy.Environment, host: SharedHost, done: list[float]
) -> Generator[simpy.Event, None, None]:
    yield from host.work(GATE, 1.0)
    done.append(env.now)


def _spell_at(
    env: simpy.Environment, host: SharedHost, at: float, factor: float
) -> Generator[simpy.Event, None, None]:
    yield env.timeout(at)
    host.set_spell(factor)


def _threads_frame(p10: float | None, p90: float | None) -> pl.DataFrame:
    """The host test profile with its duty rows timed in two threads, with a spread."""
    is_duty = pl.col("component") == "duty"
    return host_profile_frame().with_columns(
        pl.when(is_duty)
        .then(pl.lit("duty_threads"))
        .otherwise(pl.col("component"))
        .alias("component"),
        pl.when(is_duty).then(pl.col("latency_s") * p10 if p10 else None).alias("latency_p10_s"),
        pl.when(is_duty).then(pl.col("latency_s") * p90 if p90 else None).alias("latency_p90_s"),
    )


def test_the_chains_spread_is_read_as_the_spells_per_duty() -> None:
    """Each duty level keeps its chain and the chain's p10 / p90 over its median, in duty
    order; levels without a spread (older profiles) give no spells."""
    terms = HostTerms.from_profile(profile_from_frame(_threads_frame(0.8, 1.5)), 64)
    assert terms is not None
    by_duty = sorted((c / (c + i), c * 1e-6) for i, c in DUTY_ROWS)
    assert terms.duty_chain_s == pytest.approx([c for _, c in by_duty])
    assert terms.duty_p10 == pytest.approx([0.8] * 5) and terms.duty_p90 == pytest.approx([1.5] * 5)
    mid = 0.5 * (by_duty[1][0] + by_duty[2][0])
    window, p10, p90 = terms.spell_at_duty(mid)  # type: ignore[misc]
    assert window == pytest.approx(0.5 * (by_duty[1][1] + by_duty[2][1]))
    assert (p10, p90) == (pytest.approx(0.8), pytest.approx(1.5))
    flat = HostTerms.from_profile(profile_from_frame(_threads_frame(None, None)), 64)
    assert flat is not None and flat.spell_at_duty(0.5) is None
    with pytest.raises(SimConfigError, match="p10 <= 1 <= p90"):
        replace(terms, duty_p10=(1.2,) * 5)


def _spell_run(p10: float, p90: float, n: int = 4000) -> np.ndarray:
    """Latency ÷ its value without spells at B = 1, one request per 1 ms window."""
    g, e, period = 1e-4, 1.5e-4, 1e-3
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=n, max_backlog=None,
        gate_latency_s=g, warmup=0, host=True, seed=5,
    )  # fmt: skip
    work = Workload.from_lists([i * period for i in range(n)], [[0]] * n)
    host = HostTerms(
        np.zeros(2), duty=(0.0, 1.0), duty_speed=(1.0, 1.0), duty_chain_s=(period, period),
        duty_p10=(p10, p10), duty_p90=(p90, p90),
    )  # fmt: skip
    res = simulate_host(cfg, ServiceTable.constant([[e]]), work, host)
    return (res.completion_s - np.asarray(work.arrival_s)) / (g + e)


def test_spells_give_each_request_its_windows_factor() -> None:
    """Arrivals on the window boundaries and requests shorter than a window: each request
    runs within one spell, so its latency is its work times that spell's factor, and the
    latencies' p10 / median / p90 are the chain's (within sampling error of 4000 draws)."""
    ratio = _spell_run(0.8, 1.5)
    q10, q50, q90 = np.quantile(ratio, [0.1, 0.5, 0.9])
    assert q50 == pytest.approx(1.0, abs=0.03)
    assert q10 == pytest.approx(0.8, abs=0.02) and q90 == pytest.approx(1.5, abs=0.04)
    np.testing.assert_allclose(_spell_run(1.0, 1.0, 200), 1.0, rtol=1e-9)  # no spread: none


def test_the_gates_stamped_overhead_is_read_as_a_part_of_its_loop_overhead() -> None:
    """``gate_stamped_overhead`` (the part of the gate loop inside the server's own gate
    stamps) is read as measured, held within ``gate_overhead``, and 0 where a profile
    predates it (the model then stamps its gate after the call alone)."""
    got = _terms_with_rows(gate_overhead=30, gate_stamped_overhead=12)
    assert (got.gate_overhead_s, got.gate_stamped_overhead_s) == pytest.approx((30e-6, 12e-6))
    assert _terms_with_rows(gate_overhead=30).gate_stamped_overhead_s == 0.0
    # a noisy difference of two timings (floored at a clock tick when written): held within
    # gate_overhead
    held = _terms_with_rows(gate_overhead=30, gate_stamped_overhead=34)
    assert held.gate_stamped_overhead_s == held.gate_overhead_s


def test_where_the_gate_is_stamped_moves_no_completion() -> None:
    """A whole B = 1 run at 800 req/s with contention, spells and hand-offs: stamping the
    gate after the call, inside the loop's overhead or after all of it, changes the gate's
    done stamps only, never a batch, a completion or the latency."""
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)
    assert table.host is not None
    host = replace(table.host, gate_overhead_s=3e-5)
    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=800.0, n_requests=1500, max_backlog=None,
        gate_latency_s=2e-4, combine_latency_s=6e-5, seed=3, host=True, warmup=100,
    )  # fmt: skip
    work = make_workload(cfg)
    runs = [
        simulate_host(cfg, table, work, replace(host, gate_stamped_overhead_s=x))
        for x in (0.0, 1.2e-5, 3e-5)
    ]
    for other in runs[1:]:
        np.testing.assert_allclose(other.completion_s, runs[0].completion_s, rtol=0, atol=1e-12)
        np.testing.assert_allclose(other.batch_start_s, runs[0].batch_start_s, rtol=0, atol=1e-12)
    walls = [np.median(r.gate_done_s - r.gate_start_s) for r in runs]
    assert walls[0] < walls[1] < walls[2]


def test_the_gates_wake_in_the_servers_threads_replaces_the_two_thread_handoff() -> None:
    """``handoff_gate_chain`` rows (the put to the gate running, in the server's two threads,
    at the gate's wait) give the gate's hand-off instead of the ``handoff_gate`` curve, whose
    two threads that only wake each other hand off faster (blk35: 8-16 µs where the server
    took 18-35);
    without them the old curve holds; a curve of the wrong length is one clear error."""
    base = host_profile_frame()
    plain = HostTerms.from_profile(profile_from_frame(base), 64)
    assert plain is not None and plain.gate_wake_handoff_s == ()
    waits = [4e-4, 1e-3, 5e-3]
    rows = pl.DataFrame(
        {
            "expert": -1,
            "batch_size": 1,
            "latency_s": [25e-6, 30e-6, 40e-6],
            "samples": 100,
            "component": "handoff_gate_chain",
            "device": "cpu:test",
            "idle_s": waits,
        }
    )
    terms = HostTerms.from_profile(
        profile_from_frame(pl.concat([base, rows], how="diagonal_relaxed")), 64
    )
    assert terms is not None
    assert terms.gate_wake_idle_s == pytest.approx(waits)
    assert terms.gate_handoff(1e-4) == pytest.approx(25e-6)  # flat below
    assert terms.gate_handoff(3e-3) == pytest.approx(35e-6)  # interpolated
    assert terms.gate_handoff(1.0) == pytest.approx(40e-6)  # flat above
    assert terms.handoff_gate_s == plain.handoff_gate_s  # kept, no longer read
    for w in (1e-4, 3e-3):
        assert plain.gate_handoff(w) == pytest.approx(
            float(np.interp(w, plain.handoff_idle_s, plain.handoff_gate_s))
        )
    with pytest.raises(SimConfigError, match="gate wake hand-off"):
        HostTerms(np.zeros(2), gate_wake_idle_s=(1e-3,), gate_wake_handoff_s=(1e-5, 2e-5))
    with pytest.raises(SimConfigError, match="gate wake hand-off"):
        HostTerms(np.zeros(2), gate_wake_idle_s=(1e-3,), gate_wake_handoff_s=(-1e-5,))
