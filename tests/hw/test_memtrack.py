"""The peak-memory tracker: byte-exact peaks of hand-built workloads (CPU), CUDA when present."""

from __future__ import annotations

import random

import pytest
import torch

from hw.memory.tracker import MemoryPeak, PeakTracker, replay_allocations


def test_hand_built_workload_peak_is_exact_to_the_byte() -> None:
    with PeakTracker("cpu") as t:
        a = torch.empty(1000, dtype=torch.float32)  # 4000 B
        b = torch.empty(300, dtype=torch.float64)  # 2400 B -> 6400 live
        del a  # 2400
        c = torch.empty(5000, dtype=torch.uint8)  # 7400 live: the peak
        v = c.view(50, 100)  # a view allocates nothing
        del b  # 5000
    assert t.result == MemoryPeak("cpu", 7400, 5000, 3)
    del v


def test_matmul_chain_peak_matches_closed_form() -> None:
    x = torch.randn(64, 32)
    w = torch.randn(32, 128)
    with PeakTracker("cpu") as t:
        h = x @ w  # 64*128*4 = 32768
        y = h.relu()  # +32768 = 65536 live
        del h  # 32768
        z = y.sum(dim=1)  # +256
    assert t.result.peak_bytes == 65536
    assert t.result.end_bytes == 32768 + 256
    del z


def test_random_alloc_free_sequences_match_naive_recount() -> None:
    rng = random.Random(7)
    for _ in range(5):
        live: list[torch.Tensor] = []
        sizes: list[int] = []
        plan = [(rng.random() < 0.6, rng.randint(1, 4096)) for _ in range(40)]
        naive = peak = 0
        with PeakTracker("cpu") as t:
            for alloc, n in plan:
                if alloc or not live:
                    live.append(torch.empty(n, dtype=torch.uint8))
                    sizes.append(n)
                    naive += n
                    peak = max(peak, naive)
                else:
                    j = rng.randrange(len(live))
                    naive -= sizes.pop(j)
                    del live[j]
        assert t.result.peak_bytes == peak
        assert t.result.end_bytes == naive


def test_block_allocated_before_tracking_is_not_counted() -> None:
    before = torch.empty(10_000, dtype=torch.uint8)
    with PeakTracker("cpu") as t:
        del before
        x = torch.empty(100, dtype=torch.uint8)
    assert (t.result.peak_bytes, t.result.end_bytes) == (100, 100)
    del x


def test_replay_reuses_pointers_and_ignores_unknown_frees() -> None:
    events = [(1, 0xA, 100), (2, 0xB, 50), (3, 0xA, -100), (4, 0xA, 70), (5, 0xC, -999)]
    assert replay_allocations(events) == (150, 120, 3)
    # unsorted input is replayed in time order
    assert replay_allocations(list(reversed(events))) == (150, 120, 3)


def test_unsupported_device_is_rejected() -> None:
    with pytest.raises(ValueError):
        PeakTracker("meta")


def test_result_before_exit_is_an_error() -> None:
    tracker = PeakTracker("cpu")
    with pytest.raises(RuntimeError):
        _ = tracker.result


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_exact_for_block_multiples() -> None:
    with PeakTracker("cuda") as t:
        a = torch.empty(1 << 20, dtype=torch.uint8, device="cuda")
        b = torch.empty(1 << 21, dtype=torch.uint8, device="cuda")
        del a
        c = torch.empty(1 << 19, dtype=torch.uint8, device="cuda")
    assert t.result.peak_bytes == (1 << 20) + (1 << 21)
    assert t.result.end_bytes == (1 << 21) + (1 << 19)
    del b, c
