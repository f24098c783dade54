"""``hw profile --slurm PARTITION``: the same profiling as a SLURM job through submitit.

The job runs :func:`hw.profiling.profile.run_profile` on the node and returns
its :class:`ProfileResult` (pickled by submitit into the shared job folder);
the submitting side waits for it and writes the profile file itself, so a job
that fails or is cancelled leaves no output behind. ``cluster="local"`` runs
the job as a local subprocess with submitit's own local executor (what the
tests use); ``None`` lets submitit pick SLURM when ``sbatch`` exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hw.profiling.errors import ProfilingError
from hw.profiling.profile import ProfileConfig, ProfileResult, run_profile

__all__ = ["SlurmRequest", "profile_job", "submit_profile"]


@dataclass(frozen=True)
class SlurmRequest:
    """Resources of the job: partition, wall-time limit, GPU type (a gres name such as
    FASRC's ``nvidia_a100-sxm4-80gb``), and the job folder on a shared file system."""

    partition: str
    time_min: int = 60
    gpu_type: str | None = None
    cpus: int = 4
    mem_gb: int = 16
    folder: Path = Path(".submitit")
    cluster: str | None = "slurm"

    def __post_init__(self) -> None:
        if not self.partition:
            raise ProfilingError("--slurm needs a partition name")
        if self.time_min < 1:
            raise ProfilingError(f"--slurm-time must be >= 1 minute, got {self.time_min}")

    def parameters(self, gpu: bool) -> dict[str, Any]:
        """submitit parameters; ``slurm_*`` ones are ignored by the local executor."""
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus,
            "mem_gb": self.mem_gb,
            "name": "deltasim-profile",
            "slurm_partition": self.partition,
        }
        if gpu:
            if self.gpu_type:
                params["slurm_gres"] = f"gpu:{self.gpu_type}:1"
            else:
                params["gpus_per_node"] = 1
        return params


def profile_job(cfg: ProfileConfig) -> ProfileResult:
    """What runs on the node (a plain module-level function, so submitit can pickle it)."""
    return run_profile(cfg)


def submit_profile(
    cfg: ProfileConfig, req: SlurmRequest, on_submit: Callable[[str], None] | None = None
) -> tuple[ProfileResult, str]:
    """Submit, wait, fetch; returns the result and the job id. A failed job is an error.

    ``on_submit(job_id)`` is called once the job is queued (before the wait)."""
    import submitit

    if cfg.model.get("checkpoint") and not Path(cfg.model["checkpoint"]).is_file():
        raise ProfilingError(f"{cfg.model['checkpoint']}: no such checkpoint file")
    try:
        executor = submitit.AutoExecutor(folder=req.folder, cluster=req.cluster)
    except Exception as exc:  # submitit raises RuntimeError/ValueError when no cluster exists
        raise ProfilingError(f"cannot submit to {req.cluster or 'SLURM'}: {exc}") from None
    executor.update_parameters(**req.parameters(gpu=cfg.device.startswith("cuda")))
    job = executor.submit(profile_job, cfg)
    if on_submit is not None:
        on_submit(str(job.job_id))
    try:
        result = job.result()
    except Exception as exc:  # the job's own exception, re-raised by submitit
        raise ProfilingError(f"profiling job {job.job_id} failed: {exc}") from None
    return result, str(job.job_id)
