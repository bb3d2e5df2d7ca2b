"""A job's files on a node that does not share the control plane's disk (a Ray cluster).

The control plane stages a job in ``LIQI_HOME/jobs/<job_id>/`` as for a local run, packs the
folder (:data:`PACKED`) into one tar in its store, and hands the backend a one-time ticket
(``LaunchPlan.files``). On the node, liqi's driver:

1. trades the ticket for the job's workload key (``POST /workloads/claim``, once: a ticket
   claimed twice revokes the key), which may do nothing but the three requests below;
2. fetches the tar (``GET /api/v1/jobs/<id>/files/staged``) into a node-local folder and
   moves the plan there (:func:`relocate`: every path under the old job folder now points
   under the new one);
3. runs the tasks; on success sends back what they wrote or changed under ``buckets/``
   (``PUT .../files/outputs``, a tar of those files only), then the result
   (``PUT .../files/result``), and removes the local folder.

The control plane unpacks the outputs into the job's folder and uploads them to the buckets
as it does for a local job, with the same all-or-nothing rule. Ray's own file transfer
(``runtime_env.working_dir``) is not used: it goes through Ray's GCS, which caps its size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from liqi.archives import extract
from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.client.auth import SigningAuth
from liqi.core import signing
from liqi.errors import BackendError, error_from_body

# What of a staged job folder travels to the node.
PACKED = ("plan.json", "work", "inputs", "volumes", "buckets")
CLAIM_PATH = "/workloads/claim"
CHUNK = 1 << 20
# A request that cannot reach the control plane is tried again, 1 s later, then 2, 4, 5, 5...
# until this long has passed: a few seconds to start (a wrong address fails fast), a minute to
# send what a job made (a control plane restarting meanwhile must not lose it).
START_PATIENCE_S = 3.0
SEND_PATIENCE_S = 60.0
_T = TypeVar("_T")


def pack(root: Path, names: Iterable[str], dest: Path) -> None:
    """A tar at ``dest`` of ``names`` (files or folders, relative to ``root``; missing ones
    left out). Symbolic links are not followed nor stored."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = root / name
            if path.is_symlink() or not path.exists():
                continue
            if path.is_dir():
                tar.add(path, arcname=name, recursive=False)
                inner = sorted(p for p in path.rglob("*") if not p.is_symlink())
                for sub in inner:
                    if sub.is_dir() or sub.is_file():
                        tar.add(sub, arcname=sub.relative_to(root).as_posix(), recursive=False)
            elif path.is_file():
                tar.add(path, arcname=name, recursive=False)


def relocate(plan: LaunchPlan, folder: Path) -> LaunchPlan:
    """The plan with every path under its ``job_dir`` moved under ``folder`` (argv, env,
    working folder and log of each task)."""
    old, new = plan.job_dir.rstrip("/"), str(folder)
    tasks = tuple(relocate_task(t, old, new) for t in plan.tasks)
    return replace(plan, job_dir=new, tasks=tasks, files=None)


def relocate_task(task: TaskSpec, old: str, new: str) -> TaskSpec:
    """The task with every path under the folder ``old`` moved under ``new``."""

    def moved(text: str) -> str:
        return text.replace(old, new)

    return replace(
        task,
        argv=tuple(moved(a) for a in task.argv),
        env={k: moved(v) for k, v in task.env.items()},
        cwd=moved(task.cwd),
        log=moved(task.log),
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder/buckets``, by path relative to ``folder``."""
    found = {}
    for path in _bucket_files(folder):
        st = path.stat()
        found[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


def changed(folder: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """The files under ``folder/buckets`` written or changed since ``before`` (a snapshot)."""
    now = snapshot(folder)
    return sorted(name for name, stat in now.items() if before.get(name) != stat)


def _bucket_files(folder: Path) -> Iterator[Path]:
    root = folder / "buckets"
    if root.is_dir():
        yield from (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_body(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _retrying(what: str, endpoint: str, call: Callable[[], _T], patience_s: float) -> _T:
    deadline = time.monotonic() + patience_s
    pause = 1.0
    while True:
        try:
            return call()
        except httpx.TransportError as exc:
            if time.monotonic() + pause > deadline:
                raise BackendError(
                    f"Cannot {what}: the control plane at {endpoint} is out of reach from this "
                    f"node ({exc.__class__.__name__}: {exc}). Its address must be reachable "
                    "from every node of the resource group."
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _check(answer: httpx.Response, what: str) -> None:
    if answer.status_code < 400:
        return
    try:
        body: Any = answer.json()
    except ValueError:
        body = answer.text
    exc = error_from_body(answer.status_code, body)
    raise BackendError(f"Cannot {what}: {exc}") from None


class JobFilesClient:
    """The node's side: fetches the job's staged folder, sends back its outputs and result,
    with the job's workload key."""

    def __init__(
        self, endpoint: str, job_id: str, access_id: str, secret: str, timeout_s: float = 60.0
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.job_id = job_id
        self.access_id = access_id
        self.secret = secret
        self._http = httpx.Client(
            base_url=self.endpoint,
            auth=SigningAuth(access_id, secret),
            timeout=timeout_s,
            trust_env=False,
            headers={"user-agent": "liqi-job-driver"},
        )

    @classmethod
    def claim(cls, endpoint: str, job_id: str, ticket: str) -> JobFilesClient:
        """Trade the job's one-time ticket for its key. Raises BackendError."""
        url = endpoint.rstrip("/") + CLAIM_PATH

        def post() -> httpx.Response:
            return httpx.post(url, json={"ticket": ticket}, timeout=30.0, trust_env=False)

        answer = _retrying("claim the job's key", endpoint, post, START_PATIENCE_S)
        _check(answer, f"claim job {job_id}'s key with its ticket")
        data = answer.json()
        return cls(endpoint, job_id, str(data["access_id"]), str(data["access_key"]))

    def credentials(self) -> dict[str, str]:
        """What another process of the job (a task's actor) needs to make its own client."""
        return {
            "endpoint": self.endpoint,
            "job_id": self.job_id,
            "access_id": self.access_id,
            "secret": self.secret,
        }

    @classmethod
    def of(cls, credentials: dict[str, str]) -> JobFilesClient:
        return cls(
            credentials["endpoint"],
            credentials["job_id"],
            credentials["access_id"],
            credentials["secret"],
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JobFilesClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _path(self, name: str) -> str:
        return f"/api/v1/jobs/{self.job_id}/files/{name}"

    def fetch(self, into: Path) -> LaunchPlan:
        """Unpack the job's staged folder into the new folder ``into``; returns its plan,
        relocated there."""
        into.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".staged-", suffix=".tar", dir=into.parent)
        os.close(fd)
        tar = Path(name)
        try:

            def download() -> None:
                with open(tar, "wb") as out, self._http.stream("GET", self._path("staged")) as got:
                    if got.status_code >= 400:
                        got.read()
                        _check(got, f"fetch job {self.job_id}'s files")
                    for chunk in got.iter_bytes(CHUNK):
                        out.write(chunk)

            _retrying(f"fetch job {self.job_id}'s files", self.endpoint, download, START_PATIENCE_S)
            extract(tar, into, what=f"job {self.job_id}'s staged files")
        finally:
            tar.unlink(missing_ok=True)
        plan = LaunchPlan.from_json((into / "plan.json").read_text())
        return relocate(plan, into)

    def send_outputs(self, folder: Path, names: list[str]) -> None:
        """Send the files ``names`` (relative to ``folder``, under ``buckets/``) back."""
        fd, name = tempfile.mkstemp(prefix=".outputs-", suffix=".tar", dir=folder.parent)
        os.close(fd)
        tar = Path(name)
        try:
            pack(folder, names, tar)
            headers = {
                signing.CONTENT_HASH_HEADER: _sha256(tar),
                "content-type": "application/x-tar",
                "content-length": str(tar.stat().st_size),
            }

            def put() -> httpx.Response:
                return self._http.put(
                    self._path("outputs"), content=_file_body(tar), headers=headers
                )

            answer = _retrying(
                f"send job {self.job_id}'s outputs", self.endpoint, put, SEND_PATIENCE_S
            )
            _check(answer, f"send job {self.job_id}'s outputs")
        finally:
            tar.unlink(missing_ok=True)

    def send_result(self, result: TaskResult) -> None:
        body = json.dumps(asdict(result)).encode()

        def put() -> httpx.Response:
            return self._http.put(
                self._path("result"),
                content=body,
                headers={"content-type": "application/json"},
            )

        answer = _retrying(f"send job {self.job_id}'s result", self.endpoint, put, SEND_PATIENCE_S)
        _check(answer, f"send job {self.job_id}'s result")


def node_folder(job_id: str) -> Path:
    """A new node-local folder for a job's files (the system's temporary folder)."""
    return Path(tempfile.mkdtemp(prefix=f"liqi-job-{job_id}-"))


def remove(folder: Path) -> None:
    """Remove a node-local job folder (datasets in it are read-only)."""
    with contextlib.suppress(OSError):
        for path in folder.rglob("*"):
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder, ignore_errors=True)


__all__ = [
    "PACKED",
    "JobFilesClient",
    "changed",
    "node_folder",
    "pack",
    "relocate",
    "relocate_task",
    "remove",
    "snapshot",
]
