"""Jobs: what to run (JobSpec) and the states a run goes through (JobState). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from liqi.errors import ConflictError


class JobState(str, Enum):
    """PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | LOST.

    A PENDING job may also be CANCELLED (killed before it started) or FAILED (its inputs could
    not be staged). Final states never change.
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST})
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.LOST: frozenset(),
}


def check_transition(job_id: str, current: JobState, new: JobState) -> None:
    if new not in TRANSITIONS[current]:
        raise ConflictError(f"Job {job_id} is {current.value}; it cannot become {new.value}.")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    memory_mb: int | None = None
    gpu: int = 0
    timeout_s: float | None = None


@dataclass(frozen=True)
class ClusterShape:
    """Between-graph PS/worker training: how many of each task, what a cluster resource
    group reserves for each (CPUs, MB; None: the job's ``cpu``, no memory reservation) and
    how it places them ("PACK" or "SPREAD"). The local group runs them all on this machine."""

    ps: int = 0
    workers: int = 1
    ps_cpu: float | None = None
    ps_memory_mb: int | None = None
    worker_cpu: float | None = None
    worker_memory_mb: int | None = None
    placement: str = "PACK"


@dataclass(frozen=True)
class JobSpec:
    """Everything a Backend needs to run a job, with every reference already resolved to a
    kind the runner understands (resource names, oss:// URIs, odps:// volume URIs)."""

    name: str
    project: str
    script: str  # odps://<p>/resources/<name>, oss://..., or a path uploaded as a resource
    entry_file: str | None = None  # inside a .tar.gz script
    args: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()  # odps://<p>/volumes/<v>/<partition>, as --volumes
    tables: tuple[str, ...] = ()  # the same kind of URIs, passed as --tables (-Dtables)
    outputs: tuple[str, ...] = ()  # the same, passed as --outputs (-Doutputs)
    buckets: tuple[str, ...] = ()  # oss://<bucket>/<prefix>/ (read and write)
    checkpoint_dir: str | None = None  # oss://...
    hyper_parameters: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    cluster: ClusterShape | None = None
    tf1_compat: bool = False
    model_name: str | None = None
    # Where to run it (liqi/resource_groups.py): None is the server's default group.
    resource_group: str | None = None
