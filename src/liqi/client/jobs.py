"""SDK methods for training jobs: mixed into :class:`liqi.Client`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from liqi.errors import ServerUnavailableError

FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELLED", "LOST"}


@dataclass(frozen=True)
class JobInfo:
    id: str
    project: str
    name: str
    state: str
    reason: str
    exit_code: int | None
    peak_rss_mb: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    submitted_by: str
    script: str
    resource_group: str = ""

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


def _when(text: Any) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None


def _job(data: dict[str, Any]) -> JobInfo:
    created = _when(data["created_at"])
    assert created is not None
    return JobInfo(
        id=data["id"],
        project=data["project"],
        name=data["name"],
        state=data["state"],
        reason=data.get("reason", ""),
        exit_code=data.get("exit_code"),
        peak_rss_mb=data.get("peak_rss_mb"),
        created_at=created,
        started_at=_when(data.get("started_at")),
        ended_at=_when(data.get("ended_at")),
        submitted_by=data.get("submitted_by", ""),
        script=data.get("script", ""),
        resource_group=data.get("resource_group", ""),
    )


@dataclass(frozen=True)
class ModelVersionInfo:
    version: int
    uri: str
    job_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class ModelInfo:
    project: str
    name: str
    created_at: datetime
    latest_version: int | None
    versions: list[ModelVersionInfo]


def _model(data: dict[str, Any]) -> ModelInfo:
    created = _when(data["created_at"])
    assert created is not None
    versions = []
    for v in data["versions"]:
        made = _when(v["created_at"])
        assert made is not None
        versions.append(ModelVersionInfo(v["version"], v["uri"], v.get("job_id"), made))
    return ModelInfo(data["project"], data["name"], created, data.get("latest_version"), versions)


class JobMethods:
    """Jobs. Needs ``_request`` and ``project`` from BaseClient."""

    project: str | None

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def submit_job(self, script: str, *, name: str | None = None, project: str | None = None,
                   **options: Any) -> JobInfo:  # fmt: skip
        """Submit a job running ``script`` (``odps://<project>/resources/<name>`` or
        ``oss://...``). ``options`` are the JobSpec fields: ``args``, ``datasets``, ``buckets``,
        ``checkpoint_dir``, ``hyper_parameters``, ``env``, ``resources`` (``cpu``,
        ``memory_mb``, ``gpu``, ``timeout_s``), ``cluster`` (``ps``, ``workers``; on a Ray
        group also ``ps_cpu``, ``ps_memory_mb``, ``worker_cpu``, ``worker_memory_mb`` and
        ``placement``: ``PACK`` or ``SPREAD``), ``tf1_compat``, ``entry_file``,
        ``model_name``, ``resource_group`` (where it runs: ``liqi server status`` lists the
        groups; the server's default when left out).
        """
        body = {
            "project": project or self.project,
            "name": name or script.rstrip("/").rsplit("/", 1)[-1],
            "script": script,
            **options,
        }
        return _job(self._request("POST", "/api/v1/jobs", json=body))

    def check_resource_group(
        self, name: str | None = None, project: str | None = None
    ) -> dict[str, Any]:
        """The resource group a job of ``project`` naming ``name`` (None: the project's
        default, else the server's) would run in, checked as a submission is: raises
        ResourceGroupUnavailableError when its Ray head does not answer, InvalidRequestError
        when there is no such group."""
        params = {"name": name} if name else {}
        if project:
            params["project"] = project
        group: dict[str, Any] = self._request("GET", "/api/v1/resource-groups/check", params=params)
        return group

    def list_jobs(self, project: str | None = None, limit: int = 50) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if project:
            params["project"] = project
        return [_job(j) for j in self._request("GET", "/api/v1/jobs", params=params)]

    def get_job(self, job_id: str) -> JobInfo:
        return _job(self._request("GET", f"/api/v1/jobs/{quote(job_id, safe='')}"))

    def kill_job(self, job_id: str) -> JobInfo:
        return _job(self._request("POST", f"/api/v1/jobs/{quote(job_id, safe='')}/kill"))

    def job_log_chunk(self, job_id: str, offset: int = 0, task: str = "chief") -> dict[str, Any]:
        path = f"/api/v1/jobs/{quote(job_id, safe='')}/logs"
        chunk: dict[str, Any] = self._request("GET", path, params={"offset": offset, "task": task})
        return chunk

    def follow_logs(
        self, job_id: str, *, task: str = "chief", poll_s: float = 0.25, follow: bool = True
    ) -> Iterator[str]:
        """The job's output as it is written; ends when the job has ended (or at once when
        ``follow`` is False)."""
        offset = 0
        while True:
            chunk = self.job_log_chunk(job_id, offset, task)
            if chunk["data"]:
                yield chunk["data"]
            offset = chunk["offset"]
            if chunk["final"] or not follow:
                return
            if not chunk["data"]:
                time.sleep(poll_s)

    def wait_job(
        self, job_id: str, *, timeout_s: float | None = None, poll_s: float = 0.25
    ) -> JobInfo:
        """Block until the job has ended; raises ServerUnavailableError on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            if job.is_final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ServerUnavailableError(
                    f"Job {job_id} is still {job.state} after {timeout_s:g} s."
                )
            time.sleep(poll_s)

    # -- models -------------------------------------------------------------------------

    def list_models(self, project: str | None = None) -> list[ModelInfo]:
        params = {"project": project} if project else None
        return [_model(m) for m in self._request("GET", "/api/v1/models", params=params)]

    def get_model(self, name: str, *, project: str | None = None) -> ModelInfo:
        owner = quote(project or self.project or "default", safe="")
        return _model(
            self._request("GET", f"/api/v1/projects/{owner}/models/{quote(name, safe='')}")
        )
