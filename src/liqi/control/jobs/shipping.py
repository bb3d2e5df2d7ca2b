"""Shipping a staged job to nodes that do not share this machine's disk (a Ray cluster), and
taking its outputs and result back.

``ship`` packs the staged folder (plan, script, datasets, bucket files) into one tar in the
system store ``_jobs`` (``<job_id>/staged.tar``), removes the staged copies from
``LIQI_HOME/jobs/<job_id>/`` (the job can only run from what travels), mints the job's
workload key (scoped to its own files, see ``workload_keys``) and a one-time ticket for it,
and returns the plan with ``files`` set. The node's side is :mod:`liqi.backends.job_files`.

``receive_outputs`` unpacks what the job sent back into its folder, refusing anything that is
not under one of the job's staged bucket folders; ``receive_result`` writes ``result.json``.
From there the runner finishes the job as a local one (outputs uploaded all or nothing).
``discard`` removes the tar and revokes the key when the job ends.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from liqi.archives import ArchiveLimits, extract
from liqi.backends.job_files import PACKED, pack
from liqi.backends.jobs import LaunchPlan, TaskResult
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import Project
from liqi.control.identity import tickets, workload_keys
from liqi.control.identity.workload_keys import WorkloadScope
from liqi.control.jobs.staging import MANIFEST
from liqi.control.storage.buckets import StoreRegistry
from liqi.errors import InvalidRequestError, NotFoundError
from liqi.stores.base import ObjectReader, file_chunks

STORE = "jobs"
STAGED = "staged.tar"
RESULT_FILE = "result.json"
RESULT_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
MAX_RESULT_BYTES = 64 * 1024
OUTPUT_LIMITS = ArchiveLimits(max_total_bytes=64 << 30, max_entries=200_000)


def workload(job_id: str) -> str:
    """The name a job's workload key goes by."""
    return f"job-{job_id}"


@dataclass
class Shipper:
    """Ships jobs for the runner; the API uses it to serve and take back their files."""

    sessions: sessionmaker[Session]
    box: SecretBox
    stores: StoreRegistry
    endpoint: Callable[[], str]  # the control plane's URL, as the nodes reach it
    clock: Callable[[], datetime]

    def ship(self, plan: LaunchPlan, project_id: int) -> LaunchPlan:
        job_dir = Path(plan.job_dir)
        (job_dir / "plan.json").write_text(plan.to_json())
        tar = job_dir / f".{STAGED}"
        try:
            pack(job_dir, PACKED, tar)
            self.stores.system_store(STORE).put(_key(plan.job_id), file_chunks(tar))
        finally:
            tar.unlink(missing_ok=True)
        for name in ("work", "inputs", "volumes", "buckets"):
            shutil.rmtree(job_dir / name, ignore_errors=True)
        with self.sessions.begin() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise NotFoundError(f"The project of job {plan.job_id} no longer exists.")
            key = workload_keys.key_for(
                session,
                self.box,
                workload=workload(plan.job_id),
                project=project,
                scope=WorkloadScope(jobs=(plan.job_id,)),
                now=self.clock(),
            )
            ticket = tickets.issue(session, key.access_id)
        return replace(plan, files={"endpoint": self.endpoint(), "ticket": ticket})

    def open_staged(self, job_id: str) -> ObjectReader:
        return self.stores.system_store(STORE).open(_key(job_id))

    def discard(self, job_id: str) -> None:
        """The job ended: its staged tar goes, and its key is revoked."""
        self.stores.system_store(STORE).delete_prefix(f"{job_id}/")
        with self.sessions.begin() as session:
            workload_keys.revoke(session, workload(job_id), self.clock())


def _key(job_id: str) -> str:
    return f"{job_id}/{STAGED}"


def receive_outputs(job_dir: Path, tar: Path) -> int:
    """Unpack the outputs a job sent (a tar of files under its staged bucket folders) into
    its folder; returns how many files. All or nothing.

    Raises:
        ArchiveError: not a tar liqi unpacks (links, ``..``, too big...).
        InvalidRequestError: a file outside the job's bucket folders.
    """
    manifest = json.loads((job_dir / MANIFEST).read_text())
    allowed = [Path(b["local_dir"]) for b in manifest["buckets"]]
    unpacked = job_dir / ".outputs"
    shutil.rmtree(unpacked, ignore_errors=True)
    extract(tar, unpacked, what=f"job {job_dir.name}'s outputs", limits=OUTPUT_LIMITS)
    try:
        moves = []
        for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
            target = job_dir / path.relative_to(unpacked)
            if not any(folder == target.parent or folder in target.parents for folder in allowed):
                raise InvalidRequestError(
                    f"{path.relative_to(unpacked).as_posix()} is not under one of the job's "
                    "bucket folders (buckets/<bucket>/<prefix>/): only files there are outputs."
                )
            moves.append((path, target))
        for path, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        return len(moves)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def receive_result(job_dir: Path, body: bytes) -> TaskResult:
    """Write the result a job's driver sent as ``result.json``.

    Raises:
        InvalidRequestError: not a result.
    """
    try:
        data = json.loads(body)
        result = TaskResult(**data)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"Not a job result: {exc}") from None
    if result.state not in RESULT_STATES or not isinstance(result.reason, str):
        raise InvalidRequestError(
            f"Not a job result: state {result.state!r} is not one of {sorted(RESULT_STATES)}."
        )
    tmp = job_dir / f"{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, job_dir / RESULT_FILE)
    return result
