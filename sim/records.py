"""What one simulated run produces (system-model §6): per-request and per-batch arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import SimConfig

__all__ = ["RunResult"]


@dataclass(frozen=True, eq=False)
class RunResult:
    """Per request (index = request id) and per batch; times in seconds of simulated clock.

    Items are (request, expert) pairs; ``item_batch`` names the batch each joined,
    an item's enqueue instant is its request's ``enqueue_s`` (its gate-done
    instant, plus a measured delay in replays); ``combine_s[i]`` the duration of
    request i's combine step. ``combine_batch[i]``
    is the batch that delivered request i's last answer (its combine ran after it).
    ``stopped_early``: arrivals stopped at the overload guard (system-model §1);
    the arrays then hold only the requests that arrived.
    """

    config: SimConfig
    arrival_s: np.ndarray
    gate_start_s: np.ndarray
    gate_done_s: np.ndarray
    enqueue_s: np.ndarray
    combine_s: np.ndarray
    completion_s: np.ndarray
    combine_batch: np.ndarray
    k: np.ndarray
    batch_expert: np.ndarray
    batch_device: np.ndarray
    batch_size: np.ndarray
    batch_kind: np.ndarray
    batch_formed_s: np.ndarray
    batch_start_s: np.ndarray
    batch_end_s: np.ndarray
    item_request: np.ndarray
    item_expert: np.ndarray
    item_batch: np.ndarray
    stopped_early: bool = False

    @property
    def n_requests(self) -> int:
        return len(self.arrival_s)

    @property
    def latency_s(self) -> np.ndarray:
        return self.completion_s - self.arrival_s

    @property
    def item_wait_s(self) -> np.ndarray:
        """Queue wait of each item: batch start − enqueue (§6)."""
        return self.batch_start_s[self.item_batch] - self.enqueue_s[self.item_request]
