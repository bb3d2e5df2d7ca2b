"""The Backend seam: start a job's tasks somewhere, watch them, stop them.

A Backend is the only place that knows where processes run. The control plane hands it a
:class:`LaunchPlan` (frozen, JSON-serialisable) and keeps the returned :class:`Handle` in the
database, so a restarted control plane can ask about a job it did not start.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class TaskSpec:
    """One process of a job: the chief, a worker or a parameter server."""

    name: str  # "chief", "worker:1", "ps:0"
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    log: str
    is_ps: bool = False
    # What a cluster backend reserves for this task alone (-Dcluster's cpu and memory); None:
    # the plan's ``cpu``, and no memory reservation.
    cpu: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class LaunchPlan:
    job_id: str
    job_dir: str
    tasks: tuple[TaskSpec, ...]
    timeout_s: float | None = None
    memory_mb: int | None = None
    grace_s: float = 10.0
    # CPUs the job asks for (JobSpec resources): what a cluster backend reserves for it.
    cpu: float = 1.0
    # A liqi.sandbox.SandboxPolicy as a dict: each task runs inside it (its env and name are
    # the task's); None runs the tasks as the supervisor's own user, unconfined.
    sandbox: dict[str, Any] | None = None
    # How a cluster backend places a several-task plan's tasks on its nodes: "PACK" (as few
    # nodes as possible) or "SPREAD" (as many); both best-effort.
    placement: str = "PACK"
    # Where a backend whose nodes do not share this machine's disk gets the job's files:
    # {"endpoint": the control plane's URL, "ticket": a one-time ticket for the job's key}
    # (liqi.backends.job_files). None: the tasks read and write ``job_dir`` in place.
    files: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LaunchPlan:
        data: dict[str, Any] = json.loads(text)
        tasks = tuple(TaskSpec(**{**t, "argv": tuple(t["argv"])}) for t in data.pop("tasks"))
        return cls(tasks=tasks, **data)


@dataclass(frozen=True)
class TaskResult:
    """How a job's tasks ended, as the supervisor writes it to ``result.json``."""

    state: str  # SUCCEEDED | FAILED | CANCELLED
    exit_code: int | None
    reason: str
    peak_rss_mb: int
    started_at: str
    ended_at: str
    tasks: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> TaskResult | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Handle:
    backend: str
    ref: str


@dataclass(frozen=True)
class RunStatus:
    """``running`` while the tasks run; otherwise ``result`` says how they ended, or both are
    empty when the tasks are gone without a word (the job is LOST)."""

    running: bool
    result: TaskResult | None = None
    detail: str = ""


class Backend(ABC):
    """Runs LaunchPlans. Thread-safe; holds no state a restart would lose."""

    name: ClassVar[str]
    # Whether the backend runs a plan's ``sandbox`` (liqi.sandbox on this machine); one that
    # does not refuses a plan that asks for it.
    sandboxes: ClassVar[bool] = True
    # Whether the backend's tasks run where ``job_dir`` is not: the control plane then puts
    # the staged folder in its store and sets the plan's ``files`` (control/jobs/shipping.py).
    remote_files: ClassVar[bool] = False

    @abstractmethod
    def launch(self, plan: LaunchPlan) -> Handle:
        """Start the plan's tasks and return at once. Raises BackendError on failure."""

    @abstractmethod
    def status(self, handle: Handle, job_dir: Path) -> RunStatus:
        """Where the job stands; never blocks for long."""

    @abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Ask the tasks to stop (SIGTERM, then SIGKILL after the plan's grace period)."""

    def launched(self, job_dir: Path) -> Handle | None:
        """The handle of a launch of ``job_dir`` that a killed control plane did not record
        (it still runs, or it has left its result); None if there is none to take back."""
        return None
