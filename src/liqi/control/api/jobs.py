"""Routes for training jobs: submit, list, status, logs, kill."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.db.tables import Job, Project
from liqi.control.identity.accounts import Principal
from liqi.control.jobs import catalog
from liqi.control.server.plane import ControlPlane
from liqi.core.jobs import ClusterShape, JobSpec, JobState, Resources
from liqi.errors import InvalidRequestError
from liqi.resource_groups import LOCAL, ResourceGroup

router = APIRouter(prefix="/api/v1")
LOG_CHUNK_MAX = 1024 * 1024


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(default=1.0, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    gpu: int = Field(default=0, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)


class ClusterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ps: int = Field(default=0, ge=0, le=16)
    workers: int = Field(default=1, ge=1, le=32)
    ps_cpu: float | None = Field(default=None, gt=0)
    ps_memory_mb: int | None = Field(default=None, gt=0)
    worker_cpu: float | None = Field(default=None, gt=0)
    worker_memory_mb: int | None = Field(default=None, gt=0)
    placement: Literal["PACK", "SPREAD"] = "PACK"


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: StrictStr
    name: StrictStr = Field(max_length=128)
    script: StrictStr
    entry_file: StrictStr | None = None
    args: list[StrictStr] = []
    datasets: list[StrictStr] = []
    tables: list[StrictStr] = []
    outputs: list[StrictStr] = []
    buckets: list[StrictStr] = []
    checkpoint_dir: StrictStr | None = None
    hyper_parameters: dict[str, StrictStr] = {}
    env: dict[str, StrictStr] = {}
    resources: ResourcesIn = ResourcesIn()
    cluster: ClusterIn | None = None
    tf1_compat: StrictBool = False
    model_name: StrictStr | None = None
    resource_group: StrictStr | None = Field(default=None, max_length=64)


class JobOut(BaseModel):
    id: str
    project: str
    name: str
    state: JobState
    reason: str
    exit_code: int | None
    peak_rss_mb: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    submitted_by: str
    script: str
    resource_group: str


class LogChunk(BaseModel):
    task: str
    data: str
    offset: int
    final: bool


def job_out(job: Job, project: str) -> JobOut:
    spec = catalog.spec_from_json(job.spec_json)
    return JobOut(
        id=job.id,
        project=project,
        name=job.name,
        state=JobState(job.state),
        reason=job.reason,
        exit_code=job.exit_code,
        peak_rss_mb=job.peak_rss_mb,
        created_at=job.created_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        submitted_by=job.submitted_by,
        script=spec.script,
        resource_group=job.backend,
    )


def _name(session: DB, job: Job) -> str:
    project = session.get(Project, job.project_id)
    return project.name if project else "?"


class GroupOut(BaseModel):
    name: str
    backend: str
    address: str | None
    default: bool
    health: str


def _ready_group(spec: JobSpec, p: ControlPlane, who: Principal) -> ResourceGroup:
    """The group ``spec`` runs in, checked for ``who``, and able to take a job now: a job its
    group cannot run is refused before anything is created."""
    settings = p.settings
    group = catalog.choose_group(spec, p.placement, who)
    p.group_health.require(group, settings.resource_groups)
    if group.backend != LOCAL and spec.cluster is None and spec.script:  # -Dcluster: its driver
        resources = spec.resources
        where = group.describe()
        p.capacity.require(group.address, where, "The job", resources.cpu, resources.memory_mb)
    return group


@router.get("/resource-groups/check")
def check_resource_group(
    p: PlaneDep, who: Who, name: str | None = None, project: str = ""
) -> GroupOut:
    """The group a job of ``project`` naming ``name`` (none: the project's default group, else
    the server's) would run in, checked as a
    submission is (unknown: 400, not for ``who``: 403, head down: 503). The CLI asks it before
    it uploads a local script, so that a job that cannot run leaves nothing behind."""
    p.check_may_run_code(who, "submit jobs")
    group = _ready_group(JobSpec(name="", project=project, script="", resource_group=name), p, who)
    return GroupOut(
        name=group.name,
        backend=group.backend,
        address=group.address or None,
        default=group.name == p.settings.resource_group,
        health="ok",
    )


@router.post("/jobs", status_code=201)
def submit_job(body: JobIn, p: PlaneDep, who: Who, session: DB) -> JobOut:
    p.check_may_run_code(who, "submit jobs")
    spec = JobSpec(
        name=body.name,
        project=body.project,
        script=body.script,
        entry_file=body.entry_file,
        args=tuple(body.args),
        datasets=tuple(body.datasets),
        tables=tuple(body.tables),
        outputs=tuple(body.outputs),
        buckets=tuple(body.buckets),
        checkpoint_dir=body.checkpoint_dir,
        hyper_parameters=dict(body.hyper_parameters),
        env=dict(body.env),
        resources=Resources(**body.resources.model_dump()),
        cluster=ClusterShape(**body.cluster.model_dump()) if body.cluster else None,
        tf1_compat=body.tf1_compat,
        model_name=body.model_name,
        resource_group=body.resource_group,
    )
    group = _ready_group(spec, p, who)  # before anything is read or written
    project = catalog.validate(session, who, spec, p.stores.system_store("volumes"))
    job = catalog.submit(session, who, replace(spec, resource_group=group.name), project)
    session.flush()
    out = job_out(job, project.name)
    p.runner.wake()
    return out


@router.get("/jobs")
def list_jobs(who: Who, session: DB, project: str | None = None, limit: int = 50) -> list[JobOut]:
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit={limit} is out of range: use 1 to 1000.")
    return [job_out(j, _name(session, j)) for j in catalog.list_jobs(session, who, project, limit)]


@router.get("/jobs/{job_id}")
def get_job(job_id: str, who: Who, session: DB) -> JobOut:
    job = catalog.get_job(session, who, job_id)
    return job_out(job, _name(session, job))


@router.post("/jobs/{job_id}/kill")
def kill_job(job_id: str, p: PlaneDep, who: Who, session: DB) -> JobOut:
    job = catalog.request_kill(session, who, job_id)
    p.runner.wake()
    return job_out(job, _name(session, job))


@router.get("/jobs/{job_id}/logs")
def job_logs(
    job_id: str, p: PlaneDep, who: Who, session: DB, task: str = "chief", offset: int = 0
) -> LogChunk:
    job = catalog.get_job(session, who, job_id)
    final = JobState(job.state).is_final
    name = "chief" if task == "chief" else task.replace(":", "-")
    if "/" in name or name.startswith("."):
        raise InvalidRequestError(f"Unknown task {task!r}.")
    path: Path = p.runner.job_dir(job.id) / "logs" / f"{name}.log"
    if not path.exists() and name == "chief":
        path = path.with_name("worker-0.log")
    data = b""
    if path.exists():
        with open(path, "rb") as fh:
            fh.seek(max(offset, 0))
            data = whole_characters(fh.read(LOG_CHUNK_MAX))
    more = len(data) >= LOG_CHUNK_MAX - 3
    return LogChunk(
        task=task,
        data=data.decode("utf-8", errors="replace"),
        offset=max(offset, 0) + len(data),
        final=final and not more,
    )


def whole_characters(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut at its end (the next read starts there)."""
    for cut in range(1, min(4, len(data)) + 1):
        byte = data[-cut]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if cut >= need else data[:-cut]
    return data
