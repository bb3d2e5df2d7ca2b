"""Routes a job's driver on another node uses (see ``control/jobs/shipping.py``): trade its
one-time ticket for its key, fetch its staged files, send back its outputs and its result.

Only the job's own workload key may use the file routes (a person's key may not, even an
admin's: outputs would otherwise come from someone other than the job), and only while the
job runs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.api.objects import body_chunks
from liqi.control.db.tables import Job
from liqi.control.identity import tickets
from liqi.control.identity.accounts import Principal
from liqi.control.identity.auth import BODY_CHECK_SCOPE_KEY, BodyCheck
from liqi.control.identity.workload_keys import WorkloadKey, WorkloadScope
from liqi.control.jobs import shipping
from liqi.control.server.plane import ControlPlane
from liqi.core.jobs import JobState
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)

router = APIRouter(prefix="/api/v1")
claim_router = APIRouter()
MAX_CLAIM_BYTES = 4096


class ClaimOut(BaseModel):
    access_id: str
    access_key: str


class ReceivedOut(BaseModel):
    files: int


@claim_router.post("/workloads/claim")
async def claim(request: Request) -> ClaimOut:
    """Not signed: the ticket is the credential. Bounded, so a stranger's body is not kept."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CLAIM_BYTES:
            raise PayloadTooLargeError(f"A claim is under {MAX_CLAIM_BYTES} bytes.")
    try:
        ticket = json.loads(body or b"{}").get("ticket", "")
    except (ValueError, AttributeError):
        ticket = None
    if not isinstance(ticket, str):
        raise InvalidRequestError('Send {"ticket": "..."}: the ticket from the job\'s command.')
    p: ControlPlane = request.app.state.plane

    def trade() -> WorkloadKey | None:
        with p.sessions.begin() as session:
            return tickets.claim(session, p.box, ticket, p.clock())

    key = await anyio.to_thread.run_sync(trade)
    if key is None:
        raise AuthenticationError(tickets.SPENT)
    return ClaimOut(access_id=key.access_id, access_key=key.secret)


def _running_job(session: Session, who: Principal, job_id: str) -> Job:
    """The job, if ``who`` is its workload key and it runs."""
    scope = WorkloadScope.from_json(who.scope_json) if who.scope_json else None
    if scope is None or job_id not in scope.jobs:
        raise PermissionDeniedError(
            f"Only job {job_id}'s own workload key may use its files (the key its driver "
            "claims with its ticket)."
        )
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"No job {job_id}.")
    if JobState(job.state) is not JobState.RUNNING:
        raise InvalidRequestError(f"Job {job_id} is {job.state}: its files are closed.")
    return job


@router.get("/jobs/{job_id}/files/staged")
def get_staged(job_id: str, p: PlaneDep, who: Who, session: DB) -> StreamingResponse:
    _running_job(session, who, job_id)
    reader = p.shipper.open_staged(job_id)
    return StreamingResponse(
        reader.chunks,
        media_type="application/x-tar",
        headers={"content-length": str(reader.end - reader.start)},
        background=BackgroundTask(reader.close),
    )


@router.put("/jobs/{job_id}/files/outputs")
async def put_outputs(job_id: str, request: Request, p: PlaneDep, who: Who) -> ReceivedOut:
    check: BodyCheck = request.scope[BODY_CHECK_SCOPE_KEY]

    def receive() -> int:
        with p.sessions() as session:
            _running_job(session, who, job_id)
        job_dir = p.runner.job_dir(job_id)
        fd, name = tempfile.mkstemp(prefix=".outputs-", suffix=".tar", dir=job_dir)
        tar = Path(name)
        try:
            with open(fd, "wb") as out:
                for chunk in body_chunks(request):
                    out.write(chunk)
            check.verify()
            return shipping.receive_outputs(job_dir, tar)
        finally:
            tar.unlink(missing_ok=True)

    return ReceivedOut(files=await anyio.to_thread.run_sync(receive))


class ResultOut(BaseModel):
    state: str


@router.put("/jobs/{job_id}/files/result")
async def put_result(job_id: str, request: Request, p: PlaneDep, who: Who) -> ResultOut:
    body = await request.body()  # bounded by the middleware (max_body_bytes)
    if len(body) > shipping.MAX_RESULT_BYTES:
        raise PayloadTooLargeError("A job's result is a small JSON document.")

    def receive() -> str:
        with p.sessions() as session:
            _running_job(session, who, job_id)
        return shipping.receive_result(p.runner.job_dir(job_id), body).state

    return ResultOut(state=await anyio.to_thread.run_sync(receive))
