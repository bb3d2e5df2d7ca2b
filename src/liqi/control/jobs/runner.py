"""The JobRunner: one loop that moves jobs PENDING -> RUNNING -> a final state.

Each tick it looks at RUNNING jobs (asks the Backend, forwards kill requests, finishes the ones
that ended: outputs uploaded on success), then starts PENDING jobs while fewer than
``max_running`` run. Everything it needs is in the database and the job folders, so after a
control-plane restart it simply carries on: jobs whose supervisor still runs are re-attached,
jobs whose supervisor is gone without a result become LOST. The loop never dies on an error.

Each job runs in a resource group (its row's ``backend`` column holds the group's name), and
the runner holds a Backend per group: ``local`` and each Ray cluster of the server's settings.
A running job whose group is no longer in the settings is LOST, with the group named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from liqi.backends.jobs import Backend, Handle, RunStatus
from liqi.control.db.tables import Job, utcnow
from liqi.control.jobs import staging
from liqi.control.jobs.catalog import spec_from_json
from liqi.control.jobs.shipping import Shipper
from liqi.control.storage import model_registry
from liqi.control.storage.buckets import StoreRegistry
from liqi.control.ticker import Ticker
from liqi.core.jobs import JobState, check_transition
from liqi.errors import BackendError, LiqiError
from liqi.sandbox import SandboxPolicy, safe_env, workload_user
from liqi.sandbox.cgroups import sweep_stale

logger = logging.getLogger(__name__)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class JobRunner(Ticker):
    thread_name = "liqi-job-runner"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stores: StoreRegistry,
        backends: Mapping[str, Backend],
        jobs_dir: Path,
        *,
        max_running: int | None = None,
        tick_s: float = 0.2,
        sandbox: bool = False,
        shipper: Shipper | None = None,
    ) -> None:
        self.sessions = sessions
        # Ships the files of jobs whose backend runs them on other nodes (Ray).
        self.shipper = shipper
        # Run every job's tasks in liqi.sandbox (isolation "sandbox" in the server settings).
        self.sandbox = sandbox
        self.stores = stores
        self.backends = dict(backends)  # by resource group
        self.jobs_dir = jobs_dir
        super().__init__(tick_s)
        self.max_running = max_running or os.cpu_count() or 1
        self._cancel_sent: set[str] = set()
        # Jobs launched whose RUNNING state is not written yet, with their group: when the
        # database refuses the write, the next tick writes it again instead of launching a
        # second copy of the job.
        self._unrecorded: dict[str, tuple[str, Handle]] = {}

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def start(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        super().start()

    def tick(self) -> None:
        self._record_launched()
        running = self._poll_running()
        self._start_pending(self.max_running - running)

    def _poll_running(self) -> int:
        with self.sessions() as session:
            rows = list(session.scalars(select(Job).where(Job.state == JobState.RUNNING.value)))
        still = 0
        for job in rows:
            backend = self.backends.get(job.backend)
            if backend is None:
                self._set(job.id, JobState.LOST, reason=self._unknown_group(job.backend))
                continue
            handle = Handle(backend.name, job.handle)
            if job.cancel_requested and job.id not in self._cancel_sent:
                try:
                    backend.cancel(handle)
                    self._cancel_sent.add(job.id)
                except LiqiError as exc:  # e.g. a Ray head out of reach: tried again next tick
                    logger.warning("job_id=%s cannot be stopped yet: %s", job.id, exc)
            status = backend.status(handle, self.job_dir(job.id))
            if status.running:
                still += 1
            else:
                self._finish(job.id, status)
        return still

    def _start_pending(self, capacity: int) -> None:
        if capacity <= 0:
            return
        with self.sessions() as session:
            stmt = (
                select(Job)
                .where(Job.state == JobState.PENDING.value)
                .order_by(Job.created_at)
                .limit(capacity)
            )
            pending = [
                (job.id, job.spec_json, job.project_id, job.backend)
                for job in session.scalars(stmt)
            ]
        for job_id, spec_json, project_id, group in pending:
            backend = self.backends.get(group)
            if backend is None:
                self._set(job_id, JobState.FAILED, reason=self._unknown_group(group))
                continue
            if job_id in self._unrecorded:  # launched; its RUNNING is not written yet
                continue
            found = backend.launched(self.job_dir(job_id))
            if found is not None:  # launched by a server killed before it said RUNNING
                logger.info("job_id=%s was launched before a restart: taken back", job_id)
                handle: Handle | None = found
            else:
                handle = self._launch(job_id, spec_json, project_id, group, backend)
            if handle is not None:
                self._unrecorded[job_id] = (group, handle)
                self._record_launched()

    def _unknown_group(self, group: str) -> str:
        return (
            f"its resource group {group!r} is no longer in the server's settings (groups: "
            f"{', '.join(self.backends)}); define it again in LIQI_RESOURCE_GROUPS"
        )

    def _launch(
        self, job_id: str, spec_json: str, project_id: int, group: str, backend: Backend
    ) -> Handle | None:
        """Stage the job and start it; None when it could not start (then it is FAILED)."""
        spec = spec_from_json(spec_json)
        job_dir = self.job_dir(job_id)
        sandbox = None
        # A backend that runs jobs elsewhere (Ray) cannot apply liqi's sandbox: jobs there run
        # as the cluster's user, and only superusers may submit to such a group (catalog).
        if self.sandbox and backend.sandboxes:

            def sandbox(folder: Path) -> SandboxPolicy:
                user = workload_user(str(project_id))
                env = safe_env(os.environ)
                home = self.jobs_dir.parent
                return staging.job_sandbox(job_id, folder, spec, user, env, home)

        try:
            plan = staging.stage(self.sessions, self.stores, job_id, spec, job_dir, sandbox)
            if backend.remote_files:
                if self.shipper is None:
                    raise BackendError(f"the {backend.name} backend needs the job's files shipped")
                plan = self.shipper.ship(plan, project_id)
            handle = backend.launch(plan)
        except (LiqiError, OSError) as exc:
            logger.warning("job_id=%s could not start in group %s: %s", job_id, group, exc)
            where = "" if group == backend.name == "local" else f" in resource group {group!r}"
            self._set(job_id, JobState.FAILED, reason=f"could not start{where}: {exc}")
            return None
        return handle

    def _record_launched(self) -> None:
        """Write RUNNING (and the handle) for the jobs just launched; a job killed meanwhile
        is cancelled. Raises the database's error, keeping the jobs for the next tick."""
        for job_id, (group, handle) in list(self._unrecorded.items()):
            with self.sessions.begin() as session:
                job = session.get(Job, job_id)
                backend = self.backends.get(group)
                if job is None or JobState(job.state) is not JobState.PENDING:
                    # Killed while it was being staged.
                    if backend is not None:
                        backend.cancel(handle)
                else:
                    job.state = JobState.RUNNING.value
                    job.handle = handle.ref
                    job.started_at = utcnow()
            del self._unrecorded[job_id]
            logger.info(
                "job_id=%s running in group %s (%s %s)", job_id, group, handle.backend, handle.ref
            )

    def _finish(self, job_id: str, status: RunStatus) -> None:
        result = status.result
        if result is None:
            self._set(job_id, JobState.LOST, reason=status.detail)
            if self.sandbox:
                sweep_stale()  # the lost supervisor could not remove its tasks' cgroups
            return
        state = JobState(result.state)
        reason = result.reason
        if state is JobState.SUCCEEDED:
            try:
                written = staging.upload_outputs(self.sessions, self.stores, self.job_dir(job_id))
                reason = self._register_models(job_id, written)
            except (LiqiError, OSError) as exc:
                state, reason = (
                    JobState.FAILED,
                    f"the script succeeded but uploading its outputs failed: {exc}",
                )
        self._set(
            job_id,
            state,
            reason=reason,
            exit_code=result.exit_code,
            peak_rss_mb=result.peak_rss_mb,
            ended_at=_parse_time(result.ended_at),
        )
        self._cancel_sent.discard(job_id)

    def _killed(self, job_id: str) -> bool:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            return bool(job and job.cancel_requested)

    def _register_models(self, job_id: str, written: list[tuple[str, str]]) -> str:
        """Register the SavedModels a job wrote; returns the job's closing remark."""
        remark = f"uploaded {len(written)} file(s) to the buckets" if written else ""
        dirs = model_registry.saved_model_dirs(written)
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            assert job is not None
            spec = spec_from_json(job.spec_json)
            if not dirs:
                if spec.model_name:
                    remark += f"; warning: no SavedModel was written (model {spec.model_name!r})"
                return remark.lstrip("; ")
            name = model_registry.model_name_for(job.name, spec.model_name)
            made = model_registry.register_versions(session, job.project_id, name, dirs, job_id)
        versions = ", ".join(str(v.version) for v in made)
        return f"{remark}; registered model {name} version {versions}".lstrip("; ")

    def _set(
        self,
        job_id: str,
        state: JobState,
        *,
        reason: str = "",
        exit_code: int | None = None,
        peak_rss_mb: int | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            assert job is not None
            current = JobState(job.state)
            if current.is_final:
                return
            check_transition(job_id, current, state)
            job.state = state.value
            job.reason = reason
            job.exit_code = exit_code
            job.peak_rss_mb = peak_rss_mb
            job.ended_at = ended_at or utcnow()
        logger.info("job_id=%s %s %s", job_id, state.value, reason)
        if self.shipper is not None and state.is_final:
            try:  # its shipped files (if any) go, and the key its driver had
                self.shipper.discard(job_id)
            except (LiqiError, OSError) as exc:
                logger.warning("job_id=%s: cannot discard its shipped files: %s", job_id, exc)
