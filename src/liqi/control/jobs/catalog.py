"""Training jobs: submit (every input checked before anything runs), look up, kill.

The JobRunner (``control/jobs/runner.py``) moves submitted jobs through their states.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from liqi.control.db.tables import Job, Project, utcnow
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.storage import buckets, datasets, resources
from liqi.core.jobs import ClusterShape, JobSpec, JobState, Resources, check_transition
from liqi.core.odps import parse_resource_uri, parse_volume_uri
from liqi.core.refs import parse_oss_uri
from liqi.errors import InvalidRequestError, NotFoundError
from liqi.resource_groups import LOCAL, Placement, ResourceGroup
from liqi.stores.local import LocalStore

JOB_NAME_MAX = 128


def new_job_id(now: datetime) -> str:
    return f"j-{now.astimezone(timezone.utc):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def spec_to_json(spec: JobSpec) -> str:
    return json.dumps(asdict(spec))


def spec_from_json(text: str) -> JobSpec:
    data = json.loads(text)
    data["resources"] = Resources(**data["resources"])
    data["cluster"] = ClusterShape(**data["cluster"]) if data.get("cluster") else None
    for key in ("args", "datasets", "tables", "outputs", "buckets"):
        data[key] = tuple(data.get(key, ()))
    return JobSpec(**data)


def validate(session: Session, who: Principal, spec: JobSpec, volumes_store: LocalStore) -> Project:
    """Check every reference of ``spec`` as ``who``: the script, datasets and buckets exist and
    may be used. Raises before anything is created or run."""
    project = accounts.get_project(session, who, spec.project)
    if not spec.name or len(spec.name) > JOB_NAME_MAX:
        raise InvalidRequestError(f"Job name {spec.name!r} must be 1 to {JOB_NAME_MAX} characters.")
    _check_script(session, who, spec)
    for uri in (*spec.datasets, *spec.tables, *spec.outputs):
        datasets.open_partition(session, who, parse_volume_uri(uri), volumes_store)
    for uri in (*spec.buckets, *([spec.checkpoint_dir] if spec.checkpoint_dir else [])):
        target = parse_oss_uri(uri)
        if not target.is_folder:
            raise InvalidRequestError(
                f"Bucket path {uri!r} must be a folder ending in '/', for example "
                f"oss://{target.bucket}/models/."
            )
        buckets.check_access(session, who, buckets.get_bucket(session, target.bucket), write=True)
    res = spec.resources
    if res.memory_mb is not None and res.memory_mb <= 0:
        raise InvalidRequestError(f"memory_mb={res.memory_mb} must be positive.")
    if res.timeout_s is not None and res.timeout_s <= 0:
        raise InvalidRequestError(f"timeout_s={res.timeout_s} must be positive.")
    if spec.cluster is not None and (spec.cluster.workers < 1 or spec.cluster.ps < 0):
        raise InvalidRequestError("A cluster needs at least one worker and no negative ps count.")
    return project


def choose_group(spec: JobSpec, placement: Placement, who: Principal) -> ResourceGroup:
    """The resource group ``spec`` runs in (its own, else its project's, else the server's
    default), checked for ``who``. Raises before anything is created."""
    return placement.choose(
        spec.resource_group,
        project=spec.project,
        superuser=who.is_superuser,
        flag="-DresourceGroup=NAME",
    )


def _check_script(session: Session, who: Principal, spec: JobSpec) -> None:
    if spec.script.startswith("odps://"):
        ref = parse_resource_uri(spec.script)
        owner = accounts.get_project(session, who, ref.project)
        resources.get_resource(session, owner, ref.name)
    elif spec.script.startswith("oss://"):
        target = parse_oss_uri(spec.script)
        buckets.check_access(session, who, buckets.get_bucket(session, target.bucket))
    else:
        raise InvalidRequestError(
            f"Script {spec.script!r} must be odps://<project>/resources/<name> (add it with "
            "`liqi resource add`) or oss://<bucket>/<key>."
        )
    if spec.script.endswith((".tar.gz", ".tgz")) and not spec.entry_file:
        raise InvalidRequestError(
            f"Script {spec.script!r} is an archive: say which file to run with entry_file "
            "(-DentryFile)."
        )


def submit(session: Session, who: Principal, spec: JobSpec, project: Project) -> Job:
    now = utcnow()
    job = Job(
        id=new_job_id(now),
        project_id=project.id,
        name=spec.name,
        spec_json=spec_to_json(spec),
        state=JobState.PENDING.value,
        reason="",
        submitted_by=who.access_id,
        created_at=now,
        backend=spec.resource_group or LOCAL,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, who: Principal, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or who.role_in(job.project_id) is None:
        raise NotFoundError(
            f"Job {job_id!r} does not exist or is not in one of your projects. List jobs "
            "with `liqi job list`."
        )
    return job


def list_jobs(session: Session, who: Principal, project: str | None, limit: int) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if project is not None:
        stmt = stmt.where(Job.project_id == accounts.get_project(session, who, project).id)
    elif not who.is_superuser:
        stmt = stmt.where(Job.project_id.in_(list(who.roles)))
    return list(session.scalars(stmt))


def request_kill(session: Session, who: Principal, job_id: str) -> Job:
    """Cancel a PENDING job at once; ask the runner to stop a RUNNING one."""
    job = get_job(session, who, job_id)  # any role in the job's project may kill it
    state = JobState(job.state)
    if state.is_final:
        return job
    if state is JobState.PENDING:
        check_transition(job.id, state, JobState.CANCELLED)
        job.state = JobState.CANCELLED.value
        job.reason = "killed before it started"
        job.ended_at = utcnow()
    else:
        job.cancel_requested = True
    return job
