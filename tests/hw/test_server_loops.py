"""The server's own loops timed as units (hw.profiling.server_loops): the loops really run the
server's code, and what they add over the bare calls is measured, not assumed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from hw.profiling.errors import ProfilingError
from hw.profiling.model import ServedModel, model_from_spec
from hw.profiling.server_loops import server_loop_overheads
from hw.serving.server import QueuedServer

SPEC = {"n_experts": 4, "d_model": 8, "expert_hidden": 8, "k": 2, "seed": 0}


def _spun(call: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    """``call`` after a busy wait of ``seconds`` (work that holds the thread, as code does)."""

    def slowed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            pass
        return call(*args, **kwargs)

    return slowed


def _served(placement: list[int]) -> ServedModel:
    return ServedModel(model_from_spec(SPEC), [torch.device("cpu")] * 2, placement, torch.float32)


def test_overheads_are_per_unit_samples_of_every_loop() -> None:
    got = server_loop_overheads(_served([0, 0, 1, 1]), rounds=6)
    assert set(got) == {
        "gate_overhead", "gate_stamped_overhead", "batch_overhead", "completion_overhead"
    }  # fmt: skip
    assert all(len(v) == 6 and all(np.isfinite(v)) for v in got.values())
    # The gate loop does strictly more than the gate call (stamps, lock, queues, batch
    # forming): over 6 paired rounds of 32 requests its median overhead is positive, and
    # only a part of it lies inside the server's own gate stamps.
    assert np.median(got["gate_overhead"]) > 0
    assert np.median(got["gate_stamped_overhead"]) < np.median(got["gate_overhead"])


def test_the_stamped_overhead_is_what_lies_inside_the_gate_stamps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slowing the batch forming (after the server's gate_done stamp) raises the gate's
    loop overhead by its 0.3 ms per batch and leaves the stamped part where it was."""
    served = _served([0, 0, 0, 0])
    base = server_loop_overheads(served, rounds=3)
    real = QueuedServer._form
    monkeypatch.setattr(QueuedServer, "_form", _spun(real, 3e-4))
    slowed = server_loop_overheads(served, rounds=3)
    rise = {k: np.median(slowed[k]) - np.median(base[k]) for k in base}
    assert rise["gate_overhead"] > 2 * 2.5e-4  # k = 2 batches formed per request
    assert abs(rise["gate_stamped_overhead"]) < 1e-4
    # a slower gate call (inside the stamps, but the call itself) is paired off request by
    # request: neither overhead moves
    monkeypatch.setattr(QueuedServer, "_form", real)
    monkeypatch.setattr(ServedModel, "gate", _spun(ServedModel.gate, 3e-4))
    called = server_loop_overheads(served, rounds=3)
    for k in ("gate_overhead", "gate_stamped_overhead"):
        assert abs(np.median(called[k]) - np.median(base[k])) < 1e-4


def test_the_loops_time_the_servers_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slowing the server's batch delivery (not the model's calls) raises batch_overhead."""
    served = _served([0, 0, 0, 0])
    base = np.median(server_loop_overheads(served, rounds=3)["batch_overhead"])
    monkeypatch.setattr(QueuedServer, "_run_batch", _spun(QueuedServer._run_batch, 5e-4))
    slowed = np.median(server_loop_overheads(served, rounds=3)["batch_overhead"])
    assert slowed - base > 3e-4  # 0.5 ms of busy wait per batch, measured as overhead


def test_no_expert_on_the_first_device_is_a_clear_error() -> None:
    with pytest.raises(ProfilingError, match="device 0"):
        server_loop_overheads(_served([1, 1, 1, 1]), rounds=1)
